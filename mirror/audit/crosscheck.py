"""Cross-check the QR tally against published figures: the site's index, an official results file.

Accepted files (CSV, UTF-8 or latin-1):
- the site's index (columns CENTRO, MESA and the candidate columns): per table;
- an official results file with columns `level`, `code` and any candidate columns
  (EG, NM, LM, JABE, JOBR, AE, CF, DC, EM, BERA) and optionally VOTOS_NULOS. `level` is one of
  table, center, parish, municipality, state, nation; `code` is the acta key for a table, else
  the CNE code: center 9 digits, parish 6, municipality 4, state 2 (e.g. `01`), nation `VE`.

For each race level (nation, every state, every municipality in the file's scope) it reports
the margin between the first two candidates of the QR tally next to the votes in dispute, and
flags where the disputed votes could flip the result.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from ..models import UsageError
from ..qrformat import CANDIDATES
from ..sites.resultados2024 import acta_key, read_index_text
from .tally import LEVELS, Tally, unit_code

COUNTED = CANDIDATES + ("VOTOS_NULOS",)


@dataclass(frozen=True)
class Disagreement:
    source: str
    level: str
    code: str
    column: str
    qr: int
    other: int


def load_figures(path: str | Path) -> dict[tuple[str, str], dict[str, int]]:
    """(level, code) -> {column: votes} from an index CSV or an official results file."""
    path = Path(path)
    try:
        text = read_index_text(path.read_bytes())
    except OSError as exc:
        raise UsageError(f"--against {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"--against {path}: not UTF-8 after its BOM") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = reader.fieldnames or []
    columns = [c for c in COUNTED if c in header]
    if not columns:
        raise UsageError(f"--against {path}: no candidate columns ({', '.join(CANDIDATES)})")
    per_table = "CENTRO" in header and "MESA" in header
    if not per_table and not ("level" in header and "code" in header):
        raise UsageError(f"--against {path}: needs CENTRO and MESA columns, or level and code columns")
    figures: dict[tuple[str, str], dict[str, int]] = {}
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
            figures[(level, code)] = {c: int(row[c]) for c in columns if (row.get(c) or "").strip() != ""}
    except (ValueError, TypeError, KeyError) as exc:
        raise UsageError(f"--against {path}:{reader.line_num}: {exc}") from None
    return figures


def _qr_figures(t: Tally, level: str, code: str) -> dict[str, int] | None:
    if level == "table":
        table = t.tables.get(code)
        if table is None or table.votes is None:
            return None
        return {**table.votes, "VOTOS_NULOS": table.nulos}
    unit = t.units.get((level, code))
    if unit is None or unit.decoded != unit.tables:
        return None  # a partly decoded unit cannot be compared to a total
    return {**unit.votes, "VOTOS_NULOS": unit.nulos}


def crosscheck(t: Tally, sources: list[str]) -> dict:
    disagreements: list[Disagreement] = []
    unverifiable: list[dict] = []
    disputed: dict[tuple[str, str], int] = {}
    for source in sources:
        name = Path(source).name
        for (level, code), theirs in sorted(load_figures(source).items()):
            ours = _qr_figures(t, level, code)
            if ours is None:
                unverifiable.append({"source": name, "level": level, "code": code,
                                     "reason": "not decoded from the actas" if (level, code) in t.units or
                                     code in t.tables else "not in the mirror"})
                continue
            for column, value in theirs.items():
                if value != ours[column]:
                    disagreements.append(Disagreement(name, level, code, column, ours[column], value))
                    if column in CANDIDATES:
                        key = code if level == "table" else None
                        for race in ("nation", "state", "municipality"):
                            race_code = unit_code(key, race) if key else (
                                code[:{"nation": 0, "state": 2, "municipality": 4}[race]] or "VE")
                            if LEVELS.index(race) <= LEVELS.index(level):
                                disputed[(race, race_code)] = disputed.get((race, race_code), 0) + abs(value - ours[column])
    races = []
    for (level, code), votes_in_dispute in sorted(disputed.items()):
        unit = t.units.get((level, code))
        if unit is None:
            continue
        ranked = sorted(unit.votes.items(), key=lambda kv: -kv[1])
        margin = ranked[0][1] - ranked[1][1]
        races.append({"level": level, "code": code, "name": unit.name, "leader": ranked[0][0],
                      "runner_up": ranked[1][0], "margin": margin, "votes_in_dispute": votes_in_dispute,
                      "could_flip": votes_in_dispute >= margin,
                      "coverage": f"{unit.decoded} of {unit.tables} tables decoded"})
    tables = sorted({d.code for d in disagreements if d.level == "table"})
    return {"disagreements": [d.__dict__ for d in disagreements], "tables_in_disagreement": tables,
            "races": races, "unverifiable": unverifiable}
