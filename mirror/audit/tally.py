"""Tally the votes from the archived actas' QR codes, per table and summed at every level.

Levels: table, center, parish, municipality, state, nation, keyed by the CNE codes inside the
9-digit center code. Every level says how many of its tables were decoded and names each
unreadable one with the reason. Decoding runs across all cores.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..state import read_state
from ..qrformat import CANDIDATES
from ..workers import pool
from .qr import Reading, read_acta

LEVELS = ("nation", "state", "municipality", "parish", "center", "table")
CSV_HEADER = ("key",) + CANDIDATES + ("VOTOS_NULOS", "status")


def unit_code(key: str, level: str) -> str:
    return {"nation": "VE", "state": key[0:2], "municipality": key[0:4], "parish": key[0:6],
            "center": key[0:9], "table": key}[level]


@dataclass
class Table:
    key: str
    path: str
    names: dict  # level -> name, from provenance
    entry: dict  # the acta's latest provenance record
    votes: dict | None = None  # candidate column -> votes, from the QR
    nulos: int | None = None
    status: str = "not read"


@dataclass
class Unit:
    level: str
    code: str
    name: str
    tables: int = 0
    decoded: int = 0
    votes: dict = field(default_factory=lambda: {c: 0 for c in CANDIDATES})
    nulos: int = 0
    unreadable: list = field(default_factory=list)  # (key, reason)

    def as_dict(self) -> dict:
        return {"level": self.level, "code": self.code, "name": self.name, "tables": self.tables,
                "decoded": self.decoded, "coverage": f"{self.decoded} of {self.tables} tables decoded",
                "votes": self.votes, "VOTOS_NULOS": self.nulos,
                "unreadable": [{"key": k, "reason": r} for k, r in self.unreadable]}


@dataclass
class Tally:
    tables: dict[str, Table]
    units: dict[tuple[str, str], Unit]

    def level(self, level: str) -> list[Unit]:
        return sorted((u for (lv, _c), u in self.units.items() if lv == level), key=lambda u: u.code)


def latest_actas(bag: Path) -> dict[str, dict]:
    """The latest archived version of each acta, as its provenance record (validated by
    state.py: an acta is what has an acta key, whatever `kind` says; a mirror whose records or
    files do not check out, a symlink in data/ say, is refused, naming the first problem)."""
    entries = read_state(bag).require_clean().latest_actas()
    return {key: dataclasses.asdict(e) for key, e in entries.items()}


def _read(args: tuple[str, str]) -> Reading:
    return read_acta(*args)


def tally(bag: str | os.PathLike, workers: int | None = None) -> Tally:
    bag = Path(bag)
    tables: dict[str, Table] = {}
    for key, e in sorted(latest_actas(bag).items()):
        names = {"nation": "VENEZUELA", "state": e.get("state", ""), "municipality": e.get("municipality", ""),
                 "parish": e.get("parish", ""), "center": e.get("center", ""), "table": key}
        tables[key] = Table(key, e["path"], names, e)
    jobs = [(t.key, str(bag / t.path)) for t in tables.values()]
    workers = workers or os.cpu_count() or 1
    if workers > 1 and len(jobs) > 8:
        with pool(workers) as executor:
            readings = list(executor.map(_read, jobs, chunksize=16))
    else:
        readings = [_read(j) for j in jobs]
    for r in readings:
        t = tables[r.key]
        t.status = r.status
        if r.votes is not None:
            t.votes = r.votes.by_candidate()
            t.nulos = r.votes.nulos
    units: dict[tuple[str, str], Unit] = {}
    for t in tables.values():
        for level in LEVELS:
            code = unit_code(t.key, level)
            unit = units.setdefault((level, code), Unit(level, code, t.names[level]))
            unit.tables += 1
            if t.votes is None:
                unit.unreadable.append((t.key, t.status))
                continue
            unit.decoded += 1
            unit.nulos += t.nulos or 0
            for c in CANDIDATES:
                unit.votes[c] += t.votes[c]
    return Tally(tables, units)


def to_csv(t: Tally) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for key, table in sorted(t.tables.items()):
        if table.votes is None:
            writer.writerow([key] + [""] * (len(CANDIDATES) + 1) + [table.status])
        else:
            writer.writerow([key] + [table.votes[c] for c in CANDIDATES] + [table.nulos, "ok"])
    return out.getvalue()


def to_json(t: Tally) -> dict:
    return {
        "tables": [{"key": k, "votes": x.votes, "VOTOS_NULOS": x.nulos, "status": x.status}
                   for k, x in sorted(t.tables.items())],
        "levels": {level: [u.as_dict() for u in t.level(level)] for level in LEVELS if level != "table"},
    }
