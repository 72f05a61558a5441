"""Mutation score of the evidence core: mutmut on each file, with a fast targeted test command.

mutmut changes files on disk, so it runs in throw-away copies of this checkout (never here:
other test runs would see the mutants). Each file gets its own copy; --jobs copies run side by
side. Each mutant is tested with tests/test_evidence_core.py only, narrowed to the tests of the
mutated module where that is enough, and stopped at the first failure.

    python3 scripts/mutation.py                       # every evidence-core file, 2 copies at a time
    python3 scripts/mutation.py mirror/merkle.py      # one file
    python3 scripts/mutation.py --jobs 1 --keep DIR   # keep the copies (mutmut show ID inside one)
    python3 scripts/mutation.py --keep DIR --again    # after adding tests: re-test what survived

Prints, per file: killed (incl. timeouts and suspicious) of mutants tested, and the score.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE = ["mirror/merkle.py", "mirror/sign.py", "mirror/manifest.py", "mirror/verify.py", "mirror/evidence.py",
        "mirror/state.py"]
TESTS = "tests/test_evidence_core.py"
# The tests that can notice a mutant of each module (pytest -k); -x stops at the first failure.
MERKLE_TESTS = "known_answer or leaf_and_node or roots_and_every or all_proofs or single_leaf or manifest_lines"
SIGN_TESTS = "keys_round or minisign or altered_sign or bad_key or messages_name"
ONLY = {
    "mirror/merkle.py": f"{MERKLE_TESTS} or prove",
    "mirror/sign.py": f"{SIGN_TESTS} or signed or seal or statement or embedded",
    "mirror/state.py": f"not ({MERKLE_TESTS} or {SIGN_TESTS})",
    "mirror/verify.py": f"not ({MERKLE_TESTS} or {SIGN_TESTS})",
    "mirror/evidence.py": f"not ({MERKLE_TESTS} or {SIGN_TESTS})",
}
KILLED = ("ok_killed", "bad_timeout", "ok_suspicious")
CONFIG = '''
ONLY = {only!r}


def pre_mutation(context):
    if context.filename in ONLY:
        context.config.test_command += " -k " + repr(ONLY[context.filename])
'''


def copy_checkout(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file() and not src.is_symlink():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    (dest / "mutmut_config.py").write_text(CONFIG.format(only=ONLY))


RUNNER = """#!{python}
# mutmut 2 counts only exit code 1 as a kill; a mutant that does not even import (pytest exit 2) is
# one too. In process, so that mutmut's timeout kills the test run itself. No plugin is loaded, so
# the project's addopts (xdist's -n) are set aside.
import sys

import pytest

sys.exit(1 if pytest.main(["-o", "addopts=", "-x", "-q", "-p", "no:cacheprovider", "--noconftest", "{tests}"]
                          + sys.argv[1:]) else 0)
"""


def start(files: list[str], work: Path) -> subprocess.Popen:
    copy_checkout(work)
    # No plugins and no conftest (the replay fixtures import aiohttp and Pillow): start-up is
    # most of a run's cost, and the core tests need neither.
    (work / "run-tests").write_text(RUNNER.format(python=sys.executable, tests=TESTS))
    (work / "run-tests").chmod(0o755)
    runner = "./run-tests"
    log = open(work / "mutmut.log", "a")
    # No bytecode: a mutant of the same size written in the same second as the original would
    # otherwise be run from the original's cached .pyc and pass for a survivor.
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    # A generous time base: on a shared machine a slow run must not pass for a killed mutant.
    return subprocess.Popen(["mutmut", "run", "--paths-to-mutate", ",".join(files), "--runner", runner,
                             "--tests-dir", "tests", "--no-progress", "--simple-output", "--test-time-base", "10"],
                            cwd=work, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def scores(work: Path) -> dict[str, dict[str, int]]:
    db = sqlite3.connect(work / ".mutmut-cache")
    rows = db.execute("SELECT SourceFile.filename, Mutant.status, COUNT(*) FROM Mutant "
                      "JOIN Line ON Mutant.line = Line.id JOIN SourceFile ON Line.sourcefile = SourceFile.id "
                      "GROUP BY SourceFile.filename, Mutant.status").fetchall()
    out: dict[str, dict[str, int]] = {}
    for filename, status, n in rows:
        out.setdefault(filename, {})[status] = n
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*", default=CORE)
    ap.add_argument("--jobs", type=int, default=2, help="copies run side by side (default 2)")
    ap.add_argument("--keep", help="make the copies under this folder and keep them")
    ap.add_argument("--again", action="store_true",
                    help="with --keep: refresh the kept copies from this checkout and run again; mutmut re-tests "
                         "only what was not killed, and mutants of lines that changed")
    args = ap.parse_args()
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="acta-mutation-"))
    base.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    runs, waiting = [], list(args.files)
    # One copy per file (a crashed mutmut loses one file, not several), --jobs of them at once.
    try:
        while waiting or any(proc.poll() is None for _w, proc in runs):
            if waiting and sum(proc.poll() is None for _w, proc in runs) < args.jobs:
                filename = waiting.pop(0)
                work = base / f"copy-{Path(filename).stem}"
                if not args.again:
                    shutil.rmtree(work, ignore_errors=True)
                runs.append((work, start([filename], work)))
                continue
            time.sleep(2)
    except KeyboardInterrupt:
        for _work, proc in runs:  # mutmut's own test workers are in its session
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        raise
    total_killed = total = 0
    print(f"mutation score of the evidence core ({time.monotonic() - started:.0f} s; tests: {TESTS})")
    for work, proc in runs:
        if proc.returncode & 1:
            print(f"  mutmut failed in {work} (see mutmut.log there): its untested mutants were not run")
        for filename, counts in sorted(scores(work).items()):
            tested = sum(n for status, n in counts.items() if status not in ("untested", "skipped"))
            killed = sum(counts.get(s, 0) for s in KILLED)
            total_killed += killed
            total += tested
            detail = ", ".join(f"{s} {n}" for s, n in sorted(counts.items()))
            print(f"  {filename:22s} {killed:4d} of {tested:4d} mutants killed: {100 * killed / max(tested, 1):5.1f}%"
                  f"   ({detail})")
    print(f"  {'all':22s} {total_killed:4d} of {total:4d} mutants killed: {100 * total_killed / max(total, 1):5.1f}%")
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    else:
        print(f"copies kept in {base}: 'mutmut results' / 'mutmut show ID' inside each")
    return 0


if __name__ == "__main__":
    sys.exit(main())
