"""Fault injection for the replay: which image gets which fault, chosen reproducibly by seed.

A plan is written `kind=FRACTION[:TIMES],…`, for example `429=0.02,503=0.05:3,404=0.001`.
FRACTION of the image files get that fault; a file gets at most one kind (first in KINDS
order wins). TIMES is how many requests of that file fail before it recovers (transient
kinds only). Kinds and what the server does:

    429       429 Too Many Requests with Retry-After (seconds, or an HTTP-date for half of them)
    503       a burst of 503 Service Unavailable
    reset     the connection is reset after half the body
    short     the body stops short of its Content-Length, then the connection closes
    slow      the response waits SLOW_SECONDS before it starts (then succeeds)
    denied    an HTML "access denied" page with status 200 (every time)
    redirect  302 to another path that serves the same bytes (every time)
    404       404 Not Found (every time)
    change    the image's bytes change when the replay's epoch is 2 or more
    drip      slowloris: the body trickles a byte at a time, far slower than any timeout
    endless   a body with no length that never ends
    huge      a Content-Length far above any sane cap
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from ..models import UsageError

KINDS = ("404", "denied", "redirect", "change", "429", "503", "reset", "short", "slow",
         "drip", "endless", "huge")
TRANSIENT = {"429": 1, "503": 3, "reset": 1, "short": 1}  # default TIMES
SLOW_SECONDS = 0.3


@dataclass(frozen=True)
class Rule:
    kind: str
    fraction: float
    times: int = 0


@dataclass
class FaultPlan:
    rules: tuple[Rule, ...] = ()
    seed: int = 0
    explicit: dict[str, str] = field(default_factory=dict)  # file name -> kind, for tests

    @classmethod
    def parse(cls, text: str | None, seed: int = 0) -> "FaultPlan":
        if not text:
            return cls(seed=seed)
        rules = []
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            kind, sep, value = part.partition("=")
            if not sep or kind not in KINDS:
                raise UsageError(f"--faults: {part!r}: expected KIND=FRACTION[:TIMES], KIND one of {', '.join(KINDS)}")
            frac, _sep, times = value.partition(":")
            try:
                fraction = float(frac)
                count = int(times) if times else TRANSIENT.get(kind, 0)
            except ValueError:
                raise UsageError(f"--faults: {part!r}: FRACTION is a number from 0 to 1, TIMES a whole number") from None
            if not 0 <= fraction <= 1 or count < 0:
                raise UsageError(f"--faults: {part!r}: FRACTION is from 0 to 1, TIMES 0 or more")
            rules.append(Rule(kind, fraction, count))
        order = {k: i for i, k in enumerate(KINDS)}
        return cls(tuple(sorted(rules, key=lambda r: order[r.kind])), seed)

    def with_files(self, **names: str) -> "FaultPlan":
        """A copy that also gives named files a fault: with_files(**{"a.jpg": "404"})."""
        return FaultPlan(self.rules, self.seed, {**self.explicit, **names})

    def kind_for(self, filename: str) -> Rule | None:
        if filename in self.explicit:
            kind = self.explicit[filename]
            return Rule(kind, 1.0, TRANSIENT.get(kind, 0))
        for rule in self.rules:
            h = hashlib.sha256(f"{self.seed}:{rule.kind}:{filename}".encode()).digest()
            if int.from_bytes(h[:8], "big") / 2**64 < rule.fraction:
                return rule
        return None
