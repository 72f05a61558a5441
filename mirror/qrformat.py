"""The acta QR text format of 2024: build it and parse it, with the ballot's party order.

    010101002.03.1.0001!84,4,...,7!0!0
    <center 9>.<table 2>.1.0001 ! 38 votes per party, in ballot order ! nulos ! third count

Parsing is strict: a text that is not exactly this shape is not a reading. Digits are ASCII
only (Python's isdigit also takes "²" and "٣"); every count and the table's total fit the
four figures the acta prints per row (its rows spell votes as four number words).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

# Candidate column of the index CSV -> number of party fields, in ballot order.
BALLOT = (
    ("NM", 13),   # Maduro: PSUV, PCV, TUPAMARO, PPT, MSV, PODEMOS, MEP, APC, ORA, UPV, EV, PVV, PFV
    ("LM", 6),    # Martínez: AD, COPEI, MR, BR, DDP, UNE
    ("JABE", 1),  # Bertucci: EL CAMBIO
    ("JOBR", 4),  # Brito: PV, VU, UVV, MPJ
    ("AE", 6),    # Ecarri: AP, MOVEV, CMC, FV, ALIANZA DEL LAPIZ, MIN UNIDAD
    ("CF", 1),    # Fermín: SPV
    ("DC", 2),    # Ceballos: VPA, AREPA
    ("EG", 3),    # González: UNTC, MPV, MUD
    ("EM", 1),    # Márquez: CENTRADOS
    ("BERA", 1),  # Rausseo: CONDE
)
CANDIDATES = ("EG", "NM", "LM", "JABE", "JOBR", "AE", "CF", "DC", "EM", "BERA")  # the CSV's order
PARTY_FIELDS = sum(n for _c, n in BALLOT)  # 38
_KEY = re.compile(r"([0-9]{9})\.([0-9]{2})\.1\.0001")  # every one of 21,952 decoded codes ends .1.0001
_COUNT = re.compile(r"[0-9]{1,4}")
MAX_COUNT = 9999  # four printed figures


@dataclass(frozen=True)
class QrVotes:
    key: str  # "<center>.<table>"
    parties: tuple[int, ...]  # 38 fields in ballot order
    nulos: int
    third: int

    def by_candidate(self) -> dict[str, int]:
        return by_candidate(self.parties)


def by_candidate(parties: tuple[int, ...]) -> dict[str, int]:
    """The 38 party fields, in ballot order, summed per candidate (the index's columns)."""
    totals, i = {}, 0
    for cand, n in BALLOT:
        totals[cand] = sum(parties[i:i + n])
        i += n
    return {c: totals[c] for c in CANDIDATES}


class QrFormatError(ValueError):
    pass


def parse_qr(text: str) -> QrVotes:
    """Parse and validate one QR text; QrFormatError says what is wrong."""
    parts = text.split("!")
    if len(parts) != 4:
        raise QrFormatError(f"expected 4 '!'-separated parts, found {len(parts)}")
    m = _KEY.fullmatch(parts[0])
    if not m:
        raise QrFormatError(f"bad acta code {parts[0][:40]!r}")
    fields = parts[1].split(",")
    if len(fields) != PARTY_FIELDS:
        raise QrFormatError(f"expected {PARTY_FIELDS} party fields, found {len(fields)}")
    numbers = []
    for f in fields + [parts[2], parts[3]]:
        if not _COUNT.fullmatch(f):
            raise QrFormatError(f"not a count of 0-{MAX_COUNT} in ASCII digits: {f[:12]!r}")
        numbers.append(int(f))
    if sum(numbers[:PARTY_FIELDS]) + numbers[-2] > MAX_COUNT:
        raise QrFormatError(f"votes add up to {sum(numbers[:PARTY_FIELDS]) + numbers[-2]}, "
                            f"more than the {MAX_COUNT} an acta can print")
    return QrVotes(f"{m.group(1)}.{m.group(2)}", tuple(numbers[:PARTY_FIELDS]), numbers[-2], numbers[-1])


def build_qr(key: str, parties: list[int], nulos: int, third: int = 0) -> str:
    if len(parties) != PARTY_FIELDS:
        raise ValueError("need 38 party fields")
    return f"{key}.1.0001!{','.join(str(v) for v in parties)}!{nulos}!{third}"
