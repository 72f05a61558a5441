"""The registry of results-site adapters: one file per site, registered by name.

An adapter only discovers. It turns an index file or HTML pages into Acta records. It
never retries and never writes files: it is handed a `get_page(url) -> str` coroutine
that carries the fetcher's policy, and a `report(url, reason)` for pages it cannot use.

To add a site: write `sites/<name>.py` with a class decorated by `@register`, giving
`name`, `description`, `discover_modes` and the methods of `Site`, and its replay as
`replay/<name>.py` (with `SITE` and `make()`). The generic tests loop over every
registered adapter and its replay; nothing else changes.
"""
from __future__ import annotations

import asyncio
import importlib
import pkgutil
from typing import AsyncIterator, Awaitable, Callable, Iterator, Protocol

from ..models import Acta, FetchError, IndexFormatError, UsageError

GetPage = Callable[[str], Awaitable[str]]
Report = Callable[[str, str], None]  # (url, reason): a page that could not be used


class Site(Protocol):
    name: str
    description: str
    discover_modes: tuple[str, ...]

    def index_urls(self, root: str) -> list[str]:
        """URLs of index files to archive and read (may be empty)."""

    def parse_index(self, path: str, url: str) -> Iterator[Acta]:
        """Actas listed in one downloaded index file."""

    def walk(self, root: str, get_page: GetPage, report: Report) -> AsyncIterator[Acta]:
        """Actas found by walking the site's HTML pages; a broken root page raises."""


SITES: dict[str, type] = {}
WALK_WORKERS = 8  # pages fetched at once while walking a site (the fetcher caps all requests)

# visit(url, html, context) -> (children as [(url, context)], actas found on the page)
Visit = Callable[[str, str, tuple], tuple[list[tuple[str, tuple]], list[Acta]]]


async def walk_pages(first: list[tuple[str, tuple]], visit: Visit, get_page: GetPage,
                     report: Report) -> AsyncIterator[Acta]:
    """Walk a site's pages depth-first with a few workers, yielding actas as they are found.

    A page that cannot be fetched (get_page has recorded it) or read (reported here) loses
    its branch only.
    """
    work: asyncio.LifoQueue = asyncio.LifoQueue()
    for item in first:
        work.put_nowait(item)
    pending = len(first)
    if not pending:
        return
    found: asyncio.Queue = asyncio.Queue(maxsize=256)
    done = asyncio.Event()

    async def worker() -> None:
        nonlocal pending
        while True:
            url, context = await work.get()
            try:
                children, actas = visit(url, await get_page(url), context)
                for child in children:
                    pending += 1
                    work.put_nowait(child)
                for acta in actas:
                    await found.put(acta)
            except FetchError:
                pass
            except (IndexFormatError, ValueError) as exc:
                report(url, str(exc))
            finally:
                pending -= 1
                if pending == 0:
                    done.set()

    workers = [asyncio.create_task(worker()) for _ in range(WALK_WORKERS)]
    waiter = asyncio.create_task(done.wait())
    try:
        while True:
            getter = asyncio.create_task(found.get())
            finished, _ = await asyncio.wait({getter, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if getter in finished:
                yield getter.result()
                continue
            getter.cancel()
            while not found.empty():
                yield found.get_nowait()
            return
    finally:
        for w in workers:
            w.cancel()
        waiter.cancel()


def register(cls: type) -> type:
    SITES[cls.name] = cls
    return cls


def _load_all() -> None:
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


def get_site(name: str) -> Site:
    _load_all()
    try:
        return SITES[name]()
    except KeyError:
        raise UsageError(f"unknown site {name!r}; known: {', '.join(sorted(SITES))}") from None


def all_sites() -> dict[str, type]:
    _load_all()
    return dict(SITES)
