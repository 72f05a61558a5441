"""Which tables the index lists, and what became of each.

The denominator of every count is the site's own list of tables: the latest index file
archived in the mirror (data/index/...). A site with no index file (the cne adapter walks
HTML) has for its list the union of what was discovered: archived actas, failed downloads
and tables the site stopped listing. Every table on the list gets exactly one status:

    qr          read from the QR code
    print       read from the printed figures (the QR could not be recovered)
    unreadable  archived, but neither the QR nor the print gave a checked reading
    failed      the download failed (the last error, when, and after how many attempts)
    deferred    not downloaded yet: the last run left it for the next (a deadline, a host's breaker)
    absent      the index lists it and the mirror has no trace of it
    vanished    archived or listed before, but the site no longer serves it

`census(bag)` reads the mirror only (no decoding): archived tables then have the provisional
status `archived`. `Coverage.resolve(readings)` gives each archived table its reading.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Mapping

from ..manifest import CHANGES, FAILURES
from ..models import DEFERRED_CAUSES, MAX_INDEX_BYTES, Entry, IndexFormatError, NotAMirror, Place
from ..sites.resultados2024 import parse_index_bytes
from ..state import MAX_RECORDS_BYTES, MirrorState, is_acta_key, iter_lines, open_payload, read_state

STATUSES = ("qr", "print", "unreadable", "failed", "deferred", "absent", "vanished")
ARCHIVED = "archived"  # provisional, before the archived image is read
READ = ("qr", "print")
LABELS = {
    "qr": "read from the QR",
    "print": "read from the printed figures",
    "unreadable": "unreadable",
    "failed": "failed to download",
    "deferred": "not downloaded yet (left for the next run)",
    "absent": "absent from the mirror",
    "vanished": "no longer served by the site",
    ARCHIVED: "archived, not read",
}
CSV_HEADER = ("key", "status", "label", "detail", "at", "attempts", "path", "state", "municipality",
              "parish", "center", "table", "cause", "electors")
# A spreadsheet runs a cell that starts with one of these as a formula (=HYPERLINK(...) can send
# the sheet's data away). Names, reasons and paths come from the site: such a text cell gets a
# leading apostrophe, which a spreadsheet shows as text and hides. The JSON output keeps them as they are.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value):
    """value for a CSV cell: a text that a spreadsheet would run as a formula, made text."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_START) else value


@dataclass(frozen=True)
class TableStatus:
    key: str  # "<9-digit center>.<2-digit table>"
    status: str  # one of STATUSES, or ARCHIVED before reading
    detail: str = ""  # the reason: the last download error, why it is unreadable, ...
    at: str = ""  # when: the failure, the vanishing, or the archived copy's download (ISO 8601)
    attempts: int | None = None  # requests made for a failed download, when the mirror recorded it
    path: str = ""  # the latest archived image, relative to the bag ("" when none)
    place: Place = field(default_factory=Place)
    cause: str = ""  # why its QR was not read (qr.CAUSES), for unreadable and print-only tables
    electors: int | None = None  # registered electors, where the archived index lists them (RE)

    @property
    def label(self) -> str:
        return LABELS[self.status]

    def as_dict(self) -> dict:
        return {"key": self.key, "status": self.status, "label": self.label, "detail": self.detail,
                "at": self.at, "attempts": self.attempts, "path": self.path,
                "state": self.place.state, "municipality": self.place.municipality,
                "parish": self.place.parish, "center": self.key[:9], "table": self.key[10:], "cause": self.cause,
                "electors": self.electors}


@dataclass(frozen=True)
class Coverage:
    tables: Mapping[str, TableStatus]  # key -> status, sorted by key
    source: str  # what the list of tables is: "index data/index/X.csv" or "discovered (no index file)"
    unlisted: tuple[str, ...] = ()  # archived tables the list does not name (an older index had them)
    gaps: tuple[int, int] = (0, 0)  # listing pages the last run could not read, index rows it refused

    @property
    def total(self) -> int:
        return len(self.tables)

    def counts(self) -> dict[str, int]:
        """Tables per status, every status present (0 when none), ARCHIVED only while unread."""
        counts = {s: 0 for s in STATUSES}
        for t in self.tables.values():
            counts[t.status] = counts.get(t.status, 0) + 1
        return counts

    def of(self, *statuses: str) -> list[TableStatus]:
        return [t for t in self.tables.values() if t.status in statuses]

    @property
    def read(self) -> int:
        return sum(1 for t in self.tables.values() if t.status in READ)

    def causes(self, status: str = "unreadable") -> dict[str, int]:
        """Tables of a status per cause, most first."""
        counts: dict[str, int] = {}
        for t in self.tables.values():
            if t.status == status:
                counts[t.cause or "unknown"] = counts.get(t.cause or "unknown", 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def summary(self) -> str:
        """One line: '24,427 of 24,532 tables read; 105 failed to download; 3 unreadable (2 no QR code
        found, 1 several QR codes)'."""
        counts = self.counts()
        if counts.get(ARCHIVED):
            head = f"{counts[ARCHIVED] + self.read:,} of {self.total:,} tables archived"
        else:
            head = f"{self.read:,} of {self.total:,} tables read"
            if counts["print"]:
                head += f" ({counts['print']:,} from the printed figures only)"
        by_cause = ", ".join(f"{n:,} {cause}" for cause, n in self.causes().items())
        parts = [head] + [f"{counts[s]:,} {LABELS[s]}" + (f" ({by_cause})" if s == "unreadable" else "")
                          for s in ("failed", "deferred", "unreadable", "absent", "vanished") if counts[s]]
        if self.unlisted:  # outside the denominator, but held: said, so none goes unmentioned
            parts.append(f"{len(self.unlisted):,} more archived that the list no longer names (kept, not counted)")
        pages, rows = self.gaps
        if pages or rows:  # the list itself is short by what could not be read: the total is a floor
            parts.append("the list of tables may be short: the last run could not read " + " and ".join(
                [f"{pages:,} listing page(s)"] * bool(pages) + [f"{rows:,} index row(s)"] * bool(rows)))
        return "; ".join(parts)

    def resolve(self, readings: Mapping[str, tuple[str, str, str]]) -> "Coverage":
        """Give each archived table its reading: key -> (status "qr", "print" or "unreadable", detail,
        cause: why the QR was not read, "" when it was)."""
        tables = {}
        for key, t in self.tables.items():
            if t.status == ARCHIVED:
                status, detail, cause = readings.get(key, ("unreadable", "not read", "not read"))
                if status not in ("qr", "print", "unreadable"):
                    raise ValueError(f"{key}: a reading is qr, print or unreadable, not {status!r}")
                t = replace(t, status=status, detail=detail, cause=cause)
            tables[key] = t
        return Coverage(tables, self.source, self.unlisted, self.gaps)

    def to_json(self) -> dict:
        return {"summary": self.summary(), "source": self.source, "total": self.total,
                "counts": self.counts(), "unlisted": list(self.unlisted),
                "listing_gaps": {"pages": self.gaps[0], "rows": self.gaps[1]},
                "tables": [t.as_dict() for t in self.tables.values()]}

    def to_csv(self, statuses: Iterable[str] | None = None) -> str:
        """One row per table (only those of the given statuses, when given)."""
        wanted = set(statuses) if statuses is not None else None
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_HEADER)
        for t in self.tables.values():
            if wanted is None or t.status in wanted:
                d = t.as_dict()
                writer.writerow(["" if d[c] is None else spreadsheet_safe(d[c]) for c in CSV_HEADER])
        return out.getvalue()


@dataclass(frozen=True)
class Failure:
    """One line of failures.jsonl: a download that failed for good in the last run."""

    key: str
    url: str
    reason: str
    cause: str = ""
    at: str = ""
    attempts: int | None = None


def read_failures(bag: str | os.PathLike, gaps: dict[str, int] | None = None) -> dict[str, Failure]:
    """key -> its failure in the last run (tables only); a damaged line is skipped. The fields
    cause, at and attempts are read when the crawl wrote them. gaps, when given, counts the
    listing pages ("page") and index rows ("index") the run could not use."""
    out: dict[str, Failure] = {}
    try:
        fh = open_payload(bag, FAILURES, MAX_RECORDS_BYTES)  # no link, no FIFO, no sparse terabyte
    except FileNotFoundError:
        return out
    with fh:
        for raw in iter_lines(fh):
            if raw is None:
                continue  # a planted line of gigabytes: skipped, not read whole (verify names it)
            try:
                obj = json.loads(raw.decode("utf-8", "replace"))
            except (ValueError, RecursionError):
                continue  # verify reports damage to a tag file; the count must go on
            if not isinstance(obj, dict) or not is_acta_key(obj.get("key")):
                if gaps is not None and isinstance(obj, dict) and obj.get("key") in ("page", "index"):
                    gaps[obj["key"]] = gaps.get(obj["key"], 0) + 1
                continue  # pages and index rows that failed are not tables
            attempts = obj.get("attempts")
            out[obj["key"]] = Failure(obj["key"], str(obj.get("url", "")), str(obj.get("reason", "")),
                                      str(obj.get("cause", "") or ""), str(obj.get("at", "") or ""),
                                      attempts if isinstance(attempts, int) and not isinstance(attempts, bool) else None)
    return out


def read_vanished(bag: str | os.PathLike) -> dict[str, str]:
    """key -> when the site stopped listing it, for tables whose last change is 'vanished'."""
    last: dict[str, tuple[str, str]] = {}
    try:
        fh = open_payload(bag, CHANGES, MAX_RECORDS_BYTES)  # no link, no FIFO, no sparse terabyte
    except FileNotFoundError:
        return {}
    with fh:
        for raw in iter_lines(fh):
            if raw is None:
                continue
            try:
                obj = json.loads(raw.decode("utf-8", "replace"))
                last[obj["key"]] = (obj["change"], str(obj.get("at", "")))
            except (ValueError, KeyError, TypeError, RecursionError):
                continue
    return {k: at for k, (change, at) in last.items() if change == "vanished" and is_acta_key(k)}


def archived_index(state: MirrorState, entry: Entry) -> bytes:
    """The index file's bytes, only when they are the ones its provenance record names: a copy
    with an edited index (tables dropped from the list, other published figures) is refused
    with NotAMirror, never counted against; so is one larger than any index (MAX_INDEX_BYTES),
    unread: its record may say so, but a copy's 60 GB index would be read into memory."""
    if entry.size > MAX_INDEX_BYTES:
        raise NotAMirror(f"{state.root}: {entry.path}: provenance.jsonl gives the index {entry.size:,} bytes, "
                         f"larger than any index ({MAX_INDEX_BYTES:,}); not read")
    with state.open(entry.path) as fh:
        raw = fh.read(entry.size + 1)  # more than the record says is other bytes already: never read whole
    got = hashlib.sha256(raw).hexdigest()
    if got != entry.sha256:
        raise NotAMirror(f"{state.root}: {entry.path} is not the archived index (sha256 {got}, provenance.jsonl "
                         f"says {entry.sha256}): run 'acta-mirror verify'")
    return raw


def index_tables(raw: bytes, name: str) -> dict[str, tuple[Place, int | None]]:
    """Each table an index lists: where it sits (its first row) and its registered electors;
    None where the index gives none, or gives the table twice with other electors (an index
    that contradicts itself says nothing of them, and is not checked against)."""
    tables: dict[str, tuple[Place, int | None]] = {}
    for acta in parse_index_bytes(raw, name):
        place, electors = tables.setdefault(acta.key, (acta.place, acta.electors))
        if electors != acta.electors:
            tables[acta.key] = place, None
    return tables


def _place_from_key(key: str) -> Place:
    return Place(state_code=str(int(key[0:2])), municipality_code=str(int(key[2:4])),
                 parish_code=str(int(key[4:6])), center=key[:9], table=key[10:])


def census(bag: str | os.PathLike, state: MirrorState | None = None, *, index_held: bool = True) -> Coverage:
    """Every table of the site's list with its status, from the mirror's records only.

    Archived tables get the provisional status ARCHIVED; `resolve` gives them their reading.
    state: the mirror as state.read_state validated it (read here when not given); a mirror
    whose records do not check out is refused (NotAMirror naming the first problem), and so is
    one without the index its records name. index_held=False: a scheduled run's working bag,
    which holds only the files of this run, counts against what was discovered instead.
    """
    bag = Path(bag)
    state = state or read_state(bag).require_clean()
    actas = state.latest_actas()
    gaps: dict[str, int] = {}
    failures = read_failures(bag, gaps)
    vanished = read_vanished(bag)
    index = state.latest_index()
    places: dict[str, tuple[Place, int | None]] | None = None
    source = "discovered (no index file)"
    if index is not None:
        try:
            places = index_tables(archived_index(state, index), index.path)
            source = f"index {index.path}"
        except OSError as exc:  # the records name an index the copy does not hold: no list to count against
            if index_held:
                raise NotAMirror(f"{bag}: {index.path}: the archived index cannot be read "
                                 f"({exc.strerror or exc}): run 'acta-mirror verify'") from None
            source = f"discovered (the index {index.path} could not be read: {exc.__class__.__name__})"
        except (IndexFormatError, UnicodeDecodeError) as exc:
            source = f"discovered (the index {index.path} could not be read: {exc.__class__.__name__})"
    if places is None:
        places = {}
        for key in sorted(set(actas) | set(failures) | set(vanished)):
            places[key] = (actas[key].place if key in actas else _place_from_key(key)), None
    tables: dict[str, TableStatus] = {}
    for key in sorted(places):
        (place, electors), entry = places[key], actas.get(key)
        path = entry.path if entry else ""
        if key in vanished:
            kept = f"; archived copy of {entry.fetched_at} kept" if entry else ""
            tables[key] = TableStatus(key, "vanished", "the site no longer lists it" + kept, vanished[key],
                                      None, path, place, electors=electors)
        elif entry is not None:
            tables[key] = TableStatus(key, ARCHIVED, "", entry.fetched_at, None, path, place, electors=electors)
        elif key in failures:
            f = failures[key]
            detail = f.reason + (f" ({f.cause})" if f.cause and f.cause not in f.reason else "")
            status = "deferred" if f.cause in DEFERRED_CAUSES else "failed"
            tables[key] = TableStatus(key, status, detail, f.at, f.attempts, "", place, electors=electors)
        else:
            tables[key] = TableStatus(key, "absent", "no download recorded", "", None, "", place, electors=electors)
    return Coverage(tables, source, tuple(sorted(set(actas) - set(places))),
                    (gaps.get("page", 0), gaps.get("index", 0)))

