"""The crawl: discovery from a site adapter, feeding the fetcher, feeding the archive."""
from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import itertools
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .archive import Archive
from .fetch import DEFAULT_CONCURRENCY, DEFAULT_MAX_BYTES, DEFAULT_TIMEOUT, Fetcher
from .publish import redact
from .models import Acta, FetchError, SourceUnreachable, UsageError
from .sites import get_site


BACKLOG_LIMIT = 1024  # files fetched but not yet committed before workers pause


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


@dataclass
class Counters:
    """Live figures the CLI shows while a crawl runs."""

    discovered: int = 0
    archived: int = 0
    unchanged: int = 0
    failed: int = 0
    vanished: int = 0
    bytes: int = 0
    discovery_done: bool = False
    started: float = field(default_factory=time.monotonic)

    @property
    def done(self) -> int:
        return self.archived + self.unchanged + self.failed


@dataclass
class CrawlResult:
    counters: Counters
    failures: list[dict]
    quarantined: list[str]
    seconds: float
    requests: int
    out: str


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


def _is_url(text: str) -> bool:
    return urlsplit(text).scheme in ("http", "https")


def check_options(opts: CrawlOptions) -> None:
    if opts.discover is not None and opts.discover not in ("csv", "html", "both"):
        raise UsageError(f"--discover must be csv, html or both, not {opts.discover!r}")
    if not _is_url(opts.root):
        raise UsageError(f"--root must be an http(s) URL, not {opts.root!r}")
    if opts.concurrency < 1 or opts.concurrency > 512:
        raise UsageError("--concurrency must be from 1 to 512")
    if opts.recheck_after < 0:
        raise UsageError("--recheck-after must be 0 or more seconds")
    if opts.rate < 0:
        raise UsageError("--rate must be 0 (no pacing) or more")
    for alternate in opts.alternates:
        if not _is_url(alternate):
            raise UsageError(f"--alternate must be an http(s) URL, not {alternate!r}")
    if opts.sign_key and not Path(opts.sign_key).is_file():
        raise UsageError(f"--sign-key {opts.sign_key}: no such file")
    if opts.index and not _is_url(opts.index) and not Path(opts.index).is_file():
        raise UsageError(f"--index {opts.index}: no such file")


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
    except BaseException:
        if created:
            _remove_if_empty(Path(opts.out))
        raise


def _remove_if_empty(out: Path) -> None:
    """A folder this run created and archived nothing into (an unreachable root) is removed,
    so no half-made bag is left behind."""
    try:
        if (out / "provenance.jsonl").stat().st_size:
            return
    except FileNotFoundError:
        pass
    except OSError:
        return
    if not any(files for _d, _s, files in os.walk(out / "data")):
        shutil.rmtree(out, ignore_errors=True)


async def _crawl(opts: CrawlOptions, site, counters: Counters) -> CrawlResult:
    failures: list[dict] = []
    started = time.monotonic()
    with Archive(opts.out, wait_lock=opts.wait_lock) as archive:
        kwargs = {} if opts.retry_attempts is None else {"retry_attempts": opts.retry_attempts}
        async with Fetcher(concurrency=opts.concurrency, rate=opts.rate, proxy=opts.proxy,
                           timeout=opts.timeout, max_bytes=opts.max_bytes,
                           tmp_dir=str(archive.tmp), alternates=opts.alternates, **kwargs) as fetcher:
            queue: asyncio.Queue = asyncio.Queue(maxsize=opts.concurrency * 4)
            writing = True

            def fail(key: str, url: str, reason: str) -> None:
                failures.append({"key": key, "url": redact(url), "reason": redact(reason)})
                counters.failed += 1

            async def committer() -> None:
                """The one writer of provenance: batches leave the event loop for a thread."""
                while writing or archive.backlog:
                    if archive.due() or (not writing and archive.backlog):
                        await asyncio.to_thread(archive.commit, archive.take_batch())
                    else:
                        await asyncio.sleep(0.05)

            async def get_page(url: str) -> str:
                try:
                    return await fetcher.fetch_text(url)
                except FetchError as exc:
                    fail("page", url, exc.reason)
                    raise

            listed: dict[str, str] = {}  # key -> the first URL it was listed with
            more_urls: set[tuple[str, str]] = set()  # (key, url) for a key's further URLs (rare)

            async def offer(acta: Acta) -> None:
                known = listed.get(acta.key)
                if known == acta.url or not in_shard(acta.key, opts.shard):
                    return
                if known is None:
                    listed[acta.key] = acta.url
                elif (acta.key, acta.url) in more_urls:
                    return
                else:
                    more_urls.add((acta.key, acta.url))
                archive.seen_upstream(acta.key, acta.url)
                counters.discovered += 1
                await queue.put(acta)

            async def discover() -> None:
                try:
                    if opts.discover in ("csv", "both"):
                        for actas in await _read_indexes(opts, site, fetcher, archive):
                            for acta in actas:
                                await offer(acta)
                    if opts.discover in ("html", "both"):
                        async for acta in site.walk(opts.root, get_page, lambda u, r: fail("page", u, r)):
                            await offer(acta)
                finally:
                    counters.discovery_done = True
                    for _ in range(opts.concurrency):
                        await queue.put(None)

            async def worker() -> None:
                while (acta := await queue.get()) is not None:
                    if archive.fresh(acta.url, opts.recheck_after):
                        counters.unchanged += 1
                        continue
                    etag, last_modified = archive.conditional_headers(acta.url)
                    try:
                        fetched = await fetcher.fetch(acta.url, etag=etag, last_modified=last_modified)
                    except FetchError as exc:
                        fail(acta.key, acta.url, exc.reason)
                        continue
                    if archive.add(acta, fetched) is None:
                        counters.unchanged += 1
                    else:
                        counters.archived += 1
                        counters.bytes += fetched.size
                    while archive.backlog > BACKLOG_LIMIT:  # the disk is behind: wait for it
                        await asyncio.sleep(0.02)

            writer = asyncio.create_task(committer())
            workers = [asyncio.create_task(worker()) for _ in range(opts.concurrency)]
            discovery = asyncio.create_task(discover())
            try:
                await discovery
                await asyncio.gather(*workers)
            except BaseException:
                discovery.cancel()
                for w in workers:
                    w.cancel()
                raise
            finally:
                writing = False
                await writer
            if not any(f["key"] == "page" for f in failures):  # only a complete listing can say what vanished
                counters.vanished = archive.mark_vanished(listed, lambda k: in_shard(k, opts.shard))
            archive.finish(failures=failures, rewrite_bag=bool(archive.added) or not (Path(opts.out) / "bagit.txt").exists(),
                           info={
                "Source-Organization": f"acta-mirror crawl of site {site.name}",
                "External-Identifier": site.name,
                "External-Description": getattr(site, "description", site.name),
                "Acta-Mirror-Source": redact(opts.root),
            })
            requests = fetcher.requests
            quarantined = list(archive.quarantined)
        if opts.sign_key:
            from .evidence import sign_bag

            sign_bag(opts.out, opts.sign_key, source=redact(opts.root))
    return CrawlResult(counters, failures, quarantined, time.monotonic() - started, requests, opts.out)


async def _read_indexes(opts: CrawlOptions, site, fetcher: Fetcher, archive: Archive) -> list:
    """Fetch (and archive) each index file; return, per index, an iterator of the actas it lists."""
    sources = [opts.index] if opts.index else site.index_urls(opts.root)
    listings = []
    for source in sources:
        if not _is_url(source):
            listings.append(site.parse_index(source, Path(source).resolve().as_uri()))
            continue
        name = os.path.basename(urlsplit(source).path) or "index.csv"
        key = f"index/{name}"
        archived = archive.path_of(source)
        # A job run from its manifests folder has no local copy to read on a 304: ask for the file.
        etag, last_modified = archive.conditional_headers(source) \
            if archived and os.path.lexists(archive.root / archived) else ("", "")
        try:
            fetched = await fetcher.fetch(source, etag=etag, last_modified=last_modified, expect_image=False)
        except FetchError as exc:
            raise SourceUnreachable(redact(f"cannot read the index {source}: {exc.reason}")) from None
        path = str(archive.root / archive.path_of(source)) if fetched.status == 304 else fetched.tmp_path
        listed = site.parse_index(path, source)  # reads the file now, before it is committed
        first = next(listed, None)  # a malformed header fails here, before anything is archived
        archive.add(Acta(site=site.name, key=key, url=source, page=source), fetched, kind="index", name=name)
        listings.append(itertools.chain([first] if first else [], listed))
    return listings
