#!/usr/bin/env python3
"""Measure how long a huge HTML page stalls the event loop during a walk, and print figures.

A hostile listing of 200,000 <div>s (plus its real links) is walked by the 2024 adapter
while a ticker on the same loop sleeps 10 ms at a time; the longest gap between ticks is how
long downloads would have waited. Pages are parsed in a thread (asyncio.to_thread), so the
gap should stay near the tick, whatever the page's parse time.

    python3 scripts/bench_walk_stall.py [--divs 200000]
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mirror.models import Page  # noqa: E402
from mirror.sites import get_site  # noqa: E402


def page(divs: int, links: list[str]) -> str:
    rows = "".join(f'<tr><td><a href="{h}">x</a></td></tr>' for h in links)
    return (f"<html><body>{'<div>junk</div>' * divs}<table><tbody id=\"dependencyTableBody\">{rows}"
            f"</tbody></table></body></html>")


async def main(divs: int) -> None:
    huge = page(divs, ["/e/1"])
    pages = {"http://site.example/": huge, "http://site.example/e/1": huge}
    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    async def get_page(url: str) -> Page:
        return Page(pages.get(url, "<html></html>"), url)

    tick = asyncio.create_task(ticker())
    started = time.perf_counter()
    site = get_site("resultados2024")
    async for _ in site.walk("http://site.example/", get_page, lambda *a: None):
        pass
    walked = time.perf_counter() - started
    stop.set()
    await tick
    print(f"page of {divs} divs, {len(huge) / 1e6:.1f} MB, parsed twice: walk took {walked:.2f} s; "
          f"longest event-loop stall {max(gaps) * 1000:.0f} ms (ticks of 10 ms, {len(gaps)} ticks)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--divs", type=int, default=200_000)
    asyncio.run(main(parser.parse_args().divs))
