"""The fetcher: all network policy (concurrency, pacing, the one retry policy, proxies, checks).

Nothing else in acta-mirror retries. Bodies are checked as images (imagecheck.py), hashed and
written to a temp file piece by piece as they arrive; none is held in memory whole. The bytes move
through libcurl (transfer.py); its errors are translated into the FetchError family here and
nowhere else, each with a short stable `cause`. Where a request may go is checked hop by hop: http(s) only, hosts the run
allows, no private, loopback or link-local address unless the root itself is one. A host
that keeps answering 429/503, asks to wait too long, or cannot be reached at all (connection
refused, name not resolved, no answer before the timeout, reset before any answer) request
after request, trips its breaker: it is not asked again this run. Past the run's deadline nothing is asked.
"""
from __future__ import annotations

import asyncio
import codecs
import collections
import dataclasses
import email.utils
import errno
import functools
import hashlib
import ipaddress
import itertools
import os
import random
import re
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timezone
from urllib.parse import urlsplit, urlunsplit

from .imagecheck import ImageCheck, NotImage, decode
from .sites import join
from .fetchworker import Gone, Remote
from .transfer import Engine, Head, Refused, TransferError
from .models import (CREDENTIAL_HEADERS, ArchiveWriteError, Deferred, Fetched, FetchError, NotAnImage, Page, TooLarge,
                     UsageError)

# The retry policy, in one place.
RETRY_ATTEMPTS = 6  # the first request + 5 retries
RETRY_HTTP_CODES = frozenset({408, 425, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524})
BACKOFF_BASE = 0.5  # seconds; full jitter over base * 2**attempt
BACKOFF_MAX = 30.0  # no single wait is longer, whatever Retry-After asks
RETRY_AFTER_MAX = 300.0  # a host asking (Retry-After) to wait longer than this is left alone this run
BREAKER_STRIKES = 20  # answers of 429/503 in a row from one host...
BREAKER_SECONDS = 30.0  # ...over at least this long (a short burst under load is only retried): left alone
BREAKER_CODES = frozenset({429, 503})
# Failures that mean no answer came from the host at all: BREAKER_STRIKES of them in a row over
# BREAKER_SECONDS trip its breaker too (a site taken down would otherwise be asked six times per
# acta, with backoff: hours of a scheduled job for nothing). Any answer, whatever its status,
# shows the host is up and starts the count again.
UNREACHED_CAUSES = frozenset({"connection refused", "name not resolved", "timeout", "connection reset"})
MAX_REDIRECTS = 10  # hops followed for one URL, each one checked
REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
REDIRECT_BODY_BYTES = 1024 * 1024  # a redirect's body is dropped; one larger than this is no redirect: cut off
# Text a server chooses that the record keeps (provenance, published every run): a URL asked for
# or followed (each hop is kept; real ones are ~100 characters) over this is refused...
MAX_URL_CHARS = 8192
MAX_VALIDATOR_CHARS = 1024  # ...and an ETag, Last-Modified or Content-Type over this (or holding a
                            # control character, which no header written from the record may hold) is
                            # not kept (nor sent back)
SPARES_BATCH, SPARES_LOW = 32, 16  # temp files made ahead, in batches, when fewer are ready
SPARE_THREADS = 1  # the thread that makes temp files ahead (one batch at a time)

# Defaults a caller may override per run.
DEFAULT_CONCURRENCY = 16
DEFAULT_TIMEOUT = 60.0  # whole request, so a slowloris server is cut off too
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_MAX_BYTES = 25 * 1024 * 1024  # real actas are ~250 KB
DEFAULT_MAX_PAGE_BYTES = 32 * 1024 * 1024  # HTML pages and index files
DEFAULT_PROCESSES = 2  # processes downloading images (fetchworker.py), at most one per core
SECOND_PROCESS_AFTER = 256  # image downloads asked for before the second process is started
# Which process fetches: archiving costs the same per file, a download costs more the larger the
# file. On small images (the full index at 8 KB) the archiving process has no time to spare: the
# second takes them all. On images of this size and more on average (real actas are ~290 KB), the
# first also fetches one in every SECOND_PROCESS_SHARE + 1, as both cores then have time for it:
# at real size that leaves the two processes with about the same CPU time (1.7 s each for 2,000
# actas), where one in every two or five left one of them the busier.
SHARE_FROM_BYTES = 64 * 1024
SECOND_PROCESS_SHARE = 3  # then it is asked for this many image downloads for each one asked here
# While the second process takes every image, a caller may keep this many times `concurrency`
# downloads asked for (Fetcher.depth): the second process still has at most `concurrency` requests
# in flight, and the next one is waiting there when one ends, not in the archiving process's
# queue behind a pipe. Wherever both processes fetch, `concurrency` bounds the two together.
PIPELINE_DEPTH = 4
USER_AGENT = "acta-mirror (+evidence preservation; respects Retry-After)"

# Failures that another host cannot mend: the URL itself, or the run's own limits.
_NO_ALTERNATE = frozenset({"unsupported scheme", "invalid URL", "off-site URL", "off-site redirect",
                           "blocked address", "deadline", "too large"})


class _Transient(Exception):
    """A failure worth another try; carries the server's Retry-After, if any."""

    def __init__(self, reason: str, retry_after: float | None = None, cause: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.cause = cause or reason


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP-date."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # '²' (latin-1 0xB2) is a digit to isdigit(), not to float()
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):  # a year or a zone offset past any range
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _delay(exc: BaseException | None, attempt: int) -> float:
    """Seconds before the next try: the server's Retry-After, else full-jitter backoff."""
    if isinstance(exc, _Transient) and exc.retry_after is not None:
        return min(exc.retry_after, BACKOFF_MAX)
    return random.uniform(0, min(BACKOFF_MAX, BACKOFF_BASE * 2 ** (attempt - 1)))


def _wait(retry_state) -> float:
    exc = retry_state.outcome.exception() if retry_state.outcome else None
    return _delay(exc, retry_state.attempt_number + 1)  # the first try happened before tenacity


@functools.lru_cache(maxsize=1024)  # asked for every request and every connection, of a few hosts
def address_class(address: str) -> str:
    """'public', or why an address is not: loopback, private, link-local, reserved."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return "public"  # a name: its addresses are checked when it is resolved
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast or ip.is_unspecified or ip.is_reserved:
        return "reserved"
    if ip.is_private or not ip.is_global:
        return "private"
    return "public"


@dataclass(frozen=True)
class HostPolicy:
    """Where requests may go: these host names (empty: any), and addresses of the public
    internet plus the classes named in `also` (the root's own, e.g. loopback in tests). The
    root's own name may resolve anywhere: the user chose it (an intranet site, say). The user's
    credentials go to the site's origin alone (its scheme, host and port)."""

    hosts: frozenset[str] = frozenset()
    also: frozenset[str] = frozenset()
    root: str = ""
    site: str = ""  # the root URL: the user's credential headers go to its scheme, host and port alone

    @classmethod
    def for_root(cls, root: str, alternates: tuple[str, ...] = (), extra_hosts: tuple[str, ...] = ()) -> "HostPolicy":
        hosts = {(urlsplit(u).hostname or "").lower() for u in (root, *alternates)}
        hosts |= {h.strip().lower().strip("[]") for h in extra_hosts if h.strip()}
        root_host = urlsplit(root).hostname or ""
        also = {address_class(root_host)} if root_host != "localhost" else {"loopback"}
        return cls(frozenset(hosts - {""}), frozenset(also - {"public"}), root_host.lower(), root)

    def allows(self, address: str) -> bool:
        kind = address_class(address)
        return kind == "public" or kind in self.also


@dataclass
class _Host:
    """Per-host state: pacing (at most `rate` requests per second; 0 means none) and the breaker."""

    rate: float
    next_at: float = 0.0
    lock: asyncio.Lock | None = None
    strikes: int = 0  # 429/503 answers in a row
    streak_since: float = 0.0  # when the first of them came
    unreached: int = 0  # requests in a row that got no answer, or a head and a body stalled to the timeout
    unreached_since: float = 0.0  # when the first of them failed
    tripped: str = ""  # why the host is left alone this run
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait(self) -> None:
        if self.rate <= 0:
            return
        if self.lock is None:
            self.lock = asyncio.Lock()
        async with self.lock:
            now = time.monotonic()
            if self.next_at > now:
                await asyncio.sleep(self.next_at - now)
                now = self.next_at
            self.next_at = now + 1.0 / self.rate

    def trip(self, reason: str) -> None:
        if not self.tripped:
            self.tripped = reason
            self.stop.set()


_SECOND = (0, "1970-01-01T00:00:00")  # the last whole second utc_now wrote, and its text


def utc_now() -> str:
    """The time as provenance keeps it, 2024-07-29T12:00:00.000000Z. Once per download: the
    second's text is made once a second (datetime's isoformat took three times as long)."""
    global _SECOND
    seconds, micros = divmod(time.time_ns() // 1000, 1_000_000)
    second = _SECOND  # one read: another thread may set it meanwhile
    if second[0] != seconds:
        second = _SECOND = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
    return f"{second[1]}.{micros:06d}Z"


class Fetcher:
    """One transfer engine with bounded concurrency, per-host pacing and breakers, the retry
    policy, the host policy and the run's deadline (a time.monotonic() value, or None)."""

    def __init__(self, *, concurrency: int = DEFAULT_CONCURRENCY, rate: float = 0.0,
                 proxy: str | None = None, timeout: float = DEFAULT_TIMEOUT,
                 max_bytes: int = DEFAULT_MAX_BYTES, tmp_dir: str | None = None,
                 retry_attempts: int = RETRY_ATTEMPTS, alternates: tuple[str, ...] = (),
                 policy: HostPolicy = HostPolicy(), deadline: float | None = None,
                 user_agent: str = "", headers: dict[str, str] | None = None, processes: int = 1):
        self.concurrency = concurrency
        self.rate = rate
        self.proxy = proxy
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.tmp_dir = tmp_dir
        self.retry_attempts = retry_attempts
        self.alternates = tuple(a.rstrip("/") for a in alternates)
        self.policy = policy
        self._site_origin = _origin(policy.site) if policy.site else ()  # where credentials go (once, not per request)
        self.deadline = deadline
        self._hosts: dict[str, _Host] = {}
        self._slots = asyncio.Semaphore(concurrency)
        self._engine: Engine | None = None
        self._pool: ThreadPoolExecutor | None = None
        self.user_agent = user_agent or USER_AGENT
        self.headers = dict(headers or {})  # sent with every request (a site may want a Referer or a cookie)
        # ...but a Proxy-Authorization header, which is for the proxy: sent to it alone (through
        # a CONNECT tunnel libcurl would hand it to the site), and without a proxy to nobody
        self._proxy_headers = {k: v for k, v in self.headers.items() if k.lower() == "proxy-authorization"}
        self._requests = 0
        self._retries = 0  # requests that repeated one that failed (shown as a count)
        self._names = itertools.count(1)  # temp file names (taken from two threads: next() is atomic)
        self._spares: collections.deque[tuple[str, int]] = collections.deque()
        self._refilling = False
        # A second process takes the image downloads (fetchworker.py), once a crawl is big
        # enough to pay for starting it, and this one archives; pacing needs one clock, so not
        # with a rate.
        self.processes = min(processes, os.cpu_count() or 1) if rate <= 0 else 1
        self._remote: Remote | None = None
        self._starting: asyncio.Task | None = None  # the child's start, held so it is not collected
        self._images = 0  # image downloads asked for so far
        self._local = 0  # of them, in flight in this process
        self._split = [0, 0]  # image downloads asked here and of the second process, once images are large
        self._image_bytes = [0, 0]  # bytes and count of the images fetched so far, by both processes
        self._told: set[str] = set()  # hosts whose breaker the other process knows of
        self._waiting: collections.deque[asyncio.Future] = collections.deque()  # fetches waiting for room

    async def __aenter__(self) -> "Fetcher":
        self._engine = Engine(concurrency=self.concurrency, proxy=check_proxy(self.proxy),
                              user_agent=self.user_agent, address_check=None if self.proxy else self._refuse)
        await self._engine.__aenter__()
        self._pool = ThreadPoolExecutor(SPARE_THREADS, thread_name_prefix="acta-mirror-spares")
        return self

    async def __aexit__(self, *exc) -> None:
        if self._starting is not None:  # a child still being started is closed like one running
            await asyncio.gather(self._starting, return_exceptions=True)
        if self._remote is not None:
            await self._remote.close()
        if self._engine is not None:
            self._engine.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._drop_spares()

    def _temp_file(self) -> tuple[str, int]:
        """A new, empty temp file, open for writing: made ahead by a worker thread (creating a
        file is the slowest step of a small download), or here when none is ready."""
        if len(self._spares) < SPARES_LOW and not self._refilling and self._pool is not None:
            self._refilling = True
            self._pool.submit(self._make_spares)
        try:
            return self._spares.popleft()
        except IndexError:
            path = self._temp_path()
            return path, _disk(os.open, path, _CREATE, 0o644)

    def _make_spares(self) -> None:
        """On a worker thread; a failure here only means files are made when needed."""
        try:
            for _ in range(SPARES_BATCH):
                path = self._temp_path()
                self._spares.append((path, os.open(path, _CREATE, 0o644)))
        except OSError:
            pass
        finally:
            self._refilling = False

    def _drop_spares(self) -> None:
        while self._spares:
            path, fd = self._spares.popleft()
            os.close(fd)
            _unlink(path)

    @property
    def requests(self) -> int:
        """Requests sent, by both processes."""
        return self._requests + (self._remote.requests if self._remote else 0)

    @property
    def retries(self) -> int:
        """Requests that repeated one that failed, by both processes."""
        return self._retries + (self._remote.retries if self._remote else 0)

    def _second(self) -> Remote | None:
        """The other process, started once enough images have been asked for."""
        self._images += 1
        if self._remote is None and self.processes > 1 and self._images > SECOND_PROCESS_AFTER:
            self._remote = Remote(self._child_config(), self._trip_here)
            self._starting = asyncio.get_running_loop().create_task(self._remote.start())
        return self._remote if self._remote is not None and self._remote.alive else None

    def _child_config(self) -> dict:
        return {"concurrency": self.concurrency, "proxy": self.proxy, "timeout": self.timeout,
                "max_bytes": self.max_bytes, "tmp_dir": self.tmp_dir, "retry_attempts": self.retry_attempts,
                "alternates": list(self.alternates), "deadline": self.deadline, "user_agent": self.user_agent,
                "headers": self.headers, "policy": {"hosts": sorted(self.policy.hosts),
                                                    "also": sorted(self.policy.also), "root": self.policy.root,
                                                    "site": self.policy.site}}

    def _trip_here(self, name: str, reason: str) -> None:
        self._told.add(name)
        self._host(name).trip(reason)

    def _tell_trips(self) -> None:
        for name, host in self._hosts.items():
            if host.tripped and name not in self._told:
                self._told.add(name)
                self._remote.trip(name, host.tripped)

    def tripped(self) -> dict[str, str]:
        """Hosts left alone this run, with the reason."""
        return {name: h.tripped for name, h in self._hosts.items() if h.tripped}

    def past_deadline(self) -> bool:
        # with a little slack: a request cut at the deadline by its timeout may wake a hair early
        return self.deadline is not None and time.monotonic() >= self.deadline - 0.05

    async def fetch(self, url: str, *, etag: str = "", last_modified: str = "",
                    expect_image: bool = True) -> Fetched:
        """GET url into a temp file, retried by policy; when the host fails for good, the same
        path from each alternate host in turn. The result keeps the URL asked for; its
        final_url and host say who served the bytes. Once the second process runs, it fetches
        the images: all of them while they are small, three in four once they are large
        (SHARE_FROM_BYTES, SECOND_PROCESS_SHARE)."""
        remote = self._second() if expect_image else None
        if remote is not None:
            await self._room(remote)
        there = remote is not None
        if there and not self._small_images():
            # Three in four by count, but the second process never holds every slot: one that
            # stopped answering (alive, its loop stuck) must not stop this one fetching.
            there = (self._split[1] < SECOND_PROCESS_SHARE * (self._split[0] + 1)
                     and remote.in_flight < self.concurrency - 1)
            self._split[there] += 1
        if there:
            self._tell_trips()  # a trip made here while it started: no fetch here may follow to tell it
            try:
                return self._count(await remote.fetch(url, etag, last_modified, expect_image))
            except Gone:
                pass  # it died: ask here
            finally:
                self._freed()
        self._local += 1
        try:
            fetched = await self._fetch_here(url, etag, last_modified, expect_image)
            return self._count(fetched) if expect_image else fetched
        finally:
            self._local -= 1
            self._freed()
            if self._remote is not None and self._remote.alive:
                self._tell_trips()

    @property
    def depth(self) -> int:
        """How many fetches a caller may usefully keep asked for at once (PIPELINE_DEPTH)."""
        return self.concurrency * (PIPELINE_DEPTH if self.processes > 1 else 1)

    def _fits(self, remote: Remote) -> bool:
        """Room for one more image download. Deep only while the second process takes them all
        and none is in flight here: then it bounds its own requests in flight."""
        deep = self._local == 0 and self._small_images() and remote.alive
        return self._local + remote.in_flight < (self.depth if deep else self.concurrency)

    async def _room(self, remote: Remote) -> None:
        while not self._fits(remote):
            waiter = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            try:
                await waiter  # woken when a download ends: it looks again
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._freed()  # woken, then cancelled: the room it was given goes to the next
                raise

    def _freed(self) -> None:
        """A download ended: the longest waiting fetch looks for room again."""
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _count(self, fetched: Fetched) -> Fetched:
        if fetched.status == 200:
            self._image_bytes[0] += fetched.size
            self._image_bytes[1] += 1
        return fetched

    def _small_images(self) -> bool:
        total, count = self._image_bytes
        return total < SHARE_FROM_BYTES * max(count, 1)

    async def _fetch_here(self, url: str, etag: str, last_modified: str, expect_image: bool) -> Fetched:
        try:
            return await self._fetch(url, etag, last_modified, expect_image)
        except FetchError as first:
            if not self.alternates or first.cause in _NO_ALTERNATE:
                raise
            failure, reasons = first, [f"{_host_port(url)}: {first.reason}"]
        for alternate in self.alternates:
            try:
                # the user's credentials are for url's origin: an alternate is another host
                fetched = await self._fetch(_on_alternate(alternate, url), "", "", expect_image, owner=url)
            except FetchError as exc:
                reasons.append(f"{_host_port(alternate)}: {exc.reason}")
                continue
            return dataclasses.replace(fetched, url=url)
        raise type(failure)(url, "; ".join(reasons), cause=failure.cause, attempts=failure.attempts)

    async def _fetch(self, url: str, etag: str, last_modified: str, expect_image: bool,
                     owner: str = "") -> Fetched:
        """url, by the retry policy; the credential headers go only to the site's origin (the
        policy's root URL), or to owner's (url's) when the policy names no site."""
        headers = {"Accept-Encoding": "identity"}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        sent = [0]  # attempts that reached the network (a deferred one may not)

        async def attempt() -> Fetched:
            if sent[0]:
                self._retries += 1
            return await self._once(url, headers, expect_image, sent, owner or url)

        try:
            try:
                return await attempt()  # most requests need no policy
            except _Transient as first:
                if self.retry_attempts <= 1:
                    raise
                await self._pause(_delay(first, 1), url)
            from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt  # not at start-up

            async for step in AsyncRetrying(
                stop=stop_after_attempt(self.retry_attempts - 1), wait=_wait, sleep=lambda s: self._pause(s, url),
                retry=retry_if_exception_type(_Transient), reraise=True,
            ):
                with step:
                    return await attempt()
        except _Transient as exc:
            reason = exc.reason if sent[0] == 1 else f"gave up after {sent[0]} attempts: {exc.reason}"
            raise FetchError(url, reason, cause=exc.cause, attempts=sent[0]) from None
        except FetchError as exc:
            exc.attempts = sent[0]
            raise
        raise AssertionError("unreachable")

    async def _pause(self, seconds: float, url: str) -> None:
        """Wait before a retry, but no longer than the deadline, nor once the host's breaker trips."""
        if self.deadline is not None:
            seconds = min(seconds, max(0.0, self.deadline - time.monotonic()))
        host = self._host(urlsplit(url).hostname or "")
        try:
            await asyncio.wait_for(host.stop.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    def _host(self, name: str) -> _Host:
        host = self._hosts.get(name)
        if host is None:
            host = self._hosts[name] = _Host(self.rate)
        return host

    async def fetch_text(self, url: str, max_bytes: int = DEFAULT_MAX_PAGE_BYTES) -> Page:
        """GET a page (HTML, CSV) as text, with the same policy; decoded by its charset, with the
        URL it came from after redirects."""
        fetched = await self.fetch(url, expect_image=False)
        try:
            if fetched.size > max_bytes:
                raise TooLarge(url, f"page over {max_bytes} bytes", cause="too large")
            with open(fetched.tmp_path, "rb") as fh:
                raw = fh.read()
        finally:
            os.unlink(fetched.tmp_path)
        return Page(decode_text(raw, fetched.content_type), self.base_of(url, fetched))

    def base_of(self, url: str, fetched: Fetched) -> str:
        """What the relative URLs in fetched's bytes (asked as url) resolve against: where they came
        from after redirects; for bytes an --alternate served, the same place on url's own host
        (an alternate copies the site: a link on it names the site's path, which the fetcher then
        asks the site for first, and the alternate after, as every URL)."""
        final = fetched.final_url or url
        here = urlsplit(final)
        for alternate in self.alternates:
            alt = urlsplit(alternate)
            prefix = alt.path.rstrip("/")
            if (here.scheme, here.netloc) == (alt.scheme, alt.netloc) and \
                    (here.path == prefix or here.path.startswith(prefix + "/")):
                own = urlsplit(url)
                return urlunsplit((own.scheme, own.netloc, here.path[len(prefix):] or "/", own.query, ""))
        return final

    def _check_target(self, original: str, url: str, hop: int) -> tuple[str, tuple]:
        """The host name and origin (as _origin gives it) of url, if the run may ask it;
        otherwise FetchError, with no retry."""
        if len(url) > MAX_URL_CHARS:
            raise FetchError(original, f"{'a redirect to ' if hop else ''}a URL of {len(url)} characters, over "
                                       f"the cap of {MAX_URL_CHARS}", cause="invalid URL")
        try:
            parts = urlsplit(url)
            host = (parts.hostname or "").lower()  # an IPv6 zone too, as _origin has it
            port = parts.port  # raises ValueError on a bad port
        except ValueError as exc:
            raise FetchError(original, f"invalid URL {url!r} ({exc})", cause="invalid URL") from None
        if parts.scheme.lower() not in ("http", "https"):
            raise FetchError(original, f"not an http(s) URL: {url!r}", cause="unsupported scheme")
        if not host:
            raise FetchError(original, f"invalid URL {url!r} (no host)", cause="invalid URL")
        if self.policy.hosts and host not in self.policy.hosts:
            what = "off-site redirect" if hop else "off-site URL"
            raise FetchError(original, f"{what} to {host} (allowed: {', '.join(sorted(self.policy.hosts))}; "
                                       f"declare a CDN with --allow-host)", cause=what)
        if not self.policy.allows(host):
            raise FetchError(original, f"{host} is a {address_class(host)} address", cause="blocked address")
        scheme = parts.scheme.lower()
        return host, (scheme, host, port or {"http": 80, "https": 443}[scheme])

    async def _once(self, url: str, headers: dict, expect_image: bool, sent: list[int], owner: str) -> Fetched:
        conditional = "If-None-Match" in headers or "If-Modified-Since" in headers
        current, hops = url, []
        sending = {**{k: v for k, v in self.headers.items() if k not in self._proxy_headers}, **headers}
        to_proxy = self._proxy_headers if self.proxy else {}
        async with self._slots:
            while True:
                name, origin = self._check_target(url, current, len(hops))
                # another scheme, host or port than the site's (any URL the site names, a redirect,
                # an alternate): no credentials. Without a site, owner's (url's) origin is the user's.
                if origin != (self._site_origin or _origin(owner)):
                    sending = {k: v for k, v in sending.items() if k.lower() not in CREDENTIAL_HEADERS}
                host = self._host(name)
                if host.tripped:
                    raise _left_alone(url, name, host)
                if self.past_deadline():
                    raise Deferred(url, "the crawl's deadline passed before it was asked", cause="deadline")
                await host.wait()
                self._requests += 1
                sent[0] += not hops
                body = _Body(self, url, current, tuple(hops), expect_image, conditional, host, name)
                total = self._total()
                try:
                    head = await self._engine.get(current, sending, proxy_headers=to_proxy, timeout=total,
                                                  connect_timeout=DEFAULT_CONNECT_TIMEOUT, on_head=body.head,
                                                  host=name)
                    body.done = True
                    self._answered(host)
                except Refused as exc:
                    raise FetchError(url, exc.reason, cause="blocked address") from None
                except TransferError as exc:
                    if exc.cause == "invalid URL":
                        raise FetchError(url, exc.reason, cause=exc.cause) from None
                    if exc.cause == "too large":  # libcurl's own caps (the body's is the sink's TooLarge)
                        raise TooLarge(url, exc.reason, cause="too large") from None
                    if self.past_deadline():
                        raise Deferred(url, "cut off by the crawl's deadline", cause="deadline") from None
                    # No answer, or a head and then a body that stalled until the timeout (a tarpit
                    # sends headers at once and then nothing): either way, nothing usable came.
                    if exc.cause in UNREACHED_CAUSES and (body.head_seen is None or exc.cause == "timeout"):
                        self._unreached(host, name, exc, url)
                    raise _Transient(exc.reason, cause=exc.cause) from None
                except NotImage as exc:
                    raise NotAnImage(url, exc.reason, cause=exc.cause) from None
                except (_Transient, FetchError, ArchiveWriteError):
                    raise
                except Exception as exc:  # a server can provoke errors no list foresees; never a crash
                    raise FetchError(url, f"unexpected {_short(exc)}", cause="unexpected error") from None
                finally:
                    body.close()  # removes the temp file unless the whole answer arrived
                if head.status not in REDIRECT_CODES:
                    return await body.result()
                location = head.get("Location")
                if not location:
                    raise FetchError(url, f"HTTP {head.status} without a Location", cause=f"HTTP {head.status}")
                if len(hops) >= MAX_REDIRECTS:
                    raise FetchError(url, f"more than {MAX_REDIRECTS} redirects", cause="too many redirects")
                hops.append(current)
                # A browser reads a Location's bytes as UTF-8 and asks for them percent-encoded
                # (join); one it cannot parse is refused by _check_target as an invalid URL.
                current = join(current, _utf8(location))

    def _total(self) -> float:
        total = self.timeout
        if self.deadline is not None:
            total = max(0.001, min(total, self.deadline - time.monotonic()))
        return total

    def _unreached(self, host: _Host, name: str, exc: TransferError, url: str) -> None:
        """Count requests in a row that got no answer; trip the breaker on too many."""
        host.unreached += 1
        if host.unreached == 1:
            host.unreached_since = time.monotonic()
        elapsed = time.monotonic() - host.unreached_since
        if host.unreached >= BREAKER_STRIKES and elapsed >= BREAKER_SECONDS:
            host.trip(f"{host.unreached} requests in a row got no answer, or none whole, over {elapsed:.0f} s "
                      f"(the last: {exc.cause})")
            raise _left_alone(url, name, host) from None

    @staticmethod
    def _answered(host: _Host) -> None:
        """A whole answer (of any status) ends a run of requests that got none."""
        host.unreached = 0

    def _strike(self, host: _Host, name: str, head: Head, url: str) -> None:
        """Count 429/503 answers in a row; trip the breaker on too many or on a wait too long.
        A head alone does not end a run of requests that got no answer (_answered does): a
        tarpit sends one at once, then a body that never ends."""
        if head.status not in BREAKER_CODES:
            host.strikes = 0
            return
        host.strikes += 1
        if host.strikes == 1:
            host.streak_since = time.monotonic()
        wait = parse_retry_after(head.get("Retry-After"))
        left = None if self.deadline is None else self.deadline - time.monotonic()
        if wait is not None and (wait > RETRY_AFTER_MAX or (left is not None and wait > left)):
            host.trip(f"it asked to wait {wait:.0f} s (Retry-After, HTTP {head.status})")
        elif host.strikes >= BREAKER_STRIKES and time.monotonic() - host.streak_since >= BREAKER_SECONDS:
            host.trip(f"{host.strikes} answers of HTTP 429/503 in a row over "
                      f"{time.monotonic() - host.streak_since:.0f} s")
        if host.tripped:
            raise _left_alone(url, name, host)

    def _refuse(self, host: str, address: str) -> str | None:
        """Why the run may not connect to this address of host (None: it may)."""
        if host.lower().rstrip(".") == self.policy.root or self.policy.allows(address):
            return None
        return f"{host} resolves to {address} ({address_class(address)})"

    def _temp_path(self) -> str:
        return f"{self.tmp_dir or tempfile.gettempdir()}/{os.getpid()}-{next(self._names)}.part"


class _Body:
    """One answer as it arrives: judged on its head (status, length), then each piece as it comes
    checked as an image, hashed and written to the temp file, so no body is ever held whole in
    memory. (Holding a real-size body until whole, to write and hash it on a worker thread, cost
    more than it saved: growing and freeing a buffer of 300 KB per acta made the kernel hand the
    process fresh pages each time: a sixth of a crawl's CPU at real size.) Whatever fails leaves no
    temp file behind."""

    __slots__ = ("check", "conditional", "digest", "done", "expect_image", "fd", "fetcher",
                 "final_url", "head_seen", "hops", "host", "name", "size", "tmp_path", "url")

    def __init__(self, fetcher: Fetcher, url: str, final_url: str, hops: tuple[str, ...], expect_image: bool,
                 conditional: bool, host: _Host, name: str):
        self.fetcher, self.url, self.final_url, self.hops = fetcher, url, final_url, hops
        self.expect_image, self.conditional, self.host, self.name = expect_image, conditional, host, name
        self.fd: int | None = None
        self.tmp_path = ""
        self.size = 0
        self.digest = None
        self.check: ImageCheck | None = None
        self.head_seen: Head | None = None
        self.done = False

    def head(self, head: Head):
        """Decide on the status and length before any body byte is read; where the body goes."""
        fetcher, url = self.fetcher, self.url
        self.head_seen = head
        fetcher._strike(self.host, self.name, head, url)
        if head.status in REDIRECT_CODES:
            return self.drop
        if head.status == 304:
            if not self.conditional:
                raise FetchError(url, "HTTP 304 Not Modified to a request that named no earlier copy",
                                 cause="HTTP 304 unasked")
            return None
        if head.status in RETRY_HTTP_CODES:
            raise _Transient(f"HTTP {head.status}", parse_retry_after(head.get("Retry-After")),
                             cause=f"HTTP {head.status}")
        if head.status != 200:
            raise FetchError(url, f"HTTP {head.status}", cause=f"HTTP {head.status}")
        declared = head.content_length
        if declared is not None and declared > fetcher.max_bytes:
            raise TooLarge(url, f"Content-Length {declared} is over the cap of {fetcher.max_bytes} bytes",
                           cause="too large")
        self.check = ImageCheck() if self.expect_image else None
        self.tmp_path, self.fd = fetcher._temp_file()
        self.digest = hashlib.sha256()
        return self.write

    def write(self, chunk: bytes) -> None:
        """A piece of the body (libcurl hands over at most 16 KB at a time):
        checked (an HTML page is refused before the rest of it is read), hashed and written."""
        self.size += len(chunk)
        if self.size > self.fetcher.max_bytes:
            raise TooLarge(self.url, f"body passed the cap of {self.fetcher.max_bytes} bytes; cut off",
                           cause="too large")
        if self.check is not None:
            self.check.feed(chunk)
        self.digest.update(chunk)
        _write_all(self.fd, chunk)

    def drop(self, chunk: bytes) -> None:
        """A redirect's body: not kept, and not read past REDIRECT_BODY_BYTES (one streaming for
        ever would otherwise be read at line speed until the timeout, on every retry)."""
        self.size += len(chunk)
        if self.size > REDIRECT_BODY_BYTES:
            raise TooLarge(self.url, f"a redirect's body passed {REDIRECT_BODY_BYTES} bytes; cut off", cause="too large")

    def close(self) -> None:
        """After an exchange that failed: forget the body and remove its temp file. (A whole
        answer is left to result(), which keeps or removes it.)"""
        if self.done:
            return
        self._discard()

    def _discard(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.tmp_path:
            _unlink(self.tmp_path)
            self.tmp_path = ""

    async def result(self) -> Fetched:
        head = self.head_seen
        common = dict(url=self.url, final_url=self.final_url, etag=_validator(head.get("ETag")),
                      last_modified=_validator(head.get("Last-Modified")),
                      content_type=_validator(head.get("Content-Type").replace("\t", " ")),
                      fetched_at=utc_now(), host=self.name, redirects=self.hops)
        if head.status == 304:
            return Fetched(status=304, tmp_path=None, sha256="", size=0, **common)
        trailing = 0
        try:
            if self.check is not None:
                verdict = self.check.finish()
                trailing = verdict.trailing
                # what the bytes are, not what the header claims: it names the file and the record
                common["content_type"] = verdict.kind
            fd, self.fd = self.fd, None
            os.close(fd)
            sha256 = self.digest.hexdigest()
            if self.check is not None and verdict.needs_decode:
                await asyncio.to_thread(decode, self.tmp_path)
        except NotImage as exc:
            self._discard()
            if exc.cause == "truncated image":  # a cut connection looks the same: worth another try
                raise _Transient(exc.reason, cause=exc.cause) from None
            raise NotAnImage(self.url, exc.reason, cause=exc.cause) from None
        except BaseException:
            self._discard()
            raise
        return Fetched(status=200, tmp_path=self.tmp_path, sha256=sha256, size=self.size,
                       trailing_bytes=trailing, **common)


_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


def _left_alone(url: str, name: str, host: _Host) -> Deferred:
    """The failure of a request not made because the host's breaker tripped."""
    return Deferred(url, f"{name} is left alone this run: {host.tripped}", cause="deferred: host breaker")


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _validator(value: str) -> str:
    """An ETag, Last-Modified or Content-Type as kept; '' for one too long to be real
    (MAX_VALIDATOR_CHARS) or holding a control character (an escape, a tab: no valid ETag or
    date has one, and a WARC written from the record could not carry it)."""
    return value if len(value) <= MAX_VALIDATOR_CHARS and not _CONTROL.search(value) else ""


def _origin(url: str) -> tuple:
    """(scheme, host, port) of a URL; one that cannot be parsed is no origin at all."""
    try:
        parts = urlsplit(url)
        return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port or {"http": 80, "https": 443}.get(
            parts.scheme.lower())
    except ValueError:
        return ()


def _host_port(url: str) -> str:
    """Who was asked, for a reason's text: the netloc without its user:password@ (a bare netloc
    is no URL, so redact() would not see one there)."""
    return urlsplit(url).netloc.rpartition("@")[2]


def _on_alternate(alternate: str, url: str) -> str:
    """url's path and query on an alternate host: after the alternate's own path, and before its
    own query (a token for the whole bucket), which follows url's."""
    alt, parts = urlsplit(alternate), urlsplit(url)
    query = "&".join(q for q in (parts.query, alt.query) if q)
    return urlunsplit((alt.scheme, alt.netloc, alt.path.rstrip("/") + parts.path, query, ""))


def _write_all(fd: int, data) -> None:
    view = memoryview(data)
    while view:
        view = view[_disk(os.write, fd, view):]


def _disk(op, *args):
    """A file operation on the download; its OSError is the disk's, never the network's."""
    try:
        return op(*args)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise ArchiveWriteError("disk full while downloading; everything archived before is intact, "
                                    "re-run when there is space") from None
        raise ArchiveWriteError(f"cannot write a download: {exc.strerror or exc}") from None


def decode_text(raw: bytes, content_type: str) -> str:
    """Bytes as text by the declared charset; UTF-8 when it names no text codec (say, idna),
    or one that made a lone surrogate of some bytes (UTF-7 and the escape codecs do, even
    told to replace): no parser and no UTF-8 file takes one."""
    charset = "utf-8"
    if "charset=" in content_type:
        charset = content_type.split("charset=", 1)[1].split(";")[0].strip().strip('"') or "utf-8"
    try:
        if not codecs.lookup(charset)._is_text_encoding:
            charset = "utf-8"
        text = raw.decode(charset, errors="replace")
        if not _SURROGATE.search(text):
            return text
    except (LookupError, UnicodeError, ValueError):
        pass
    return raw.decode("utf-8", errors="replace")


def _utf8(header: str) -> str:
    """A header value (read as latin-1, one character per byte) as the UTF-8 it usually is."""
    try:
        return header.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return header


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def check_proxy(proxy: str | None) -> str | None:
    """The proxy URL, if its scheme is one libcurl is asked to speak; UsageError otherwise.
    Through a proxy, names are resolved beyond our reach: only literal addresses are checked."""
    if not proxy:
        return None
    try:
        parts = urlsplit(proxy)
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError as exc:
        raise UsageError(f"--proxy {proxy!r} is not a URL ({exc})") from None
    scheme = parts.scheme.lower()
    if not parts.hostname:
        raise UsageError(f"--proxy {proxy!r} names no host")
    if scheme not in ("http", "https", "socks5", "socks5h", "socks4", "socks4a"):
        raise UsageError(f"unsupported proxy scheme {scheme!r} (use http, https, socks5, socks5h, socks4)")
    return proxy
