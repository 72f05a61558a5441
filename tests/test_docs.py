"""The conventions themselves: every CLI flag is in the README, every module says its job."""
from __future__ import annotations

import argparse
import ast

from mirror.cli import build_parser
from mirror.sites import all_sites
from tests.conftest import ROOT


def _subparsers(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices
    return {}


def test_every_command_and_flag_is_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    missing = []
    for name, sub in _subparsers(build_parser()).items():
        if f"acta-mirror {name}" not in readme:
            missing.append(name)
        for action in sub._actions:
            for opt in action.option_strings:
                if opt.startswith("--") and opt != "--help" and opt not in readme:
                    missing.append(f"{name} {opt}")
    assert missing == [], f"undocumented in README.md: {missing}"


def test_every_module_opens_with_its_job():
    for path in (ROOT / "mirror").rglob("*.py"):
        doc = ast.get_docstring(ast.parse(path.read_text()))
        assert doc and doc.strip(), f"{path.relative_to(ROOT)} has no docstring saying its job"


def test_every_site_has_a_description_and_discovery_modes():
    sites = all_sites()
    assert "resultados2024" in sites
    for name, cls in sites.items():
        assert cls.name == name and cls.description and cls.discover_modes


def test_readme_exit_codes_agree_with_every_command_help():
    """README.md's table of exit codes per command is the one in mirror/clihelp.py, row for row."""
    import re

    from mirror.clihelp import HELP

    readme = (ROOT / "README.md").read_text()
    table = dict(re.findall(r"^\| `acta-mirror ([\w-]+)` \| ([\d, ]+) \|$", readme, re.M))
    commands = _subparsers(build_parser())
    assert set(table) == set(commands), f"README rows {sorted(table)} vs commands {sorted(commands)}"
    for name in commands:
        assert name in HELP, f"{name}: no examples and exit codes in mirror/clihelp.py"
        assert [int(c) for c in table[name].split(",")] == sorted(HELP[name].exits), name
