#!/usr/bin/env python3
"""Benchmark `acta-mirror verify` and `verify --fast` against `sha256sum -c` and print figures.

    python3 scripts/bench_verify.py [--mirror DIR] [--real DIR] [--rounds 3] [--work bench-out/verify]
                                    [--skip-real] [--baseline CHECKOUT]

Two bags: the full V1 index of small files (24,532 actas of about 8 KB) and 2,000 real-size actas
(about 265 KB). Without --mirror / --real each is synthesized (scripts/bench_export.py's
synthesize: one valid JPEG per table of the real index, real folder layout and provenance, the
bag files acta-mirror writes) and signed with a throw-away key, so verify also checks the signed
statement, as it does on a downloaded copy. A mirror given with --mirror or --real must verify.

Each round runs `sha256sum -c --quiet manifest-sha256.txt` (in the mirror folder), `acta-mirror
verify DIR` and, on the small bag, `verify DIR --fast`, in an order that rotates every round;
the figures are medians over the rounds. The page cache is warm for all of them: every file is
read once and each command runs once untimed before round 1. Wall time is what the targets
use; CPU time (user + system, the command and its workers) is printed beside it, because on a
shared machine the wall time also measures the other users.

Rows (the last line, BENCH-JSON, for scripts/bench_crawl.py): "verify, small files" and
"verify, real size": ratio = sha256sum time / verify time, target >= 1.6; "verify --fast": target
ours_s < 1 s, with ratio = sha256sum time / verify --fast time for context.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SMALL_ACTAS = 24_532  # the V1 index: the full index of the 2024 site
REAL_ACTAS = 2_000
TARGET_RATIO = 1.6
FAST_LIMIT_S = 1.0
TIME = "/usr/bin/time"  # GNU time (Debian package time), for the peak RSS; without it RSS is not shown


def run(cmd: list[str], cwd: Path, tree: Path = ROOT) -> tuple[float, float, float | None, int]:
    """Wall seconds, CPU seconds (user + system, the process and the children it waited for),
    peak RSS in MB of the largest of them (None without GNU time), exit code. GNU time measures
    RSS: a child forked from this (large) Python process would report this process's RSS."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    gnu_time = os.access(TIME, os.X_OK)
    t = time.perf_counter()
    proc = subprocess.Popen([TIME, "-f", "%M", *cmd] if gnu_time else cmd, cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    rss = int(proc.stderr.read().strip().splitlines()[-1]) / 1024 if gnu_time else None
    proc.stderr.close()
    return wall, usage.ru_utime + usage.ru_stime, rss, os.waitstatus_to_exitcode(status)


def make_mirror(path: Path, actas: int, real_size: bool, work: Path) -> Path:
    sys.path.insert(0, str(ROOT / "scripts"))
    sys.path.insert(0, str(ROOT))
    from bench_export import synthesize

    shutil.rmtree(path, ignore_errors=True)
    t = time.perf_counter()
    payload = synthesize(path, actas, real_size)
    key = work / f"{path.name}-signer"  # one key per bag: a second keygen would replace the first
    for cmd in (["keygen", "--out", str(key), "--force"], ["sign", str(path), "--key", f"{key}.key"]):
        subprocess.run([sys.executable, "-m", "mirror", *cmd], cwd=ROOT, check=True, capture_output=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    print(f"synthesized and signed {path}: {actas:,} actas, {payload / 1e6:.1f} MB, "
          f"in {time.perf_counter() - t:.0f} s", flush=True)
    return path


def warm(mirror: Path) -> tuple[int, int]:
    """Read every file once; (files, bytes) under data/."""
    files = size = 0
    for dirpath, _dirs, names in os.walk(mirror):
        for name in names:
            with open(os.path.join(dirpath, name), "rb") as fh:
                while block := fh.read(1 << 20):
                    if dirpath.startswith(str(mirror / "data")):
                        size += len(block)
            files += dirpath.startswith(str(mirror / "data"))
    return files, size


def bench(mirror: Path, rounds: int, fast: bool, baseline: Path | None) -> dict[str, list[tuple[float, float, float | None]]]:
    py = [sys.executable, "-m", "mirror", "verify", str(mirror.resolve()), "--quiet"]
    commands = {"sha256sum -c": (["sha256sum", "-c", "--quiet", "manifest-sha256.txt"], mirror),
                "verify": (py, ROOT)}
    if fast:
        commands["verify --fast"] = (py + ["--fast"], ROOT)
    if baseline:  # run in the checkout: `python -m` puts the current folder before PYTHONPATH
        commands["verify (baseline)"] = (py, baseline.resolve(), baseline.resolve())
    for tree in (ROOT, baseline) if baseline else (ROOT,):  # bytecode as an install has it (see bench_crawl)
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "mirror")], check=True)
    for name, command in commands.items():  # untimed: the page cache and the interpreter's files
        code = run(*command)[3]
        if code != 0:
            raise SystemExit(f"bench_verify: {name} on {mirror} exited {code}: the mirror must verify")
    times: dict[str, list[tuple[float, float, float | None]]] = {name: [] for name in commands}
    names = list(commands)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            wall, cpu, rss, code = run(*commands[name])
            if code != 0:
                raise SystemExit(f"bench_verify: {name} exited {code} in round {r + 1}")
            times[name].append((wall, cpu, rss))
    return times


def median(samples: list[tuple[float, float, float | None]], i: int) -> float:
    return statistics.median(s[i] for s in samples)


def peak_rss(samples: list[tuple[float, float, float | None]]) -> int | None:
    return None if samples[0][2] is None else round(max(s[2] for s in samples))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mirror", help=f"a mirror of small files to use (default: synthesize {SMALL_ACTAS:,})")
    ap.add_argument("--real", help=f"a real-size mirror to use (default: synthesize {REAL_ACTAS:,})")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", default=str(ROOT / "bench-out" / "verify"), help="where synthesized mirrors go")
    ap.add_argument("--skip-real", action="store_true", help="only the small-file bag")
    ap.add_argument("--baseline", metavar="CHECKOUT", help="also time plain verify from this checkout (before/after)")
    args = ap.parse_args()
    if shutil.which("sha256sum") is None:
        raise SystemExit("bench_verify: needs sha256sum (coreutils)")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    bags = [("small files", Path(args.mirror) if args.mirror else None, SMALL_ACTAS, False)]
    if not args.skip_real:
        bags.append(("real size", Path(args.real) if args.real else None, REAL_ACTAS, True))

    rows, lines = [], []
    for label, given, actas, real_size in bags:
        mirror = given or make_mirror(work / label.replace(" ", "-"), actas, real_size, work)
        files, size = warm(mirror)
        print(f"{label}: {mirror}: {files:,} files in data/, {size / 1e6:.1f} MB; page cache warm "
              f"(every file read once, each command run once untimed); {args.rounds} alternating rounds",
              flush=True)
        times = bench(mirror, args.rounds, not real_size, Path(args.baseline) if args.baseline else None)
        peer = times["sha256sum -c"]
        for name, samples in times.items():
            lines.append(f"{label:12} {name:18} {median(samples, 0):8.2f} s wall {median(samples, 1):8.2f} s CPU "
                         f"{peak_rss(samples) or '?':>7} MB   rounds: " + " ".join(f"{s[0]:.2f}" for s in samples))
        ours = times["verify"]
        ratio = median(peer, 0) / median(ours, 0)
        rows.append({"measure": f"verify, {label}", "peer": "sha256sum -c", "peer_s": round(median(peer, 0), 3),
                     "ours_s": round(median(ours, 0), 3), "ratio": round(ratio, 2),
                     "target": f">= {TARGET_RATIO} (peer/ours)", "met": ratio >= TARGET_RATIO,
                     "rss_mb": peak_rss(ours)})
        if "verify --fast" in times:
            fast = times["verify --fast"]
            rows.append({"measure": "verify --fast", "peer": "sha256sum -c", "peer_s": round(median(peer, 0), 3),
                         "ours_s": round(median(fast, 0), 3), "ratio": round(median(peer, 0) / median(fast, 0), 2),
                         "target": f"< {FAST_LIMIT_S:g} s", "met": median(fast, 0) < FAST_LIMIT_S,
                         "rss_mb": peak_rss(fast)})

    print(f"\nmedians of {args.rounds} rounds (wall; CPU = user + system of the command and its workers); "
          "peak RSS of the largest process over the rounds")
    for line in lines:
        print(line)
    print(f"\n{'measure':22} {'peer s':>8} {'ours s':>8} {'ratio':>7}  target               met")
    for row in rows:
        print(f"{row['measure']:22} {row['peer_s']:8.2f} {row['ours_s']:8.2f} {row['ratio']:7.2f}  "
              f"{row['target']:20} {'yes' if row['met'] else 'NO'}")
    print(f"(machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end; "
          "ratios are side by side in one run)")
    print("BENCH-JSON " + json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
