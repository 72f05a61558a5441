"""Cross-check the QR tally against published figures: the site's index, an official results file.

Accepted files (CSV, UTF-8 or latin-1):
- the site's index (columns CENTRO, MESA and the candidate columns): per table;
- an official results file with columns `level`, `code` and any candidate columns
  (EG, NM, LM, JABE, JOBR, AE, CF, DC, EM, BERA) and optionally VOTOS_NULOS. `level` is one of
  table, center, parish, municipality, state, nation; `code` is the acta key for a table, else
  the CNE code: center 9 digits, parish 6, municipality 4, state 2 (e.g. `01`), nation `VE`.

A table is checked when it was read and some file gives its figures (per table, or in a
total whose every table was read from its QR). The report names every unchecked table with
the reason. A table read from its printed figures only (tally --ocr, QR lost) is compared per
table, and each of its disagreements says so (basis "print", not "QR"); its votes are not in
any total, so a total that holds it is not compared.

For each race level (nation, every state, every municipality in the file's scope) it reports
the margin between the first two candidates of the QR tally next to the votes in dispute, and
flags where the disputed votes could flip the result.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from ..manifest import read_small_file
from ..models import MAX_INDEX_BYTES, UsageError
from ..qrformat import CANDIDATES
from ..sites.resultados2024 import acta_key, read_index_text
from .tally import LEVELS, Tally, checks, electors_report, unit_code

COUNTED = CANDIDATES + ("VOTOS_NULOS",)
MAX_FIGURES_BYTES = MAX_INDEX_BYTES  # the index of all 30,026 tables is a few MB; results files are smaller
PRINTED = "printed figures"  # the source name of the QR-versus-print check


@dataclass(frozen=True)
class Disagreement:
    source: str
    level: str
    code: str
    column: str
    qr: int  # our figure: from the QR, or from the checked print when basis is "print"
    other: int
    basis: str = "QR"


def load_figures(path: str | Path) -> dict[tuple[str, str], dict[str, int]]:
    """(level, code) -> {column: votes} from an index CSV or an official results file."""
    path = Path(path)
    try:
        text = read_index_text(read_small_file(path, MAX_FIGURES_BYTES))  # a FIFO or a device would hang
    except OSError as exc:
        raise UsageError(f"--against {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"--against {path}: not UTF-8 after its BOM") from None
    except ValueError as exc:
        raise UsageError(f"--against {path}: {exc}") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = reader.fieldnames or []
    columns = [c for c in COUNTED if c in header]
    if not columns:
        raise UsageError(f"--against {path}: no candidate columns ({', '.join(CANDIDATES)})")
    per_table = "CENTRO" in header and "MESA" in header
    if not per_table and not ("level" in header and "code" in header):
        raise UsageError(f"--against {path}: needs CENTRO and MESA columns, or level and code columns")
    figures: dict[tuple[str, str], dict[str, int]] = {}
    first_line: dict[tuple[str, str], int] = {}
    try:
        for row in reader:
            if None in row or any(v is None for v in row.values()):
                raise ValueError("wrong number of fields")
            if per_table:
                level, code = "table", acta_key(row["CENTRO"], row["MESA"])
            else:
                level, code = row["level"].strip(), row["code"].strip()
                if level not in LEVELS:
                    raise ValueError(f"level {level!r} is not one of {', '.join(LEVELS)}")
            given = {c: int(row[c]) for c in columns if (row.get(c) or "").strip() != ""}
            if (level, code) in figures and figures[(level, code)] != given:  # which would be the figure?
                raise ValueError(f"{level} {code} is given again with other figures "
                                 f"(first on line {first_line[(level, code)]})")
            figures[(level, code)] = given
            first_line.setdefault((level, code), reader.line_num)
    except (ValueError, TypeError, KeyError, csv.Error) as exc:
        raise UsageError(f"--against {path}:{reader.line_num}: {exc}") from None
    return figures


def _qr_figures(t: Tally, level: str, code: str) -> tuple[dict[str, int], str] | None:
    """Our figures for a table or a total, and what they were read from ("QR" or "print")."""
    if level == "table":
        table = t.tables.get(code)
        if table is None or table.votes is None:
            return None
        return {**table.votes, "VOTOS_NULOS": table.nulos}, "print" if table.state.status == "print" else "QR"
    unit = t.units.get((level, code))
    if unit is None or unit.read != unit.tables:
        return None  # a unit not wholly read from the QR cannot be compared to a total
    return {**unit.votes, "VOTOS_NULOS": unit.nulos}, "QR"


def _why_not(t: Tally, level: str, code: str) -> str:
    if level == "table":
        table = t.tables.get(code)
        return "not on the mirror's list of tables" if table is None else table.status
    unit = t.units.get((level, code))
    if unit is None:
        return "no table of it on the mirror's list"
    return f"only {unit.coverage}"


def crosscheck(t: Tally, sources: list[str]) -> dict:
    """Compare every figure of every source; say which tables were checked and why the rest were not."""
    disagreements: list[Disagreement] = []
    unverifiable: list[dict] = []
    # race -> level -> (unit, column) -> the largest difference any file gives for it: a figure two
    # files dispute is counted once, and a level's differences are summed but never added to another
    # level's (a table and its parish carry the same votes)
    disputed: dict[tuple[str, str], dict[str, dict[tuple[str, str], int]]] = {}
    compared: dict[tuple[str, str], set[str]] = {}  # (level, code) -> the sources that gave its figures
    names = []
    given = 0  # units (a table, a parish, a state...) whose figures the files give: the denominator
    for source in sources:
        name = Path(source).name
        names.append(name)
        for (level, code), theirs in sorted(load_figures(source).items()):
            given += 1
            found = _qr_figures(t, level, code)
            if found is None:
                unverifiable.append({"source": name, "level": level, "code": code, "reason": _why_not(t, level, code)})
                continue
            ours, basis = found
            compared.setdefault((level, code), set()).add(name)
            for column, value in theirs.items():
                if value == ours[column]:
                    continue
                disagreements.append(Disagreement(name, level, code, column, ours[column], value, basis))
                if column not in CANDIDATES:
                    continue
                for race in ("nation", "state", "municipality"):
                    if LEVELS.index(race) > LEVELS.index(level):
                        continue
                    race_code = unit_code(code, race) if level == "table" else (
                        code[:{"nation": 0, "state": 2, "municipality": 4}[race]] or "VE")
                    figures = disputed.setdefault((race, race_code), {}).setdefault(level, {})
                    figures[(code, column)] = max(figures.get((code, column), 0), abs(value - ours[column]))
    races = []
    for (level, code), by_level in sorted(disputed.items()):
        votes_in_dispute = max(sum(figures.values()) for figures in by_level.values())
        unit = t.units.get((level, code))
        if unit is None:
            continue
        ranked = sorted(unit.votes.items(), key=lambda kv: -kv[1])
        margin = ranked[0][1] - ranked[1][1]
        races.append({"level": level, "code": code, "name": unit.name, "leader": ranked[0][0],
                      "runner_up": ranked[1][0], "margin": margin, "votes_in_dispute": votes_in_dispute,
                      "could_flip": votes_in_dispute >= margin, "coverage": unit.coverage})
    mismatches = []
    for key, table in t.tables.items():
        if table.check != "MISMATCH":
            continue
        mismatches.append({"key": key, "detail": table.state.detail, "qr": table.votes if table.state.status == "qr"
                           else None, "printed": table.printed})
        if table.state.status == "qr" and table.printed:
            ours = {**table.votes, "VOTOS_NULOS": table.nulos}
            disagreements += [Disagreement(PRINTED, "table", key, c, ours[c], table.printed[c])
                              for c in COUNTED if ours[c] != table.printed[c]]
            compared.setdefault(("table", key), set()).add(PRINTED)
    if mismatches:
        names.append(PRINTED)
    unchecked: dict[str, list[str]] = {}
    checked = 0
    for key, table in t.tables.items():
        if table.votes is None:
            reason = table.state.label
        elif any((level, unit_code(key, level)) in compared for level in LEVELS):
            checked += 1
            continue
        else:
            reason = "read, but no file gives its figures"
        unchecked.setdefault(reason, []).append(key)
    kinds: dict[str, dict] = {}
    for d in disagreements:
        kind = kinds.setdefault(f"{d.level} vs {d.source}", {"units": set(), "figures": 0})
        kind["units"].add(d.code)
        kind["figures"] += 1
    return {
        "coverage": t.coverage.summary(), "sources": names,
        "checked": checked, "tables": len(t.tables),
        "summary": {k: {"units": len(v["units"]), "figures": v["figures"]} for k, v in sorted(kinds.items())},
        "disagreements": [{**d.__dict__, "difference": d.qr - d.other} for d in disagreements],
        "differences": _differences(disagreements, names, compared),
        "tables_in_disagreement": sorted({d.code for d in disagreements if d.level == "table"}),
        "unchecked": {reason: sorted(keys) for reason, keys in sorted(unchecked.items())},
        "races": races, "given": given, "unverifiable": unverifiable, "mismatches": mismatches,
        "print_checks": checks(t), "electors": electors_report(t),
    }


def _differences(disagreements: list[Disagreement], sources: list[str],
                 compared: dict[tuple[str, str], set[str]]) -> list[dict]:
    """One row per (level, code, column) in disagreement: the QR figure, then QR minus each source
    (0 where that source agrees, None where it has no such figure)."""
    rows: dict[tuple[str, str, str], dict] = {}
    for d in disagreements:
        gave = compared.get((d.level, d.code), set())
        row = rows.setdefault((d.level, d.code, d.column), {
            "level": d.level, "code": d.code, "column": d.column, "qr": d.qr, "basis": d.basis,
            "minus": {s: (0 if s in gave else None) for s in sources}})
        row["minus"][d.source] = d.qr - d.other
    return [rows[k] for k in sorted(rows)]


def exit_status(report: dict, allow_incomplete: bool = False) -> int:
    """0 every table checked and all agree; 1 a disagreement (or a QR-versus-print MISMATCH, or a
    table counting more votes than the index's registered electors);
    3 some tables unchecked, or some figure of a file not checkable (a table the copy does not
    list), none disagree: a copy that dropped the tables in dispute, and its index with them,
    must not pass as agreeing."""
    if report["disagreements"] or report["mismatches"] or report["electors"]["over"]:
        return 1
    if (report["unchecked"] or report["unverifiable"]) and not allow_incomplete:
        return 3
    return 0
