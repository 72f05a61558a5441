"""The fetcher: all network policy (concurrency, pacing, the one retry policy, proxies, checks).

Nothing else in acta-mirror retries. Bodies stream to a temp file and are hashed as they
arrive; they are never held whole in memory. aiohttp's errors are translated into the
FetchError family here and nowhere else.
"""
from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import errno
import hashlib
import os
import random
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import urlsplit

import aiohttp
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

from .models import ArchiveWriteError, Fetched, FetchError, NotAnImage, TooLarge, UsageError

# The retry policy, in one place.
RETRY_ATTEMPTS = 6  # the first request + 5 retries
RETRY_HTTP_CODES = frozenset({408, 425, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524})
BACKOFF_BASE = 0.5  # seconds; full jitter over base * 2**attempt
BACKOFF_MAX = 30.0  # no single wait is longer, whatever Retry-After asks
CHUNK = 256 * 1024  # bytes read from the socket per step

# Defaults a caller may override per run.
DEFAULT_CONCURRENCY = 16
DEFAULT_TIMEOUT = 60.0  # whole request, so a slowloris server is cut off too
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_MAX_BYTES = 25 * 1024 * 1024  # real actas are ~250 KB
DEFAULT_MAX_PAGE_BYTES = 32 * 1024 * 1024  # HTML pages and index files
USER_AGENT = "acta-mirror (+evidence preservation; respects Retry-After)"

# A SOCKS proxy that fails raises aiohttp-socks' own errors, not aiohttp's.
from aiohttp_socks import ProxyConnectionError, ProxyError, ProxyTimeoutError  # noqa: E402

_PROXY_ERRORS: tuple = (ProxyError, ProxyConnectionError, ProxyTimeoutError)

IMAGE_SIGNATURES = ((b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG\r\n\x1a\n", "image/png"))


class _Transient(Exception):
    """A failure worth another try; carries the server's Retry-After, if any."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP-date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
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


def sniff_image(head: bytes) -> str | None:
    for signature, kind in IMAGE_SIGNATURES:
        if head.startswith(signature):
            return kind
    return None


@dataclass
class _HostPacer:
    """At most `rate` requests per second to one host (0 means no pacing)."""

    rate: float
    next_at: float = 0.0
    lock: asyncio.Lock | None = None

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


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


class Fetcher:
    """One aiohttp session with bounded concurrency, per-host pacing and the retry policy."""

    def __init__(self, *, concurrency: int = DEFAULT_CONCURRENCY, rate: float = 0.0,
                 proxy: str | None = None, timeout: float = DEFAULT_TIMEOUT,
                 max_bytes: int = DEFAULT_MAX_BYTES, tmp_dir: str | None = None,
                 retry_attempts: int = RETRY_ATTEMPTS, alternates: tuple[str, ...] = (),
                 user_agent: str = "", headers: dict[str, str] | None = None):
        self.concurrency = concurrency
        self.rate = rate
        self.proxy = proxy
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.tmp_dir = tmp_dir
        self.retry_attempts = retry_attempts
        self.alternates = tuple(a.rstrip("/") for a in alternates)
        self._pacers: dict[str, _HostPacer] = {}
        self._slots = asyncio.Semaphore(concurrency)
        self._session: aiohttp.ClientSession | None = None
        self.user_agent = user_agent or USER_AGENT
        self.headers = dict(headers or {})  # sent with every request (a site may want a Referer or a cookie)
        self.requests = 0
        self.retries = 0  # requests that repeated one that failed (shown as a count)
        self.bytes = 0
        self._serial = 0

    async def __aenter__(self) -> "Fetcher":
        connector, self._http_proxy = _connector(self.proxy, self.concurrency)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.timeout, connect=DEFAULT_CONNECT_TIMEOUT,
                                          sock_read=min(self.timeout, 30.0)),
            headers={**self.headers, "User-Agent": self.user_agent},
            auto_decompress=False,
        )
        return self

    async def __aexit__(self, *exc) -> None:
        if self._session is not None:
            await self._session.close()

    async def fetch(self, url: str, *, etag: str = "", last_modified: str = "",
                    expect_image: bool = True) -> Fetched:
        """GET url into a temp file, retried by policy; when the host fails for good, the same
        path from each alternate host in turn. The result keeps the URL asked for; its
        final_url and host say who served the bytes."""
        try:
            return await self._fetch(url, etag, last_modified, expect_image)
        except TooLarge:
            raise
        except FetchError as first:
            if not self.alternates:
                raise
            reasons = [f"{urlsplit(url).netloc}: {first.reason}"]
        parts = urlsplit(url)
        tail = parts.path + (f"?{parts.query}" if parts.query else "")
        for alternate in self.alternates:
            try:
                fetched = await self._fetch(alternate + tail, "", "", expect_image)
            except FetchError as exc:
                reasons.append(f"{urlsplit(alternate).netloc}: {exc.reason}")
                continue
            return dataclasses.replace(fetched, url=url)
        raise FetchError(url, "; ".join(reasons))

    async def _fetch(self, url: str, etag: str, last_modified: str, expect_image: bool) -> Fetched:
        headers = {"Accept-Encoding": "identity"}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        try:
            return await self._once(url, headers, expect_image)  # most requests need no policy
        except _Transient as first:
            if self.retry_attempts <= 1:
                raise FetchError(url, first.reason) from None
            await asyncio.sleep(_delay(first, 1))
        self.retries += 1
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self.retry_attempts - 1), wait=_wait,
                retry=retry_if_exception_type(_Transient), reraise=True,
            ):
                with attempt:
                    if attempt.retry_state.attempt_number > 1:
                        self.retries += 1
                    return await self._once(url, headers, expect_image)
        except _Transient as exc:
            raise FetchError(url, f"gave up after {self.retry_attempts} attempts: {exc.reason}") from None
        raise AssertionError("unreachable")

    async def fetch_text(self, url: str, max_bytes: int = DEFAULT_MAX_PAGE_BYTES) -> str:
        """GET a page (HTML, CSV) as text, with the same policy; decoded by its charset."""
        fetched = await self.fetch(url, expect_image=False)
        try:
            if fetched.size > max_bytes:
                raise TooLarge(url, f"page over {max_bytes} bytes")
            with open(fetched.tmp_path, "rb") as fh:
                raw = fh.read()
        finally:
            os.unlink(fetched.tmp_path)
        charset = "utf-8"
        if "charset=" in fetched.content_type:
            charset = fetched.content_type.split("charset=", 1)[1].split(";")[0].strip() or "utf-8"
        try:
            return raw.decode(charset, errors="replace")
        except LookupError:
            return raw.decode("utf-8", errors="replace")

    async def _once(self, url: str, headers: dict, expect_image: bool) -> Fetched:
        host = urlsplit(url).netloc
        pacer = self._pacers.setdefault(host, _HostPacer(self.rate))
        async with self._slots:
            await pacer.wait()
            self.requests += 1
            try:
                async with self._session.get(url, headers=headers, proxy=self._http_proxy,
                                             allow_redirects=True, max_redirects=10) as resp:
                    return await self._read(url, resp, expect_image)
            except (_Transient, FetchError):
                raise
            except aiohttp.TooManyRedirects:
                raise FetchError(url, "too many redirects") from None
            except aiohttp.InvalidURL as exc:
                raise FetchError(url, f"invalid URL ({exc})") from None
            except aiohttp.ClientPayloadError as exc:
                raise _Transient(f"body cut off ({_short(exc)})") from None
            except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError, *_PROXY_ERRORS) as exc:
                raise _Transient(_short(exc) or type(exc).__name__) from None

    async def _read(self, url: str, resp: aiohttp.ClientResponse, expect_image: bool) -> Fetched:
        final_url = str(resp.url)
        common = dict(url=url, final_url=final_url, etag=resp.headers.get("ETag", ""),
                      last_modified=resp.headers.get("Last-Modified", ""),
                      content_type=resp.headers.get("Content-Type", ""), fetched_at=utc_now(),
                      host=resp.url.host or "")
        if resp.status == 304:
            return Fetched(status=304, tmp_path=None, sha256="", size=0, **common)
        if resp.status in RETRY_HTTP_CODES:
            raise _Transient(f"HTTP {resp.status}", parse_retry_after(resp.headers.get("Retry-After")))
        if resp.status != 200:
            raise FetchError(url, f"HTTP {resp.status}")
        declared = resp.content_length
        if declared is not None and declared > self.max_bytes:
            raise TooLarge(url, f"Content-Length {declared} is over the cap of {self.max_bytes} bytes")
        digest = hashlib.sha256()
        size = 0
        self._serial += 1
        tmp_path = f"{self.tmp_dir or tempfile.gettempdir()}/{os.getpid()}-{self._serial}.part"
        ok = False
        try:
            with open(tmp_path, "xb") as out:
                head = tail = b""
                async for chunk in resp.content.iter_chunked(CHUNK):
                    if not head:
                        head = chunk[:16]
                        if expect_image and sniff_image(head) is None:
                            raise NotAnImage(url, _not_image_reason(common["content_type"], head))
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise TooLarge(url, f"body passed the cap of {self.max_bytes} bytes; cut off")
                    digest.update(chunk)
                    out.write(chunk)
                    tail = (tail + chunk)[-64:] if len(chunk) < 64 else chunk[-64:]
                if declared is not None and size != declared:
                    raise _Transient(f"body of {size} bytes, Content-Length said {declared}")
                if expect_image:
                    if size == 0:
                        raise NotAnImage(url, "empty body")
                    if sniff_image(head) == "image/jpeg" and b"\xff\xd9" not in tail:
                        raise _Transient("JPEG has no end marker (truncated)")
            ok = True
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise ArchiveWriteError("disk full while downloading; everything archived before is intact, "
                                        "re-run when there is space") from None
            raise ArchiveWriteError(f"cannot write a download: {exc.strerror or exc}") from None
        finally:
            if not ok:
                _unlink(tmp_path)
        self.bytes += size
        return Fetched(status=200, tmp_path=tmp_path, sha256=digest.hexdigest(), size=size, **common)


def _not_image_reason(content_type: str, head: bytes) -> str:
    sample = head.lstrip()[:15].decode("ascii", "replace").lower()
    if sample.startswith(("<!doctype", "<html", "<")):
        return f"an HTML page where an image belongs (Content-Type {content_type or 'none'}); blocked or moved?"
    return f"not a JPEG or PNG (Content-Type {content_type or 'none'})"


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _connector(proxy: str | None, concurrency: int):
    """The connector and, for HTTP proxies, the proxy URL aiohttp takes per request."""
    limit = max(concurrency, 1)
    if not proxy:
        return aiohttp.TCPConnector(limit=limit, limit_per_host=limit), None
    scheme = urlsplit(proxy).scheme.lower()
    if scheme in ("http", "https"):
        return aiohttp.TCPConnector(limit=limit, limit_per_host=limit), proxy
    if scheme in ("socks5", "socks5h", "socks4", "socks4a"):
        from aiohttp_socks import ProxyConnector

        rdns = scheme in ("socks5h", "socks4a")
        url = proxy.replace(scheme + "://", scheme.rstrip("ha") + "://", 1)
        return ProxyConnector.from_url(url, rdns=rdns, limit=limit, limit_per_host=limit), None
    raise UsageError(f"unsupported proxy scheme {scheme!r} (use http, https, socks5, socks5h, socks4)")
