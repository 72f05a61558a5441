#!/usr/bin/env python3
"""Benchmark `compare` and print figures: actas/s for 25,000 actas, and the picture-score calibration.

    python3 scripts/bench_compare.py [--actas 25000] [--real-size] [--out bench-out/compare]

Ours is a synthesized bag (scripts/bench_export.py). Theirs is a folder made from it: 90% of the
files hard-linked (identical bytes), 4% recompressed at JPEG quality 60, 2% scaled to half,
1% swapped with another acta's file, 3% deleted, and 20 files of actas we do not have.

The calibration measures the picture score (mirror/compare.py) on the 20 real scans and on 12
full-size synthesized actas (one shared template, the hardest case): re-encoded at JPEG quality
20-95, rescaled to 0.25-2x, one vote count painted over, and every pair of different actas.
These are the figures behind SAME_SIZE_LIMIT and RESCALED_LIMIT.
"""
from __future__ import annotations

import argparse
import io
import itertools
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_export import synthesize  # noqa: E402
from mirror.compare import RESCALED_LIMIT, SAME_SIZE_LIMIT, compare, picture_score  # noqa: E402
from mirror.manifest import iter_provenance  # noqa: E402


def their_copy(ours: Path, theirs: Path) -> dict[str, int]:
    from PIL import Image

    made = dict.fromkeys(("linked", "recompressed", "rescaled", "swapped", "deleted", "extra"), 0)
    entries = [e for e in iter_provenance(ours / "provenance.jsonl") if e.kind == "acta"]
    theirs.mkdir(parents=True)
    for i, e in enumerate(entries):
        src, dst = ours / e.path, theirs / f"batch-{i // 1000}" / e.url.rsplit("/", 1)[-1]
        dst.parent.mkdir(exist_ok=True)
        slot = i % 100
        if slot < 90:
            os.link(src, dst)
            made["linked"] += 1
        elif slot < 94:
            Image.open(src).save(dst, "JPEG", quality=60)
            made["recompressed"] += 1
        elif slot < 96:
            im = Image.open(src)
            im.resize((im.width // 2, im.height // 2), Image.LANCZOS).save(dst, "JPEG", quality=75)
            made["rescaled"] += 1
        elif slot < 97:
            os.link(ours / entries[(i + 7) % len(entries)].path, dst)
            made["swapped"] += 1
        else:
            made["deleted"] += 1
    for n in range(20):
        os.link(ours / entries[n].path, theirs / f"999999{n:03d}.01.jpg")
        made["extra"] += 1
    return made


def _jpeg(im, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", **kw)
    return buf.getvalue()


def calibrate() -> None:
    from PIL import Image, ImageDraw

    from mirror.replay import Replay
    from mirror.replay.data import real_images

    real = [p.read_bytes() for p in sorted(real_images().values())]
    replay = Replay(small=False, limit=40)
    names = [n for n in sorted(replay.rows) if n not in real_images()][:12]
    synthetic = [replay._render(n, 0) for n in names]
    with tempfile.TemporaryDirectory() as tmp:
        def score(a: bytes, b: bytes) -> float:
            Path(tmp, "a").write_bytes(a)
            Path(tmp, "b").write_bytes(b)
            result = picture_score((tmp, "a"), (tmp, "b"))
            return result[0] if not isinstance(result, str) else float("inf")

        for label, images in (("20 real scans", real), ("12 synthesized full-size actas", synthetic)):
            recompressed, rescaled, doctored = 0.0, 0.0, float("inf")
            for data in images:
                im = Image.open(io.BytesIO(data))
                for q in (20, 40, 60, 75, 95):
                    recompressed = max(recompressed, score(data, _jpeg(im, quality=q)))
                for s in (0.25, 0.5, 0.75, 2.0):
                    small = im.resize((int(im.width * s), int(im.height * s)), Image.LANCZOS)
                    rescaled = max(rescaled, score(data, _jpeg(small, quality=75)))
                edit = im.convert("L")
                x, y = int(edit.width * 0.6), int(edit.height * 0.3)
                draw = ImageDraw.Draw(edit)
                draw.rectangle((x, y, x + 40, y + 20), fill=245)
                draw.text((x + 2, y + 2), "187", fill=10)
                doctored = min(doctored, score(data, _jpeg(edit, quality=90)))
            different = min(score(a, b) for a, b in itertools.combinations(images, 2))
            print(f"{label}: recompressed (q20-95) max {recompressed:.1f}, vote count painted over min "
                  f"{doctored:.1f} [same-size limit {SAME_SIZE_LIMIT}]; rescaled (0.25-2x) max {rescaled:.1f}, "
                  f"different acta min {different:.1f} [rescaled limit {RESCALED_LIMIT}]", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--actas", type=int, default=25_000)
    ap.add_argument("--real-size", action="store_true", help="full-size scans (~250 KB) instead of ~8 KB files")
    ap.add_argument("--out", default=str(ROOT / "bench-out" / "compare"))
    ap.add_argument("--no-calibration", action="store_true")
    args = ap.parse_args()
    if not args.no_calibration:
        calibrate()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    payload = synthesize(out / "ours", args.actas, args.real_size)
    made = their_copy(out / "ours", out / "theirs")
    print(f"made ours ({args.actas} actas, {payload / 1e6:.0f} MB) and theirs {made} in "
          f"{time.perf_counter() - t:.1f} s", flush=True)
    t = time.perf_counter()
    report = compare(out / "ours", out / "theirs")
    seconds = time.perf_counter() - t
    total = len(report.rows)
    print(f"compare: {total} actas in {seconds:.1f} s, {total / seconds:.0f} actas/s on {os.cpu_count()} cores; "
          f"counts {report.counts}")
    pictures = sum(1 for r in report.rows if r.score is not None)
    print(f"  {pictures} of {total} actas needed their pixels compared")


if __name__ == "__main__":
    main()
