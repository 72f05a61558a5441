"""Shell completion scripts generated from the parser: bash and zsh by shtab, fish by a short generator.

shtab writes bash and zsh only, so fish's script is generated here from the same parser:
one `complete` line per subcommand and per option, with choices and file arguments. Both
follow the parser, so a new flag or subcommand completes without touching this file.
"""
from __future__ import annotations

import argparse

PROG = "acta-mirror"


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    if shell == "fish":
        return fish(parser)
    import shtab

    return shtab.complete(parser, shell=shell)


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _helps(parser: argparse.ArgumentParser) -> dict[str, str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {a.dest: a.help or "" for a in action._choices_actions}
    return {}


def _option_lines(parser: argparse.ArgumentParser, condition: str) -> list[str]:
    lines = []
    for action in parser._actions:
        if not action.option_strings or isinstance(action, argparse._HelpAction):
            continue
        parts = [f"complete -c {PROG} -n {_quote(condition)}"]
        for opt in action.option_strings:
            parts.append(f"-l {opt[2:]}" if opt.startswith("--") else f"-s {opt[1:]}")
        if action.nargs != 0:
            if action.choices:
                parts.append("-x -a " + _quote(" ".join(str(c) for c in action.choices)))
            else:
                parts.append("-r -F")  # a value follows: offer files, which most of ours are
        if action.help and action.help != argparse.SUPPRESS:
            parts.append("-d " + _quote(action.help.split(";")[0][:80]))
        lines.append(" ".join(parts))
    return lines


def fish(parser: argparse.ArgumentParser) -> str:
    subs = _subcommands(parser)
    helps = _helps(parser)
    lines = [f"# fish completion for {PROG}, generated from its parser ({PROG} completion fish)",
             f"complete -c {PROG} -f"]
    lines += _option_lines(parser, "__fish_use_subcommand")
    for name, sub in subs.items():
        lines.append(f"complete -c {PROG} -n '__fish_use_subcommand' -a {name} -d {_quote(helps.get(name, ''))}")
        condition = f"__fish_seen_subcommand_from {name}"
        lines += _option_lines(sub, condition)
        positional = [a for a in sub._actions if not a.option_strings and a.nargs != 0]
        for action in positional:
            if action.choices:
                lines.append(f"complete -c {PROG} -n {_quote(condition)} -x -a {_quote(' '.join(action.choices))}")
            else:
                lines.append(f"complete -c {PROG} -n {_quote(condition)} -F")  # files and directories
                break
    return "\n".join(lines) + "\n"
