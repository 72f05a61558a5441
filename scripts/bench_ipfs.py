#!/usr/bin/env python3
"""Benchmark IPFS work and print figures: local CIDs, publishing to the test node, writing a CAR.

    python3 scripts/bench_ipfs.py [--mirror bench-out/mirror-small-full-index]

Local CIDs: every payload file's CID from the sha256 the crawl already has (what a crawl
adds), against hashing the same files with sha256. Needs the mirrors made by bench_crawl.py.
A publish that fails is reported with the node's reason (js-ipfs cannot pin a DAG of more
blocks than it may open files at once), and the other mirrors are still measured.
"""
from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mirror.archive import published_files  # noqa: E402
from mirror.cid import raw_cid  # noqa: E402
from mirror.ipfsnode import IpfsNode, installed  # noqa: E402
from mirror.manifest import provenance_lines  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mirror", default=str(ROOT / "bench-out" / "mirror-small-full-index"))
    ap.add_argument("--also", nargs="*", default=[str(ROOT / "bench-out" / "mirror-real-size")],
                    help="more mirrors to publish (default: the real-size one bench_crawl.py made)")
    args = ap.parse_args()
    mirror = Path(args.mirror)
    lines = list(provenance_lines(mirror / "provenance.jsonl"))
    t = time.perf_counter()
    cids = [raw_cid(x.sha256) for x in lines]
    t_cid = time.perf_counter() - t
    t = time.perf_counter()
    for x in lines:
        with open(mirror / x.path, "rb") as fh:
            hashlib.file_digest(fh, "sha256")
    t_sha = time.perf_counter() - t
    print(f"files: {len(lines)}, {sum(x.size for x in lines) / 1e6:.0f} MB")
    print(f"local CIDs from the crawl's sha256: {t_cid:.3f} s ({t_cid / len(cids) * 1e6:.1f} us per file)")
    print(f"sha256 of the same files, for scale: {t_sha:.2f} s")
    car = Path(tempfile.mkdtemp()) / "mirror.car"
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mirror", "car", str(mirror), "-o", str(car)], check=True,
                   stdout=subprocess.DEVNULL, cwd=ROOT)
    print(f"car: {time.perf_counter() - t:.1f} s, {car.stat().st_size / 1e6:.0f} MB, "
          f"{len(published_files(mirror))} files in the DAG")
    if not installed():
        print("IPFS node not installed: run scripts/setup.sh")
        return
    for target in [mirror] + [Path(m) for m in args.also]:
        with IpfsNode(Path(tempfile.mkdtemp()) / "repo") as node:
            print(f"publish {target.name} to a fresh js-ipfs node:")
            for label in ("first publish", "publish again (nothing new)"):
                t = time.perf_counter()
                proc = subprocess.run([sys.executable, "-m", "mirror", "publish", str(target), "--to", node.target,
                                       "--quiet"], capture_output=True, text=True, cwd=ROOT)
                took = time.perf_counter() - t
                if proc.returncode:
                    print(f"  {label}: FAILED after {took:.1f} s: {proc.stderr.strip()[:300]}")
                    break
                print(f"  {label}: {took:.1f} s, root {proc.stdout.split()[-1]}")


if __name__ == "__main__":
    main()
