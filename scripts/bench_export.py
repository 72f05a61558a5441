#!/usr/bin/env python3
"""Benchmark WARC and WACZ export and print figures: MB/s next to `cp` of the same files.

    python3 scripts/bench_export.py [--actas 25000] [--real-size] [--out bench-out/export]

The mirror is synthesized quickly (no crawl): one file per table of the real index (V1, then
V2's extra tables), each a real scan with a unique JPEG comment after its start marker, so
every file is a valid JPEG with its own sha256. Default files are a real scan scaled to a
tenth (about 8 KB: per-file costs dominate); --real-size uses the full scans (about 250 KB;
25,000 actas is about 6.5 GB on disk, written twice more). Every figure is with a warm page
cache: the mirror is read once before the first timing.
"""
from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mirror.archive import acta_dir, write_bag_files  # noqa: E402
from mirror.models import Entry, Place  # noqa: E402
from mirror.replay.data import index_file, real_images  # noqa: E402


def bodies(real_size: bool) -> list[bytes]:
    from PIL import Image

    out = []
    for path in sorted(real_images().values()):
        if real_size:
            out.append(path.read_bytes())
            continue
        im = Image.open(path)
        buf = io.BytesIO()
        im.resize((im.width // 10, im.height // 10)).save(buf, "JPEG", quality=70)
        out.append(buf.getvalue())
    return out


def synthesize(mirror: Path, n: int, real_size: bool) -> int:
    """A bag of n actas; returns the payload bytes."""
    import hashlib

    rows, seen = [], set()
    for version in (1, 2):
        for row in index_file(version).rows:
            if row.key not in seen:
                seen.add(row.key)
                rows.append(row)
    rows = rows[:n]
    base = bodies(real_size)
    total = 0
    mirror.mkdir(parents=True)
    with open(mirror / "provenance.jsonl", "w", encoding="utf-8") as prov:
        for i, row in enumerate(rows):
            comment = f"acta-mirror bench {row.key}".encode()
            src = base[i % len(base)]
            body = src[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + src[2:]
            place = Place(row.state_code, row.state, row.mun_code, row.mun, row.par_code, row.par, row.center, row.table)
            path = f"{acta_dir(place)}/{row.key}.jpg"
            (mirror / path).parent.mkdir(parents=True, exist_ok=True)
            (mirror / path).write_bytes(body)
            url = f"https://static.example.org/{row.filename}"
            sha = hashlib.sha256(body).hexdigest()
            entry = Entry(key=row.key, kind="acta", version=1, path=path, sha256=sha, size=len(body), cid="",
                          url=url, final_url=url, host="static.example.org", fetched_at="2024-07-30T12:00:00.000000Z",
                          status=200, etag=f'"{sha[:32]}"', last_modified="Mon, 29 Jul 2024 12:00:00 GMT",
                          content_type="image/jpeg", site="resultados2024", page="https://static.example.org/index.csv",
                          state_code=row.state_code, state=row.state, municipality_code=row.mun_code,
                          municipality=row.mun, parish_code=row.par_code, parish=row.par, center=row.center,
                          table=row.table)
            prov.write(entry.to_json() + "\n")
            total += len(body)
    write_bag_files(mirror, {})
    return total


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--actas", type=int, default=25_000)
    ap.add_argument("--real-size", action="store_true", help="full-size scans (~250 KB) instead of ~8 KB files")
    ap.add_argument("--out", default=str(ROOT / "bench-out" / "export"))
    args = ap.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    mirror = out / "mirror"
    t = time.perf_counter()
    payload = synthesize(mirror, args.actas, args.real_size)
    print(f"synthesized {args.actas} actas, {payload / 1e6:.1f} MB of payload, in {time.perf_counter() - t:.1f} s", flush=True)
    for dirpath, _dirs, files in os.walk(mirror / "data"):  # warm the page cache for every run alike
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as fh:
                while fh.read(1 << 20):
                    pass

    from mirror.export import export_wacz, export_warc

    mb = payload / 1e6
    seconds = timed(lambda: subprocess.run(["cp", "-r", str(mirror / "data"), str(out / "cp-copy")], check=True))
    print(f"cp -r data/:        {seconds:6.1f} s  {mb / seconds:7.1f} MB/s")
    warc = out / "mirror.warc.gz"
    seconds = timed(lambda: export_warc(mirror, warc))
    print(f"export --warc:      {seconds:6.1f} s  {mb / seconds:7.1f} MB/s  ({warc.stat().st_size / 1e6:.1f} MB written)")
    wacz = out / "mirror.wacz"
    seconds = timed(lambda: export_wacz(mirror, wacz))
    print(f"export --wacz:      {seconds:6.1f} s  {mb / seconds:7.1f} MB/s  ({wacz.stat().st_size / 1e6:.1f} MB written)")
    shutil.rmtree(out / "cp-copy", ignore_errors=True)


if __name__ == "__main__":
    main()
