"""The registry of results-site adapters: one file per site, registered by name.

An adapter only discovers. It turns an index file or HTML pages into Acta records. It
never retries and never writes files: it is handed a `get_page(url) -> str` coroutine
that carries the fetcher's policy, and a `report(url, reason)` for pages it cannot use.

To add a site: write `sites/<name>.py` with a class decorated by `@register`, giving
`name`, `description`, `example_root` and the methods of `Site`; add its replay under
`replay/` (the generic tests loop over every registered adapter).
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import AsyncIterator, Awaitable, Callable, Iterator, Protocol

from ..models import Acta, UsageError

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
