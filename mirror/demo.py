"""The one-command demo on the embedded default: replay the 2024 site, mirror it, verify it."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from .crawl import CrawlOptions, CrawlResult, crawl
from .replay import Replay, ReplayThread
from .verify import verify


@dataclass
class DemoReport:
    replay_url: str
    mirror: Path
    crawl: CrawlResult
    problems: list = field(default_factory=list)
    steps: list[str] = field(default_factory=list)


def run_demo(out: Path, *, limit: int | None, small: bool = True) -> DemoReport:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with ReplayThread(Replay(small=small, limit=limit)) as replay:
        mirror = out / "mirror"
        result = asyncio.run(crawl(CrawlOptions(site="resultados2024", root=replay.url, out=str(mirror))))
        report = DemoReport(replay.url, mirror, result)
        report.steps.append(f"replay of the 2024 site served on {replay.url} ({'all' if not limit else limit} tables"
                            f"{', small images' if small else ''})")
        report.steps.append(f"crawled: {result.counters.archived} new, {result.counters.unchanged} unchanged, "
                            f"{result.counters.failed} failed -> {mirror}")
    report.problems = verify(mirror)
    report.steps.append("verified: " + ("intact" if not report.problems else f"{len(report.problems)} problem(s)"))
    return report
