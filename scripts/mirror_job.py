#!/usr/bin/env python3
"""The steps of the scheduled mirror job: what GitHub Actions runs, and what the tests run here.

    mirror_job.py run JOB                      one scheduled run (from the manifests folder when the job
                                               has no output.dir): download, verify, publish the delta
    mirror_job.py crawl JOB --shard I/N        crawl one shard (failed actas are reported, not fatal)
    mirror_job.py merge JOB SHARD_DIR...       merge shard mirrors into the job's mirror, sign it
    mirror_job.py publish JOB                  verify and publish the merged mirror, copy its manifests
    mirror_job.py commit-manifests REPO MSG    commit manifests/ and push, with pull-rebase-retry

The signing key comes from ACTA_MIRROR_SIGN_KEY (the key file's text, e.g. an Actions
secret) or ACTA_MIRROR_SIGN_KEY_FILE; Git credentials from ACTA_MIRROR_GIT_USERNAME and
ACTA_MIRROR_GIT_PASSWORD. Exit codes as acta-mirror's; on GitHub Actions a failure also
prints an `::error::` line, shown on the run's page.
"""
from __future__ import annotations

import atexit
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mirror.__main__ import utf8_names  # noqa: E402
from mirror.audit.coverage import census  # noqa: E402
from mirror.cli import EXIT_INTERRUPTED, EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, _print_run, _stop_as_interrupt  # noqa: E402
from mirror.config import load_job  # noqa: E402
from mirror.crawl import parse_shard  # noqa: E402
from mirror.job import SIGN_KEY_ENV, merge, mirror_dir, run_job  # noqa: E402
from mirror.models import MirrorError  # noqa: E402
from mirror.publish import redact_message  # noqa: E402

PUSH_ATTEMPTS = 5  # push, and on rejection pull --rebase and push again


def _key_file() -> str | None:
    """The signing key given as text (ACTA_MIRROR_SIGN_KEY, a CI secret) as a path the job can
    read. The secret key must not outlive the step (a self-hosted runner or a laptop keeps its
    temp folder): where Linux offers it, the file lives in memory only (memfd), readable by this
    process alone through /proc/self/fd and gone with it, even when it is killed with -9.
    Elsewhere, or without /proc, it is a temp file (0600), removed at exit."""
    text = os.environ.get("ACTA_MIRROR_SIGN_KEY", "")
    if not text.strip():
        return os.environ.get(SIGN_KEY_ENV) or None
    data = (text if text.endswith("\n") else text + "\n").encode()
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("acta-mirror-key", os.MFD_CLOEXEC)  # left open: the path lives as long as it
        os.write(fd, data)
        path = f"/proc/self/fd/{fd}"
        if os.path.exists(path):
            os.environ[SIGN_KEY_ENV] = path
            return path
        os.close(fd)  # no /proc (a sandbox or chroot without it): the run refused the key it could not read
    fd, path = tempfile.mkstemp(prefix="acta-mirror-key-")
    atexit.register(_remove, path)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.environ[SIGN_KEY_ENV] = path
    return path


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def run(args: list[str]) -> int:
    job = load_job(args[0])
    _key_file()
    report = run_job(job)
    _print_run(report)
    if report.problems or report.publish_failures:
        _error(f"{job.path}: " + "; ".join([str(p) for p in report.problems[:1]] + report.publish_failures[:1]))
        return EXIT_PROBLEMS
    return EXIT_OK  # failed actas are listed in failures.jsonl; the next run retries them


def _error(message: str) -> None:
    print(f"mirror_job: {message}", file=sys.stderr)
    if os.environ.get("GITHUB_ACTIONS") == "true":
        print(f"::error::{message}", file=sys.stderr)


def crawl(args: list[str]) -> int:
    job = load_job(args[0])
    shard = parse_shard((args[args.index("--shard") + 1:] or [""])[0]) if "--shard" in args else (1, 1)
    _key_file()
    report = run_job(job, shard=shard, publish_step=False)
    _print_run(report)
    if report.problems:
        return EXIT_PROBLEMS
    return EXIT_OK  # failed actas are listed in failures.jsonl; the next run retries them


def merge_shards(args: list[str]) -> int:
    job = load_job(args[0])
    given = args[1:]
    shards = [s for s in given if Path(s, "provenance.jsonl").exists()]
    missing = [s for s in given if s not in shards]
    if not shards:
        print(f"mirror_job: none of the {len(given)} shard folder(s) holds a mirror; nothing merged", file=sys.stderr)
        return EXIT_USAGE
    out = mirror_dir(job, (1, 1))
    stats = merge(out, shards, _key_file())
    coverage = census(out)
    print(f"merged {len(shards)} of {len(given)} shard(s) into {out}: {stats['added']} files added; "
          f"{coverage.summary()}")
    if missing:  # a shard's job failed or its artifact is gone: what it held is not in this merge
        print(f"mirror_job: {len(missing)} of {len(given)} shard folder(s) hold no mirror, not merged: "
              f"{', '.join(missing)}", file=sys.stderr)
    absent = coverage.counts()["absent"]
    if absent:  # a shard whose folder was not even given (`merge JOB shards/*` without it) shows only here
        print(f"mirror_job: {absent:,} of {coverage.total:,} tables the index lists are not in the merged mirror, "
              "nor recorded as failed: a shard not merged?", file=sys.stderr)
    return EXIT_PROBLEMS if missing or absent else EXIT_OK


def publish(args: list[str]) -> int:
    job = load_job(args[0])
    return _print_run(run_job(job, crawl_step=False))


def commit_manifests(args: list[str]) -> int:
    repo, message = args[0], args[1]

    def git(*a: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", repo, *a], capture_output=True, text=True, check=check)

    git("add", "--", "manifests")
    if git("diff", "--cached", "--quiet", check=False).returncode == 0:
        print("manifests: nothing changed, nothing committed")
        return EXIT_OK
    git("-c", "user.name=acta-mirror", "-c", "user.email=acta-mirror@localhost", "commit", "-q", "-m", message)
    for attempt in range(1, PUSH_ATTEMPTS + 1):
        if git("push", "-q", check=False).returncode == 0:
            print(f"manifests: committed and pushed (attempt {attempt})")
            return EXIT_OK
        time.sleep(random.uniform(0, 2 ** attempt))
        rebase = git("-c", "user.name=acta-mirror", "-c", "user.email=acta-mirror@localhost",
                     "pull", "--rebase", "-q", check=False)
        if rebase.returncode != 0:
            git("rebase", "--abort", check=False)
            print(f"mirror_job: pull --rebase failed: {rebase.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
            return EXIT_PROBLEMS
    print(f"mirror_job: push still rejected after {PUSH_ATTEMPTS} attempts", file=sys.stderr)
    return EXIT_PROBLEMS


STEPS = {"run": run, "crawl": crawl, "merge": merge_shards, "publish": publish, "commit-manifests": commit_manifests}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in STEPS or len(argv) < 2:
        print("usage: mirror_job.py {run,crawl,merge,publish,commit-manifests} ... (see the script's header)",
              file=sys.stderr)
        return EXIT_USAGE
    _stop_as_interrupt()  # a cancelled workflow sends SIGINT, then SIGTERM
    try:
        return STEPS[argv[0]](argv[1:])
    except KeyboardInterrupt:
        print("mirror_job: interrupted; re-run to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MirrorError as exc:
        _error(redact_message(str(exc)))
        return exc.exit_code
    except subprocess.CalledProcessError as exc:
        print(f"mirror_job: git {' '.join(exc.cmd[3:5])} failed: {exc.stderr.strip()[:300]}", file=sys.stderr)
        return EXIT_PROBLEMS


if __name__ == "__main__":
    utf8_names()  # a bag's paths are UTF-8 whatever the locale
    sys.exit(main(sys.argv[1:]))
