#!/usr/bin/env python3
"""Measure the QR and the printed-figures readings on the 20 real actas against the index's figures.

    python3 scripts/bench_ocr.py [--workers N] [--no-cache]

Truth is the index row (RESULTADOS_2024_CSV_V1.csv) of the table the acta's QR names (the
file name's digits are not the centre). Prints, for the QR and for OCR: figures right out of
figures compared (10 candidates and the null votes per acta), whole actas right, actas per
second; and the QR-versus-print verdicts on these honest actas (every MISMATCH is a false alarm).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mirror.audit import ocr  # noqa: E402
from mirror.audit.qr import read_acta  # noqa: E402
from mirror.qrformat import CANDIDATES  # noqa: E402
from mirror.replay.data import index_file, real_images  # noqa: E402
from mirror.workers import pool  # noqa: E402


def _ocr(args):
    path, cached = args
    t = time.perf_counter()
    if cached:
        sha = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        reading = ocr.cached_read_print(path, sha)
    else:
        reading = ocr.read_print(path)
    return path, reading, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--no-cache", action="store_true", help="read every acta again (measure speed)")
    args = ap.parse_args()
    rows = {r.filename: r for r in index_file(1).rows}
    images = sorted(real_images().items())
    truth = {}
    for name, path in images:
        row = rows[name]
        truth[str(path)] = (row.key, {**dict(row.votes), "VOTOS_NULOS": row.nulos})

    t = time.perf_counter()
    qr = {str(p): read_acta(truth[str(p)][0], str(p)) for _n, p in images}
    qr_seconds = time.perf_counter() - t
    if not ocr.available():
        print("tesseract with Spanish data is not installed: OCR not measured")
        return
    t = time.perf_counter()
    with pool(args.workers) as ex:
        results = list(ex.map(_ocr, [(str(p), not args.no_cache) for _n, p in images]))
    ocr_seconds = time.perf_counter() - t

    figures = len(images) * (len(CANDIDATES) + 1)
    qr_right = qr_whole = ocr_right = ocr_whole = checked = wrong_checked = 0
    verdicts = {"consistent": 0, "MISMATCH": 0, "needs review": 0}
    for path, reading, seconds in results:
        key, want = truth[path]
        q = qr[path]
        qfig = {**q.votes.by_candidate(), "VOTOS_NULOS": q.votes.nulos} if q.votes else {}
        qr_ok = [qfig.get(c) == want[c] for c in want]
        qr_right += sum(qr_ok)
        qr_whole += all(qr_ok)
        if reading.status == ocr.CHECKED:
            checked += 1
            ofig = {**reading.by_candidate(), "VOTOS_NULOS": reading.nulos}
            ok = [ofig[c] == want[c] for c in want]
            ocr_right += sum(ok)
            ocr_whole += all(ok)
            wrong_checked += not all(ok)
            verdict = "consistent" if q.votes and reading.parties == q.votes.parties and reading.nulos == q.votes.nulos \
                else "MISMATCH" if q.votes else "read from print"
        else:
            verdict = "needs review"
        verdicts[verdict] = verdicts.get(verdict, 0) + 1
        print(f"{Path(path).name}  {key}  QR {q.status:>4}  OCR {reading.status:12s} {seconds:5.1f} s  {verdict}"
              + (f"  ({reading.detail})" if reading.status != ocr.CHECKED else ""))
    n = len(images)
    print(f"QR:  {qr_right} of {figures} figures right; {qr_whole} of {n} actas wholly right; "
          f"{n / qr_seconds:.1f} actas/s on one core")
    print(f"OCR: {checked} of {n} actas passed the checks; {ocr_right} of {figures} figures right "
          f"({ocr_right} of {checked * (len(CANDIDATES) + 1)} among checked actas); {ocr_whole} of {n} actas wholly right; "
          f"{wrong_checked} checked actas wrong; {n / ocr_seconds:.2f} actas/s on {args.workers} worker(s)")
    alarms = verdicts["MISMATCH"]
    print(f"QR versus print on {n} honest actas: {verdicts['consistent']} consistent, {alarms} MISMATCH "
          f"(false alarms: {alarms} of {n}), {verdicts['needs review']} need review")


if __name__ == "__main__":
    main()
