"""Synthesized actas: a grayscale scan-like JPEG per table, with a real, decodable QR code.

The same (seed, file name, size, variant) always gives the same bytes. The party split of
each candidate's votes is drawn from a generator seeded by the table, so the 38 QR fields
add up exactly to the index's candidate columns.
"""
from __future__ import annotations

import hashlib
import io
from functools import lru_cache

import numpy as np
import segno
from PIL import Image, ImageDraw, ImageFont

from ..qrformat import BALLOT, build_qr
from .data import Row

FULL_SIZE = (644, 6805)  # the real scans' size at 200 dpi
SMALL_SIZE = (150, 190)
FULL_QUALITY = 70
SMALL_QUALITY = 60
NAMES = {"EG": "EDMUNDO GONZALEZ", "NM": "NICOLAS MADURO", "LM": "LUIS MARTINEZ",
         "JABE": "JAVIER BERTUCCI", "JOBR": "JOSE BRITO", "AE": "ANTONIO ECARRI",
         "CF": "CLAUDIO FERMIN", "DC": "DANIEL CEBALLOS", "EM": "ENRIQUE MARQUEZ",
         "BERA": "BENJAMIN RAUSSEO"}
# Relative weight of each party within its candidate's votes (the first party carries most).
_WEIGHT_FIRST = 6.0


def _rng(*parts: object) -> np.random.Generator:
    seed = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return np.random.Generator(np.random.PCG64(int.from_bytes(seed[:16], "big")))


def qr_text(row: Row, seed: int = 0) -> str:
    votes = dict(row.votes)
    rng = _rng("parties", seed, row.key)
    parties: list[int] = []
    for cand, n in BALLOT:
        if n == 1:
            parties.append(votes[cand])
            continue
        weights = np.array([_WEIGHT_FIRST] + [1.0] * (n - 1))
        parties.extend(int(v) for v in rng.multinomial(votes[cand], weights / weights.sum()))
    return build_qr(row.key, parties, row.nulos, 0)


@lru_cache(maxsize=4)
def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


@lru_cache(maxsize=2)
def _paper(seed: int) -> Image.Image:
    """The blank form, shared by every full-size acta: paper grain, rules and boxes."""
    w, h = FULL_SIZE
    rng = _rng("paper", seed)
    grain = rng.normal(236, 1.7, size=(h, w))
    shade = np.linspace(-6, 6, w)[None, :]
    page = np.clip(grain + shade, 0, 255).astype(np.uint8)
    img = Image.fromarray(page, mode="L")
    draw = ImageDraw.Draw(img)
    draw.line([(180, 350), (180, 1200)], fill=40, width=2)
    for top in range(1230, 5500, 380):
        draw.rectangle([(25, top), (570, top + 340)], outline=30, width=2)
        for y in range(top + 40, top + 340, 40):
            draw.line([(25, y), (570, y)], fill=60, width=1)
    draw.rectangle([(0, 6700), (260, 6805)], fill=10)  # the scanner's dark corner
    return img


def _qr_image(text: str, scale: int) -> Image.Image:
    buf = io.BytesIO()
    segno.make(text, error="m", micro=False).save(buf, kind="png", scale=scale, border=4)
    buf.seek(0)
    return Image.open(buf).convert("L")


def render(row: Row, filename: str, *, seed: int = 0, small: bool = False, variant: int = 0) -> bytes:
    """The JPEG bytes of one synthesized acta. `variant` > 0 is a re-scan: other bytes, same votes."""
    text = qr_text(row, seed)
    jitter = int(hashlib.sha256(f"{seed}:{filename}:{variant}".encode()).hexdigest()[:4], 16)
    dx, dy = jitter % 7, (jitter >> 3) % 7
    header = [
        "Acta de escrutinio", f"{row.key}.1.0001", "ELECCION PRESIDENCIAL 2024",
        f"Estado {row.state}", f"Municipio {row.mun}", f"Parroquia {row.par}",
        f"Centro {row.center}  Mesa {row.table}",
    ]
    if small:
        img = Image.new("L", SMALL_SIZE, 245)
        draw = ImageDraw.Draw(img)
        font = _font(9)
        for i, line in enumerate(header[1:2] + header[3:4] + header[6:7]):
            draw.text((4 + dx % 3, 3 + i * 10), line[:30], fill=0, font=font)
        qr = _qr_image(text, 2)
        img.paste(qr, ((SMALL_SIZE[0] - qr.width) // 2, SMALL_SIZE[1] - qr.height - 2))
        quality = SMALL_QUALITY
    else:
        img = _paper(seed).copy()
        draw = ImageDraw.Draw(img)
        big, font = _font(26), _font(18)
        draw.text((230 + dx, 360 + dy), header[0], fill=15, font=big)
        for i, line in enumerate(header[1:]):
            draw.text((200 + dx, 420 + dy + i * 42), line[:44], fill=20, font=font)
        if row.electors:
            draw.text((380 + dx, 720 + dy), f"{row.electors} Electores", fill=10, font=font)
        for i, (cand, votes) in enumerate(row.votes):
            top = 1230 + i * 380
            if top > 5200:
                break
            draw.text((35 + dx, top + 8 + dy), NAMES[cand], fill=10, font=big)
            draw.text((420 + dx, top + 48 + dy), str(votes), fill=10, font=font)
        draw.text((35 + dx, 5560 + dy), f"Votos nulos {row.nulos}", fill=10, font=font)
        qr = _qr_image(text, 8)
        img.paste(qr, ((FULL_SIZE[0] - qr.width) // 2 + dx, 5700 + dy))
        quality = FULL_QUALITY
    if variant:
        ImageDraw.Draw(img).text((10, 10), f"rescan {variant}", fill=0, font=_font(12))
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=quality, optimize=False, dpi=(200, 200))
    return out.getvalue()
