#!/usr/bin/env python3
"""Benchmark QR decoding and print figures: throughput on real-size actas, read rates.

    python3 scripts/bench_tally.py [--mirror bench-out/mirror-real-size]

Throughput: `acta-mirror tally` on a mirror of real-size actas (made by bench_crawl.py), all
cores. Read rates: the 20 real actas, and a damaged set made from them (rotated 90 and 180
degrees, JPEG quality 30 and 15, scaled to 60%, the QR partly cut off, a blank page, and the
QR code itself damaged: a white patch over a finder pattern, the left column wiped, a folded
corner), with zxing-cpp alone on the page for comparison and the seconds per damaged acta.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from mirror.audit.qr import read_acta  # noqa: E402
from tests.test_audit import _patched  # noqa: E402  the damage the tests paint
from mirror.replay.data import index_file, real_images  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mirror", default=str(ROOT / "bench-out" / "mirror-real-size"))
    args = ap.parse_args()
    mirror = Path(args.mirror)
    if (mirror / "provenance.jsonl").exists():
        t = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "mirror", "tally", str(mirror), "--format", "csv"],
                             check=True, capture_output=True, text=True, cwd=ROOT).stdout
        elapsed = time.perf_counter() - t
        rows = out.strip().splitlines()[1:]
        ok = sum(1 for r in rows if r.endswith(",ok"))
        print(f"tally of {len(rows)} real-size actas: {elapsed:.1f} s, {len(rows) / elapsed:.0f} actas/s, {ok} read")
    import json

    from mirror.qrformat import parse_qr
    keys = {r.filename: r.key for r in index_file(1).rows}
    decoded = json.loads((ROOT / "mirror/replay/data/resultados2024/actas/decoded_qr.json").read_text())
    truth = {e["filename"]: parse_qr(e["qr_text"]) for e in decoded}
    real = real_images()
    read = sum(read_acta(keys[n], str(p)).status == "ok" for n, p in real.items())
    print(f"real actas read: {read} of {len(real)}")
    work = Path(tempfile.mkdtemp())
    damaged = {"rotated 90": lambda i: i.rotate(90, expand=True), "rotated 180": lambda i: i.rotate(180, expand=True),
               "quality 30": lambda i: i, "quality 15": lambda i: i,
               "scaled 60%": lambda i: i.resize((int(i.width * .6), int(i.height * .6))),
               "QR cut": lambda i: i.crop((0, 0, i.width, i.height - 420)),
               "blank": lambda i: Image.new("L", i.size, 250),
               "QR finder patched": lambda i: _patched(i, "finder"),
               "QR left column wiped": lambda i: _patched(i, "left column"),
               "QR corner folded": lambda i: _patched(i, "fold")}
    import zxingcpp

    for label, make in damaged.items():
        hits = wrong = alone = 0
        started = time.perf_counter()
        for name, path in real.items():
            img = make(Image.open(path).convert("L"))
            target = work / f"{label}-{name}"
            img.save(target, format="JPEG", quality=int(label.split()[-1]) if label.startswith("quality") else 85)
            alone += bool(zxingcpp.read_barcodes(Image.open(target)))
            reading = read_acta(keys[name], str(target))
            hits += reading.status == "ok"
            wrong += reading.status == "ok" and reading.votes != truth[name]
        seconds = (time.perf_counter() - started) / len(real)
        print(f"damaged, {label}: {hits} of {len(real)} read, {wrong} wrong "
              f"(zxing-cpp alone on the page: {alone}); {seconds:.2f} s per acta")


if __name__ == "__main__":
    main()
