"""Tally the votes of every table the index lists, per table and summed at every level.

Levels: table, center, parish, municipality, state, nation, keyed by the CNE codes inside the
9-digit center code. The denominator is the site's list of tables (coverage.py): every level
says how many of its tables were read and names each one that was not, with the reason.
A table is read from its QR code; with OCR, its printed figures check the QR, and count
alone when the QR cannot be recovered. Reading runs across all cores.
"""
from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..models import Entry
from ..qrformat import CANDIDATES
from ..workers import pool
from .coverage import ARCHIVED, LABELS, READ, STATUSES, Coverage, TableStatus, census, latest_actas
from .qr import Reading, read_acta

LEVELS = ("nation", "state", "municipality", "parish", "center", "table")
CSV_HEADER = ("key",) + CANDIDATES + ("VOTOS_NULOS", "status", "detail")


def unit_code(key: str, level: str) -> str:
    return {"nation": "VE", "state": key[0:2], "municipality": key[0:4], "parish": key[0:6],
            "center": key[0:9], "table": key}[level]


@dataclass(frozen=True)
class Table:
    key: str
    state: TableStatus  # its one coverage status
    entry: Entry | None  # the latest archived version, None when the mirror has no image
    votes: dict | None = None  # candidate column -> votes, as counted (QR, or checked print)
    nulos: int | None = None

    @property
    def path(self) -> str:
        return self.state.path

    @property
    def status(self) -> str:
        """'ok' when read, else the reason in words."""
        if self.state.status in READ:
            return "ok"
        return self.state.label + (f": {self.state.detail}" if self.state.detail else "")


@dataclass
class Unit:
    level: str
    code: str
    name: str
    tables: int = 0
    read: int = 0
    votes: dict = field(default_factory=lambda: {c: 0 for c in CANDIDATES})
    nulos: int = 0
    counts: dict = field(default_factory=lambda: {s: 0 for s in STATUSES})
    unread: list = field(default_factory=list)  # (key, status, detail)

    @property
    def coverage(self) -> str:
        extra = "".join(f"; {self.counts[s]:,} {LABELS[s]}" for s in STATUSES if s not in READ and self.counts[s])
        return f"{self.read:,} of {self.tables:,} tables read{extra}"

    def as_dict(self) -> dict:
        return {"level": self.level, "code": self.code, "name": self.name, "tables": self.tables,
                "read": self.read, "coverage": self.coverage, "counts": dict(self.counts),
                "votes": self.votes, "VOTOS_NULOS": self.nulos,
                "unread": [{"key": k, "status": s, "detail": d} for k, s, d in self.unread]}


@dataclass
class Tally:
    tables: dict[str, Table]
    units: dict[tuple[str, str], Unit]
    coverage: Coverage

    def level(self, level: str) -> list[Unit]:
        return sorted((u for (lv, _c), u in self.units.items() if lv == level), key=lambda u: u.code)


def _read(args: tuple[str, str]) -> Reading:
    return read_acta(*args)


def read_all(jobs: list[tuple[str, str]], workers: int | None = None) -> list[Reading]:
    workers = workers or os.cpu_count() or 1
    if workers > 1 and len(jobs) > 8:
        with pool(workers) as executor:
            return list(executor.map(_read, jobs, chunksize=16))
    return [_read(j) for j in jobs]


def tally(bag: str | os.PathLike, workers: int | None = None) -> Tally:
    bag = Path(bag)
    found = census(bag)
    entries = latest_actas(bag)
    jobs = [(t.key, str(bag / t.path)) for t in found.of(ARCHIVED)]
    readings = {r.key: r for r in read_all(jobs, workers)}
    resolved = found.resolve({k: ("qr", "") if r.votes is not None else ("unreadable", r.status)
                              for k, r in readings.items()})
    tables: dict[str, Table] = {}
    for key, status in resolved.tables.items():
        r = readings.get(key)
        votes = r.votes if r is not None and status.status == "qr" else None
        tables[key] = Table(key, status, entries.get(key), votes.by_candidate() if votes else None,
                            votes.nulos if votes else None)
    return Tally(tables, _sum_units(tables), resolved)


def _sum_units(tables: dict[str, Table]) -> dict[tuple[str, str], Unit]:
    units: dict[tuple[str, str], Unit] = {}
    for t in tables.values():
        p = t.state.place
        names = {"nation": "VENEZUELA", "state": p.state, "municipality": p.municipality,
                 "parish": p.parish, "center": p.center or t.key[:9], "table": t.key}
        for level in LEVELS:
            code = unit_code(t.key, level)
            unit = units.setdefault((level, code), Unit(level, code, names[level]))
            unit.tables += 1
            unit.counts[t.state.status] += 1
            if t.votes is None:
                unit.unread.append((t.key, t.state.status, t.state.detail))
                continue
            unit.read += 1
            unit.nulos += t.nulos or 0
            for c in CANDIDATES:
                unit.votes[c] += t.votes[c]
    return units


def to_csv(t: Tally) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for key, table in sorted(t.tables.items()):
        s = table.state
        if table.votes is None:
            writer.writerow([key] + [""] * (len(CANDIDATES) + 1) + [s.status, s.detail])
        else:
            writer.writerow([key] + [table.votes[c] for c in CANDIDATES] + [table.nulos, s.status, s.detail])
    return out.getvalue()


def to_json(t: Tally) -> dict:
    return {
        "coverage": t.coverage.summary(),
        "counts": t.coverage.counts(),
        "denominator": t.coverage.source,
        "tables": [{"key": k, "votes": x.votes, "VOTOS_NULOS": x.nulos, "status": x.state.status,
                    "detail": x.state.detail, "at": x.state.at, "attempts": x.state.attempts, "path": x.path}
                   for k, x in sorted(t.tables.items())],
        "levels": {level: [u.as_dict() for u in t.level(level)] for level in LEVELS if level != "table"},
    }
