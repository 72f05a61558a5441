#!/usr/bin/env python3
"""Benchmark Git publishing against a local bare repository and print figures.

    python3 scripts/bench_publish.py [--work bench-out] [--max-repo-bytes 60000000]

It crawls the replay (full index, small images; rendered images are cached in WORK/cache)
into a mirror that lacks the last 100 tables, publishes it (the first publish), crawls
the full index (100 new actas), publishes again (the incremental publish), and prints
the time of each and the packed size of every shard repository.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def run(*args: str) -> float:
    t = time.perf_counter()
    subprocess.run([PY, "-m", "mirror", *args], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default=str(ROOT / "bench-out"))
    ap.add_argument("--port", type=int, default=18030)
    ap.add_argument("--max-repo-bytes", type=int, default=60_000_000)
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    replay = subprocess.Popen([PY, "-m", "mirror", "replay", "--port", str(args.port), "--small", "--cache",
                               str(work / "cache"), "--warm"], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    for line in replay.stdout:
        if line.startswith("replay listening on"):
            base = line.split()[-1]
            break
    try:
        raw = urllib.request.urlopen(f"{base}/RESULTADOS_2024_CSV_V1.csv").read()
        lines = raw.splitlines(keepends=True)
        partial = work / "index-minus-100.csv"
        partial.write_bytes(b"".join(lines[:-100]))
        mirror = work / "pub-mirror"
        remotes = work / "pub-remotes"
        shutil.rmtree(mirror, ignore_errors=True)
        shutil.rmtree(remotes, ignore_errors=True)
        run("crawl", "resultados2024", "--root", base, "--out", str(mirror), "--index", str(partial), "--quiet")
        target = f"git+file://{remotes}/actas.git"
        t_first = run("publish", str(mirror), "--to", target, "--max-repo-bytes", str(args.max_repo_bytes), "--quiet")
        run("crawl", "resultados2024", "--root", base, "--out", str(mirror), "--quiet")
        t_inc = run("publish", str(mirror), "--to", target, "--max-repo-bytes", str(args.max_repo_bytes), "--quiet")
        t_none = run("publish", str(mirror), "--to", target, "--max-repo-bytes", str(args.max_repo_bytes), "--quiet")
        files = sum(1 for p in (mirror / "data").rglob("*") if p.is_file())
        print(f"mirror: {files} files")
        print(f"first publish:        {t_first:6.2f} s")
        print(f"publish of 100 new:   {t_inc:6.2f} s")
        print(f"publish with nothing: {t_none:6.2f} s")
        for repo in sorted(remotes.glob("*.git")):
            size = sum(p.stat().st_size for p in repo.rglob("*") if p.is_file())
            count = subprocess.run(["git", "-C", str(repo), "ls-tree", "-r", "--name-only", "main"],
                                   capture_output=True, text=True).stdout.count("\n")
            print(f"  shard {repo.name}: {size / 1e6:6.1f} MB on disk, {count} files")
    finally:
        replay.terminate()
        replay.wait()


if __name__ == "__main__":
    main()
