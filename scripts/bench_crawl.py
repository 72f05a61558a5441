#!/usr/bin/env python3
"""Benchmark the crawl against the replay and print figures (never a pass/fail test).

Workloads: the full 25,073-table index with small images, and N tables with real-size
(~250 KB) images. For each: crawl throughput as a ratio to the faster of wget2 and aria2c
fetching the same URL list at the same concurrency from the same replay; peak RSS of the
crawl; a no-change re-run's time as a ratio to the full run (asking every URL again, and with
--recheck-after as the shipped job runs); verify's time against
`sha256sum -c` on the same bag.

    python3 scripts/bench_crawl.py [--real-size 2000] [--concurrency 16] [--work bench-out]
                                   [--skip-small] [--skip-real]

Rendered images are cached in WORK/cache, so the first run spends a few minutes rendering.
"""
from __future__ import annotations

import argparse
import csv
import io
import os

import shutil
import subprocess
import sys

import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def start_replay(work: Path, port: int, small: bool, limit: int | None) -> tuple[subprocess.Popen, str]:
    cmd = [PY, "-m", "mirror", "replay", "--port", str(port), "--cache", str(work / "cache"), "--warm"]
    if small:
        cmd.append("--small")
    if limit:
        cmd += ["--limit", str(limit)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    for line in proc.stdout:
        print("  replay:", line.strip(), flush=True)
        if line.startswith("replay listening on"):
            return proc, line.split()[-1]
    raise SystemExit("replay did not start")


def timed(cmd: list[str], **kw) -> tuple[float, int]:
    """(seconds, peak RSS in MB of the command) measured in a fresh wrapper process."""
    wrapper = ("import resource, subprocess, sys, time, json;"
               "t = time.perf_counter(); rc = subprocess.run(json.loads(sys.argv[1]), stdout=subprocess.DEVNULL,"
               " stderr=subprocess.DEVNULL, cwd=sys.argv[2] or None).returncode;"
               "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, rc)")
    import json
    out = subprocess.run([PY, "-c", wrapper, json.dumps(cmd), kw.get("cwd", "")], capture_output=True,
                         text=True, check=True).stdout.split()
    if out[2] not in ("0",) and not kw.get("ok_codes"):
        print(f"  note: {cmd[0]} exited {out[2]}")
    return float(out[0]), int(out[1]) // 1024


def urls_of(base: str) -> list[str]:
    raw = urllib.request.urlopen(f"{base}/RESULTADOS_2024_CSV_V1.csv").read()
    text = raw.decode("utf-8-sig")
    return [row["URL"] for row in csv.DictReader(io.StringIO(text))]


def workload(name: str, work: Path, port: int, small: bool, limit: int | None, conc: int) -> dict:
    print(f"\n== {name}", flush=True)
    proc, base = start_replay(work, port, small, limit)
    try:
        urls = urls_of(base)
        listing = work / f"urls-{name}.txt"
        listing.write_text("\n".join(urls) + "\n")
        peers = {}
        if shutil.which("wget2"):
            d = work / "wget2"
            shutil.rmtree(d, ignore_errors=True)
            peers["wget2"], _ = timed(["wget2", f"--max-threads={conc}", "-q", "-i", str(listing), "-P", str(d),
                                       "--no-robots", "--tries=3"])
            shutil.rmtree(d, ignore_errors=True)
        if shutil.which("aria2c"):
            d = work / "aria2"
            shutil.rmtree(d, ignore_errors=True)
            peers["aria2c"], _ = timed(["aria2c", "-j", str(conc), "-i", str(listing), "-d", str(d), "--quiet=true",
                                        "--file-allocation=none", "--auto-file-renaming=false",
                                        "--max-connection-per-server=16"])
            shutil.rmtree(d, ignore_errors=True)
        out = work / f"mirror-{name}"
        shutil.rmtree(out, ignore_errors=True)
        crawl = [PY, "-m", "mirror", "crawl", "resultados2024", "--root", base, "--out", str(out),
                 "--concurrency", str(conc), "--quiet"]
        t_full, rss = timed(crawl, cwd=str(ROOT))
        t_rerun, rss2 = timed(crawl, cwd=str(ROOT))
        t_recent, _ = timed(crawl + ["--recheck-after", "86400"], cwd=str(ROOT))  # as the shipped job runs
        t_verify, _ = timed([PY, "-m", "mirror", "verify", str(out)], cwd=str(ROOT))
        t_sha, _ = timed(["sha256sum", "-c", "--quiet", "manifest-sha256.txt"], cwd=str(out))
        n = len(urls)
        size = sum(f.stat().st_size for f in (out / "data").rglob("*") if f.is_file())
        best_peer = min(peers.values()) if peers else float("nan")
        fig = {"files": n, "MB": size / 1e6, "ours_s": t_full, "peers": peers,
               "throughput_ratio": best_peer / t_full, "rss_MB": rss, "rerun_s": t_rerun,
               "rerun_ratio": t_rerun / t_full, "recent_rerun_s": t_recent, "verify_s": t_verify, "sha256sum_s": t_sha,
               "verify_speedup": t_sha / t_verify, "rerun_rss_MB": rss2}
        print(f"  files {n}, {size / 1e6:.0f} MB")
        for peer, t in peers.items():
            print(f"  {peer:10s} {t:7.2f} s  ({n / t:.0f} files/s)")
        print(f"  acta-mirror {t_full:7.2f} s  ({n / t_full:.0f} files/s)  ratio to best peer {best_peer / t_full:.2f}x")
        print(f"  peak RSS   {rss} MB")
        print(f"  re-run     {t_rerun:7.2f} s  = {100 * t_rerun / t_full:.1f}% of the full run "
              "(every URL asked again, conditionally)")
        print(f"  re-run     {t_recent:7.2f} s  = {100 * t_recent / t_full:.1f}% of the full run "
              "(--recheck-after 86400, as jobs/resultados2024.toml)")
        print(f"  verify     {t_verify:7.2f} s  vs sha256sum -c {t_sha:.2f} s  -> {t_sha / t_verify:.2f}x")
        return fig
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--real-size", type=int, default=2000, help="tables with real-size images (default 2000)")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--work", default=str(ROOT / "bench-out"))
    ap.add_argument("--port", type=int, default=18024)
    ap.add_argument("--skip-small", action="store_true")
    ap.add_argument("--skip-real", action="store_true")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {os.cpu_count()} cores; concurrency {args.concurrency}")
    if not args.skip_small:
        workload("small-full-index", work, args.port, True, None, args.concurrency)
    if not args.skip_real:
        workload("real-size", work, args.port + 1, False, args.real_size, args.concurrency)



if __name__ == "__main__":
    main()
