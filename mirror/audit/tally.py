"""Tally the votes of every table the index lists, per table and summed at every level.

Levels: table, center, parish, municipality, state, nation, keyed by the CNE codes inside the
9-digit center code. The denominator is the site's list of tables (coverage.py): every level
says how many of its tables were read and names each one that was not, with the reason.
A table is read from its QR code; with OCR, its printed figures check the QR. When the QR
cannot be recovered (and names no other table: then the scan may be that table's, print and
all), a checked print reading whose acta code, printed under the title, is this table's gives
the table's figures (the figures themselves name no table), but a level's votes are the QR's
only: print-only tables are counted and summed apart (Unit.printed, print_votes), so OCR is
never mixed into the QR tally as if it were as trustworthy. Reading runs across all cores.
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..models import Entry, UnsafePath
from ..qrformat import CANDIDATES
from ..workers import pool
from ..state import open_payload, read_state
from .coverage import ARCHIVED, LABELS, READ, STATUSES, Coverage, TableStatus, census, spreadsheet_safe
from .ocr import CHECKED, PrintReading, cached_read_print
from .qr import CHANGED, Reading, read_acta

LEVELS = ("nation", "state", "municipality", "parish", "center", "table")
CSV_HEADER = ("key",) + CANDIDATES + ("VOTOS_NULOS", "status", "detail", "check", "electors")


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
    check: str = ""  # QR versus print: consistent, MISMATCH, needs review, read from print; "" without OCR
    printed: dict | None = None  # the checked print reading: candidate -> votes and VOTOS_NULOS
    print_detail: str = ""  # why the print reading needs review

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
    printed: int = 0  # tables read from their printed figures only: not in read, votes or nulos
    print_votes: dict = field(default_factory=lambda: {c: 0 for c in CANDIDATES})
    print_nulos: int = 0

    @property
    def coverage(self) -> str:
        """'19 of 21 tables read from the QR; 1 read from the printed figures only (summed apart); 1 unreadable'."""
        apart = f"; {self.printed:,} read from the printed figures only (summed apart)" if self.printed else ""
        extra = "".join(f"; {self.counts[s]:,} {LABELS[s]}" for s in STATUSES if s not in READ and self.counts[s])
        return f"{self.read:,} of {self.tables:,} tables read{' from the QR' if self.printed else ''}{apart}{extra}"

    def as_dict(self) -> dict:
        return {"level": self.level, "code": self.code, "name": self.name, "tables": self.tables,
                "read": self.read, "coverage": self.coverage, "counts": dict(self.counts),
                "votes": self.votes, "VOTOS_NULOS": self.nulos,
                "printed": self.printed, "print_votes": self.print_votes, "print_VOTOS_NULOS": self.print_nulos,
                "unread": [{"key": k, "status": s, "detail": d} for k, s, d in self.unread]}


@dataclass
class Tally:
    tables: dict[str, Table]
    units: dict[tuple[str, str], Unit]
    coverage: Coverage

    def level(self, level: str) -> list[Unit]:
        return sorted((u for (lv, _c), u in self.units.items() if lv == level), key=lambda u: u.code)


CHECKS = ("consistent", "MISMATCH", "needs review", "read from print")


def _read(job: tuple[str, str, str, str, int, bool]) -> tuple[Reading, PrintReading | None]:
    """One acta's readings, from one open of its file (never through a link, only if regular):
    hashed, then decoded from the same file, so what is read is what was checked. A file whose
    size is not the recorded one is not those bytes, and is not read (a copy's sparse terabyte
    would take an hour to hash)."""
    key, bag, rel, sha256, size, ocr = job
    path = os.path.join(bag, rel)
    try:
        fh = open_payload(bag, rel)
    except (OSError, UnsafePath) as exc:
        why = f"cannot be read to check its bytes ({getattr(exc, 'strerror', None) or exc})"
        return Reading(key, path, None, why, cause=CHANGED), None
    with fh:
        have = os.fstat(fh.fileno()).st_size
        if have != size:
            why = f"{have:,} bytes, but the archive recorded {size:,}: run 'acta-mirror verify'"
            return Reading(key, path, None, why, cause=CHANGED), None
        got = hashlib.file_digest(fh, "sha256").hexdigest()
        if got != sha256:  # a copy's edited image: its votes are not the archive's, so they are never counted
            why = f"sha256 {got}, but the archive recorded {sha256}: run 'acta-mirror verify'"
            return Reading(key, path, None, why, cause=CHANGED), None
        return read_acta(key, path, fh), cached_read_print(fh, sha256, hashed=True) if ocr else None


def read_all(jobs: list[tuple[str, str, str, str, int, bool]], workers: int | None = None, progress=None) -> list:
    """Every job's readings, across the cores; progress(done, total), if given, as they come."""
    workers = workers or os.cpu_count() or 1
    out: list = []
    if workers > 1 and len(jobs) > 8:
        with pool(workers) as executor:
            readings = executor.map(_read, jobs, chunksize=1 if any(j[5] for j in jobs) else 16)
            for reading in readings:
                out.append(reading)
                if progress:
                    progress(len(out), len(jobs))
        return out
    for job in jobs:
        out.append(_read(job))
        if progress:
            progress(len(out), len(jobs))
    return out


def _verdict(qr: Reading, printed: PrintReading | None) -> tuple[str, str, str, str]:
    """(status, detail, check, cause) of an archived table from its QR and print readings;
    cause is why the QR was not read ("" when it was)."""
    if qr.named:  # a clean QR of another table: a swapped code, or that table's scan misfiled here,
        # whose print is that table's too (the print names no table): neither reading is this table's
        return "unreadable", qr.status, "MISMATCH" if printed is not None else "", qr.cause
    if printed is None:
        return ("qr", "", "", "") if qr.votes else ("unreadable", qr.status, "", qr.cause)
    if printed.status != CHECKED:
        return ("qr", "", "needs review", "") if qr.votes else \
            ("unreadable", f"{qr.status}; print: {printed.detail}", "", qr.cause)
    if qr.votes is None:
        if printed.code != qr.key:  # the figures name no table: the code printed above them must be this one
            return "unreadable", f"{qr.status}; print: the acta's code reads {printed.code or 'illegible'}, " \
                f"not {qr.key}", "", qr.cause
        return "print", f"QR: {qr.status}", "read from print", qr.cause
    same = printed.parties == qr.votes.parties and printed.nulos == qr.votes.nulos
    return "qr", "", "consistent" if same else "MISMATCH", ""


def tally(bag: str | os.PathLike, workers: int | None = None, ocr: bool = False, progress=None) -> Tally:
    """Read every archived table (the QR; with ocr, the printed figures too) and sum at every level;
    progress(done, total), if given, as actas are read."""
    bag = Path(bag)
    state = read_state(bag).require_clean()
    found = census(bag, state)
    entries = state.latest_actas()
    jobs = [(t.key, str(bag), t.path, entries[t.key].sha256, entries[t.key].size, ocr) for t in found.of(ARCHIVED)]
    readings = {qr.key: (qr, printed) for qr, printed in read_all(jobs, workers, progress)}
    verdicts = {k: _verdict(*r) for k, r in readings.items()}
    resolved = found.resolve({k: (v[0], v[1], v[3]) for k, v in verdicts.items()})
    tables: dict[str, Table] = {}
    for key, status in resolved.tables.items():
        qr, printed = readings.get(key, (None, None))
        check = verdicts[key][2] if key in verdicts else ""
        checked = printed is not None and printed.status == CHECKED
        figures = {**printed.by_candidate(), "VOTOS_NULOS": printed.nulos} if checked else None
        if status.status == "qr":
            votes, nulos = qr.votes.by_candidate(), qr.votes.nulos
        elif status.status == "print":
            votes, nulos = printed.by_candidate(), printed.nulos
        else:
            votes = nulos = None
        tables[key] = Table(key, status, entries.get(key), votes, nulos, check, figures,
                            printed.detail if printed is not None and not checked else "")
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
            if t.state.status == "print":
                unit.printed += 1
                unit.print_nulos += t.nulos or 0
                for c in CANDIDATES:
                    unit.print_votes[c] += t.votes[c]
                continue
            unit.read += 1
            unit.nulos += t.nulos or 0
            for c in CANDIDATES:
                unit.votes[c] += t.votes[c]
    return units


def checks(t: Tally) -> dict[str, int]:
    """Tables per QR-versus-print verdict (empty without OCR)."""
    counts: dict[str, int] = {}
    for table in t.tables.values():
        if table.check:
            counts[table.check] = counts.get(table.check, 0) + 1
    return {c: counts[c] for c in CHECKS if c in counts}


def electors_report(t: Tally) -> dict:
    """The read tables (QR or print) that count more votes, valid and null, than the electors the
    archived index registers for them (`over`), of the read tables it registers electors for
    (`checked`), of all read (`read`). An acta cannot hold more votes than its table has
    electors: each is a forged or misprinted acta, or a wrong index row. Its votes are counted
    as read all the same: this says so, and never changes a figure."""
    over, checked = [], 0
    for key, table in sorted(t.tables.items()):
        if table.votes is None or table.state.electors is None:
            continue
        checked += 1
        votes = sum(table.votes.values()) + (table.nulos or 0)
        if votes > table.state.electors:
            over.append({"key": key, "votes": votes, "electors": table.state.electors, "status": table.state.status})
    return {"checked": checked, "read": t.coverage.read, "over": over}


def electors_lines(report: dict, shown: int) -> list[str]:
    """An electors_report in words: 'votes over the registered electors: 0 of 21 read tables (the
    index lists electors for 21 of the 21 read)'; then each table over, up to `shown`. Nothing
    when no table was read."""
    if not report["read"]:
        return []
    over = report["over"]
    lines = [f"votes over the registered electors: {len(over):,} of {report['checked']:,} read tables "
             f"(the index lists electors for {report['checked']:,} of the {report['read']:,} read)"]
    lines += [f"  OVER {x['key']}: {x['votes']:,} votes (valid and nulos, from the "
              f"{'QR' if x['status'] == 'qr' else 'printed figures'}), {x['electors']:,} registered electors"
              for x in over[:shown]]
    if len(over) > shown:
        lines.append(f"  ... and {len(over) - shown:,} more (--format json)")
    return lines


def to_csv(t: Tally) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for key, table in sorted(t.tables.items()):
        s = table.state
        detail = spreadsheet_safe(s.detail)
        electors = "" if s.electors is None else s.electors  # the denominator: empty where the index gives none
        if table.votes is None:
            writer.writerow([key] + [""] * (len(CANDIDATES) + 1) + [s.status, detail, table.check, electors])
        else:
            writer.writerow([key] + [table.votes[c] for c in CANDIDATES] + [table.nulos, s.status, detail, table.check,
                                                                           electors])
    return out.getvalue()


def to_json(t: Tally) -> dict:
    return {
        "coverage": t.coverage.summary(),
        "counts": t.coverage.counts(),
        "denominator": t.coverage.source,
        "unlisted": list(t.coverage.unlisted),  # archived, but not on the list: not counted
        "listing_gaps": {"pages": t.coverage.gaps[0], "rows": t.coverage.gaps[1]},  # the list may be short
        "unreadable": t.coverage.causes(),
        "tables": [{"key": k, "votes": x.votes, "VOTOS_NULOS": x.nulos, "status": x.state.status,
                    "detail": x.state.detail, "cause": x.state.cause, "at": x.state.at, "attempts": x.state.attempts,
                    "path": x.path, "check": x.check, "printed": x.printed, "print_detail": x.print_detail,
                    "electors": x.state.electors}
                   for k, x in sorted(t.tables.items())],
        "checks": checks(t),
        "electors": electors_report(t),
        "levels": {level: [u.as_dict() for u in t.level(level)] for level in LEVELS if level != "table"},
    }
