#!/usr/bin/env python3
"""The fault campaign: kill -9 at random moments of crawl, publish and merge, then fuzz every parser.

    python3 scripts/fault_campaign.py [--kills 20] [--fuzz-examples 3000] [--work bench-out/faults]

After each kill the same command runs again to the end; the result must be a valid bag (or a
valid set of shard repositories) with nothing lost or recorded twice. Prints the figures.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mirror.crawl import CrawlOptions, crawl  # noqa: E402
from mirror.manifest import read_manifest, read_provenance  # noqa: E402
from mirror.replay import Replay, ReplayThread  # noqa: E402
from mirror.verify import verify  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def kill_then_finish(cmd: list[str], rng: random.Random, low: float, high: float) -> bool:
    """Start cmd, SIGKILL it at a random moment, then run it to the end. True if the kill landed."""
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(rng.uniform(low, high))
    landed = proc.poll() is None
    if landed:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    return landed


def check_bag(path: Path, expected_keys: int | None = None) -> None:
    problems = verify(path)
    assert not problems, problems[:3]
    paths = [e.path for e in read_provenance(path / "provenance.jsonl")]
    assert len(paths) == len(set(paths)), "a file recorded twice"
    if expected_keys is not None:
        keys = {e.key for e in read_provenance(path / "provenance.jsonl") if e.kind == "acta"}
        assert len(keys) == expected_keys, (len(keys), expected_keys)


def campaign(cmd: list[str], reset, check, kills: int, rng: random.Random) -> int:
    """Time one uninterrupted run, then kill inside that window (mostly from scratch), finish, check."""
    reset()
    t = time.monotonic()
    subprocess.run(cmd, env=ENV, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    window = time.monotonic() - t
    check()
    landed = 0
    for _ in range(kills):
        if rng.random() < 0.8:
            reset()
        landed += kill_then_finish(cmd, rng, 0.05 * window, 0.95 * window)
        subprocess.run(cmd, env=ENV, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        check()
    return landed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--fuzz-examples", type=int, default=3000)
    ap.add_argument("--work", default=str(ROOT / "bench-out" / "faults"))
    args = ap.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rng = random.Random(2024)
    figures = {}
    with ReplayThread(Replay(small=True, limit=300, faults=None)) as replay:
        tables = len(replay.replay.expected())
        out = work / "crawl"
        crawl_cmd = [sys.executable, "-m", "mirror", "crawl", "resultados2024", "--root", replay.url, "--out",
                     str(out), "--quiet", "--concurrency", "4", "--rate", "150"]
        figures["crawl kills"] = campaign(crawl_cmd, lambda: shutil.rmtree(out, ignore_errors=True),
                                          lambda: check_bag(out, tables), args.kills, rng)
        remote = work / "remote"
        publish_cmd = [sys.executable, "-m", "mirror", "publish", str(out), "--to", f"git+file://{remote}/a.git",
                       "--max-push-bytes", "300000", "--max-repo-bytes", "1000000", "--quiet"]

        def reset_remote():
            shutil.rmtree(remote, ignore_errors=True)
            shutil.rmtree(out / ".acta-mirror" / "git", ignore_errors=True)

        def check_remote():
            restored = work / "restored"
            shutil.rmtree(restored, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "mirror", "restore", "--from", f"git+file://{remote}/a.git",
                            "--out", str(restored)], env=ENV, check=True, stdout=subprocess.DEVNULL)
            assert read_manifest(restored / "manifest-sha256.txt") == read_manifest(out / "manifest-sha256.txt")

        figures["publish kills"] = campaign(publish_cmd, reset_remote, check_remote, args.kills, rng)
        shards = []
        for i in (1, 2, 3):
            s = work / f"shard{i}"
            asyncio.run(crawl(CrawlOptions(site="resultados2024", root=replay.url, out=str(s), shard=(i, 3))))
            shards.append(str(s))
        merged = work / "merged"
        merge_cmd = [sys.executable, "-m", "mirror", "merge", str(merged), *shards]

        def check_merged():
            check_bag(merged, tables)
            assert (merged / "manifest-sha256.txt").read_bytes() == (out / "manifest-sha256.txt").read_bytes()

        figures["merge kills"] = campaign(merge_cmd, lambda: shutil.rmtree(merged, ignore_errors=True),
                                          check_merged, args.kills, rng)
    t = time.monotonic()
    fuzz = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:warnings", str(ROOT / "tests" / "test_fuzz.py")],
                          env={**ENV, "ACTA_MIRROR_FUZZ_EXAMPLES": str(args.fuzz_examples)}, cwd=ROOT,
                          capture_output=True, text=True)
    figures["fuzz"] = f"{fuzz.stdout.strip().splitlines()[-1]} with {args.fuzz_examples} examples per target " \
                      f"in {time.monotonic() - t:.0f} s"
    for k, v in figures.items():
        print(f"{k}: {v}" + (f" of {args.kills} landed mid-run" if "kills" in k else ""))
    print(f"every re-run ended in a valid bag with all {tables} actas, none recorded twice")


if __name__ == "__main__":
    main()
