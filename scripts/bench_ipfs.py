#!/usr/bin/env python3
"""Benchmark the first IPFS publish of a mirror against the node's own recursive add.

    python3 scripts/bench_ipfs.py [--mirror DIR | --tables N] [--rounds 3] [--work DIR]

Each round starts two fresh js-ipfs test nodes (mirror/ipfsnode.py; start-up is not timed)
and, in alternating order, times on one `acta-mirror publish MIRROR --to ipfs://…` (our first
publish: checks every file against the manifest, adds, pins) and on the other the node's own
`jsipfs add -r` of the very files a publish sends, with the same parameters
(--cid-version 1 --raw-leaves --chunker size-1048576 --hash sha2-256). The peer does not
pin (--pin=false: js-ipfs runs out of file descriptors pinning a full mirror whole, and its
client then exits 0 without the root); the publish does pin, so it does more work. Both must
give the same root CID, or the round does not count. The peer's time
includes starting the jsipfs client (about 2 s; printed once). Our peak RSS is the publish
process's own (wait4). The publish runs on a hard-linked copy of the mirror, so the mirror
given is left as it was (a publish appends to publish-receipts.jsonl).

Without --mirror, a mirror of N small-image tables is made once with the local replay
(`acta-mirror replay --small`, `acta-mirror crawl`), kept in WORK for the next run.
Prints a table, the medians, and as its last line the BENCH-JSON row that
scripts/bench_crawl.py folds into its table (ratio = ours / peer, target <= 1.5).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mirror.archive import published_files  # noqa: E402
from mirror.cid import str_to_cid  # noqa: E402
from mirror.ipfsnode import IpfsNode, installed  # noqa: E402

PY = sys.executable
FULL_INDEX = 24_532  # tables in the 2024 index
TARGET = 1.5  # ours / peer
RECEIPTS = "publish-receipts.jsonl"
# --pin=false: js-ipfs cannot pin a DAG of more blocks than it may open files at once (EMFILE),
# and its client then ends with exit 0 and no root. A publish pins (in pieces if it must).
PEER_ADD = ["--cid-version", "1", "--raw-leaves", "--chunker", "size-1048576", "--hash", "sha2-256",
            "--cid-base", "base32", "--progress=false", "--pin=false"]


def make_mirror(work: Path, tables: int) -> Path:
    """A mirror of `tables` small-image tables from the local replay; reused when complete."""
    out = work / f"mirror-small-{tables}"
    if (out / "tagmanifest-sha256.txt").exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    replay = subprocess.Popen([PY, "-m", "mirror", "replay", "--small", "--port", "0", "--limit", str(tables)],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = replay.stdout.readline()
        url = re.search(r"http://\S+", line)
        if not url:
            raise SystemExit(f"the replay did not start: {line.strip()}")
        print(f"making a mirror of {tables} tables from {url.group(0)} into {out} ...", flush=True)
        subprocess.run([PY, "-m", "mirror", "crawl", "resultados2024", "--root", url.group(0), "--out", str(out),
                        "--quiet"], cwd=ROOT, env=env, check=True)
    finally:
        replay.terminate()
        replay.wait(10)
    return out


def linked_copy(src: Path, dst: Path, rels: list[str] | None = None) -> None:
    """dst holds src's files as hard links (copies across file systems): every file but the
    receipts, or only rels."""
    shutil.rmtree(dst, ignore_errors=True)
    if rels is None:
        rels = [str(p.relative_to(src)) for p in src.rglob("*") if p.is_file() and not p.is_symlink()
                and p.name != RECEIPTS]
    for rel in rels:
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src / rel, dst / rel)
        except OSError:
            shutil.copy2(src / rel, dst / rel)


def ours(node: IpfsNode, mirror: Path, work: Path) -> tuple[float, str, float]:
    """Seconds, root CID and peak RSS (MB, from wait4) of `acta-mirror publish` to the node."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(work / "publish.out", "w+") as out, open(work / "publish.err", "w+") as err:
        t = time.perf_counter()
        proc = subprocess.Popen([PY, "-m", "mirror", "publish", str(mirror), "--to", node.target, "--quiet"],
                                cwd=ROOT, env=env, stdout=out, stderr=err)
        _pid, status, usage = os.wait4(proc.pid, 0)
        took = time.perf_counter() - t
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode:
            raise RuntimeError(f"publish failed ({proc.returncode}): {err.read().strip()[-400:]}")
        return took, out.read().strip().splitlines()[-1], usage.ru_maxrss / 1024


def peer(node: IpfsNode, stage: Path) -> tuple[float, str]:
    """Seconds and root CID of the node's own `jsipfs add -r` of stage."""
    env = {**os.environ, "IPFS_PATH": str(node.repo)}
    t = time.perf_counter()
    proc = subprocess.run(node._cmd("--api", node.api, "add", "-r", *PEER_ADD, str(stage)), env=env,
                          capture_output=True, text=True, check=False)
    took = time.perf_counter() - t
    roots = [line.split()[1] for line in proc.stdout.splitlines() if line.split()[2:] == [stage.name]]
    if proc.returncode or not roots:  # the client says nothing of an error the node sends after its answers began
        raise RuntimeError(f"jsipfs add -r failed ({proc.returncode}, {'a' if roots else 'no'} root): "
                           f"{proc.stderr.strip()[-400:]}")
    return took, roots[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mirror", help="an existing mirror to publish (default: make one of --tables tables)")
    ap.add_argument("--tables", type=int, default=FULL_INDEX,
                    help=f"tables in the mirror made without --mirror (default {FULL_INDEX:,}, the full index)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds, each timing both once (default 3)")
    ap.add_argument("--work", default=str(ROOT / "bench-out" / "ipfs"), help="working folder (default bench-out/ipfs)")
    args = ap.parse_args()
    if not installed():
        raise SystemExit("the IPFS test node is not installed: run scripts/setup.sh")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    mirror = Path(args.mirror) if args.mirror else make_mirror(work, args.tables)
    files = published_files(mirror)
    size = sum(n for _rel, n, _sha in files)
    linked_copy(mirror, work / "ours")
    linked_copy(mirror, work / "peer" / mirror.name, [rel for rel, _n, _s in files])  # only what a publish sends
    print(f"mirror {mirror}: {len(files):,} files published, {size / 1e6:.0f} MB; {args.rounds} rounds, "
          "each on two fresh js-ipfs nodes, alternating which goes first; the machine may be shared", flush=True)

    rows = []
    for i in range(args.rounds):
        row = {}
        order = ("ours", "peer") if i % 2 == 0 else ("peer", "ours")
        for who in order:
            repo = work / f"node-{who}"
            shutil.rmtree(repo, ignore_errors=True)
            with IpfsNode(repo / "repo") as node:
                if not rows and who == "peer":
                    t = time.perf_counter()
                    subprocess.run(node._cmd("--api", node.api, "version"), capture_output=True, check=True,
                                   env={**os.environ, "IPFS_PATH": str(node.repo)})
                    print(f"(starting the jsipfs client alone: {time.perf_counter() - t:.1f} s)", flush=True)
                if who == "ours":
                    row["ours_s"], row["ours_root"], row["rss_mb"] = ours(node, work / "ours", work)
                else:
                    row["peer_s"], row["peer_root"] = peer(node, work / "peer" / mirror.name)
            shutil.rmtree(repo, ignore_errors=True)
        row["same_root"] = str_to_cid(row["ours_root"]) == str_to_cid(row["peer_root"])
        rows.append(row)
        print(f"round {i + 1} ({' then '.join(order)}): ours {row['ours_s']:.1f} s, peer {row['peer_s']:.1f} s, "
              f"ours/peer {row['ours_s'] / row['peer_s']:.2f}, same root: {row['same_root']}", flush=True)

    good = [r for r in rows if r["same_root"]]
    if not good:
        raise SystemExit(f"no round gave the same root CID on both sides: ours {rows[0]['ours_root']}, "
                         f"peer {rows[0]['peer_root']}")
    ours_s = statistics.median(r["ours_s"] for r in good)
    peer_s = statistics.median(r["peer_s"] for r in good)
    rss = max(r["rss_mb"] for r in good)
    ratio = ours_s / peer_s
    print()
    print("| round | ours: acta-mirror publish (pins) | peer: jsipfs add -r --pin=false | ours/peer | same root |")
    print("|---|---|---|---|---|")
    for i, r in enumerate(rows, 1):
        print(f"| {i} | {r['ours_s']:.1f} s | {r['peer_s']:.1f} s | {r['ours_s'] / r['peer_s']:.2f} | {r['same_root']} |")
    print(f"| median of {len(good)} | {ours_s:.1f} s | {peer_s:.1f} s | {ratio:.2f} | root {good[0]['ours_root']} |")
    print(f"our peak RSS (the publish process, largest round): {rss:.0f} MB")
    row = {"measure": f"IPFS first publish vs node's add -r ({len(files):,} files, {size / 1e6:.0f} MB)",
           "peer": "jsipfs add -r (no pin)", "peer_s": round(peer_s, 2), "ours_s": round(ours_s, 2),
           "ratio": round(ratio, 3), "target": f"<= {TARGET} (ours/peer)", "met": ratio <= TARGET,
           "rss_mb": round(rss)}
    print("BENCH-JSON " + json.dumps({"rows": [row]}))


if __name__ == "__main__":
    main()
