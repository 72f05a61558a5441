#!/usr/bin/env python3
"""Read variants of the 20 real actas the reader has not seen: each read right, not read with a named cause, or WRONG.

    python3 scripts/bench_unseen.py [--actas 20] [--classes rot90,payload_huge] [--ocr 0] [--keep DIR]
    python3 scripts/bench_unseen.py --memory

Variants are made with Pillow at run time in a scratch folder: turned (90/180/270 and 2-7
degrees), scaled, recompressed, blurred, noisy, low contrast, cropped through or past the QR
code, flipped, other image modes and formats (PNG, CMYK, 16-bit, transparent, palette,
progressive, EXIF-turned), a second acta QR code pasted on, a QR code whose payload is altered
(a clean version 8 level Q code drawn with segno over the real one), broken files (truncated,
HTML named .jpg, empty, 1 pixel) and oversized images; sheets photographed (perspective,
uneven light, RGB), torn (the scanner lid dark through the tear), creased (the halves shifted),
coffee-stained, bitonal or faxed at 100 dpi, CMYK with the ink in K, two actas on one page, a
blank page, bytes after the JPEG's end (junk, or a whole other acta), a JPEG whose header
claims 60000x60000 px, a progressive JPEG of 1,000 scans, and a code of another format
version (.1.0002). A read counts as right only when its
votes equal the acta's own QR text (decoded_qr.json); an altered but well-formed payload read
as printed is `read-altered` (crosscheck against the index catches it). Reads run on two
processes; the seconds are per acta, medians. With --ocr N, the first N actas of each class
are also read by OCR (read_print, no cache): checked right (and its printed acta code the
table's, as tally requires of a print reading), needs review, or WRONG.
"""
from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import segno  # noqa: E402
import zxingcpp  # noqa: E402
from PIL import Image, ImageDraw, ImageFilter, ImageOps  # noqa: E402

from mirror.audit.qr import MAX_PIXELS  # noqa: E402
from mirror.qrformat import parse_qr  # noqa: E402
from mirror.replay.data import DATA, index_file, real_images  # noqa: E402

TRUTH = {e["filename"]: e["qr_text"] for e in json.loads((DATA / "actas" / "decoded_qr.json").read_text())}
PAYLOADS = ("version2", "votes", "37fields", "39fields", "arabic_digit", "superscript", "huge", "negative", "otherkey",
            "badsuffix", "extra", "space", "empty", "total")


def _save(img: Image.Image, fmt: str = "JPEG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _box(img: Image.Image) -> tuple[int, int, int, int]:
    pos = zxingcpp.read_barcodes(img)[0].position
    pts = (pos.top_left, pos.top_right, pos.bottom_left, pos.bottom_right)
    return min(p.x for p in pts), min(p.y for p in pts), max(p.x for p in pts), max(p.y for p in pts)


def _paste_qr(img: Image.Image, text: str, at: tuple[int, int] | None = None) -> Image.Image:
    x0, y0, x1, y1 = _box(img)
    buf = io.BytesIO()
    segno.make(text, error="q", micro=False, boost_error=False).save(buf, kind="png", scale=4, border=0)
    code = Image.open(io.BytesIO(buf.getvalue())).convert("L").resize((x1 - x0, y1 - y0), Image.Resampling.NEAREST)
    out = img.copy()
    out.paste(code, at or (x0, y0))
    return out


def altered(text: str, how: str) -> str:
    key, parties, nulos, third = text.split("!")
    p = parties.split(",")
    if how == "votes":  # well-formed, other votes: only a cross-check can tell
        p[0] = str(int(p[0]) + 50)
    elif how in ("37fields", "39fields"):
        p = p[:-1] if how == "37fields" else p + ["0"]
    elif how in ("arabic_digit", "superscript", "huge", "negative", "space", "empty"):
        p[0] = {"arabic_digit": "\u0663", "superscript": "\u00b2", "huge": "99999", "negative": "-1",
                "space": " " + p[0], "empty": ""}[how]
    elif how == "otherkey":
        key = key[:10] + "99.1.0001"
    elif how == "badsuffix":  # another election's code
        key = key[:12] + ".2.0001"
    elif how == "version2":  # another format version of the same table
        key = key[:12] + ".1.0002"
    elif how == "extra":
        return text + "!7"
    elif how == "total":  # each field fits four figures, the table's total does not
        p[0] = p[33] = "9000"
    return "!".join([key, ",".join(p), nulos, third])


def _exif_turned(img: Image.Image, orientation: int) -> bytes:
    stored = img.transpose({6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270,
                            3: Image.Transpose.ROTATE_180}[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _save(stored, quality=85, exif=exif.tobytes())


def _perspective(img: Image.Image, lean: float) -> Image.Image:
    """The page as a camera held off-square sees it: the top edge narrower than the bottom by lean."""
    w, h = img.size
    d = lean * w
    src = ((d, 0), (w - d, 0), (w, h), (0, h))  # where the output's corners come from
    dst = ((0, 0), (w, 0), (w, h), (0, h))
    a = []
    for (x, y), (u, v) in zip(dst, src):
        a.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        a.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    coeffs = np.linalg.solve(np.array(a, dtype=float), np.array([c for p in src for c in p], dtype=float))
    return img.transform(img.size, Image.Transform.PERSPECTIVE, tuple(coeffs), Image.Resampling.BICUBIC,
                         fillcolor=255)


def _photographed(name: str, g: Image.Image, box: tuple[int, int, int, int], rng) -> dict[str, bytes]:
    """Damage of photographed, folded, torn and faxed sheets, and pages with two actas."""
    x0, y0, x1, y1 = box
    w, h = g.size
    m = (x1 - x0) / 49
    light = np.linspace(0.55, 1.0, w, dtype=np.float32)[None, :] * np.linspace(0.8, 1.0, h, dtype=np.float32)[:, None]
    lit = Image.fromarray((np.asarray(g, dtype=np.float32) * light).astype(np.uint8))
    warm = Image.merge("RGB", (lit, lit.point(lambda x: x * 0.9), lit.point(lambda x: x * 0.7)))
    photo = _perspective(warm, 0.06).rotate(3, expand=True, fillcolor=(40, 40, 40),
                                           resample=Image.Resampling.BICUBIC)
    photo = photo.resize((photo.width * 3 // 4, photo.height * 3 // 4), Image.Resampling.LANCZOS)
    torn = g.copy()
    ImageDraw.Draw(torn).polygon([(x1 + 5, y0 + 20 * m), (x1 + 5, y1 + 5), (x1 - 15 * m, y1 + 5),
                                  (x1 - 5 * m, y1 - 10 * m)], fill=20)  # the scanner lid shows through
    crease = g.copy()
    lower = g.crop((0, (y0 + y1) // 2, w, h))
    crease.paste(lower, (3, (y0 + y1) // 2 + 2))  # the sheet's halves shifted at the fold
    ImageDraw.Draw(crease).line([(0, (y0 + y1) // 2), (w, (y0 + y1) // 2 + 4)], fill=70, width=3)
    stain = np.asarray(g, dtype=np.float32).copy()
    yy, xx = np.ogrid[:h, :w]
    blob = ((xx - (x0 + x1) / 2) ** 2 + (yy - (y0 + y1) / 2) ** 2) < ((x1 - x0) * 0.45) ** 2
    stain[blob] *= 0.55  # coffee: darker paper and ink, the code still there
    neighbour = next(n for n in sorted(TRUTH) if n != name)
    other = Image.open(real_images()[neighbour]).convert("L")
    side = Image.new("L", (w + other.width + 40, max(h, other.height)), 255)
    side.paste(g, (0, 0))
    side.paste(other, (w + 40, 0))
    stacked = Image.new("L", (max(w, other.width), h + other.height), 255)
    stacked.paste(other, (0, 0))
    stacked.paste(g, (0, other.height))
    half = g.resize((w // 2, h // 2), Image.Resampling.LANCZOS)
    raw = _save(g, quality=90)
    bomb = bytearray(raw)
    sof = bomb.find(b"\xff\xc0")
    bomb[sof + 5:sof + 9] = (60000).to_bytes(2, "big") + (60000).to_bytes(2, "big")  # the header lies
    return {
        "photo_perspective": _save(photo, quality=70),
        "perspective_gray": _save(_perspective(g, 0.04), quality=85),
        "rot90_tilt3": _save(g.rotate(93, expand=True, fillcolor=255, resample=Image.Resampling.BICUBIC), quality=85),
        "torn_corner_black": _save(torn, quality=90),
        "crease_shifted": _save(crease, quality=90),
        "coffee_stain": _save(Image.fromarray(stain.astype(np.uint8)), quality=90),
        "bitonal_jpeg": _save(g.point(lambda x: 255 if x > 128 else 0), quality=60),
        "fax_100dpi": _save(half.convert("1"), "PNG"),
        "fax_100dpi_jpeg": _save(half.point(lambda x: 255 if x > 140 else 0), quality=40),
        "gray_100dpi_q15": _save(half, quality=15),
        "cmyk_k_ink": _save(Image.merge("CMYK", (*(Image.new("L", g.size, 0),) * 3, ImageOps.invert(g))), quality=90),
        "two_actas_side": _save(side, quality=85),
        "two_actas_stacked": _save(stacked, quality=85),
        "blank_page": _save(Image.fromarray((245 + rng.normal(0, 4, (h, w))).clip(0, 255).astype(np.uint8)), quality=80),
        "trailing_junk": raw + b"\x00" * 4096 + b"trailing bytes after the end marker",
        "trailing_other_acta": raw + real_images()[neighbour].read_bytes(),
        "jpeg_header_bomb": bytes(bomb),
    }


def variants(name: str, g: Image.Image) -> dict[str, bytes]:
    text, (w, h), rng = TRUTH[name], g.size, np.random.default_rng(1)
    x0, y0, x1, y1 = _box(g)
    turn = lambda a: g.rotate(a, expand=True, fillcolor=255, resample=Image.Resampling.BICUBIC)
    noisy = lambda s: Image.fromarray(np.clip(np.asarray(g, dtype=np.float32) + rng.normal(0, s, (h, w)),
                                              0, 255).astype(np.uint8))
    ink = Image.new("LA", g.size, 0)
    ink.putalpha(g.point(lambda x: 255 - x))  # ink opaque, paper transparent
    stained = g.copy()
    draw = ImageDraw.Draw(stained)
    for _ in range(6):
        cx, cy, r = x0 + rng.integers(0, x1 - x0), y0 + rng.integers(0, y1 - y0), int(rng.integers(8, 22))
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=int(rng.integers(60, 200)))
    combo = turn(5)
    combo = combo.resize((combo.width // 2, combo.height // 2), Image.Resampling.LANCZOS)
    v = {"orig": _save(g, quality=90)}
    v.update({f"rot{a}": _save(g.rotate(a, expand=True), quality=90) for a in (90, 180, 270)})
    v.update({f"tilt{a}": _save(turn(a), quality=90) for a in (2, 4, 7, -3)})
    v.update({f"scale{s}": _save(g.resize((w * s // 100, h * s // 100), Image.Resampling.LANCZOS), quality=90)
              for s in (50, 33, 20)})
    v.update({f"jpegq{q}": _save(g, quality=q) for q in (20, 30, 40)})
    v.update({f"blur{r}": _save(g.filter(ImageFilter.GaussianBlur(r)), quality=90) for r in (1.5, 3, 5)})
    v.update({"noise30": _save(noisy(30), quality=90), "noise70": _save(noisy(70), quality=90),
              "lowcontrast": _save(g.point(lambda x: 110 + x * 0.3), quality=90),
              "lowcontrast_dark": _save(g.point(lambda x: 40 + x * 0.25), quality=90),
              "stains_on_qr": _save(stained, quality=90),
              "combo_tilt5_half_blur_q25": _save(combo.filter(ImageFilter.GaussianBlur(1)).point(
                  lambda x: 90 + x * 0.5), quality=25),
              "crop_qr_edge": _save(g.crop((0, 0, w, y1 - (y1 - y0) // 10)), quality=90),
              "crop_qr_half": _save(g.crop((0, 0, w, (y0 + y1) // 2)), quality=90),
              "crop_qr_side": _save(g.crop((0, 0, (x0 + x1) // 2, h)), quality=90),
              "crop_qr_gone": _save(g.crop((0, 0, w, y0 - 5)), quality=90),
              "crop_qr_only": _save(g.crop((x0 - 40, y0 - 40, x1 + 40, y1 + 40)), quality=90),
              "flip_lr": _save(ImageOps.mirror(g), quality=90), "flip_tb": _save(ImageOps.flip(g), quality=90),
              "png_gray": _save(g, "PNG"), "cmyk_jpeg": _save(g.convert("CMYK"), quality=90),
              "rgb_jpeg": _save(g.convert("RGB"), quality=90),
              "png16": _save(Image.fromarray(np.asarray(g, dtype=np.uint16) * 257), "PNG"),
              "bilevel_png": _save(g.convert("1"), "PNG"), "rgba_png": _save(g.convert("RGBA"), "PNG"),
              "transparent_png": _save(ink, "PNG"), "palette_png": _save(g.convert("P"), "PNG"),
              "progressive": _save(g, quality=85, progressive=True),
              "exif6": _exif_turned(g, 6), "exif8": _exif_turned(g, 8), "exif3": _exif_turned(g, 3),
              "second_qr_same_table": _save(_paste_qr(g, altered(text, "votes"), (x0, y0 - (y1 - y0) - 60)), quality=90),
              "second_qr_other_table": _save(_paste_qr(g, altered(text, "otherkey"), (x0, y0 - (y1 - y0) - 60)),
                                             quality=90)})
    v.update({f"payload_{how}": _save(_paste_qr(g, altered(text, how)), quality=90) for how in PAYLOADS})
    v.update(_photographed(name, g, (x0, y0, x1, y1), rng))
    raw = v["orig"]
    last = v["progressive"].rindex(b"\xff\xda")  # the last scan repeated: decoded again each time
    v["progressive_1000_scans"] = v["progressive"][:-2] + v["progressive"][last:-2] * 1000 + b"\xff\xd9"
    png = bytearray(v["png_gray"])
    png[40] ^= 0xFF
    v.update({"truncated_jpeg": raw[:len(raw) // 2], "truncated_tiny": raw[:600],
              "html_as_jpg": b"<!DOCTYPE html><html><body>Just a moment...</body></html>", "empty_file": b"",
              "one_pixel": _save(Image.new("L", (1, 1)), quality=90), "thin_strip": _save(Image.new("L", (5000, 2), 128)),
              "png_bad_crc": bytes(png)})
    return v


def _read(job: tuple[str, str, str, str]) -> tuple[str, str, str, float]:
    from mirror.audit.qr import read_acta

    variant, name, key, path = job
    t = time.perf_counter()
    try:
        r = read_acta(key, path)
    except Exception as exc:  # noqa: BLE001 - a traceback is what this looks for
        return variant, "TRACEBACK", type(exc).__name__, time.perf_counter() - t
    dt = time.perf_counter() - t
    if r.votes is None:
        return variant, "not read", r.cause or r.status[:50], dt
    if name in TRUTH and r.votes == parse_qr(TRUTH[name]):
        return variant, "read", "", dt
    if variant == "payload_votes" and r.votes == parse_qr(altered(TRUTH[name], "votes")):
        return variant, "read-altered", "", dt
    return variant, "WRONG", r.text[:40], dt


def _ocr(job: tuple[str, str, str, str]) -> tuple[str, str, str, float]:
    from mirror.audit.ocr import CHECKED, read_print

    variant, name, key, path = job
    t = time.perf_counter()
    try:
        r = read_print(path)
    except Exception as exc:  # noqa: BLE001
        return variant, "TRACEBACK", type(exc).__name__, time.perf_counter() - t
    dt = time.perf_counter() - t
    if r.status != CHECKED:
        return variant, "not read", "needs review", dt
    if r.code != key:  # tally counts a print reading for a table only when its printed code is that table's
        return variant, "not read", f"acta code read: {r.code or 'none'}", dt
    truth = parse_qr(TRUTH[name])
    return variant, "read" if (r.parties, r.nulos) == (truth.parties, truth.nulos) else "WRONG", "", dt


def _table(results: list[tuple[str, str, str, float]], title: str) -> None:
    rows: dict[str, dict] = {}
    for variant, verdict, cause, dt in results:
        row = rows.setdefault(variant, {"n": 0, "read": 0, "not read": 0, "WRONG": 0, "TRACEBACK": 0,
                                        "read-altered": 0, "causes": {}, "t": []})
        row["n"] += 1
        row[verdict] += 1
        row["t"].append(dt)
        if cause:
            row["causes"][cause] = row["causes"].get(cause, 0) + 1
    print(f"\n{title}\n{'variant':28s} {'n':>3s} {'read':>5s} {'not':>4s} {'WRONG':>5s} {'trace':>5s} {'s/acta':>7s}  causes")
    for variant, r in sorted(rows.items()):
        causes = ", ".join(f"{n} {c}" for c, n in sorted(r["causes"].items(), key=lambda kv: -kv[1]))
        print(f"{variant:28s} {r['n']:3d} {r['read'] + r['read-altered']:5d} {r['not read']:4d} {r['WRONG']:5d} "
              f"{r['TRACEBACK']:5d} {statistics.median(r['t']):7.3f}  {causes}")
    times = [r[3] for r in results]
    lies = sum(r[1] in ("WRONG", "TRACEBACK") for r in results)
    print(f"{len(results)} reads; {lies} WRONG or traceback; median {statistics.median(times):.3f} s per acta, "
          f"mean {statistics.mean(times):.3f} s")


_PEAK = """
import resource, sys, time
sys.path.insert(0, {root!r})
from mirror.audit.qr import read_acta
t = time.perf_counter()
r = read_acta("010101001.01", {path!r})
print(r.cause or "read", round(time.perf_counter() - t, 2), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


def memory(base: Path) -> None:
    """Peak memory of one read, in a fresh process, of a real acta and of pages just under the
    pixel limit in each mode a JPEG or PNG can carry (MB: the process's maximum resident size)."""
    import subprocess

    side = int((MAX_PIXELS - 1) ** 0.5)
    pages = {"real_acta.jpg": None, "gray.jpg": ("L", 255), "cmyk.jpg": ("CMYK", (0, 0, 0, 0)),
             "rgb.jpg": ("RGB", (255, 255, 255)), "gray16.png": ("I;16", 65535), "rgba.png": ("RGBA", (255, 255, 255, 0)),
             "gray_alpha.png": ("LA", (255, 0)), "palette.png": ("P", 0), "bilevel.png": ("1", 1)}
    print(f"\none read of a {side}x{side} page ({side * side / 1e6:.1f} Mpx) per mode, each in a fresh process\n"
          f"{'page':16s} {'outcome':18s} {'s':>6s} {'peak MB':>8s}")
    for name, how in pages.items():
        path = base / name
        if how is None:
            path.write_bytes(real_images()[sorted(TRUTH)[0]].read_bytes())
        else:
            img = Image.new(how[0], (side, side), how[1])
            img.save(path, **({"quality": 80} if name.endswith(".jpg") else {}))
        out = subprocess.run([sys.executable, "-c", _PEAK.format(root=str(ROOT), path=str(path))],
                             capture_output=True, text=True, check=True).stdout.split()
        print(f"{name:16s} {' '.join(out[:-2]):18s} {out[-2]:>6s} {out[-1]:>8s}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--actas", type=int, default=20, help="how many of the 20 real actas (default 20)")
    ap.add_argument("--classes", default="", help="comma-separated variant names (default all)")
    ap.add_argument("--ocr", type=int, default=0, metavar="N", help="also OCR the first N actas of each class")
    ap.add_argument("--keep", default="", help="write the variants here and keep them")
    ap.add_argument("--memory", action="store_true", help="only measure the peak memory of one read per image mode")
    args = ap.parse_args()
    if args.memory:
        with tempfile.TemporaryDirectory() as scratch:
            memory(Path(args.keep or scratch))
        return
    wanted = set(filter(None, args.classes.split(",")))
    keys = {r.filename: r.key for r in index_file(1).rows if r.filename in TRUTH}
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(args.keep or scratch)
        jobs = []
        for name in sorted(TRUTH)[:args.actas]:
            folder = base / name[:-4]
            folder.mkdir(parents=True, exist_ok=True)
            for variant, data in variants(name, Image.open(real_images()[name]).convert("L")).items():
                if not wanted or variant in wanted:
                    (folder / f"{variant}.jpg").write_bytes(data)
                    jobs.append((variant, name, keys[name], str(folder / f"{variant}.jpg")))
        for variant, size in (("over_40mpx", (6000, 10000)), ("bomb_20000px", (20000, 20000))):
            if not wanted or variant in wanted:
                Image.new("1", size, 1).save(base / f"{variant}.png")
                jobs.append((variant, "", "010101001.01", str(base / f"{variant}.png")))
        with ProcessPoolExecutor(2) as pool:
            _table(list(pool.map(_read, jobs, chunksize=4)), "QR (read_acta)")
            if args.ocr:
                firsts = sorted(TRUTH)[:args.ocr]
                _table(list(pool.map(_ocr, [j for j in jobs if j[1] in firsts])), "printed figures (read_print)")


if __name__ == "__main__":
    main()
