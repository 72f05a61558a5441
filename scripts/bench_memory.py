#!/usr/bin/env python3
"""Measure the crawl's memory and its re-run cost against nginx, and print figures.

- Peak RSS of a full crawl of the V1 index (24,532 tables) and of a synthetic 100,000-table
  index in the V1 format (the real places, tables renumbered; every URL answers one 8 KB JPEG).
- A re-run with nothing changed, as the shipped job runs it (--recheck-after 86400), as a
  share of a full run's time; and the same share when every URL is asked again with a
  conditional request (--recheck-after 0), which cannot be near free.

BENCH_PYTHONPATH, when set, names the code to measure (e.g. an older checkout, to compare).

Rounds alternate (a full run into a fresh folder, then each kind of re-run) and the medians
are reported. nginx (Debian's) is started on 127.0.0.1 with its own config in WORK.

    python3 scripts/bench_memory.py [--work bench-out/memory] [--rounds 3] [--skip-100k]

The last line is `BENCH-JSON {...}` (see scripts/bench_crawl.py): for the RSS rows `ratio`
is megabytes, for the re-run row it is re-run time / full-run time.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
V1 = ROOT / "mirror" / "replay" / "data" / "resultados2024" / "RESULTADOS_2024_CSV_V1.csv"
REAL_PREFIX = b"https://static.resultadosconvzla.com/"
BODY_BYTES = 8 * 1024


def small_jpeg() -> bytes:
    """A valid JPEG of BODY_BYTES: padded inside a COM segment after SOI (the crawl checks markers)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (64, 64), 200).save(buf, "JPEG", quality=50)
    jpeg = buf.getvalue()
    pad = BODY_BYTES - len(jpeg) - 4
    return jpeg[:2] + b"\xff\xfe" + (pad + 2).to_bytes(2, "big") + b"\x00" * pad + jpeg[2:]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_nginx(work: Path) -> tuple[str, Path]:
    """nginx answering every path with the one small JPEG (an index file by its own name)."""
    site = work / "site"
    site.mkdir(parents=True, exist_ok=True)
    (site / "acta.jpg").write_bytes(small_jpeg())
    port = free_port()
    conf = work / "nginx.conf"
    conf.write_text(f"""daemon on; pid {work}/nginx.pid; worker_processes 1; error_log {work}/error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off; sendfile on; etag on; keepalive_requests 1000000;
  client_body_temp_path {work}/tmp; proxy_temp_path {work}/tmp; fastcgi_temp_path {work}/tmp;
  uwsgi_temp_path {work}/tmp; scgi_temp_path {work}/tmp;
  types {{ image/jpeg jpg; text/csv csv; }}
  server {{
    listen 127.0.0.1:{port};
    root {site};
    location ~ \\.csv$ {{ }}
    location / {{ try_files /acta.jpg =404; }}
  }}
}}
""")
    (work / "tmp").mkdir(exist_ok=True)
    subprocess.run(["nginx", "-p", str(work), "-c", str(conf)], check=True)
    return f"http://127.0.0.1:{port}", conf


def write_indexes(work: Path, root: str) -> dict[int, Path]:
    """The V1 index with its URLs on nginx, and a 100,000-table one in the same format."""
    raw = V1.read_bytes()
    header, *lines = raw.splitlines(keepends=True)
    v1 = work / "site" / "v1.csv"
    v1.write_bytes(header + b"".join(line.replace(REAL_PREFIX, root.encode() + b"/") for line in lines))
    big = work / "site" / "synthetic-100k.csv"
    with open(big, "wb") as fh:
        fh.write(header)
        n, round_ = 0, 0
        while n < 100_000:
            for line in lines:
                if n == 100_000:
                    break
                fields = line.decode("utf-8").rstrip("\r\n").split(",")
                fields[7] = str(int(fields[7]) + 40 * round_)  # MESA: a new table of the same center
                fields[-1] = f"{root}/synthetic/{fields[6]}-{fields[7]}.jpg"
                fh.write((",".join(fields) + "\r\n").encode("utf-8"))
                n += 1
            round_ += 1
    return {24_532: v1, 100_000: big}


def crawl(root: str, index: Path, out: Path, *extra: str) -> tuple[float, float, str]:
    """(seconds, peak RSS in MB, summary line) of one crawl, in a fresh wrapper process. The
    index is fetched from nginx, as a job fetches the site's (a 304 on a re-run)."""
    cmd = [PY, "-m", "mirror", "crawl", "resultados2024", "--root", root, "--index", f"{root}/{index.name}",
           "--out", str(out), "--quiet", *extra]
    wrapper = ("import json, resource, subprocess, sys, time; t = time.perf_counter(); "
               "p = subprocess.run(json.loads(sys.argv[1]), capture_output=True, text=True); "
               "print(json.dumps([time.perf_counter() - t, "
               "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, p.returncode, p.stdout + p.stderr]))")
    env = dict(os.environ, PYTHONPATH=os.environ.get("BENCH_PYTHONPATH", str(ROOT)))
    seconds, rss, rc, text = json.loads(subprocess.run([PY, "-c", wrapper, json.dumps(cmd)], env=env, check=True,
                                                       capture_output=True, text=True, cwd=out.parent).stdout)
    summary = next((line for line in text.splitlines() if "actas discovered" in line), text.strip()[-300:])
    if rc != 0:
        raise SystemExit(f"crawl exited {rc}: {summary}")
    return seconds, rss, summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="bench-out/memory")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip-100k", action="store_true")
    args = ap.parse_args()
    work = Path(args.work).resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    root, conf = start_nginx(work)
    try:
        indexes = write_indexes(work, root)
        full, job, every, rss = [], [], [], []
        for r in range(args.rounds):
            out = work / "mirror"
            shutil.rmtree(out, ignore_errors=True)
            s, m, line = crawl(root, indexes[24_532], out)
            full.append(s)
            rss.append(m)
            print(f"round {r + 1}: full run {s:.2f} s, peak {m:.1f} MB  ({line})", flush=True)
            s, _m, line = crawl(root, indexes[24_532], out, "--recheck-after", "86400")
            job.append(s)
            print(f"round {r + 1}: re-run, --recheck-after 86400: {s:.2f} s  ({line})", flush=True)
            s, _m, line = crawl(root, indexes[24_532], out, "--recheck-after", "0")
            every.append(s)
            print(f"round {r + 1}: re-run, every URL asked again: {s:.2f} s  ({line})", flush=True)
        full_s, job_s, every_s = (statistics.median(x) for x in (full, job, every))
        rss_v1 = max(rss)
        rss_big = None
        if not args.skip_100k:
            out = work / "mirror-100k"
            shutil.rmtree(out, ignore_errors=True)
            s, rss_big, line = crawl(root, indexes[100_000], out)
            print(f"100,000 tables: full run {s:.2f} s, peak {rss_big:.1f} MB  ({line})", flush=True)
            shutil.rmtree(out, ignore_errors=True)
    finally:
        subprocess.run(["nginx", "-p", str(work), "-c", str(conf), "-s", "stop"], check=False)
    print()
    print(f"peak RSS, full V1 index (24,532 tables): {rss_v1:.1f} MB (target <= 100 MB)")
    if rss_big is not None:
        print(f"peak RSS, 100,000 tables: {rss_big:.1f} MB, {rss_big - rss_v1:+.1f} MB (target <= +10 MB)")
    print(f"full run {full_s:.2f} s; re-run with nothing changed (--recheck-after 86400) {job_s:.2f} s = "
          f"{job_s / full_s:.1%} (target <= 5%); every URL asked again {every_s:.2f} s = {every_s / full_s:.1%}")
    print(f"(medians of {args.rounds} alternating rounds against nginx; the machine may be shared)")
    rows = [
        {"measure": "peak RSS, full index", "peer": None, "peer_s": None, "ours_s": round(full_s, 2),
         "ratio": round(rss_v1, 1), "target": "<= 100 MB", "met": rss_v1 <= 100, "rss_mb": round(rss_v1, 1)},
        {"measure": "peak RSS growth, 100,000 vs 24,532", "peer": None, "peer_s": None, "ours_s": None,
         "ratio": None if rss_big is None else round(rss_big - rss_v1, 1), "target": "<= 10 MB",
         "met": None if rss_big is None else rss_big - rss_v1 <= 10,
         "rss_mb": None if rss_big is None else round(rss_big, 1)},
        {"measure": "re-run, nothing changed (recheck-after)", "peer": "full run", "peer_s": round(full_s, 2),
         "ours_s": round(job_s, 2), "ratio": round(job_s / full_s, 4), "target": "<= 5%",
         "met": job_s / full_s <= 0.05, "rss_mb": None},
        {"measure": "re-run, nothing changed (every URL asked again)", "peer": "full run",
         "peer_s": round(full_s, 2), "ours_s": round(every_s, 2), "ratio": round(every_s / full_s, 4),
         "target": "report only", "met": None, "rss_mb": None},
    ]
    print("BENCH-JSON " + json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
