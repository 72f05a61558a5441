#!/usr/bin/env python3
"""Measure the structural image check (mirror/imagecheck.py) and print figures (never a pass/fail test).

It runs on every download, so it is compared with the sha256 the fetcher computes anyway,
over the 20 real scans shipped with the replay (~250 KB baseline JPEGs), fed two ways: as the
fetcher feeds a body (in the pieces libcurl hands over, 16 KB each, each checked and hashed as it
comes), and in 1,460-byte pieces fed one by one (one TCP segment each: the worst case, a server
that trickles).

    python3 scripts/bench_imagecheck.py [--rounds 20]
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mirror.imagecheck import ImageCheck  # noqa: E402

PIECE = 16 * 1024  # what libcurl hands the fetcher at a time (CURL_MAX_WRITE_SIZE)


def run(files: list[bytes], chunk: int, rounds: int, check: bool) -> float:
    """Each file in pieces of `chunk` bytes, each fed (or hashed) as it comes."""
    started = time.perf_counter()
    for _ in range(rounds):
        for data in files:
            work = ImageCheck() if check else hashlib.sha256()
            for i in range(0, len(data), chunk):
                (work.feed if check else work.update)(data[i:i + chunk])
            if check:
                work.finish()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    files = [p.read_bytes() for p in sorted((ROOT / "mirror/replay/data/resultados2024/actas").glob("*.jpg"))]
    total = sum(map(len, files)) * args.rounds
    n = len(files) * args.rounds
    print(f"{len(files)} real scans, {sum(map(len, files)) / len(files) / 1e3:.0f} KB each on average, "
          f"{args.rounds} rounds")
    ways = [(f"libcurl's pieces of {PIECE // 1024} KB, each fed", lambda c: run(files, PIECE, args.rounds, c)),
            ("1,460-byte pieces, each fed", lambda c: run(files, 1460, args.rounds, c))]
    for label, way in ways:
        check, sha = way(True), way(False)
        print(f"{label}: check {total / check / 1e6:7.0f} MB/s ({check / n * 1e6:6.0f} us per file); "
              f"sha256 {total / sha / 1e6:7.0f} MB/s; check time / sha256 time = {check / sha:.2f}")


if __name__ == "__main__":
    main()
