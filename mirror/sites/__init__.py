"""The registry of results-site adapters: one file per site, registered by name.

An adapter only discovers. It turns an index file or HTML pages into Acta records. It
never retries and never writes files: it is handed a `get_page(url) -> Page` coroutine
that carries the fetcher's policy (a Page is the text and the URL it came from after
redirects: its relative links resolve against page_base(page)), and a `report(url, reason,
cause)` for pages and index rows it cannot use. A link it cannot even parse is passed on as it is: the fetcher refuses
it with a named failure. An adapter may declare `hosts`: other hosts its images come from
(a CDN), allowed besides the root's.

To add a site: write `sites/<name>.py` with a class decorated by `@register`, giving
`name`, `description`, `discover_modes` and the methods of `Site`, and its replay as
`replay/<name>.py` (with `SITE` and `make()`). The generic tests loop over every
registered adapter and its replay; nothing else changes.
"""
from __future__ import annotations

import asyncio
import importlib
import pkgutil
import re
from typing import AsyncIterator, Awaitable, Callable, Iterator, Protocol
from urllib.parse import quote, urljoin

from ..models import MAX_INDEX_BYTES, Acta, FetchError, IndexFormatError, Page, UsageError

GetPage = Callable[[str], Awaitable[Page]]
Report = Callable[..., None]  # (url, reason, cause="unreadable page"): a page or row that could not be used


class Site(Protocol):
    name: str
    description: str
    discover_modes: tuple[str, ...]

    def index_urls(self, root: str) -> list[str]:
        """URLs of index files to archive and read (may be empty)."""

    def parse_index(self, path: str, url: str, report: Report | None = None) -> Iterator[Acta]:
        """Actas listed in one downloaded index file; a bad row is reported and skipped
        (without `report`, it raises IndexFormatError)."""

    def walk(self, root: str, get_page: GetPage, report: Report) -> AsyncIterator[Acta]:
        """Actas found by walking the site's HTML pages; a broken root page raises."""


SITES: dict[str, type] = {}
WALK_WORKERS = 8  # pages fetched at once while walking a site (the fetcher caps all requests)
MAX_PAGES = 250_000  # pages one walk may fetch (the 2024 site has about 47,000)
MAX_DEPTH = 8  # levels below the first pages (both site families have 6 at most)
MAX_PAGE_CHARS = 2_000_000  # a page of either site is a few KB; 25 MB of links made a tree of gigabytes
MAX_NAME_CHARS = 1024  # a place name from a link's text (a few words): every acta below it keeps it in its record

# visit(url, page, context) -> (children as [(url, context)], actas found on the page); url is the
# one asked for (what the page is), page.url where it came from (what its links resolve against)
Visit = Callable[[str, Page, tuple], tuple[list[tuple[str, tuple]], list[Acta]]]
_BASE = re.compile(r"<base[\s/>]", re.IGNORECASE)
_NOT_THE_DOCUMENTS = ["template", "svg", "math", "noscript"]  # a <base> inside one is no base of the page
_HTML_SPACE = " \t\n\f\r"  # what HTML strips from a URL attribute (not U+00A0, which str.strip() would)


def page_base(page: Page) -> str:
    """The URL a page's relative links resolve against, as a browser finds it: the first <base
    href> of the document (not one in a <template>, <svg>, <math> or <noscript>, which a
    browser does not see as the page's), resolved against where the page came from, if it is
    an http(s) URL; else where the page came from. A page over MAX_PAGE_CHARS is not parsed
    (parse_page refuses it)."""
    if len(page.text) > MAX_PAGE_CHARS or not _BASE.search(page.text):  # most pages have none: no second parse
        return page.url
    from bs4 import BeautifulSoup

    for base in BeautifulSoup(page.text, "lxml").find_all("base", href=True):
        if base.find_parent(_NOT_THE_DOCUMENTS) is None:
            found = join(page.url, base["href"].strip(_HTML_SPACE))
            return found if found.split(":", 1)[0].lower() in ("http", "https") else page.url
    return page.url


def unreadable(url: str, exc: OSError) -> IndexFormatError:
    """The error for an index file the system will not read (no permission, procfs, a failing
    disk): a user's input (exit 2), named, never taken for the disk refusing a write (exit 3)."""
    return IndexFormatError(f"{url}: cannot be read ({exc.strerror or exc})")


def index_chunks(fh, url: str, read: int = 0) -> Iterator[bytes]:
    """An index file's bytes from where fh stands, 1 MiB at a time (`read`: bytes before that);
    IndexFormatError once it passes MAX_INDEX_BYTES: a file that large is no index, and is not
    read on (a procfs file says 0 bytes and may read for ever: /proc/self/pagemap gives 256 GB)."""
    while chunk := fh.read(1 << 20):
        read += len(chunk)
        if read > MAX_INDEX_BYTES:
            raise IndexFormatError(f"{url}: over {MAX_INDEX_BYTES:,} bytes, larger than any index; not read on")
        yield chunk


def parse_page(html: str, url: str, *ids: str):
    """The page parsed, but only the elements with these ids (and what they hold) become
    Python objects: a page of a million <div>s costs a parse, not gigabytes of tree. A page
    over MAX_PAGE_CHARS is refused unread: a million links in the listing itself would."""
    if len(html) > MAX_PAGE_CHARS:
        raise IndexFormatError(f"{url}: {len(html)} characters, more than the {MAX_PAGE_CHARS} a page may have; "
                               "not read")
    from bs4 import BeautifulSoup, SoupStrainer  # only when pages are walked: the CSV path never pays for it

    return BeautifulSoup(html, "lxml", parse_only=SoupStrainer(id=list(ids)))


def link_text(link) -> str:
    """A link's text as a place name, cut at MAX_NAME_CHARS."""
    return link.get_text(" ", strip=True)[:MAX_NAME_CHARS]


# An absolute http(s) URL with nothing urljoin would normalize (no query, fragment, brackets,
# controls or spaces, and no ';' in its path: urljoin drops empty parameters, "a.jpg;" -> "a.jpg"):
# urljoin gives it back as it is. Every row of an index is one.
_PLAIN_ABSOLUTE = re.compile(r"https?://[^/?#\[\]\\\x00-\x20\x7f]+(?:/[^?#;\\\x00-\x20\x7f]*)?")


# What no URL on the wire may hold: non-ASCII, spaces, controls (an escape sequence would also
# reach the user's terminal in a failure line).
_NOT_IN_A_URL = re.compile(r"[^\x21-\x7e]+")


def join(base: str, href: str) -> str:
    """urljoin that never raises, giving a URL fit for the wire: what no URL may hold is
    percent-encoded as UTF-8, as a browser does ('/img/año.jpg' is asked as
    '/img/a%C3%B1o.jpg', 'a b' as 'a%20b'). A link it cannot parse is kept as it is, for the
    fetcher to refuse with a named failure (encoded the same way)."""
    try:
        url = href if base and _PLAIN_ABSOLUTE.fullmatch(href) else urljoin(base, href)
    except ValueError:  # "http://[::1" and the like
        url = href
    return _NOT_IN_A_URL.sub(lambda m: quote(m.group(), safe="", errors="surrogatepass"), url)


async def walk_pages(first: list[tuple[str, tuple]], visit: Visit, get_page: GetPage,
                     report: Report, *, seen: tuple[str, ...] = ()) -> AsyncIterator[Acta]:
    """Walk a site's pages depth-first with a few workers, yielding actas as they are found.

    Each URL is visited once (`seen`: pages the adapter already read), at most MAX_DEPTH
    levels down and MAX_PAGES pages in all; what the limits leave out is reported. Pages are
    parsed in a thread, so a huge page does not stall the downloads, one at a time, so that
    the workers' pages are not all in memory as trees at once. A page that cannot be
    fetched (get_page has recorded it) or read (reported here, whatever the exception) loses
    its branch only.
    """
    max_pages, max_depth = MAX_PAGES, MAX_DEPTH
    visited = {u.split("#", 1)[0] for u in seen}
    work: asyncio.LifoQueue = asyncio.LifoQueue()
    pending = queued = 0
    budget_reported = False

    def enqueue(parent: str, items: list[tuple[str, tuple]], depth: int) -> None:
        nonlocal pending, queued, budget_reported
        too_deep = 0
        for url, context in items:
            key = url.split("#", 1)[0]
            if key in visited:
                continue
            if depth > max_depth:
                too_deep += 1
                continue
            if queued >= max_pages:
                if not budget_reported:
                    budget_reported = True
                    report(url, f"page budget of {max_pages} pages reached: this page and the rest of the walk "
                                "were not visited", "walk limit")
                return
            visited.add(key)
            pending += 1
            queued += 1
            work.put_nowait((url, context, depth))
        if too_deep:
            report(parent, f"{too_deep} links deeper than {max_depth} levels were not followed", "walk limit")

    enqueue("", first, 1)
    if not pending:
        return
    found: asyncio.Queue = asyncio.Queue(maxsize=256)
    done = asyncio.Event()
    # one page parsed at a time, waited for on the loop: a thread lock would hold the
    # default executor's few threads (the archive's commits and image decodes use them too)
    parsing = asyncio.Lock()

    async def worker() -> None:
        nonlocal pending
        while True:
            url, context, depth = await work.get()
            try:
                page = await get_page(url)
                async with parsing:
                    children, actas = await asyncio.to_thread(visit, url, page, context)
                enqueue(url, children, depth + 1)
                for acta in actas:
                    await found.put(acta)
            except FetchError:
                pass  # get_page recorded it
            except (IndexFormatError, ValueError) as exc:
                report(url, str(exc))
            except Exception as exc:  # an adapter's bug or a page no one foresaw: that branch only
                report(url, f"{type(exc).__name__}: {exc}")
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
