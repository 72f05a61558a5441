"""The real 2024 data the replay is built from: both index versions, row by row, and 20 scans.

Index lines are kept as the original bytes; only the URL prefix is swapped for the
replay's own address, so the served CSVs equal the published ones byte for byte otherwise.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..sites.resultados2024 import acta_key, read_index_text

DATA = Path(__file__).parent / "data" / "resultados2024"
REAL_PREFIX = b"https://static.resultadosconvzla.com/"
INDEX_FILES = {1: "RESULTADOS_2024_CSV_V1.csv", 2: "RESULTADOS_2024_CSV_V2.csv"}


@dataclass(frozen=True)
class Row:
    key: str
    filename: str
    state_code: str
    state: str
    mun_code: str
    mun: str
    par_code: str
    par: str
    center: str
    table: str
    votes: tuple[tuple[str, int], ...]  # candidate column -> votes
    nulos: int
    electors: int  # 0 where the index has no RE column (V2)


@dataclass(frozen=True)
class IndexFile:
    version: int
    header: bytes  # the first line, BOM included
    lines: tuple[bytes, ...]  # each data line with its line ending
    rows: tuple[Row, ...]


def _parse(version: int) -> IndexFile:
    raw = (DATA / INDEX_FILES[version]).read_bytes()
    text = read_index_text(raw)
    encoding = "utf-8" if raw.startswith(b"\xef\xbb\xbf") else "latin-1"
    raw_lines = raw.splitlines(keepends=True)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = []
    for row in reader:
        votes = tuple((c, int(row[c])) for c in ("EG", "NM", "LM", "JABE", "JOBR", "AE", "CF", "DC", "EM", "BERA"))
        key = acta_key(row["CENTRO"], row["MESA"])
        rows.append(Row(key=key, filename=row["URL"].rsplit("/", 1)[1], state_code=row["COD_EDO"],
                        state=row["EDO"], mun_code=row["COD_MUN"], mun=row["MUN"],
                        par_code=row["COD_PAR"], par=row["PAR"], center=key[:9], table=key[10:],
                        votes=votes, nulos=int(row["VOTOS_NULOS"]), electors=int(row.get("RE") or 0)))
    assert len(raw_lines) == len(rows) + 1, (version, encoding)
    return IndexFile(version, raw_lines[0], tuple(raw_lines[1:]), tuple(rows))


@lru_cache(maxsize=None)
def index_file(version: int) -> IndexFile:
    return _parse(version)


@lru_cache(maxsize=None)
def real_images() -> dict[str, Path]:
    return {p.name: p for p in (DATA / "actas").glob("*.jpg")}


def subset_keys(limit: int | None) -> frozenset[str] | None:
    """The first `limit` tables of V1 plus the tables of the 20 real scans (None: all)."""
    if not limit:
        return None
    v1 = index_file(1)
    real = real_images()
    keys = {r.key for r in v1.rows[:limit]}
    keys |= {r.key for r in v1.rows if r.filename in real}
    return frozenset(keys)
