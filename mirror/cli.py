"""The acta-mirror command: subcommands, progress, and the one place that prints for people.

Exit codes (every command; each subcommand's --help lists the ones it can return, from
mirror/clihelp.py, and README.md's table repeats them):
    0    done, nothing wrong
    1    finished, but something failed or a check found problems (each one is named)
    2    bad usage or bad input: one line says what, nothing archived was touched
    3    a write was refused: the disk (full, read-only) or standard output (its reader gone,
         as `| head` does, or a full device); nothing archived before is damaged;
         for crosscheck: some tables could not be checked and none disagree
    130  interrupted

Each subcommand's parser is built by its own function below (parse_<name>), listed in
PARSERS; its handler is cmd_<name>, listed in COMMANDS.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import os
import sys
import time
from pathlib import Path

from . import __version__
from .clihelp import EXIT_MEANINGS, epilog
from .models import MirrorError, UsageError

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, EXIT_DISK, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
FAILURES_SHOWN = 100
log = logging.getLogger("acta-mirror")

class _Parser(argparse.ArgumentParser):
    describe = None  # a function giving the description when help is shown (imports only then)

    def error(self, message: str):  # one line, exit 2, never a usage dump
        raise UsageError(f"{message} (see '{self.prog} --help')")

    def format_help(self) -> str:
        if self.describe is not None:
            self.description = self.describe()
        return super().format_help()


def _number(kind: type, minimum: float, what: str):
    """An argparse type: a number of `kind`, at least `minimum`, with a one-line complaint."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum:g} or more: {text!r}")
        return value
    return parse


_positive_int = _number(int, 1, "a whole number")
_nonneg_float = _number(float, 0, "a number")


def _header(text: str) -> tuple[str, str]:
    from .config import header_ok, reserved_header

    name, sep, value = text.partition(":")
    if not sep or not header_ok(name.strip(), value.strip()):
        # the text is not shown: a header is where a token goes
        raise argparse.ArgumentTypeError("takes 'Name: value' on one line, in ASCII, like 'Referer: https://example.org/'")
    if reserved_header([name.strip()]):
        raise argparse.ArgumentTypeError(f"{name.strip()}: acta-mirror sets it itself, or it changes what a download returns")
    return name.strip(), value.strip()


class _Versions(argparse.Action):
    """--version: ours, and the versions of the parts that matter when something goes wrong."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print the version of acta-mirror and of its parts, and exit")

    def __call__(self, parser, namespace, values, option_string=None):
        print(versions())
        parser.exit()


def _libcurl() -> str:
    try:
        import pycurl

        return f" (libcurl {pycurl.version_info()[1]})"
    except ImportError:
        return ""


def versions() -> str:
    import platform
    import shutil
    import subprocess
    from importlib.metadata import PackageNotFoundError, version

    lines = [f"acta-mirror {__version__}", f"Python {platform.python_version()}"]
    for package in ("pycurl", "aiohttp", "zxing-cpp"):
        try:
            lines.append(f"{package} {version(package)}" + (_libcurl() if package == "pycurl" else ""))
        except PackageNotFoundError:
            lines.append(f"{package} not installed")
    for program, flag in (("tesseract", "--version"), ("git", "--version")):
        path = shutil.which(program)
        first = ""
        if path:
            try:
                done = subprocess.run([path, flag], capture_output=True, text=True, timeout=10)
                first = ((done.stdout or done.stderr).strip().splitlines() or [""])[0]
            except (OSError, subprocess.SubprocessError):
                first = ""
        name = first.removeprefix(program).removeprefix(" version").strip()
        lines.append(f"{program} {name}" if name else f"{program} not found")
    return "\n".join(lines)


def _add(sub, name: str, help: str) -> argparse.ArgumentParser:
    """A subcommand's parser: its examples and exit codes end its --help; -v and --quiet everywhere."""
    p = sub.add_parser(name, help=help, description=help, epilog=epilog(name),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    # SUPPRESS: given before the subcommand, they are not reset by the subcommand's defaults.
    p.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                   help="say more: -v names every failure and logs steps, -vv logs debug detail")
    p.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS,
                   help="no progress display, only warnings and errors")
    return p


def _fetch_flags(p: argparse.ArgumentParser) -> None:
    """The fetcher's knobs. Unset flags are None, so the user config and the job file show through."""
    from .config import SCHEMA

    d = {k: spec.default for k, spec in SCHEMA["fetch"].items()}
    p.add_argument("--concurrency", type=_positive_int, help=f"requests in flight (default {d['concurrency']})")
    p.add_argument("--processes", type=int, choices=(1, 2),
                   help="processes downloading images: 2 uses a second core once a crawl passes 256 images (default 2)")
    p.add_argument("--rate", type=_nonneg_float, help="requests per second per host, 0 for no pacing (default 0)")
    p.add_argument("--proxy", help="http://, https://, socks5:// or socks5h:// proxy URL")
    p.add_argument("--timeout", type=_nonneg_float, help=f"seconds for a whole request (default {d['timeout']:g})")
    p.add_argument("--deadline", type=_nonneg_float, metavar="SECONDS",
                   help="stop the whole crawl cleanly after this long; what it did not reach is deferred "
                        "to the next run (default 0: none)")
    p.add_argument("--max-bytes", type=_positive_int, help="size cap per file (default 25 MiB)")
    p.add_argument("--recheck-after", type=_nonneg_float,
                   help="seconds: known URLs checked more recently are not asked again (default 0: ask all)")
    p.add_argument("--user-agent", metavar="TEXT", help="the User-Agent header (default: acta-mirror's own)")
    p.add_argument("--header", action="append", type=_header, metavar="'NAME: VALUE'",
                   help="another request header, repeatable, e.g. 'Referer: https://example.org/'")


def _fetch_layer(args) -> dict:
    """The fetch flags as a settings layer (None: not given)."""
    return {"fetch": {"concurrency": args.concurrency, "processes": args.processes, "rate": args.rate,
                      "proxy": args.proxy,
                      "timeout": args.timeout, "deadline": args.deadline, "max_bytes": args.max_bytes,
                      "recheck_after": args.recheck_after,
                      "user_agent": args.user_agent, "headers": dict(args.header) if args.header else None}}


# -- the parsers, one function per subcommand -----------------------------------------
def _known_sites() -> str:
    from .sites import all_sites  # imported only for help: the adapters pull in HTML parsers

    known = "\n".join(f"  {name:<16} {cls.description}" for name, cls in sorted(all_sites().items()))
    return f"crawl a results site into a BagIt mirror\n\nknown sites:\n{known}"


def parse_crawl(sub) -> None:
    c = _add(sub, "crawl", "crawl a results site into a BagIt mirror")
    c.describe = _known_sites
    c.add_argument("site", help="site adapter name (the known sites are listed above)")
    c.add_argument("--root", required=True, help="the site's root URL")
    c.add_argument("--out", required=True, help="the mirror directory (a BagIt bag)")
    c.add_argument("--discover", choices=("csv", "html", "both"),
                   help="how actas are found (default: the site's first way; csv for resultados2024)")
    c.add_argument("--index", help="an index file or URL to read instead of the site's default index")
    _fetch_flags(c)
    c.add_argument("--alternate", action="append", default=[], metavar="URL",
                   help="another host serving the same paths (a mirror, an S3 bucket), tried when the root's host fails; repeatable")
    c.add_argument("--allow-host", action="append", default=[], metavar="HOST",
                   help="a host images may also come from (a CDN), besides the root's and the alternates'; repeatable")
    c.add_argument("--shard", default="1/1", help="I/N: take only part I of N of the acta keys (default 1/1)")
    c.add_argument("--sign-key", metavar="BASE.key", help="sign the manifest's Merkle root with this key")
    c.add_argument("--wait-lock", action="store_true", help="wait for another run on the same --out instead of exiting")
    c.add_argument("--dry-run", action="store_true",
                   help="read the index (or pages) and the mirror; say what would be fetched, with counts and bytes; write nothing")
    c.add_argument("--json", action="store_true", help="print the summary, with every failure, as JSON")


def parse_verify(sub) -> None:
    v = _add(sub, "verify", "check a mirror offline")
    v.add_argument("dir", help="the mirror directory")
    v.add_argument("--fast", action="store_true",
                   help="hash no file in data/: names, sizes, tag files, provenance, Merkle root and signature only")
    v.add_argument("--json", action="store_true", help="print the problems as JSON")
    v.add_argument("--cids", action="store_true", help="also check every file's IPFS CID in provenance.jsonl")
    v.add_argument("--pubkey", metavar="BASE.pub", help="also check the signed Merkle root with this public key")
    v.add_argument("--tsa-ca", metavar="FILE", help="also check signed-root.json.tsr, the trusted timestamp, against this CA (PEM)")
    v.add_argument("--coverage", action="store_true",
                   help="after OK, also count the site's tables the mirror holds against its own index "
                        "(reads the index: about 0.2 s at 25,000 tables)")


def parse_keygen(sub) -> None:
    kg = _add(sub, "keygen", "write an Ed25519 key pair in minisign format")
    kg.add_argument("--out", required=True, metavar="BASE", help="writes BASE.key and BASE.pub")
    kg.add_argument("--force", action="store_true", help="overwrite existing key files")


def parse_sign(sub) -> None:
    sg = _add(sub, "sign", "sign a mirror's Merkle root")
    sg.add_argument("dir", help="the mirror directory")
    sg.add_argument("--key", required=True, metavar="BASE.key", help="the secret key")


def parse_prove(sub) -> None:
    pr = _add(sub, "prove", "print an inclusion proof for one file, as JSON")
    pr.add_argument("dir", help="the mirror directory")
    pr.add_argument("path", help="the file, as data/... or a path inside the mirror")


def parse_verify_file(sub) -> None:
    vf = _add(sub, "verify-file", "check one downloaded file against a proof and a root")
    vf.add_argument("file", help="the downloaded file")
    vf.add_argument("--proof", required=True, help="the proof JSON from 'acta-mirror prove'")
    vf.add_argument("--root", required=True, help="the Merkle root you trust (hex), e.g. from a signed statement")


def parse_diff(sub) -> None:
    df = _add(sub, "diff", "compare two mirrors, manifests or index CSVs by acta key")
    df.add_argument("a", help="the older mirror directory, manifest-sha256.txt or index CSV")
    df.add_argument("b", help="the newer one")
    df.add_argument("--json", action="store_true",
                    help='print {"added": [...], "removed": [...], "changed": [...], "failed_in_a": [...], '
                         '"failed_in_b": [...], "counts": {"a", "b", "both", "unchanged"}}')


def parse_replay(sub) -> None:
    r = _add(sub, "replay", "serve the local replay of the 2024 results site")
    r.add_argument("--site", default="resultados2024", help="which site to replay (default resultados2024)")
    r.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    r.add_argument("--port", type=int, default=8024, help="port (default 8024; 0 picks a free one)")
    r.add_argument("--small", action="store_true", help="small synthesized images (a few KB) for fast runs")
    r.add_argument("--faults", help="fault plan, e.g. 429=0.02,503=0.05:3,404=0.001 (see mirror/replay/faults.py)")
    r.add_argument("--seed", type=int, default=0, help="seed for synthesized images and faults (default 0)")
    r.add_argument("--limit", type=_positive_int, help="serve only the first N tables (plus the 20 real scans)")
    r.add_argument("--cache", help="directory to keep rendered images in between runs")
    r.add_argument("--warm", action="store_true", help="render every image into --cache before serving")
    r.add_argument("--epoch", type=_positive_int, default=1, help="2 or more: images with the 'change' fault are re-scanned")
    r.add_argument("--html-version", type=int, choices=(1, 2), default=1, help="which index version the HTML pages follow")


def parse_publish(sub) -> None:
    pub = _add(sub, "publish", "push a mirror to Git remotes (and IPFS)")
    pub.add_argument("dir", help="the mirror directory")
    pub.add_argument("--to", action="append", required=True, metavar="URL",
                     help="target, repeatable: git+file://, git+https://, git+http://, git+ssh://, git://, ipfs://")
    pub.add_argument("--max-repo-bytes", type=_positive_int, default=900_000_000,
                     help="size budget of one shard repository (default 900 MB)")
    pub.add_argument("--max-push-bytes", type=_positive_int, default=1_000_000_000,
                     help="most new file bytes in one push (default 1 GB; GitHub refuses 2 GB)")
    pub.add_argument("--shard-by", choices=("size", "state"), default="size",
                     help="pack states into shards by size (default), or one shard per state")
    pub.add_argument("--ipns", metavar="KEY", help="also publish the IPFS root under this IPNS key (best effort)")
    pub.add_argument("--pin-service", metavar="URL",
                     help="ask this IPFS Pinning Services API endpoint to pin the root (token: ACTA_MIRROR_PIN_TOKEN)")
    pub.add_argument("--dry-run", action="store_true",
                     help="say which files and bytes each target would receive; push nothing")


def parse_car(sub) -> None:
    car = _add(sub, "car", "write the mirror as a CARv1 file (its IPFS DAG, no node needed)")
    car.add_argument("dir", help="the mirror directory")
    car.add_argument("-o", "--output", required=True, help="the CAR file to write")


def parse_restore(sub) -> None:
    rs = _add(sub, "restore", "clone a mirror's shards and reassemble it, verified")
    rs.add_argument("--from", dest="sources", action="append", required=True, metavar="URL",
                    help="a target the mirror was published to, repeatable: each shard comes from the first that has it")
    rs.add_argument("--out", required=True, help="a new directory for the restored mirror")
    rs.add_argument("--pubkey", metavar="BASE.pub", help="the signer's public key: the restored mirror must be "
                                                         "signed with it")


def parse_run(sub) -> None:
    rn = _add(sub, "run", "run a job file: crawl, verify, publish")
    rn.add_argument("job", help="the job file (mirror.toml)")
    rn.add_argument("--shard", default="1/1", help="I/N: crawl only part I of N (publish after merge)")
    rn.add_argument("--no-publish", action="store_true", help="crawl and verify only")
    rn.add_argument("--publish-only", action="store_true", help="verify and publish the mirror as it is")
    rn.add_argument("--dry-run", action="store_true",
                    help="say what the crawl would fetch and each target would receive; change nothing")
    _fetch_flags(rn)


def parse_merge(sub) -> None:
    mg = _add(sub, "merge", "combine shard mirrors into one valid bag")
    mg.add_argument("out", help="the merged mirror (may hold an earlier merge)")
    mg.add_argument("shards", nargs="+", metavar="SHARD_DIR", help="shard mirrors")
    mg.add_argument("--sign-key", metavar="BASE.key", help="sign the merged mirror's root")


def parse_tally(sub) -> None:
    ta = _add(sub, "tally", "decode every acta's QR code and tally the votes")
    ta.add_argument("dir", help="the mirror directory")
    ta.add_argument("--format", choices=("csv", "json", "summary"), default="summary",
                    help="csv: one row per table; json: tables and every level; summary (default)")
    ta.add_argument("--out", help="write to this file instead of standard output")
    ta.add_argument("--coverage", metavar="FILE", help="also write every listed table's status to this CSV")
    ta.add_argument("--ocr", action="store_true",
                    help="also read the printed figures (tesseract): check each QR, count tables whose QR is lost")



def parse_crosscheck(sub) -> None:
    cc = _add(sub, "crosscheck", "compare the QR tally with the published index and official results")
    cc.add_argument("dir", help="the mirror directory")
    cc.add_argument("--against", action="append", required=True, metavar="FILE",
                    help="an index CSV or an official results file (level,code,EG,...), repeatable")
    cc.add_argument("--json", action="store_true", help="print the full report as JSON")
    cc.add_argument("--allow-incomplete", action="store_true",
                    help="exit 0, not 3, when some tables could not be checked and none disagree")
    cc.add_argument("--coverage", metavar="FILE", help="also write every listed table's status to this CSV")
    cc.add_argument("--ocr", action="store_true",
                    help="also read the printed figures (tesseract): a QR that differs from its print is a disagreement")


def parse_site(sub) -> None:
    st = _add(sub, "site", "write a static, browsable 'find your table' site into the mirror")
    st.add_argument("dir", help="the mirror directory")
    st.add_argument("--pubkey", metavar="KEY.pub", help="the signer's public key, shown on every table's page and "
                    "used by its in-browser check")
    st.add_argument("--gateway", metavar="URL", help="an IPFS gateway (https://GATEWAY): each table's page links its "
                    "image by CID there, and its check uses that copy when the mirror's is not beside the site")


def parse_demo(sub) -> None:
    d = _add(sub, "demo", "replay the 2024 site locally, mirror it and verify the mirror")
    d.add_argument("--out", default="demo-out", help="where the demo writes (default ./demo-out)")
    d.add_argument("--limit", type=_positive_int, default=1000, help="tables to replay (default 1000)")
    d.add_argument("--full", action="store_true", help="replay all 25,073 tables (minutes)")
    d.add_argument("--real-size", action="store_true", help="real-size synthesized images (~250 KB) instead of small ones")
    d.add_argument("--no-ipfs", action="store_true", help="write a CAR file instead of starting the IPFS node")


def parse_completion(sub) -> None:
    co = _add(sub, "completion", "print a shell completion script for bash, zsh or fish")
    co.add_argument("shell", choices=("bash", "zsh", "fish"), help="the shell")



def parse_export(sub) -> None:
    ex = _add(sub, "export", "write a mirror as a WARC file or a WACZ package for web archives")
    ex.add_argument("dir", help="the mirror directory")
    what = ex.add_mutually_exclusive_group(required=True)
    what.add_argument("--warc", metavar="OUT.warc.gz", help="write one gzipped WARC 1.1 file")
    what.add_argument("--wacz", metavar="OUT.wacz", help="write a WACZ 1.1.1 package (WARC, index, pages, hashes)")


def parse_timestamp(sub) -> None:
    tsp = _add(sub, "timestamp", "get an RFC 3161 trusted timestamp for the signed root")
    tsp.add_argument("dir", help="the mirror directory (with signed-root.json)")
    tsp.add_argument("--tsa", required=True, metavar="URL", help="the time-stamping authority's URL")
    tsp.add_argument("--tsa-ca", metavar="FILE", help="check the answer against this CA certificate (PEM) before keeping it")
    tsp.add_argument("--timeout", type=_nonneg_float, default=30.0, help="seconds to wait for the authority (default 30)")


def parse_compare(sub) -> None:
    cp = _add(sub, "compare", "compare another copy (folder, sha256 list, mirror) with this mirror, acta by acta")
    cp.add_argument("dir", help="the mirror directory")
    cp.add_argument("other", help="a folder of images, a sha256sum file, a JSON {name: sha256} file, or another mirror")
    cp.add_argument("--json", action="store_true", help="print counts and every acta's row as one JSON object")


PARSERS = [parse_crawl, parse_verify, parse_publish, parse_restore, parse_car, parse_keygen, parse_sign,
           parse_prove, parse_verify_file, parse_diff, parse_run, parse_merge, parse_tally, parse_crosscheck,
           parse_site, parse_replay, parse_demo, parse_completion, parse_export, parse_timestamp,
           parse_compare]
_PARSER_OF = {add.__name__.removeprefix("parse_").replace("_", "-"): add for add in PARSERS}  # by command name


GLOBAL_FLAGS = frozenset({"-v", "--verbose", "--quiet"})  # the options before a command; none takes a value


def named_command(argv: list[str]) -> str | None:
    """The command argv runs, when its words before it are only GLOBAL_FLAGS (or -vv...); None
    for anything else (--help, --version, a word that names no command: the whole parser says)."""
    for word in argv:
        if word in GLOBAL_FLAGS or (len(word) > 2 and word.strip("v") == "-"):
            continue
        return word if word in _PARSER_OF else None
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; with command, one that knows that command alone (it parses that
    command's arguments as the whole parser does, and costs a twentieth to build)."""
    general = "\n".join(f"  {code:<4} {meaning}" for code, meaning in EXIT_MEANINGS.items())
    p = _Parser(prog="acta-mirror", description="Mirror published election tally sheets (actas) into verifiable bags.",
                epilog="examples:\n  acta-mirror demo\n  acta-mirror crawl --help\n\n"
                       f"exit codes (each command's --help lists its own):\n{general}\n\n"
                       "user defaults: $XDG_CONFIG_HOME/acta-mirror/config.toml (see README.md)",
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action=_Versions)
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="say more: -v names every failure and logs steps, -vv logs debug detail")
    p.add_argument("--quiet", action="store_true", help="no progress display, only warnings and errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for add in PARSERS if command is None else [_PARSER_OF[command]]:
        add(sub)
    return p


def _stop_as_interrupt() -> None:
    """SIGTERM (a cancelled CI job, systemd, docker stop) ends a command as Ctrl-C does: the
    crawl stops cleanly, says so and exits 130, instead of dying between two steps."""
    import signal

    def stop(*_) -> None:
        # A shell starts a background command with SIGINT ignored (`acta-mirror run job.toml &`,
        # nohup): passed on as SIGINT, SIGTERM would be ignored too.
        if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
            raise KeyboardInterrupt
        signal.raise_signal(signal.SIGINT)

    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        try:
            signal.signal(signal.SIGTERM, stop)
        except ValueError:
            pass  # called from a thread other than the main one: signals are the host program's


class OutputRefused(MirrorError):
    """Standard output refused a write: its reader went away (`| head`) or its device is full."""

    exit_code = EXIT_DISK


class _Output:
    """sys.stdout or sys.stderr while a command runs. A write standard output refuses is an
    OutputRefused (one line on stderr, exit 3), never a traceback. One standard error refuses
    (a log pipe gone, a full device) is dropped, as are the ones after it: a crawl that can no
    longer say how it goes still archives, and its records say everything."""

    def __init__(self, stream, *, diagnostics: bool = False):
        self._stream = stream
        self._diagnostics = diagnostics
        self._refused = False

    def write(self, text: str) -> int:
        return self._do(self._stream.write, text)

    def flush(self) -> None:
        self._do(self._stream.flush)

    def _do(self, op, *args):
        if self._refused:
            return 0
        try:
            return op(*args)
        except OSError as exc:
            if not self._diagnostics:
                raise OutputRefused(f"cannot write to standard output ({exc.strerror or exc}); what it shows is "
                                    "cut short") from None
            self._refused = True
            _silence_output(self._stream)
            return 0

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def _silence_output(stream) -> None:
    """After a refused write, point the stream's descriptor at /dev/null: Python flushes its
    standard streams at exit, and that flush would fail a second time, with a message of its own."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a real file (a test's capture): nothing is flushed at exit
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, fd)
    os.close(null)


# Commands that keep large records to their end and leave nothing to clean up. Run as the
# acta-mirror command (main(leave=True)), the process ends as soon as such a command has
# returned and its output is flushed, without freeing every record one by one: the command
# leaves them in args.records, which main holds (for verify of 25,000 files, 0.02-0.04 s of
# 0.6 s).
ENDS_AT_ONCE = frozenset({"verify"})


def main(argv: list[str] | None = None, *, leave: bool = False) -> int:
    """Run one command; its exit code. leave=True (the acta-mirror command, not a caller in
    the same process): a command of ENDS_AT_ONCE ends the process when it returns."""
    parser = build_parser(named_command(sys.argv[1:] if argv is None else argv))
    _stop_as_interrupt()
    stdout, stderr = sys.stdout, sys.stderr
    if stdout is not None:
        sys.stdout = _Output(stdout)
    if stderr is not None:
        sys.stderr = _Output(stderr, diagnostics=True)
    try:
        args = parser.parse_args(argv)
        if not args.command:
            parser.print_help()
            return EXIT_USAGE
        level = logging.ERROR if args.quiet else max(logging.DEBUG, logging.WARNING - 10 * args.verbose)
        logging.basicConfig(level=level, stream=sys.stderr, format="acta-mirror: %(levelname)s: %(name)s: %(message)s")
        code = COMMANDS[args.command](args)
        sys.stdout.flush()  # a refused write surfaces here, not at exit
        if leave and args.command in ENDS_AT_ONCE:
            sys.stderr.flush()
            os._exit(code)
        return code
    except MirrorError as exc:
        if isinstance(exc, OutputRefused):
            _silence_output(stdout)
        from .models import printable
        from .publish import redact_message

        step = next_step(exc)
        # no credential in any message; one line, whatever names from a copy it quotes
        message = printable(redact_message(str(exc)))
        print(f"acta-mirror: {message}" + (f"; {step}" if step else ""), file=sys.stderr)
        if os.environ.get("GITHUB_ACTIONS") == "true":  # shown on the run's summary page
            print(f"::error::{message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("acta-mirror: interrupted; re-run to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:  # a refusal no command put in its own words (a name too long for the system, say)
        from .archive import DISK_REFUSED
        from .models import printable

        name = printable(str(exc.filename)) if exc.filename is not None else ""
        name = name if len(name) <= 120 else name[:60] + "…" + name[-40:]
        print(f"acta-mirror: {exc.strerror or type(exc).__name__}" + (f": {name}" if name else ""), file=sys.stderr)
        return EXIT_DISK if exc.errno in DISK_REFUSED else EXIT_USAGE
    finally:
        if isinstance(sys.stdout, _Output):
            sys.stdout = stdout
        if isinstance(sys.stderr, _Output):
            sys.stderr = stderr


def next_step(exc: MirrorError) -> str:
    """What to do about an error that ends a command, said on its line (when it does not say so already)."""
    from .config import ConfigError
    from .models import ArchiveWriteError, MirrorLocked, NotAMirror, SourceUnreachable
    from .progress import cause_of, hint_for

    text = str(exc)
    if isinstance(exc, SourceUnreachable):
        return hint_for(cause_of({"reason": text})) or "check --root and the network, or try --proxy or --alternate"
    if isinstance(exc, ConfigError):
        return "fix the file (README.md lists every key and its type)"
    if isinstance(exc, MirrorLocked):
        return "wait for that run to end, or pass --wait-lock (job file: output.wait_lock)"
    if isinstance(exc, NotAMirror) and "acta-mirror verify" not in text:
        return "give the directory that holds bagit.txt and provenance.jsonl"
    if isinstance(exc, ArchiveWriteError) and "re-run" not in text:
        return "free space or fix permissions, then re-run: everything archived before is intact"
    return ""


def _writes(what: str):
    """For a command that writes outside the archive (a report, a key, a CAR, the site): a write
    the disk refuses (full, read-only) is one line and exit 3, never a traceback."""
    def wrap(command):
        @functools.wraps(command)
        def run(args) -> int:
            try:
                return command(args)
            except OSError as exc:
                from .archive import disk_error

                raise disk_error(exc, what) from None
        return run
    return wrap


# -- crawl ------------------------------------------------------------------------
def _user_layer() -> dict:
    from .config import load_user_config, user_config_path

    layer = load_user_config()
    log.info("user config %s: %s", user_config_path(), "read" if layer else "none")
    return layer


def _log_fetch(fetch: dict) -> None:
    """-v: the settings a run ends up with, after the config file, the job file and the flags."""
    from .publish import redact, register_secrets

    register_secrets(fetch.get("proxy"))  # a password redact() cannot find in a URL (a quote in it)
    shown = {k: (redact(v) if k == "proxy" else v) for k, v in fetch.items() if k != "headers"}
    log.info("fetch settings: %s; extra headers: %s", shown, ", ".join(fetch["headers"]) or "none")


def cmd_crawl(args) -> int:
    import asyncio  # here, not at the top: verify and the other offline commands start faster without it

    from .config import settle
    from .crawl import Counters, CrawlOptions, crawl, fetch_options, parse_shard, plan_crawl

    values = settle(_user_layer(), {"source": {"site": args.site, "root": args.root}}, _fetch_layer(args))
    _log_fetch(values["fetch"])
    opts = CrawlOptions(site=args.site, root=args.root, out=args.out, discover=args.discover,
                        index=args.index, shard=parse_shard(args.shard), wait_lock=args.wait_lock,
                        sign_key=args.sign_key, alternates=tuple(args.alternate), allow_hosts=tuple(args.allow_host),
                        **fetch_options(values["fetch"]))
    if args.dry_run:
        return _print_crawl_plan(asyncio.run(plan_crawl(opts)), args.out, args.json)
    counters = Counters(count_expected=not (args.quiet or getattr(args, "json", False)))  # nobody would see the total
    with _crawl_progress(counters, args):
        result = asyncio.run(crawl(opts, counters))
    return _print_crawl(result, args)


def _crawl_progress(counters, args):
    """The crawl's figures as the shared display reads them."""
    from .progress import Figures, Progress

    def poll() -> Figures:
        return Figures(done=counters.done, total=counters.total, bytes=counters.bytes, retries=counters.retries,
                       failed=counters.failed)
    return Progress("crawl", quiet=args.quiet or getattr(args, "json", False), poll=poll, unit="actas")


def _print_crawl(result, args) -> int:
    from .progress import FailureSummary

    c = result.counters
    where = os.path.join(result.out, "failures.jsonl")
    for rel in result.quarantined:
        print(f"quarantined {rel}: on disk but never recorded (a killed run); kept in .acta-mirror/quarantine",
              file=sys.stderr)
    for name, cut, kept in result.cut_tails:
        print(f"cut {cut:,} bytes from the end of {name}: not a whole record (a killed run, or damage); "
              f"kept in {kept}", file=sys.stderr)
    # the actas' failures only, so they add up to `failed`: pages and index rows have their own counts
    summary = FailureSummary.of(f for f in result.failures if f.get("key") not in ("page", "index"))
    rate = c.done / result.seconds if result.seconds else 0.0
    if args.json:
        print(json.dumps({"mirror": result.out, "discovered": c.discovered, "tables": c.tables, "archived": c.archived,
                          "unchanged": c.unchanged, "not_asked": c.not_asked, "failed": c.failed, "deferred": c.deferred,
                          "pages": c.pages, "pages_failed": c.pages_failed, "rows": c.rows, "rows_failed": c.rows_failed,
                          "vanished": c.vanished, "bytes": c.bytes, "retries": c.retries,
                          "requests": result.requests, "seconds": round(result.seconds, 3),
                          "failures_by_cause": summary.as_json()["by_cause"], "failures": result.failures}, indent=1))
    else:
        _print_failures(result.failures, c, where, args)
        pages = c.listing_gaps() + (" (their actas are not counted)" if c.rows_failed else "")
        deferred = f", {c.deferred} deferred to the next run" if c.deferred else ""
        vanished = (f"; {c.vanished} archived before and no longer listed by the site (kept; "
                    "changes.jsonl marks them vanished)") if c.vanished else ""
        not_asked = f", {c.not_asked} not asked (checked within --recheck-after)" if c.not_asked else ""
        tables = f" for {c.tables} tables" if c.actas() != "actas" else ""
        print(f"{c.discovered} {c.actas()} discovered{tables}: {c.archived} archived, {c.unchanged} unchanged{not_asked}, "
              f"{c.failed} failed{deferred}{pages}{vanished}; {c.retries} retries in {result.requests} requests; "
              f"{c.bytes / 1e6:.1f} MB in {result.seconds:.1f} s ({rate:.0f}/s); mirror {result.out}")
    if c.vanished and os.environ.get("GITHUB_ACTIONS") == "true":  # shown on the run's summary page
        print(f"::warning::{c.vanished} actas archived before are no longer listed by the site (kept)",
              file=sys.stderr)
    if not args.sign_key and _signature_stale(result.out):
        print(f"the signed root in {result.out} no longer matches what it holds: verify and publish refuse it "
              "until it is signed again (acta-mirror sign, or crawl with --sign-key)", file=sys.stderr)
    return EXIT_PROBLEMS if result.failures else EXIT_OK


def _signature_stale(out: str) -> bool:
    if not os.path.lexists(os.path.join(out, "signed-root.json")):
        return False  # unsigned: nothing to go stale (and no need to load the signing code)
    from .evidence import statement_stale

    return statement_stale(out)


def _print_failures(failures: list[dict], c, where: str, args) -> None:
    """Failures grouped by cause with what to try (actas, then index rows, then pages), each against
    the crawl's counters c; every one of them with -v."""
    from .progress import FailureSummary

    if getattr(args, "verbose", 0):
        for f in failures:
            print(f"failed {f.get('key', '')} {f.get('url', '')}: {f.get('reason', '')}", file=sys.stderr)
    pages = [f for f in failures if f.get("key") == "page"]
    rows = [f for f in failures if f.get("key") == "index"]  # a bad row is none of the actas counted
    actas = [f for f in failures if f.get("key") not in ("page", "index")]
    for line in FailureSummary.of(actas).lines(f"{c.done} {c.actas()}", where):
        print(line, file=sys.stderr)
    for line in FailureSummary.of(rows).lines(f"{c.rows} index rows read", where):
        print(line, file=sys.stderr)
    for line in FailureSummary.of(pages).lines(f"{c.pages} pages walked", where):
        print(line, file=sys.stderr)


def _print_crawl_plan(plan, out: str, as_json: bool) -> int:
    from .progress import human_bytes

    if as_json:
        print(json.dumps({"dry_run": True, **plan.__dict__}, indent=1))
        return EXIT_OK
    estimate = (f"about {human_bytes(plan.new * plan.mean_size)} at this mirror's mean of "
                f"{human_bytes(plan.mean_size)} an acta" if plan.mean_size else "size unknown until fetched")
    print(f"dry run: nothing written. The site lists {plan.listed} actas for this shard:")
    print(f"  new: {plan.new} of {plan.listed} would be downloaded ({estimate})")
    print(f"  known: {plan.recheck} of {plan.listed} would be asked again with a conditional request "
          f"(at most {human_bytes(plan.recheck_bytes)} if every one had changed)")
    print(f"  recent: {plan.skipped} of {plan.listed} were checked within --recheck-after and would not be asked")
    if plan.pages_failed:
        print(f"  {plan.pages_failed} of {plan.pages} page(s) could not be read: the listing above may be short",
              file=sys.stderr)
    if plan.rows_failed:
        print(f"  {plan.rows_failed} of {plan.rows} index row(s) were refused (bad index row): their actas are not "
              "counted above",
              file=sys.stderr)
    print(f"  listing took {plan.listing_requests} request(s) (index files or pages), which a crawl makes again; "
          f"mirror {out}")
    return EXIT_OK


# -- verify -------------------------------------------------------------------------
def _outside_the_copy(flag: str, path: str | None, copy: str, what: str, instead: str) -> None:
    """A trust anchor (a public key, a CA) must come from elsewhere than the copy it vouches for."""
    if path and Path(os.path.realpath(path)).is_relative_to(os.path.realpath(copy)):
        raise UsageError(f"{flag} {path} is inside the copy to be checked: {what} that comes with a copy "
                         f"proves nothing; use {instead}")


def cmd_verify(args) -> int:
    from .progress import Progress
    from .timestamp import verify_timestamp
    from .verify import check

    if args.fast and args.cids:
        raise UsageError("--cids hashes files and --fast hashes none: use one or the other")
    _outside_the_copy("--pubkey", args.pubkey, args.dir, "a key", "the key the signer publishes")
    _outside_the_copy("--tsa-ca", args.tsa_ca, args.dir, "a CA", "the one the authority publishes")
    with Progress("verify", quiet=args.quiet or args.json or args.fast) as progress:
        checked = check(args.dir, fast=args.fast, cids=args.cids, progress=progress.count, pubkey=args.pubkey)
    seal = checked.seal
    problems = checked.problems + seal.problems
    stamp_problems, stamp_line = verify_timestamp(args.dir, args.tsa_ca)
    problems += stamp_problems
    if stamp_line and not args.json:
        print(stamp_line)
    listed, found = len(checked.state.manifest), len(checked.state.payload)
    coverage = uncounted = None
    if not problems and args.coverage:  # intact files are not a whole election: what the mirror records of the site's list
        from .audit.coverage import census

        try:
            coverage = census(args.dir, checked.state)
        except (OSError, MirrorError) as exc:  # an unsafe tag file: named, not a traceback
            uncounted = f"not counted ({getattr(exc, 'strerror', None) or exc})"
    if args.json:
        report = {"ok": not problems, "hashed": checked.hashed, "files_listed": listed, "files_found": found,
                  "problems": [p.__dict__ for p in problems],
                  "signature": {"signed": seal.signed, "key_id": seal.key_id, "trusted": seal.trusted,
                                "records_signed": seal.signed and seal.records_signed}}
        if coverage:
            report["coverage"] = {"summary": coverage.summary(), "tables": coverage.total, "source": coverage.source,
                                  "counts": {k: v for k, v in coverage.counts().items() if v}}
        elif uncounted:
            report["coverage"] = {"summary": uncounted}
        if not checked.hashed:
            report["not_checked"] = FAST_CAVEAT
        if stamp_line:
            report["timestamp"] = stamp_line
        print(json.dumps(report, indent=1))
    else:
        for p in problems:
            print(p)
        print(seal.summary)
        if not problems:
            print(f"OK: {args.dir} is intact: {listed:,} of {listed:,} listed files hashed and matched"
                  if checked.hashed else f"OK as far as --fast checks (names, sizes, tag files, provenance, "
                                         f"Merkle root) for {listed:,} of {listed:,} listed files: {args.dir}")
            print(f"coverage: {coverage.summary()} (the list of tables: {coverage.source})" if coverage
                  else f"coverage: {uncounted}" if uncounted
                  else "coverage: not counted (intact says nothing of the tables the mirror lacks: --coverage "
                       "or 'acta-mirror tally' counts them against its index)")
        else:
            print(f"{len(problems)} problem(s) in {args.dir} ({listed:,} files listed in the manifest, "
                  f"{found:,} found in data/)", file=sys.stderr)
        if not checked.hashed:
            print(f"NOT CHECKED: {FAST_CAVEAT}")
    args.records = checked  # held by main to its end: run as the command, freed with the process (ENDS_AT_ONCE)
    return EXIT_PROBLEMS if problems else EXIT_OK


FAST_CAVEAT = ("--fast hashed no file in data/: a change that keeps a file's size is not detected, nor, "
               "in a copy that is not signed, one whose new size was written into provenance.jsonl too "
               "(run verify without --fast for that)")


# -- replay -------------------------------------------------------------------------
def cmd_replay(args) -> int:
    from .replay import FaultPlan, replay_for, serve_forever

    options = dict(seed=args.seed, small=args.small, faults=FaultPlan.parse(args.faults, args.seed),
                   limit=args.limit, cache_dir=args.cache, epoch=args.epoch)
    if args.site == "resultados2024":
        options["html_version"] = args.html_version
    replay = replay_for(args.site, **options)
    if args.warm:
        if not args.cache:
            raise UsageError("--warm needs --cache DIR")
        t = time.monotonic()
        n = replay.warm(os.cpu_count() or 1)
        print(f"rendered {n} images into {args.cache} in {time.monotonic() - t:.1f} s", flush=True)
    try:
        serve_forever(replay, args.host, args.port,
                      on_ready=lambda url: print(f"replay listening on {url}", flush=True))
    except OSError as exc:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    return EXIT_OK


# -- publish and restore ---------------------------------------------------------------
@_writes("publishing")
def cmd_publish(args) -> int:
    from .progress import Progress
    from .publish import PublishError, publishers_for

    options = dict(max_repo_bytes=args.max_repo_bytes, max_push_bytes=args.max_push_bytes, shard_by=args.shard_by,
                   ipns=args.ipns, pin_service=args.pin_service)
    publishers = publishers_for(args.to, **options)  # bad usage fails before any push
    if args.dry_run:
        plans, failed = [], []
        for pub in publishers:
            try:
                plans.append(pub.plan(args.dir))
            except PublishError as exc:
                failed.append(str(exc))
        _print_plans(args.dir, plans)
        for line in failed:
            print(f"acta-mirror: cannot plan: {line}; check the URL and your credentials", file=sys.stderr)
        if failed and len(publishers) > 1:  # with one target, its line above says it all
            print(f"acta-mirror: planned {len(plans)} of {len(publishers)} target(s); {len(failed)} could not "
                  "be planned (above)", file=sys.stderr)
        return EXIT_PROBLEMS if failed else EXIT_OK
    failed = []
    with Progress("publish", quiet=args.quiet) as progress:
        for pub in publishers:
            pub.progress = progress.step
            try:
                receipt = pub.publish(args.dir)
            except PublishError as exc:  # said below, per target: the line counts files
                failed.append(f"{exc}; " + (getattr(exc, "advice", "") or (
                    f"check the URL, your credentials ({pub.credentials}) and that the target exists, then "
                    "re-run: what was pushed stays")))
                continue
            for line in receipt.details:
                print(line)
            print(f"published {receipt.target} ({receipt.kind}): manifest root {receipt.root}"
                  + (f" root CID {receipt.cid}" if receipt.cid else ""))
            if receipt.cid:
                print(receipt.cid)
    for line in failed:
        print(f"acta-mirror: failed: {line}", file=sys.stderr)
    if failed and len(publishers) > 1:  # with one target, its line above says it all
        print(f"acta-mirror: published to {len(publishers) - len(failed)} of {len(publishers)} target(s); "
              f"{len(failed)} failed (above)", file=sys.stderr)
    return EXIT_PROBLEMS if failed else EXIT_OK


def _print_plans(mirror: str, plans: list) -> int:
    from .progress import human_bytes

    print(f"dry run: nothing pushed. {mirror} would send:")
    for plan in plans:
        print(f"  {plan.target}: {plan.files} files, {human_bytes(plan.bytes)}")
        for line in plan.details:
            print(f"    {line}")
    return EXIT_OK


@_writes("restoring")
def cmd_restore(args) -> int:
    from .audit.coverage import census
    from .progress import Progress
    from .publish.git import restore
    from .state import read_state

    with Progress("restore", quiet=args.quiet) as progress:
        lines = restore(args.sources, args.out, progress=progress.step, pubkey=args.pubkey)
    for line in lines:
        print(line)
    state = read_state(args.out)  # restore verified it whole: every listed file was hashed
    listed = len(state.manifest)
    if args.pubkey:
        from .evidence import check_seal

        signed = "signed with the key you gave" + ("" if check_seal(args.out, args.pubkey, state).records_signed else
                                                   " (the payload manifest only: the statement predates signed records)")
    elif os.path.exists(os.path.join(args.out, "signed-root.json")):
        signed = "signature not checked against a key you trust (use --pubkey)"
    else:
        signed = "not signed"
    print(f"restored and verified: {args.out}: {listed:,} of {listed:,} listed files hashed and matched; {signed}; "
          f"coverage: {census(args.out, state).summary()}")
    return EXIT_OK


@_writes("writing the CAR file")
def cmd_car(args) -> int:
    from .publish.ipfs import write_car

    if not os.path.isdir(args.dir) or not os.path.exists(os.path.join(args.dir, "provenance.jsonl")):
        raise UsageError(f"{args.dir}: not a mirror")
    root = write_car(args.dir, args.output)
    print(f"wrote {args.output}: the mirror's UnixFS DAG, root CID")
    print(root)
    return EXIT_OK


# -- evidence ------------------------------------------------------------------------
@_writes("writing the key files")
def cmd_keygen(args) -> int:
    from .sign import generate

    key, pub = f"{args.out}.key", f"{args.out}.pub"
    for path in (key, pub):
        if os.path.lexists(path) and not args.force:  # a link too, even one to nowhere
            raise UsageError(f"{path} exists; refusing to overwrite a key (use --force)")
    secret, public = generate()
    _replace_with(key, secret.text(), 0o600)
    _replace_with(pub, public.text(), 0o644)
    print(f"wrote {key} (secret: keep it safe) and {pub} (publish it)")
    return EXIT_OK


def _replace_with(path: str, text: str, mode: int) -> None:
    """Write text to a new file beside path (mode less the umask) and rename it over path: an
    existing file keeps no say over the new one's permissions (a 0644 key file stayed 0644 with
    the secret in it), and a link there is replaced, never followed."""
    from .manifest import create_beside

    fd, tmp = create_beside(Path(os.path.abspath(path)), mode)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@_writes("signing")
def cmd_sign(args) -> int:
    from .evidence import sign_bag

    from .evidence import STATEMENT

    root = sign_bag(args.dir, args.key)
    statement = json.loads((Path(args.dir) / STATEMENT).read_text(encoding="utf-8"))
    print(f"signed Merkle root {root} of {args.dir}; {statement['coverage']['summary']}")
    return EXIT_OK


def cmd_prove(args) -> int:
    from .evidence import prove

    print(json.dumps(prove(args.dir, args.path), separators=(",", ":")))
    return EXIT_OK


def cmd_verify_file(args) -> int:
    from .evidence import check_proof
    from .sign import SignatureError

    try:
        from .manifest import read_small_file

        proof = json.loads(read_small_file(args.proof, 16 * 1024 * 1024))  # a proof is a few KB
    except RecursionError:
        raise UsageError(f"--proof {args.proof}: not a proof (nested too deeply)") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"--proof {args.proof}: not readable JSON ({getattr(exc, 'strerror', None) or exc})") from None
    if not isinstance(proof, dict):
        raise UsageError(f"--proof {args.proof}: not a proof")
    from .models import printable

    try:
        check_proof(args.file, proof, args.root)
    except SignatureError as exc:
        print(printable(f"NOT VERIFIED: {exc}"))  # the proof's text could draw a 'VERIFIED' line
        return EXIT_PROBLEMS
    print(printable(f"VERIFIED: {args.file} is {proof['path']} under Merkle root {args.root}"))
    return EXIT_OK


def cmd_diff(args) -> int:
    from .evidence import diff_keyed, diff_sources

    from .audit.coverage import read_failures

    left, right = diff_sources(args.a, args.b)
    result = diff_keyed(left, right)
    both = len(left) - len(result["removed"])
    counts = {"a": len(left), "b": len(right), "both": both, "unchanged": both - len(result["changed"])}
    # A table a mirror failed to download (failures.jsonl) is not one its site added or removed
    failed = {side: set(read_failures(path)) if os.path.isdir(path) else set()
              for side, path in (("a", args.a), ("b", args.b))}
    result["failed_in_a"] = [k for k in result["added"] if k in failed["a"]]
    result["failed_in_b"] = [k for k in result["removed"] if k in failed["b"]]
    result["added"] = [k for k in result["added"] if k not in failed["a"]]
    result["removed"] = [k for k in result["removed"] if k not in failed["b"]]
    if args.json:
        print(json.dumps({**result, "counts": counts}))
    else:
        print(f"{args.a}: {counts['a']:,} actas; {args.b}: {counts['b']:,} actas; {counts['unchanged']:,} of the "
              f"{both:,} in both unchanged (by what each records, a sha256 or an image name; no file is read)")
        shown = {"added": "added", "removed": "removed", "changed": "changed",
                 "failed_in_a": f"not archived in {args.a} (its download failed there)",
                 "failed_in_b": f"not archived in {args.b} (its download failed there)"}
        for kind, label in shown.items():
            if kind.startswith("failed") and not result[kind]:
                continue
            print(f"{label}: {len(result[kind])}")
            for key in result[kind][:20]:
                print(f"  {key}")
            if len(result[kind]) > 20:
                print(f"  ... and {len(result[kind]) - 20} more (--json lists all)")
    return EXIT_PROBLEMS if any(result.values()) else EXIT_OK


# -- jobs -----------------------------------------------------------------------------
def cmd_run(args) -> int:
    from .config import load_job
    from .crawl import Counters, parse_shard
    from .job import from_manifests, plan_job, run_job, unnamed_targets

    job = load_job(args.job, user=_user_layer(), flags=_fetch_layer(args))
    _log_fetch(job.values["fetch"])
    shard = parse_shard(args.shard)
    if args.no_publish and args.publish_only:
        raise UsageError("--no-publish and --publish-only exclude each other")
    if args.dry_run:
        crawl_plan, plans = plan_job(job, shard=shard, crawl_step=not args.publish_only,
                                     publish_step=not args.no_publish)
        if crawl_plan:
            _print_crawl_plan(crawl_plan, str(job.resolve(job["output.dir"] or job["publish.manifests"])), False)
        if plans:
            _print_plans("the mirror as it is now (before this crawl)", plans)
        if from_manifests(job) and not args.no_publish and not args.publish_only:
            unheard, record = unnamed_targets(job)
            if unheard:
                print(f"publish: {len(unheard)} target(s) not named in {record} as holding the state, sent it even "
                      f"if nothing changed: {', '.join(unheard)}")
        return EXIT_OK
    from .progress import Progress

    counters = Counters(count_expected=not (args.quiet or getattr(args, "json", False)))  # nobody would see the total

    def shown(step: str):  # each step's own display: the crawl's figures stop when the crawl does
        return _crawl_progress(counters, args) if step == "crawl" else Progress(step, quiet=args.quiet)
    if args.publish_only:
        return _print_run(run_job(job, shard=shard, crawl_step=False, shown=shown), args)
    report = run_job(job, shard=shard, publish_step=not args.no_publish, counters=counters, shown=shown)
    return _print_run(report, args)


def _print_run(report, args=None) -> int:
    if report.crawl:
        c = report.crawl.counters
        _print_failures(report.crawl.failures, c, str(report.mirror / "failures.jsonl"), args)
        gaps = c.listing_gaps()
        print(f"crawl: {c.discovered} discovered, {c.archived} archived, {c.unchanged} unchanged, "
              f"{c.not_asked} not asked (checked within recheck_after), "
              f"{c.failed} failed, {c.deferred} deferred, {c.vanished} vanished{gaps}; {c.retries} retries in "
              f"{report.crawl.requests} requests ({report.crawl.seconds:.1f} s)")
    if report.problems:
        print(f"verify: {len(report.problems)} problem(s)"
              + (f" ({report.listed:,} files listed)" if report.listed else ""))
    elif report.hashed == report.listed:
        print(f"verify: intact: {report.listed:,} of {report.listed:,} listed files hashed and matched")
    else:  # a run without a local mirror holds only what it downloaded
        print(f"verify: {report.hashed:,} new file(s) hashed and matched, of {report.listed:,} recorded; the "
              f"other {report.listed - report.hashed:,} are not held here (published before; only a run that "
              "publishes checks that the targets still hold them)")
    for p in report.problems[:FAILURES_SHOWN]:
        print(f"  {p}")
    if report.coverage:
        print(f"coverage: {report.coverage}")
    for r in report.receipts:
        for line in r.details:
            print(f"publish: {line}")
        print(f"publish: {r.target}: {'updated' if r.changed else 'nothing new'}"
              + (f", root CID {r.cid}" if r.cid else "") + f", Merkle root {r.root}")
    from .publish import NeedsFullMirror
    from .publish.git import RemoteChanged  # their lines say what to do: retrying would not help

    for line in report.publish_failures:
        print(f"acta-mirror: failed: {line}" + ("" if line.endswith((RemoteChanged.advice, NeedsFullMirror.advice)) else
                                                f"; check the target and credentials, then re-run '{report.again}'"),
              file=sys.stderr)
    if len(report.receipts) < report.targets:
        print(f"publish: {len(report.receipts)} of {report.targets} target(s) took the mirror; "
              f"{report.targets - len(report.receipts)} failed")
    for note in report.notes:
        print(note)
    print(f"mirror: {report.mirror}")
    return EXIT_OK if report.ok else EXIT_PROBLEMS


def cmd_merge(args) -> int:
    from .audit.coverage import census
    from .job import merge

    stats = merge(args.out, args.shards, args.sign_key)
    coverage = census(args.out)
    print(f"merged {len(args.shards)} shard(s) into {args.out}: {stats['added']} files added of the "
          f"{stats['files']} they hold ({stats['files'] - stats['added']} there already), {stats['renamed']} kept "
          f"as new versions; verified; {coverage.summary()}")
    absent = coverage.counts()["absent"]
    if absent:  # a shard not given (its job failed?) is a hole, not a smaller election
        print(f"acta-mirror: {absent:,} of {coverage.total:,} tables the index lists are not in the merged "
              "mirror, nor recorded as failed: a shard not merged yet? merge it too", file=sys.stderr)
        return EXIT_PROBLEMS
    return EXIT_OK


# -- audit ----------------------------------------------------------------------------
def _write_report(path: str, text: str) -> None:
    """A report the user names, written beside it and renamed into place: a symbolic link a copy
    planted under that name (tally copy/ --out copy/tally.txt) is replaced, never written through."""
    from .manifest import atomic_write

    try:
        atomic_write(path, text.encode("utf-8"))
    except OSError as exc:
        exc.filename = path  # not the temporary name beside it
        raise


def _write_coverage(result, path: str | None) -> None:
    if path:
        _write_report(path, result.coverage.to_csv())


def _ocr_wanted(args) -> bool:
    """--ocr when tesseract is there; without it, say what is skipped and count without it."""
    if not args.ocr:
        return False
    from .audit.ocr import available

    if available():
        return True
    print("OCR skipped: tesseract with its Spanish data (tesseract-ocr, tesseract-ocr-spa) is not installed; "
          "the printed figures are not read", file=sys.stderr)
    return False


def _print_checks(result, ocr: bool) -> list[str]:
    """With OCR: each archived table's QR-versus-print verdict, counted against the archived
    tables; those with neither reading are counted too (they have no verdict)."""
    from .audit.tally import checks

    if not ocr:
        return []
    counts = checks(result)
    archived = sum(1 for t in result.tables.values() if t.state.status in ("qr", "print", "unreadable"))
    neither = archived - sum(counts.values())
    parts = [f"{n:,} {c}" for c, n in counts.items()] + ([f"{neither:,} not compared (neither read)"] if neither else [])
    lines = ["QR versus print: " + "; ".join(parts) + f" (of {archived:,} archived tables)"]
    for table in result.tables.values():
        if table.check == "MISMATCH":
            lines.append(f"  MISMATCH {table.key}: QR {table.votes if table.state.status == 'qr' else table.state.detail}; "
                         f"print {table.printed}")
    return lines


@_writes("writing the tally")
def cmd_tally(args) -> int:
    from .audit.tally import electors_lines, electors_report, tally, to_csv, to_json
    from .models import printable
    from .progress import Progress

    ocr = _ocr_wanted(args)
    with Progress("tally", quiet=args.quiet, unit="actas") as progress:
        result = tally(args.dir, ocr=ocr, progress=progress.count)
    if args.format == "csv":
        text = to_csv(result)
    elif args.format == "json":
        text = json.dumps(to_json(result), ensure_ascii=False, indent=1) + "\n"
    else:
        lines = [result.coverage.summary(), f"  (the list of tables: {result.coverage.source})"]
        lines += _print_checks(result, ocr)
        lines += electors_lines(electors_report(result), FAILURES_SHOWN)
        for unit in result.level("nation"):
            lines.append(f"{unit.name}: {unit.coverage}")
            lines += [f"  {c:5s} {v:>12,}" for c, v in sorted(unit.votes.items(), key=lambda kv: -kv[1])]
            lines.append(f"  nulos {unit.nulos:>12,}")
            lines += [f"  not read {k}: {d or s}" for k, s, d in unit.unread[:FAILURES_SHOWN]]
            if len(unit.unread) > FAILURES_SHOWN:
                lines.append(f"  ... and {len(unit.unread) - FAILURES_SHOWN} more (--format csv or --coverage FILE)")
        text = "\n".join(map(printable, lines)) + "\n"  # failure reasons come from the copy's failures.jsonl
    if args.out:
        _write_report(args.out, text)
    else:
        sys.stdout.write(text)
    _write_coverage(result, args.coverage)
    return _changed_actas(result)


def _changed_actas(result) -> int:
    """A copy whose acta bytes are not the archived ones is not the archive: its votes were left
    out, and that is said with exit 1, never as a clean tally."""
    from .audit.qr import CHANGED

    changed = [key for key, t in result.tables.items() if t.state.cause == CHANGED]
    if not changed:
        return EXIT_OK
    archived = sum(t.entry is not None for t in result.tables.values())
    print(f"acta-mirror: {len(changed):,} of {archived:,} archived actas are not the bytes the archive recorded "
          f"(first: {changed[0]}); their votes are not counted: run 'acta-mirror verify'", file=sys.stderr)
    return EXIT_PROBLEMS


@_writes("writing the coverage file")
def cmd_crosscheck(args) -> int:
    from .audit.crosscheck import crosscheck, exit_status
    from .audit.tally import electors_lines, tally

    ocr = _ocr_wanted(args)
    result = tally(args.dir, ocr=ocr)
    report = crosscheck(result, args.against)
    _write_coverage(result, args.coverage)
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=1))
        return _changed_actas(result) or exit_status(report, args.allow_incomplete)
    print(report["coverage"])
    print(f"checked {report['checked']:,} of {report['tables']:,} tables")
    for line in _print_checks(result, ocr) + electors_lines(report["electors"], FAILURES_SHOWN):
        print(line)
    sources = report["sources"]
    if report["differences"]:
        print("disagreements (QR minus each file; '-' where the file has no such figure):")
        print("  " + "  ".join(["level", "code", "column", "QR"] + [f"QR-{s}" for s in sources]))
        for d in report["differences"]:
            minus = ["-" if d["minus"][s] is None else f"{d['minus'][s]:+d}" for s in sources]
            print("  " + "  ".join([d["level"], d["code"], d["column"], str(d["qr"])] + minus))
    for r in report["races"]:
        flag = "COULD FLIP" if r["could_flip"] else "holds"
        print(f"race {r['level']} {r['code']} {r['name']} ({r['coverage']}): {r['leader']} leads {r['runner_up']} "
              f"by {r['margin']:,} in the tables read; {r['votes_in_dispute']:,} votes in dispute: {flag}")
    unchecked = report["unchecked"]
    if unchecked:
        print(f"{sum(len(k) for k in unchecked.values()):,} table(s) not checked:")
        for reason, keys in unchecked.items():
            print(f"  {reason} ({len(keys):,}): {' '.join(keys)}")
    for f in report["unverifiable"][:FAILURES_SHOWN]:
        print(f"figure not checked: {f['source']} {f['level']} {f['code']}: {f['reason']}")
    if len(report["unverifiable"]) > FAILURES_SHOWN:
        print(f"... and {len(report['unverifiable']) - FAILURES_SHOWN} more figures not checked (--json)")
    kinds = "; ".join(f"{v['units']:,} {k} ({v['figures']:,} figures)" for k, v in report["summary"].items())
    units = sum(v["units"] for v in report["summary"].values())
    print(f"{len(report['tables_in_disagreement'])} of {report['checked']:,} checked table(s) disagree"
          + (f"; {units:,} unit(s) in all: {kinds}" if kinds else "")
          + f"; {len(report['unverifiable']):,} of {report['given']:,} units the files give could not be checked")
    return _changed_actas(result) or exit_status(report, args.allow_incomplete)


@_writes("writing the site")
def cmd_site(args) -> int:
    from .audit.site import build_site

    _outside_the_copy("--pubkey", args.pubkey, args.dir, "a key", "the key the signer publishes")
    result = build_site(args.dir, args.pubkey, args.gateway)
    for warning in result.warnings:
        print(f"acta-mirror: warning: {warning}", file=sys.stderr)
    print(f"wrote the site ({result.coverage}): open {result.index}")
    return EXIT_PROBLEMS if result.warnings else EXIT_OK


# -- demo ---------------------------------------------------------------------------
def cmd_demo(args) -> int:
    from .demo import run_demo
    from .job import verify_counted

    report = run_demo(Path(args.out), limit=None if args.full else args.limit, small=not args.real_size,
                      use_ipfs=not args.no_ipfs)
    for i, step in enumerate(report.steps, 1):
        print(f"{i}. {step}")
    problems, listed, _state = verify_counted(report.mirror)
    print(f"{len(report.steps) + 1}. verified {report.mirror}: "
          + (f"intact: {listed:,} of {listed:,} listed files hashed and matched" if not problems
             else f"{len(problems)} problem(s) ({listed:,} files listed)"))
    print("Check it yourself:")
    for line in report.checks:
        print(f"   {line}")
    print("Stopped the replay" + (" and the IPFS node." if report.ipfs else "."))
    return EXIT_OK if report.ok and not problems else EXIT_PROBLEMS


def cmd_completion(args) -> int:
    from .completion import script

    sys.stdout.write(script(build_parser(), args.shell))
    return EXIT_OK


def cmd_export(args) -> int:
    from .export import export_wacz, export_warc

    result = export_warc(args.dir, args.warc) if args.warc else export_wacz(args.dir, args.wacz)
    for p in result.problems[:FAILURES_SHOWN]:
        print(p, file=sys.stderr)
    for note in result.notes:
        print(note)
    left_out = result.recorded - result.responses
    evidence = len(result.problems) - left_out  # tag files the WACZ copies under evidence/
    print(f"wrote {result.out}: {result.responses} of {result.recorded} recorded files as responses "
          f"({result.bytes / 1e6:.1f} MB of payload), {result.revisits} revisits; {left_out} of {result.recorded} "
          "left out" + (f"; {evidence} evidence file(s) left out" if evidence else ""))
    return EXIT_PROBLEMS if result.problems else EXIT_OK


def cmd_timestamp(args) -> int:
    from .timestamp import timestamp

    attested, new = timestamp(args.dir, args.tsa, ca=args.tsa_ca, timeout=args.timeout)
    when = f"{attested.time:%Y-%m-%d %H:%M:%S} UTC"
    if new:
        print(f"timestamped {args.dir}/signed-root.json: existed by {when}, attested by {attested.authority}; "
              f"token signed-root.json.tsr" + ("" if args.tsa_ca else " (not checked against a CA: pass --tsa-ca)"))
    else:
        print(f"already timestamped: signed-root.json existed by {when} ({attested.authority}); nothing sent")
    return EXIT_OK


def cmd_compare(args) -> int:
    from .compare import LABELS, compare, to_json
    from .models import printable

    report = compare(args.dir, args.other)
    if args.json:
        print(json.dumps(to_json(report), ensure_ascii=False))
    else:
        total = len(report.rows)
        for label in LABELS:
            print(f"{label:18s} {report.counts[label]:>7,} of {total:,} actas")
        for note in report.notes:
            print(note)
        doubtful = set(report.unread) | set(report.contradicted)
        for row in report.rows:
            if row.label != "identical" or row.there in doubtful:  # their names are anyone's: shown escaped
                print(printable(f"  {row.label:18s} {row.key}  {row.there or row.here}  {row.detail}"))
        shown = sum(1 for row in report.rows if row.label == "identical" and row.there not in doubtful)
        if shown:
            print(f"({shown:,} identical actas not listed; --json lists every acta)")
    return EXIT_OK if report.agree else EXIT_PROBLEMS


COMMANDS = {
    "tally": cmd_tally,
    "crosscheck": cmd_crosscheck,
    "site": cmd_site,
    "demo": cmd_demo,
    "run": cmd_run,
    "merge": cmd_merge,
    "crawl": cmd_crawl,
    "publish": cmd_publish,
    "restore": cmd_restore,
    "car": cmd_car,
    "keygen": cmd_keygen,
    "sign": cmd_sign,
    "prove": cmd_prove,
    "verify-file": cmd_verify_file,
    "diff": cmd_diff,
    "verify": cmd_verify,
    "replay": cmd_replay,
    "completion": cmd_completion,
    "export": cmd_export,
    "timestamp": cmd_timestamp,
    "compare": cmd_compare,
}
