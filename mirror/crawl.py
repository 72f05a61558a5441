"""The crawl: discovery from a site adapter, feeding the fetcher, feeding the archive."""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import hashlib
import itertools
import math
import os
import shutil
import sqlite3
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable
from urllib.parse import quote, urlsplit

from .archive import STATE_DIR, Archive, disk_error, safe_component, sqlite_refusal
from .config import host_ok, http_url
from .fetch import (DEFAULT_CONCURRENCY, DEFAULT_MAX_BYTES, DEFAULT_PROCESSES, DEFAULT_TIMEOUT, Fetcher,
                    HostPolicy, check_proxy, utc_now)
from .models import (DEFERRED_CAUSES, Acta, ArchiveWriteError, Fetched, FetchError, MirrorLocked, Page,
                     SourceUnreachable, UnsafePath, UsageError)
from .publish import redact, register_secrets
from .state import open_payload
from .sites import get_site, index_chunks, unreadable


BACKLOG_LIMIT = 2048  # files fetched but not yet committed before workers pause
MAX_URLS_PER_ACTA = 4  # URLs fetched for one acta in one run; further ones are reported
MAX_NEW_VERSIONS_PER_RUN = 1  # new versions of one acta in one run; further bytes are reported
LISTING_FORMAT = 2  # bump when what parse_index yields changes: an older listing is then read again
# (2: an index's relative URLs are resolved against the URL it came from after redirects)


@dataclass(frozen=True)
class CrawlOptions:
    site: str
    root: str
    out: str
    discover: str | None = None  # None: the site's first discovery mode
    index: str | None = None  # a local file or a URL; default: the site's own index
    concurrency: int = DEFAULT_CONCURRENCY
    rate: float = 0.0
    proxy: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    max_bytes: int = DEFAULT_MAX_BYTES
    shard: tuple[int, int] = (1, 1)  # (I, N): this run takes the keys of part I of N
    wait_lock: bool = False
    retry_attempts: int | None = None  # None: the fetcher's policy
    alternates: tuple[str, ...] = ()  # other hosts serving the same paths
    sign_key: str | None = None  # sign the root statement with this minisign secret key
    recheck_after: float = 0.0  # seconds: skip URLs fetched or confirmed more recently (0: check all)
    deadline: float = 0.0  # seconds for the whole crawl (0: none); then it stops cleanly, the rest deferred
    allow_hosts: tuple[str, ...] = ()  # hosts images may also come from (a CDN), besides root and alternates
    user_agent: str = ""  # empty: the fetcher's own
    headers: tuple[tuple[str, str], ...] = ()  # extra request headers, (name, value)
    processes: int = DEFAULT_PROCESSES  # processes downloading images (a second one on big crawls)


@dataclass
class Counters:
    """Live figures the CLI shows while a crawl runs."""

    discovered: int = 0  # acta URLs: an index may list one table under several
    tables: int = 0  # the tables (acta keys) they are for
    archived: int = 0
    unchanged: int = 0  # asked this run, and the site said (304) or sent the same bytes
    not_asked: int = 0  # known URLs checked within --recheck-after, or a listing reused whole: not asked
    failed: int = 0  # actas
    pages: int = 0  # index files and HTML pages asked for: the denominator of pages_failed
    pages_failed: int = 0  # of them, unreadable (their actas are not counted: they were never found)
    rows_failed: int = 0  # index rows refused (bad index row): none of the actas counted
    rows: int = 0  # index rows read, refused ones included: the denominator of rows_failed
    deferred: int = 0  # not asked this run (deadline, host breaker): the next run asks
    vanished: int = 0
    bytes: int = 0
    retries: int = 0
    expected: int | None = None  # actas the index lists for this shard, once it is read
    count_expected: bool = True  # count them ahead (a second pass over the index) for a display to show
    discovery_done: bool = False
    started: float = field(default_factory=time.monotonic)

    @property
    def done(self) -> int:
        return self.archived + self.unchanged + self.not_asked + self.failed + self.deferred

    @property
    def total(self) -> int | None:
        """Actas this run will handle, once known: from the index, or when discovery ends."""
        return self.discovered if self.discovery_done else self.expected

    def actas(self) -> str:
        """What the acta counts count, for a summary: 'actas', or 'acta URLs' when some table was
        listed under several (each URL is fetched, archived or failed, on its own)."""
        return "actas" if self.tables == self.discovered else "acta URLs"

    def listing_gaps(self) -> str:
        """What the listing missed, each against its denominator, for a summary line: ', 1 of 9
        page(s) unreadable, 2 of 40 index row(s) refused'; '' when it missed nothing."""
        return ((f", {self.pages_failed} of {self.pages} page(s) unreadable" if self.pages_failed else "")
                + (f", {self.rows_failed} of {self.rows} index row(s) refused" if self.rows_failed else ""))


@dataclass
class CrawlResult:
    counters: Counters
    failures: list[dict]
    quarantined: list[str]
    seconds: float
    requests: int
    out: str
    cut_tails: list[tuple[str, int, str]] = field(default_factory=list)  # Archive.cut_tails


def fetch_options(fetch: dict) -> dict:
    """CrawlOptions' network fields from the settled `fetch` section (config.settle)."""
    headers = {k: v for k, v in fetch["headers"].items() if k.lower() != "user-agent"}
    agent = fetch["user_agent"] or next((v for k, v in fetch["headers"].items() if k.lower() == "user-agent"), "")
    return dict(concurrency=fetch["concurrency"], rate=float(fetch["rate"]), proxy=fetch["proxy"] or None,
                timeout=float(fetch["timeout"]), max_bytes=fetch["max_bytes"],
                recheck_after=float(fetch["recheck_after"]), deadline=float(fetch["deadline"]),
                user_agent=agent, headers=tuple(headers.items()), processes=fetch["processes"])


def parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard takes I/N, like 2/4, not {text!r}") from None
    if not (n >= 1 and 1 <= i <= n):
        raise UsageError(f"--shard {text}: I must be from 1 to N")
    return i, n


def in_shard(key: str, shard: tuple[int, int]) -> bool:
    """A deterministic partition of acta keys: the same on every machine and every run."""
    i, n = shard
    if n == 1:
        return True
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % n == i - 1


def _out_can_be_made(out: str) -> None:
    """UsageError (exit 2) when the mirror's folder can never be made where it is named: a
    link that leads nowhere, or a path through a file. Not a disk refusing a write (exit 3)."""
    if os.path.islink(out) and not os.path.exists(out):
        raise UsageError(f"--out {out}: a symbolic link to nothing ({os.readlink(out)}); name a folder")
    here = (Path.cwd() / out).parent  # '..' left in: the system resolves 'afile/..' through afile, and fails
    while not os.path.lexists(here) and here != here.parent:
        here = here.parent
    if os.path.lexists(here) and not os.path.isdir(here):
        what = "a symbolic link to nothing" if os.path.islink(here) else "not a folder"
        raise UsageError(f"--out {out}: {here} is {what}; name a folder")


def check_options(opts: CrawlOptions) -> None:
    # before any message quotes them
    register_secrets(opts.root, opts.index, *opts.alternates, opts.proxy, headers=dict(opts.headers))
    if opts.discover is not None and opts.discover not in ("csv", "html", "both"):
        raise UsageError(f"--discover must be csv, html or both, not {opts.discover!r}")
    if not opts.out:  # Path("") is the current folder: a bag would be made of whatever is there
        raise UsageError("--out is empty: name the mirror's folder")
    _out_can_be_made(opts.out)
    if not http_url(opts.root):
        raise UsageError(f"--root must be an http(s) URL, not {_quoted(opts.root)}")
    for name, value in (("--timeout", opts.timeout), ("--deadline", opts.deadline)):
        if not math.isfinite(value) or value < 0 or (name == "--timeout" and value == 0):
            raise UsageError(f"{name} must be a finite number of seconds above 0, not {value!r}")
    check_proxy(opts.proxy)
    if opts.concurrency < 1 or opts.concurrency > 512:
        raise UsageError("--concurrency must be from 1 to 512")
    if opts.processes not in (1, 2):
        raise UsageError("--processes must be 1 or 2")
    if opts.recheck_after < 0:
        raise UsageError("--recheck-after must be 0 or more seconds")
    if opts.rate < 0:
        raise UsageError("--rate must be 0 (no pacing) or more")
    for host in opts.allow_hosts:
        if not host_ok(host):
            raise UsageError(f"--allow-host takes a host name or address, like cdn.example.org, not {host!r}")
    for alternate in opts.alternates:
        if not http_url(alternate):
            raise UsageError(f"--alternate must be an http(s) URL, not {_quoted(alternate)}")
    for flag, path in (("--sign-key", opts.sign_key), ("--index", "" if http_url(opts.index or "") else opts.index)):
        if path and not Path(path).is_file():
            what = "not a regular file" if os.path.exists(path) else "no such file"
            raise UsageError(f"{flag} {_quoted(path)[1:-1]}: {what}")


def _quoted(text: str) -> str:
    """A value given for a URL that is none, as a one-line error shows it: without what comes
    before its last @ when it lacks its '://' ('user:password@host', 'https:/user:password@host'),
    where redact() sees no URL, so no password is shown."""
    if "@" in text and "://" not in text:
        text = "***@" + text.rpartition("@")[2]
    return repr(text)


async def crawl(opts: CrawlOptions, counters: Counters | None = None) -> CrawlResult:
    check_options(opts)
    site = get_site(opts.site)
    if opts.discover is None:
        opts = dataclasses.replace(opts, discover=site.discover_modes[0])
    elif opts.discover not in site.discover_modes:
        raise UsageError(f"site {site.name} discovers by {', '.join(site.discover_modes)}, not {opts.discover}")
    created = not os.path.lexists(opts.out)
    try:
        return await _crawl(opts, site, counters or Counters())
    except MirrorLocked:
        raise  # another run, started at the same moment, made the folder too and writes into it
    except BaseException:
        if created:
            _remove_if_empty(Path(opts.out))
        raise


def _remove_if_empty(out: Path) -> None:
    """A folder this run created and archived nothing into (an unreachable root) is removed,
    so no half-made bag is left behind: under its lock, taken again, and never while another
    run holds it (one that waited with --wait-lock for this run to end, and now writes into it)."""
    try:
        lock = os.open(out / STATE_DIR / "lock", os.O_RDWR | os.O_NOFOLLOW)
    except OSError:
        lock = None  # never locked: no run wrote into it
    try:
        if lock is not None:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if not _archived_into(out):
            shutil.rmtree(out, ignore_errors=True)
    except OSError:  # BlockingIOError: another run holds it now
        pass
    finally:
        if lock is not None:
            os.close(lock)  # after the removal: a run that waited for the lock finds its file gone


def _archived_into(out: Path) -> bool:
    try:
        if (out / "provenance.jsonl").stat().st_size:
            return True
    except FileNotFoundError:
        pass
    except OSError:
        return True
    return any(files for _d, _s, files in os.walk(out / "data"))


async def _crawl(opts: CrawlOptions, site, counters: Counters) -> CrawlResult:
    started = time.monotonic()
    run = _Run(opts, site, counters)
    with Archive(opts.out, wait_lock=opts.wait_lock, scan=False) as archive:
        run.archive = archive
        try:
            kwargs = {} if opts.retry_attempts is None else {"retry_attempts": opts.retry_attempts}
            async with Fetcher(concurrency=opts.concurrency, rate=opts.rate, proxy=opts.proxy,
                               timeout=opts.timeout, max_bytes=opts.max_bytes, tmp_dir=str(archive.tmp),
                               alternates=opts.alternates, policy=_policy(opts, site),
                               deadline=started + opts.deadline if opts.deadline else None,
                               user_agent=opts.user_agent, headers=dict(opts.headers), processes=opts.processes,
                               **kwargs) as fetcher:
                run.fetcher = fetcher
                await run.go()
        except ArchiveWriteError:
            raise  # the disk refused: write nothing more
        except BaseException:
            # An aborted run (a fatal index, an interrupt) still leaves a valid bag behind.
            if archive.added or (Path(opts.out) / "bagit.txt").exists():
                run.finish()
            raise
        run.finish()
        requests = run.fetcher.requests
        quarantined, cut_tails = list(archive.quarantined), list(archive.cut_tails)
    if opts.sign_key:
        from .evidence import sign_bag

        sign_bag(opts.out, opts.sign_key, source=redact(opts.root))
    return CrawlResult(counters, run.failures, quarantined, time.monotonic() - started, requests, opts.out, cut_tails)


def _policy(opts: CrawlOptions, site) -> HostPolicy:
    extra = (*getattr(site, "hosts", ()), *opts.allow_hosts)
    if opts.index and http_url(opts.index):
        extra += (urlsplit(opts.index).hostname or "",)
    return HostPolicy.for_root(opts.root, opts.alternates, extra)


class _Run:
    """One crawl's moving parts: discovery feeding workers feeding the archive, and the record
    of everything that failed or was deferred."""

    def __init__(self, opts: CrawlOptions, site, counters: Counters):
        self.opts, self.site, self.counters = opts, site, counters
        self.archive: Archive = None  # type: ignore[assignment]  (set once the archive is open)
        self.fetcher: Fetcher = None  # type: ignore[assignment]
        self.failures: list[dict] = []
        # Which actas this run lists (each with its first URL) is kept by the archive, on disk.
        self.extra: dict[str, list[str]] = {}  # key -> its further URLs, in listing order (rare)
        self.extra_actas: dict[str, Acta] = {}  # key -> how it was listed with a further URL
        self.complete = True  # the listing is whole: only then can actas be called vanished
        self.listed_all = False  # discovery went through to its end
        self.listing = ""  # what the listing was read from (csv discovery), for the next run to reuse
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=opts.concurrency * 4)

    def fail(self, key: str, url: str, reason: str, cause: str, attempts: int = 0) -> None:
        self.failures.append({"key": key, "url": redact(url), "reason": redact(reason), "cause": cause,
                              "at": utc_now(), "attempts": attempts})
        if key == "page":  # not an acta: counted apart from the actas' total
            self.counters.pages_failed += 1
        elif key == "index":  # a bad row of an index that was read
            self.counters.rows_failed += 1
        elif cause in DEFERRED_CAUSES:
            self.counters.deferred += 1
        else:
            self.counters.failed += 1

    def failed(self, key: str, exc: FetchError) -> None:
        self.fail(key, exc.url, exc.reason, exc.cause, exc.attempts)

    def report(self, url: str, reason: str, cause: str = "unreadable page") -> None:
        """A page or index row that could not be used: the listing is not whole."""
        self.complete = False
        self.fail("index" if cause == "bad index row" else "page", url, reason, cause)

    async def go(self) -> None:
        writing = True

        async def committer() -> None:
            """The one writer of provenance: batches leave the event loop for a thread."""
            while writing or self.archive.backlog:
                if self.archive.due() or (not writing and self.archive.backlog):
                    await asyncio.to_thread(self.archive.commit, self.archive.take_batch())
                else:
                    await asyncio.sleep(0.05)

        async def fetching() -> None:
            await asyncio.gather(discovery, *workers)
            await self.extra_urls()

        writer = asyncio.create_task(committer())
        workers = [asyncio.create_task(self.worker()) for _ in range(self.fetcher.depth)]
        discovery = asyncio.create_task(self.discover())
        crawling = asyncio.create_task(fetching())
        try:
            # The first to fail ends the run: a worker the disk refused would leave discovery
            # waiting on a full queue, and a writer that stopped would leave the workers
            # waiting on the backlog, both for ever.
            await asyncio.wait((crawling, writer), return_when=asyncio.FIRST_COMPLETED)
            if writer.done():  # before the crawl ends only when the disk refused a batch
                writer.result()
            await crawling
        except BaseException:
            for task in (crawling, discovery, *workers):
                task.cancel()
            raise
        finally:
            writing = False
            await writer

    async def get_page(self, url: str) -> Page:
        self.counters.pages += 1
        try:
            return await self.fetcher.fetch_text(url)
        except FetchError as exc:
            self.complete = False
            self.failed("page", exc)
            raise

    async def offer(self, acta: Acta) -> None:
        if not in_shard(acta.key, self.opts.shard):
            return
        known = self.archive.listed_url(acta.key)
        if known == redact(acta.url):  # the archive keeps URLs without credentials
            return
        if known is None:
            self.archive.list_acta(acta.key, acta.url)
            self.counters.tables += 1
        else:
            urls = self.extra.setdefault(acta.key, [])
            if acta.url in urls:
                return
            if len(urls) + 1 >= MAX_URLS_PER_ACTA:
                self.counters.discovered += 1  # listed, and counted failed: the crawl's counts add up
                self.fail(acta.key, acta.url, f"more than {MAX_URLS_PER_ACTA} URLs list this acta; "
                                              "this one was not fetched", "too many URLs")
                return
            urls.append(acta.url)
        self.archive.seen_upstream(acta.key, acta.url)
        self.counters.discovered += 1
        if known is None:
            await self.queue.put(acta)
        else:
            self.extra_actas[acta.key] = acta

    async def discover(self) -> None:
        opts = self.opts
        try:
            if opts.discover in ("csv", "both"):
                for actas in await self.read_indexes():
                    for acta in actas:
                        self.counters.rows += 1
                        await self.offer(acta)
                self.counters.rows += self.counters.rows_failed
            if opts.discover in ("html", "both"):
                async with _first_page():
                    async for acta in self.site.walk(opts.root, self.get_page, self.report):
                        await self.offer(acta)
            self.listed_all = True
        finally:
            self.counters.discovery_done = True
            for _ in range(self.fetcher.depth):  # one end for each worker
                await self.queue.put(None)

    async def worker(self) -> None:
        while (acta := await self.queue.get()) is not None:
            await self.one(acta, acta.url)

    async def extra_urls(self) -> None:
        """An acta's further URLs, after every first one, each acta's in listing order: so
        which version counts as latest does not depend on download order."""
        keys = iter(list(self.extra))

        async def worker() -> None:
            for key in keys:
                for url in self.extra[key]:
                    await self.one(self.extra_actas[key], url)

        await asyncio.gather(*(worker() for _ in range(min(self.opts.concurrency, len(self.extra)))))

    async def one(self, acta: Acta, url: str) -> None:
        """Fetch one URL of an acta and archive what is new; every failure becomes a record."""
        acta = acta if acta.url == url else dataclasses.replace(acta, url=url)
        if self.archive.fresh(url, self.opts.recheck_after, acta.key):
            self.counters.not_asked += 1
            return
        etag, last_modified = self.archive.conditional_headers(url, acta.key)
        try:
            fetched = await self.fetcher.fetch(url, etag=etag, last_modified=last_modified)
            fetched = await self.settle(acta, fetched)
        except FetchError as exc:
            self.failed(acta.key, exc)
            return
        except ArchiveWriteError:
            raise
        except Exception as exc:  # never lose the run to one URL
            self.fail(acta.key, url, f"unexpected {type(exc).__name__}: {exc}", "unexpected error", 1)
            return
        finally:
            self.counters.retries = self.fetcher.retries
        if self.archive.add(acta, fetched) is None:
            self.counters.unchanged += 1
        else:
            self.counters.archived += 1
            self.counters.bytes += fetched.size
        while self.archive.backlog > BACKLOG_LIMIT:  # the disk is behind: wait for it
            await asyncio.sleep(0.02)

    async def settle(self, acta: Acta, fetched: Fetched) -> Fetched:
        """Bounds on versions: at most MAX_NEW_VERSIONS_PER_RUN new versions of an acta per run,
        and a changed acta is asked once more, so bytes that change on every request never
        become versions. Raises FetchError (the temp file removed) for bytes not to archive."""
        if fetched.status != 200 or not self.archive.versions(acta.key) or \
                self.archive.is_known(acta.key, acta.url, fetched.sha256):
            return fetched
        try:
            if self.archive.new_versions(acta.key) >= MAX_NEW_VERSIONS_PER_RUN:
                raise FetchError(acta.url, f"another URL of this acta already gave it a new version in this "
                                           f"run (at most {MAX_NEW_VERSIONS_PER_RUN}); these bytes were not archived",
                                 cause="too many versions")
            # With a strong ETag the second question is conditional: a server whose bytes stay
            # put answers 304 without sending the file again (a changed acta costs one download).
            strong = fetched.etag if fetched.etag and not fetched.etag.startswith("W/") else ""
            again = await self.fetcher.fetch(acta.url, etag=strong)
            if again.status == 304:
                return fetched
            os.unlink(again.tmp_path)
            if again.sha256 != fetched.sha256:
                raise FetchError(acta.url, "the bytes change on every request (two answers differ); not archived",
                                 cause="unstable bytes", attempts=2)
        except BaseException:
            os.unlink(fetched.tmp_path)
            raise
        return fetched

    async def read_indexes(self) -> list:
        """Fetch (and archive) each index file; return, per index, an iterator of the actas it
        lists. The counters learn how many distinct actas they list for this shard (a second,
        cheap pass), so progress has a total before the first download ends.

        When an earlier run read the very same index bytes whole and every URL they list was
        fetched or confirmed within --recheck-after, nothing needs asking: the listing is
        taken from that run (counted, not read again) and no iterator is returned."""
        held: list = []  # archived copies opened by the validated opener, read through their descriptors
        try:
            return await self._read_indexes(held)
        finally:
            for fh in held:
                fh.close()

    async def _read_indexes(self, held: list) -> list:
        opts, site, archive = self.opts, self.site, self.archive
        sources = [opts.index] if opts.index else site.index_urls(opts.root)
        read = []  # (source URL, file to read, how it was fetched or None for a local file)
        for source in sources:
            if not http_url(source):
                read.append((_local_url(source), source, None))
                continue
            archived = archive.path_of(source)
            # A job run from its manifests folder has no local copy to read on a 304, and a copy's
            # may be a link or a FIFO (the validated opener says): then ask for the file itself.
            # The copy is read through the descriptor the opener checked, never by its name again.
            copy = _open_archived(archive.root, archived) if archived else None
            if copy is not None:
                held.append(copy)
            etag, last_modified = archive.conditional_headers(source) if copy is not None else ("", "")
            self.counters.pages += 1
            try:
                fetched = await self.fetcher.fetch(source, etag=etag, last_modified=last_modified, expect_image=False)
            except FetchError as exc:
                raise SourceUnreachable(redact(f"cannot read the index {source}: {exc.reason}")) from None
            path = _copy_of(copy, archive.tmp) if fetched.status == 304 else fetched.tmp_path
            read.append((source, path, fetched))
        if opts.discover == "csv":
            self.listing = _listing_identity(site.name, opts.shard,
                                             [(_base(self.fetcher, url, f), path) for url, path, f in read])
        reused = archive.reuse_listing(self.listing, opts.recheck_after)
        listings = []
        if reused is None:
            for url, path, fetched in read:
                # opens the file now, before it is committed
                listed = site.parse_index(path, _base(self.fetcher, url, fetched), self.report)
                first = next(listed, None)  # a malformed header fails here, before anything is archived
                listings.append(itertools.chain([first] if first else [], listed))
            if opts.discover == "csv" and self.counters.count_expected:
                self.counters.expected = _count_distinct(archive.tmp, (
                    (a.key, redact(a.url)) for url, path, f in read
                    for a in site.parse_index(path, _base(self.fetcher, url, f), lambda *_: None)
                    if in_shard(a.key, opts.shard)))
        for url, _path, fetched in read:
            if fetched is not None:
                name = safe_component(os.path.basename(urlsplit(url).path), "index.csv")
                archive.add(Acta(site=site.name, key=f"index/{name}", url=url, page=url), fetched,
                            kind="index", name=name)
        if reused is not None:
            c = self.counters
            c.expected = c.discovered = c.tables = c.not_asked = reused  # a listing reused lists one URL a table
            archive.reappeared()
        return listings

    def finish(self) -> None:
        opts, site, archive = self.opts, self.site, self.archive
        whole = self.complete and self.listed_all
        if whole and not any(f["cause"] in DEFERRED_CAUSES for f in self.failures):
            # only a whole listing can say what vanished
            self.counters.vanished = archive.mark_vanished(lambda k: in_shard(k, opts.shard))
        # Reusable next run only when nothing in it was refused (bad rows, too many URLs) or
        # left for later rounds (further URLs of an acta).
        reusable = whole and not self.extra and not any(f["key"] in ("index", "page") or f["cause"] == "too many URLs"
                                                        for f in self.failures)
        archive.record_listing(self.listing if reusable else "")
        archive.finish(failures=self.failures,
                       rewrite_bag=bool(archive.added) or not (Path(opts.out) / "bagit.txt").exists(), info={
                           "Source-Organization": f"acta-mirror crawl of site {site.name}",
                           "External-Identifier": site.name,
                           "External-Description": getattr(site, "description", site.name),
                           "Acta-Mirror-Source": redact(opts.root),
                       })


@contextlib.asynccontextmanager
async def _first_page():
    """A walk's first page that cannot be fetched is an unreachable root (exit 2), as an index
    that cannot be is: the only FetchError a walk lets out is its first page's (every other
    page's loses its branch only)."""
    try:
        yield
    except FetchError as exc:
        raise SourceUnreachable(redact(f"cannot read the site's first page {exc.url}: {exc.reason}")) from None


def _open_archived(root: Path, rel: str):
    """rel opened for reading if it is a regular file of the mirror reached without a link
    (state.open_payload); None otherwise."""
    try:
        return open_payload(root, rel)
    except (OSError, UnsafePath):
        return None


def _copy_of(fh, folder: Path) -> str:
    """A copy of an open file in folder, by its path: the parser opens the archived index by name,
    and the name it was checked under may since be a link (no /proc/self/fd in a sandbox)."""
    try:
        fd, path = tempfile.mkstemp(prefix="index-", suffix=".csv", dir=folder)
        with open(fd, "wb") as out:
            fh.seek(0)
            shutil.copyfileobj(fh, out)
    except OSError as exc:
        raise disk_error(exc, f"copying the archived index into {folder}") from None
    return path


def _local_url(path: str) -> str:
    """How the records name a local index file: 'file:' and its name, never the folders above
    it (a published record would carry the user's home folder, and with it their name)."""
    return "file:" + quote(os.path.basename(os.path.abspath(path)))


def _base(fetcher: Fetcher, url: str, fetched: Fetched | None) -> str:
    """The URL an index's relative URLs are resolved against: the one its bytes came from after
    any redirects (RFC 3986 5.1.3, as browsers, curl and wget do), not the one asked for; on
    the site's own host when an alternate served them (Fetcher.base_of)."""
    return fetcher.base_of(url, fetched) if fetched is not None else url


def _listing_identity(site: str, shard: tuple[int, int], read: list[tuple[str, str]]) -> str:
    """What a csv listing is read from: the site, the shard and each index file's URL and sha256
    (a file larger than any index is refused by index_chunks, not read on)."""
    digest = hashlib.sha256(f"{LISTING_FORMAT}\n{site}\n{shard[0]}/{shard[1]}\n".encode())
    for url, path in read:
        one = hashlib.sha256()
        try:
            with open(path, "rb") as fh:
                for chunk in index_chunks(fh, url):
                    one.update(chunk)
        except OSError as exc:  # a local index that will not be read (procfs, a failing disk)
            raise unreadable(url, exc) from None
        digest.update(f"{url}\n{one.hexdigest()}\n".encode())
    return digest.hexdigest()


def _count_distinct(folder: Path, pairs: Iterable[tuple[str, str]]) -> int:
    """How many distinct (key, URL) pairs, counted on disk (in folder): an index may list 100,000 actas."""
    with tempfile.TemporaryDirectory(prefix="count-", dir=folder) as tmp:
        db = sqlite3.connect(os.path.join(tmp, "pairs.sqlite"))
        try:
            db.execute("CREATE TABLE p (key TEXT, url TEXT, PRIMARY KEY (key, url)) WITHOUT ROWID")
            db.executemany("INSERT OR IGNORE INTO p VALUES (?, ?)", pairs)
            return db.execute("SELECT count(*) FROM p").fetchone()[0]
        except sqlite3.Error as exc:
            raise sqlite_refusal(exc, f"the count of the listed actas in {folder}") from None
        finally:
            db.close()


@dataclass(frozen=True)
class CrawlPlan:
    """What a crawl would do, found by reading the index or pages and the mirror, writing nothing."""

    listed: int  # distinct actas (key, URL) the site lists for this shard
    new: int  # URLs the mirror has never fetched: each would be downloaded
    recheck: int  # known URLs that would be asked again (a conditional request each)
    recheck_bytes: int  # what those would cost if every one had changed (their archived sizes)
    skipped: int  # known URLs checked less than --recheck-after ago: not asked
    mean_size: int  # bytes of an archived acta on average (0: the mirror has none): estimates new bytes
    pages_failed: int  # pages that could not be read (the listing may be short)
    listing_requests: int  # requests the listing took (index files or pages): a crawl makes them again
    pages: int = 0  # index files and pages asked for: the denominator of pages_failed
    rows_failed: int = 0  # index rows refused (bad index row): their actas are not in `listed`
    rows: int = 0  # index rows read, refused ones included: the denominator of rows_failed


async def plan_crawl(opts: CrawlOptions) -> CrawlPlan:
    """The dry run: list what the site offers and compare it with the mirror, read-only.

    The index and pages are fetched into a temporary directory outside the mirror, where the
    listing and the mirror's URLs are also counted (on disk: an index may list 100,000 actas);
    the mirror's provenance and check times are only read (no lock, no repair, no write).
    """
    from .archive import CHECKED, STATE_DIR
    from .archindex import _epoch, read_checked_times
    from .manifest import PROVENANCE, iter_provenance

    check_options(opts)
    site = get_site(opts.site)
    discover = opts.discover or site.discover_modes[0]
    if discover not in site.discover_modes:
        raise UsageError(f"site {site.name} discovers by {', '.join(site.discover_modes)}, not {discover}")
    out = Path(opts.out)
    pages_failed = rows_failed = pages = rows = 0

    def report(url: str, reason: str, cause: str = "unreadable page") -> None:
        nonlocal pages_failed, rows_failed
        if cause == "bad index row":
            rows_failed += 1
        else:
            pages_failed += 1

    with tempfile.TemporaryDirectory(prefix="acta-mirror-dry-run-") as tmp:
        db = sqlite3.connect(os.path.join(tmp, "plan.sqlite"), isolation_level=None)
        try:
            db.executescript("""
                CREATE TABLE known (url TEXT PRIMARY KEY, size INTEGER, checked REAL NOT NULL) WITHOUT ROWID;
                CREATE TABLE listed (key TEXT, url TEXT, PRIMARY KEY (key, url)) WITHOUT ROWID;
                BEGIN;""")
            # size: of the URL's latest acta version (none for an index file); checked: its last fetch or check
            db.executemany("INSERT INTO known VALUES (?, ?, ?) ON CONFLICT (url) DO UPDATE SET "
                           "size = coalesce(excluded.size, size), checked = max(checked, excluded.checked)",
                           ((e.url, e.size if e.kind == "acta" else None, _epoch(e.fetched_at))
                            for e in iter_provenance(out / PROVENANCE)))
            db.executemany("UPDATE known SET checked = max(checked, ?) WHERE url = ?",
                           ((when, url) for url, when in read_checked_times(out / STATE_DIR / CHECKED)))

            def take(actas) -> None:
                db.executemany("INSERT OR IGNORE INTO listed VALUES (?, ?)",  # as the archive keeps URLs: redacted
                               ((a.key, redact(a.url)) for a in actas if in_shard(a.key, opts.shard)))

            def counted(actas):
                nonlocal rows
                for acta in actas:
                    rows += 1
                    yield acta

            async with Fetcher(concurrency=opts.concurrency, rate=opts.rate, proxy=opts.proxy, timeout=opts.timeout,
                               max_bytes=opts.max_bytes, tmp_dir=tmp, alternates=opts.alternates,
                               policy=_policy(opts, site), user_agent=opts.user_agent,
                               headers=dict(opts.headers)) as fetcher:
                if discover in ("csv", "both"):
                    for source in [opts.index] if opts.index else site.index_urls(opts.root):
                        path, url = source, _local_url(source) if not http_url(source) else source
                        if http_url(source):
                            pages += 1
                            try:
                                fetched = await fetcher.fetch(source, expect_image=False)
                                path, url = fetched.tmp_path, _base(fetcher, source, fetched)
                            except FetchError as exc:
                                raise SourceUnreachable(
                                    redact(f"cannot read the index {source}: {exc.reason}")) from None
                        take(counted(site.parse_index(path, url, report)))

                async def get_page(url: str) -> Page:
                    nonlocal pages
                    pages += 1
                    try:
                        return await fetcher.fetch_text(url)
                    except FetchError:
                        report(url, "")
                        raise

                if discover in ("html", "both"):
                    async with _first_page():
                        async for acta in site.walk(opts.root, get_page, report):
                            take([acta])
                listing_requests = fetcher.requests
            since = time.time() - opts.recheck_after if opts.recheck_after > 0 else math.inf
            listed, urls, known, fresh, recheck_bytes = db.execute("""
                SELECT (SELECT count(*) FROM listed), count(*), count(k.url),
                       coalesce(sum(k.checked > ?), 0), coalesce(sum(CASE WHEN k.checked <= ? THEN k.size END), 0)
                FROM (SELECT DISTINCT url FROM listed) l LEFT JOIN known k ON k.url = l.url AND k.size IS NOT NULL""",
                                                                  (since, since)).fetchone()
            sizes, mean = db.execute("SELECT count(size), coalesce(sum(size), 0) FROM known").fetchone()
        except sqlite3.Error as exc:
            raise sqlite_refusal(exc, f"the dry run's plan in {tmp}") from None
        finally:
            db.close()
    return CrawlPlan(listed=listed, new=urls - known, recheck=known - fresh, recheck_bytes=recheck_bytes,
                     skipped=fresh, mean_size=mean // sizes if sizes else 0, pages_failed=pages_failed,
                     listing_requests=listing_requests, pages=pages, rows_failed=rows_failed,
                     rows=rows + rows_failed)
