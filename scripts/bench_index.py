#!/usr/bin/env python3
"""Benchmark the crawl's writes into its on-disk index (archindex) and print CPU and wall seconds.

    python3 scripts/bench_index.py [--rounds 5] [--batch 512] [--work bench-out/index] [--baseline CHECKOUT]

One provenance record per table of the real V1 index (24,532, real keys, one folder per center
as a crawl lays them out, made-up digests and URLs) is written into a fresh index in batches of
--batch files, as the crawl's committing thread writes a batch: its files, URLs, folders, listed
actas and the records' identities, then COMMIT. Each round runs in a new process, best of three
passes; with --baseline, rounds alternate with the code of another checkout. Prints the median
CPU seconds (user + system of the writing process) and wall seconds of each.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def one_pass(work: Path, batch: int) -> tuple[float, float]:
    from mirror import archindex
    from mirror.models import Entry
    from mirror.replay.data import index_file

    entries = []
    for n, row in enumerate(index_file(1).rows):
        key = row.key
        folder = f"data/{key[:2]}/{key[:4]}/{key[:6]}/{key[:9]}"
        url = f"http://127.0.0.1:8080/{key}.jpg"
        entries.append(Entry(key=key, kind="acta", version=1, path=f"{folder}/{key}.jpg",
                             sha256=hashlib.sha256(key.encode()).hexdigest(), size=8000 + n % 512, cid="",
                             url=url, final_url=url, host="127.0.0.1", fetched_at="2026-11-29T18:00:00.000000Z",
                             status=200, etag=f'"{n:x}"', last_modified="", content_type="image/jpeg",
                             site="resultados2024", page="http://127.0.0.1:8080/"))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    index = archindex.ArchiveIndex(work)
    identity = archindex.Digest(work / "records")  # absent: an empty identity, as a new mirror's
    index.open(identity, identity)
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(0, len(entries), batch):
        part = entries[i:i + batch]
        index.write(part, [], {}, {e.key: e.url for e in part}, (identity, identity))
        index.commit()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    index.close()
    shutil.rmtree(work, ignore_errors=True)
    return cpu, wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=512, help="files per batch (archive.BATCH_FILES)")
    ap.add_argument("--work", type=Path, default=ROOT / "bench-out" / "index")
    ap.add_argument("--baseline", type=Path, help="another checkout, run in alternating rounds")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # one round, in this process
    args = ap.parse_args()
    if args.one:
        cpu, wall = min(one_pass(args.work, args.batch) for _ in range(3))
        print(f"{cpu:.4f} {wall:.4f}")
        return 0
    trees = {"ours": ROOT} | ({"baseline": args.baseline.resolve()} if args.baseline else {})
    got: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
    for r in range(1, args.rounds + 1):
        for name, tree in trees.items():
            env = {**os.environ, "PYTHONPATH": str(tree)}
            out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--one", "--batch", str(args.batch),
                                  "--work", str(args.work / name)], env=env, cwd=tree, capture_output=True, text=True)
            if out.returncode != 0:
                raise SystemExit(f"{name}: {out.stderr.strip().splitlines()[-1:]}")
            cpu, wall = map(float, out.stdout.split())
            got[name].append((cpu, wall))
            print(f"  round {r} {name}: CPU {cpu:.3f} s, wall {wall:.3f} s", flush=True)
    for name, runs in got.items():
        print(f"{name}: index writes of 24,532 files in batches of {args.batch}: CPU median "
              f"{statistics.median(c for c, _ in runs):.3f} s, wall median {statistics.median(w for _, w in runs):.3f} s "
              f"({args.rounds} rounds, best of 3 passes each)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
