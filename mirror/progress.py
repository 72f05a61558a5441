"""Progress for people: a rich bar on a terminal, a plain line every few seconds otherwise.

Every long command (crawl, run, publish, restore, verify, tally) shows the same figures the
same way: done of total once the total is known, rate, bytes, ETA, retries and failures as
counts (only where the command counts them: no '0 failed' from a check that reports its
problems elsewhere). A figure that is not known yet is said in words, never printed as None or nan. At
the end, failures are grouped by cause, each cause with what to try next.
"""
from __future__ import annotations

import os
import re
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable

PLAIN_EVERY = 5.0  # seconds between plain lines (Actions logs); ACTA_MIRROR_PROGRESS_EVERY overrides
RICH_EVERY = 0.2  # seconds between redraws of the terminal bar
EXAMPLES_PER_CAUSE = 3  # failed URLs named under each cause; the full list is in failures.jsonl


@dataclass(frozen=True)
class Figures:
    """What a display shows at one moment. total is None until it is known."""

    label: str = ""
    done: int = 0
    total: int | None = None
    bytes: int = 0
    retries: int | None = None  # None: this command does not count them (verify, tally, publish...),
    failed: int | None = None  # so the line does not show a '0 failed' it never checked
    unit: str = "files"


class Progress:
    """A display fed by update() (or by a poll function read at every tick); a context manager.

    With quiet, or with nothing to show, it prints nothing. On a terminal it draws a rich bar
    on stderr; elsewhere it prints a plain line every PLAIN_EVERY seconds and one at the end.
    """

    def __init__(self, label: str, *, quiet: bool = False, poll: Callable[[], Figures] | None = None,
                 unit: str = "files", stream=None, every: float | None = None):
        self.name = label
        self.figures = Figures(label=label, unit=unit)
        self.poll = poll
        self.quiet = quiet
        self.stream = stream or sys.stderr
        env = os.environ.get("ACTA_MIRROR_PROGRESS_EVERY", "")
        self.every = every if every is not None else (float(env) if _an_interval(env) else PLAIN_EVERY)
        self.started = time.monotonic()
        self._moved = self.started  # when `done` last changed: the rate is counted up to then
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._rich = None

    # -- feeding it ------------------------------------------------------------
    def update(self, **changes) -> None:
        with self._lock:
            if changes.get("done", self.figures.done) != self.figures.done:
                self._moved = time.monotonic()
            self.figures = replace(self.figures, **changes)

    def step(self, label: str, part: str, done: int, total: int) -> None:
        """The publishers' callback shape: (target, part, done, total)."""
        who = self.name if label == self.name else f"{self.name} {label}"
        self.update(label=f"{who} [{part}]", done=done, total=total)

    def count(self, done: int, total: int) -> None:
        """The plain callback shape: (done, total)."""
        self.update(done=done, total=total)

    def current(self) -> Figures:
        if self.poll is not None:
            self.update(**{k: v for k, v in vars(self.poll()).items() if k not in ("label", "unit")})
        return self.figures

    # -- showing it ------------------------------------------------------------
    def __enter__(self) -> "Progress":
        if self.quiet:
            return self
        if self.stream.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, Progress as Bar, TextColumn

            self._rich = Bar(TextColumn("[bold]{task.description}"), BarColumn(bar_width=16),
                             TextColumn("{task.fields[line]}"),
                             console=Console(file=self.stream), transient=True)
            self._task = self._rich.add_task(self.figures.label, total=None, line="")
            self._rich.start()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(5)
        if self._rich is not None:
            self._rich.stop()
        figures = self.current()
        if figures.done or figures.failed or figures.total:
            print(self.line(final=True), file=self.stream, flush=True)

    def _run(self) -> None:
        every = RICH_EVERY if self._rich is not None else self.every
        while not self._stop.wait(every):
            figures = self.current()
            if self._rich is not None:
                self._rich.update(self._task, description=figures.label, completed=figures.done,
                                  total=figures.total, line=self.line(bare=True))
            elif figures.done or figures.total or figures.failed:
                print(self.line(), file=self.stream, flush=True)

    def line(self, *, final: bool = False, bare: bool = False) -> str:
        """The plain line: every figure is a number or words, never None or nan. `bare` is the
        short form beside a terminal bar (80 columns)."""
        f = self.figures
        elapsed = max(time.monotonic() - self.started, 1e-6)
        # All counted (a publish's files staged, then the push; a crawl's actas, then the bag's
        # files): what is left is not counted, so the rate stops where the count did, not falls.
        counted = bool(f.total) and f.done >= f.total
        rate = f.done / max(self._moved - self.started, 1e-6) if counted else f.done / elapsed
        if bare:
            eta = ("finishing" if counted else
                   f"eta {duration(max(f.total - f.done, 0) / rate)}" if f.total is not None and rate > 0 else "eta ?")
            amount = f"{f.done}/{f.total}" if f.total is not None else f"{f.done}/?"
            size = f" {human_bytes(f.bytes)}" if f.bytes else ""
            tried = f" retries {f.retries} failed {f.failed}" if f.failed is not None else ""
            return f"{amount}{size} {rate:.0f}/s {eta}{tried}"
        if f.total is None:
            amount = f"{f.done} {f.unit} done (total not known yet)"
        else:
            amount = f"{f.done} of {f.total} {f.unit} ({100 * f.done / f.total if f.total else 100:.0f}%)"
        parts = [amount]
        if f.bytes:
            parts.append(human_bytes(f.bytes))
        parts.append(f"{rate:.1f}/s")
        if final:
            parts.append(f"took {duration(elapsed)}")
        elif counted:
            parts.append("all counted, finishing")
        elif f.total is None:
            parts.append("eta when the total is known")
        elif rate > 0:
            parts.append(f"eta {duration(max(f.total - f.done, 0) / rate)}")
        else:
            parts.append("eta unknown (nothing done yet)")
        if f.retries is not None:
            parts.append(f"{f.retries} retr{'y' if f.retries == 1 else 'ies'}")
        if f.failed is not None:
            parts.append(f"{f.failed} of {f.done} failed")
        return f"[{duration(elapsed):>6}] {f.label}: {' · '.join(parts)}"


def _an_interval(text: str) -> bool:
    """A number of seconds a display may wait between lines: from 0.1 s (a line every 1e-9 s
    floods a log) to a day (an infinite wait is refused by the clock, with a traceback)."""
    try:
        return 0.1 <= float(text) <= 86400
    except ValueError:
        return False


def human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


# -- failures grouped by cause ----------------------------------------------------
# A reason the fetcher wrote, matched in order; the first pattern found names the cause.
_CAUSES = (
    (re.compile(r"HTTP (\d{3})"), None),  # None: the cause is "HTTP <code>"
    (re.compile(r"HTML page where an image belongs"), "HTML instead of an image"),
    (re.compile(r"not a JPEG or PNG|empty body"), "not an image"),
    (re.compile(r"over the cap|passed the cap|page over"), "too large"),
    (re.compile(r"[Tt]imeout|timed out"), "timeout"),
    (re.compile(r"cut off|truncated|Content-Length said"), "body cut short"),
    (re.compile(r"[Pp]roxy"), "proxy error"),
    (re.compile(r"[Cc]onnect|[Rr]eset|refused|Disconnected|DNS|resolve"), "connection failed"),
    (re.compile(r"redirect"), "too many redirects"),
)

# What to try next, per cause: every error line says what to do.
HINTS = {
    "HTTP 403": "the site may block this user agent or your address; try --user-agent, --header or --proxy",
    "HTTP 401": "the site wants credentials; try --header 'Authorization: ...'",
    "HTTP 404": "gone from the site; try --alternate with a mirror of it, or check --root",
    "HTTP 429": "the site is rate-limiting; try a lower --rate or --concurrency",
    "HTML instead of an image": "a block or login page was served; try --user-agent or --proxy",
    "timeout": "the site is slow or unreachable; try a longer --timeout, a lower --concurrency or --proxy",
    "connection failed": "the host refused or dropped connections; try --proxy or --alternate",
    "proxy error": "check the --proxy URL and that the proxy is running",
    "too large": "a body passed the size cap (or its headers libcurl's); raise --max-bytes if such a body is expected",
    "body cut short": "transfers were cut; re-run to resume, or try --proxy",
    "deferred: host breaker": "the host failed too often and was left alone; the next run asks again",
}


def cause_of(failure: dict) -> str:
    """A short, stable category for one failures.jsonl record: its `cause`, else from its `reason`."""
    if failure.get("cause"):
        return str(failure["cause"])
    reason = str(failure.get("reason", ""))
    for pattern, cause in _CAUSES:
        found = pattern.search(reason)
        if found:
            return cause or f"HTTP {found.group(1)}"
    return "other"


def hint_for(cause: str) -> str:
    if cause in HINTS:
        return HINTS[cause]
    if cause.startswith("HTTP 5"):
        return "the server is failing; re-run later to resume, or try --alternate"
    return ""


@dataclass
class FailureSummary:
    """Failures grouped by cause, largest group first, with a few examples of each."""

    total: int = 0
    causes: Counter = field(default_factory=Counter)
    examples: dict[str, list[dict]] = field(default_factory=dict)

    @classmethod
    def of(cls, failures: Iterable[dict]) -> "FailureSummary":
        summary = cls()
        for failure in failures:
            cause = cause_of(failure)
            summary.total += 1
            summary.causes[cause] += 1
            shown = summary.examples.setdefault(cause, [])
            if len(shown) < EXAMPLES_PER_CAUSE:
                shown.append(failure)
        return summary

    def ordered(self) -> list[tuple[str, int]]:
        """Largest group first; ties by name, so the same failures always read the same."""
        return sorted(self.causes.items(), key=lambda kv: (-kv[1], kv[0]))

    def line(self) -> str:
        """"HTTP 404: 87; HTML instead of an image: 12; timeout: 6"."""
        return "; ".join(f"{cause}: {n}" for cause, n in self.ordered())

    def lines(self, of: str, where: str) -> list[str]:
        """For people: the grouped line, then per cause what to try and a few examples.
        `of` names the denominator, e.g. "400 actas": "HTTP 403: 40 of 400 actas: ...; try ..."."""
        if not self.total:
            return []
        out = [f"failed: {self.total} of {of}: {self.line()} (every one in {where})"]
        for cause, n in self.ordered():
            hint = hint_for(cause)
            out.append(f"  {cause}: {n} of {of}" + (f": {hint}" if hint else ""))
            for f in self.examples[cause]:
                out.append(f"    failed {f.get('key', '')} {f.get('url', '')}: {f.get('reason', '')}")
        return out

    def as_json(self) -> dict:
        return {"total": self.total, "by_cause": dict(self.ordered())}
