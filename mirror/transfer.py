"""The transfer engine: single HTTP exchanges over libcurl's multi interface, on the event loop.

libcurl (through pycurl) does the sockets, TLS, proxies (HTTP and SOCKS) and HTTP parsing in C;
its sockets and timers are driven by asyncio (curl_multi_socket_action), so no thread is
involved and the body arrives, chunk by chunk, in the caller's sink on the loop's thread.
libcurl's sockets are watched by an epoll set of the engine's own, which the loop watches as
one reader: a socket that comes and goes with each exchange costs an epoll_ctl, not a loop
registration, and one wake-up serves every socket that is ready. Where select has no epoll (not
Linux), the loop watches each socket itself.
This module knows nothing of policy: one exchange, no redirects followed, no retries, no
decoding. The fetcher (fetch.py) decides everything else. libcurl's failures become one
TransferError with a short stable `cause`; a sink's own exception is raised as itself.
"""
from __future__ import annotations

import asyncio
import select
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass

import pycurl

SUPPRESS_CONNECT_HEADERS = 265  # CURLOPT_SUPPRESS_CONNECT_HEADERS (libcurl 7.54), which pycurl does not name
BUFFER_BYTES = 256 * 1024  # libcurl's receive buffer (one read from the socket); a sink is still handed at most
                           # 16 KB at a time (CURL_MAX_WRITE_SIZE, libcurl 8)
LOW_SPEED_SECONDS = 30  # a body that sends nothing for this long is cut off (a stalling server)

# libcurl's error codes, as the causes the fetcher reports (anything else: "connection error")
_CAUSES = {
    pycurl.E_COULDNT_RESOLVE_HOST: "name not resolved",
    pycurl.E_COULDNT_CONNECT: "connection refused",
    pycurl.E_OPERATION_TIMEDOUT: "timeout",
    pycurl.E_PARTIAL_FILE: "body cut off",
    pycurl.E_GOT_NOTHING: "connection reset",
    pycurl.E_RECV_ERROR: "connection reset",
    pycurl.E_SEND_ERROR: "connection reset",
    pycurl.E_COULDNT_RESOLVE_PROXY: "proxy error",
    97: "proxy error",  # CURLE_PROXY (a SOCKS or CONNECT handshake failed), not named by pycurl
    pycurl.E_URL_MALFORMAT: "invalid URL",
    pycurl.E_UNSUPPORTED_PROTOCOL: "bad answer",  # the scheme is checked before: this is HTTP/0.9 or no HTTP at all
    8: "bad answer",  # CURLE_WEIRD_SERVER_REPLY: not HTTP at all
    pycurl.E_FILESIZE_EXCEEDED: "too large",
    100: "too large",  # CURLE_TOO_LARGE (libcurl 8.6+): more response headers than libcurl takes
}
_EPOLL = hasattr(select, "epoll")  # Linux; elsewhere (macOS, the BSDs) the loop watches each socket
# what libcurl waits for on a socket, as epoll events (POLL_NONE or anything else: nothing)
_EPOLL_WANTS = {pycurl.POLL_IN: select.EPOLLIN, pycurl.POLL_OUT: select.EPOLLOUT,
                pycurl.POLL_INOUT: select.EPOLLIN | select.EPOLLOUT} if _EPOLL else {}
# the same, as the loop's reader (1) and writer (2), where there is no epoll
_LOOP_WANTS = {pycurl.POLL_IN: 1, pycurl.POLL_OUT: 2, pycurl.POLL_INOUT: 3}


class TransferError(Exception):
    """One exchange failed in the network (or libcurl refused it); `cause` is short and stable."""

    def __init__(self, reason: str, cause: str):
        super().__init__(reason)
        self.reason = reason
        self.cause = cause


class Refused(TransferError):
    """Every address the name resolved to was one this run may not reach (the address check)."""


@dataclass(frozen=True)
class Head:
    """The final answer's status and headers (names lower-cased; a repeated one keeps
    its last value)."""

    status: int
    headers: dict[str, str]

    def get(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("content-length", "").strip()
        return int(value) if value.isdigit() else None


Sink = Callable[[bytes], None]
OnHead = Callable[[Head], "Sink | None"]  # return where the body goes (None: drop it); raise to abort
AddressCheck = Callable[[str, str], "str | None"]  # (host, address) -> why it is refused, or None


class _Exchange:
    """One request in flight: what arrives, and the future the caller awaits."""

    __slots__ = ("error", "future", "head", "head_lines", "host", "on_head", "opened", "refused", "sink")

    def __init__(self, future: asyncio.Future, on_head: OnHead, host: str):
        self.future = future
        self.on_head = on_head
        self.sink: Sink | None = None
        self.head_lines: list[bytes] = []  # libcurl appends every header line here (no Python frame per line)
        self.head: Head | None = None
        self.opened = False  # on_head has been asked
        self.error: BaseException | None = None  # raised by the caller's on_head or sink
        self.refused = ""  # why the address check refused a connection
        self.host = host

    def open(self) -> bool:
        """Read the final answer's head and ask on_head where the body goes; False if it
        refused. The head is the first block of header lines with a final (non-1xx) status (a
        proxy's CONNECT answer never reaches them: SUPPRESS_CONNECT_HEADERS); lines after it
        (the trailers of a chunked body) are never read as the head."""
        self.opened = True
        blocks: list[list[bytes]] = [[]]
        for line in self.head_lines:
            if line.strip():
                blocks[-1].append(line)
            elif blocks[-1]:
                blocks.append([])
        heads = [b for b in blocks if b and b[0].startswith(b"HTTP/")]
        final = None
        for block in heads:
            parts = block[0].split(None, 2)
            status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            if status >= 200 or status == 0:
                final = block, status
                break
        if final is None:
            self.error = TransferError("an answer without a status line", "bad answer")
            return False
        block, status = final
        fields: dict[str, str] = {}
        for line in block[1:]:
            name, sep, value = line.decode("latin-1").partition(":")
            if sep:
                fields[name.strip().lower()] = value.strip()
        self.head = Head(status, fields)
        try:
            self.sink = self.on_head(self.head)
        except BaseException as exc:  # noqa: BLE001 (handed back to the caller, who raises it)
            self.error = exc
            return False
        return True


def _ca_file() -> str | None:
    """The system's CA bundle (a libcurl built elsewhere may not know where it lives)."""
    paths = ssl.get_default_verify_paths()
    return paths.cafile or paths.openssl_cafile or None


class Engine:
    """A libcurl multi handle driven by the running asyncio loop. Open it with `async with`."""

    def __init__(self, *, concurrency: int, proxy: str | None = None, user_agent: str = "",
                 address_check: AddressCheck | None = None):
        self.concurrency = max(1, concurrency)
        self.proxy = proxy
        self.user_agent = user_agent
        self.address_check = address_check
        self._loop: asyncio.AbstractEventLoop | None = None
        self._multi: pycurl.CurlMulti | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._due: float | None = None  # the loop time libcurl last asked to be called back at
        self._epoll: select.epoll | None = None  # libcurl's sockets; the loop watches this one fd
        self._watched: dict[int, int] = {}  # fd -> the epoll events (without epoll: _LOOP_WANTS) libcurl waits for
        self._idle: list[pycurl.Curl] = []
        self._active: set[pycurl.Curl] = set()
        self._cafile = _ca_file()

    async def __aenter__(self) -> "Engine":
        self._loop = asyncio.get_running_loop()
        if _EPOLL:
            self._epoll = select.epoll()
            self._loop.add_reader(self._epoll.fileno(), self._pump)
        multi = pycurl.CurlMulti()
        multi.setopt(pycurl.M_SOCKETFUNCTION, self._on_socket)
        multi.setopt(pycurl.M_TIMERFUNCTION, self._on_timer)
        multi.setopt(pycurl.M_MAX_HOST_CONNECTIONS, self.concurrency)
        multi.setopt(pycurl.M_MAXCONNECTS, self.concurrency * 2)
        self._multi = multi
        return self

    async def __aexit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop: exchanges still in flight are cancelled (their callers see CancelledError)."""
        for handle in list(self._active):
            exchange = self._finish(handle)
            if exchange is not None and not exchange.future.done():
                exchange.future.cancel()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not _EPOLL:
            for fd in list(self._watched):
                self._watch_on_loop(pycurl.POLL_REMOVE, fd)
        self._watched.clear()
        if self._epoll is not None:
            self._loop.remove_reader(self._epoll.fileno())
            self._epoll.close()
            self._epoll = None
        for handle in self._idle:
            handle.close()
        self._idle = []
        if self._multi is not None:
            self._multi.close()
            self._multi = None

    # -- one exchange ---------------------------------------------------------------
    async def get(self, url: str, headers: dict[str, str], *, timeout: float, connect_timeout: float,
                  on_head: OnHead, host: str = "", proxy_headers: dict[str, str] | None = None) -> Head:
        """GET url once; the body goes where on_head says, `headers` to the site and
        `proxy_headers` to the proxy alone. Returns the final answer's Head; raises
        TransferError, or whatever on_head or the sink raised."""
        if self._multi is None:
            raise RuntimeError("the engine is not open")
        future = self._loop.create_future()
        exchange = _Exchange(future, on_head, host)
        handle = self._idle.pop() if self._idle else self._new_handle()
        try:
            handle.setopt(pycurl.URL, url)
        except UnicodeEncodeError:  # libcurl takes ASCII only; the fetcher percent-encodes what it follows
            self._idle.append(handle)
            raise TransferError(f"invalid URL {url!r} (not ASCII)", "invalid URL") from None
        # As bytes: a validator sent back (If-None-Match) holds the bytes its header came in, read
        # as latin-1, and may hold 0x80-0xFF (RFC 9110's obs-text); libcurl takes a str as ASCII only
        handle.setopt(pycurl.HTTPHEADER, [f"{k}: {v}".encode("latin-1") for k, v in headers.items()])
        handle.setopt(pycurl.PROXYHEADER, [f"{k}: {v}".encode("latin-1") for k, v in (proxy_headers or {}).items()])
        handle.setopt(pycurl.TIMEOUT_MS, max(1, int(timeout * 1000)))
        handle.setopt(pycurl.CONNECTTIMEOUT_MS, max(1, int(min(timeout, connect_timeout) * 1000)))
        handle.setopt(pycurl.HEADERFUNCTION, exchange.head_lines.append)
        handle.exchange = exchange
        self._multi.add_handle(handle)
        self._active.add(handle)
        try:
            return await future
        except asyncio.CancelledError:
            self._finish(handle)
            raise

    def _new_handle(self) -> pycurl.Curl:
        """A handle with what every exchange shares; each sets its URL, headers and timeouts."""
        handle = pycurl.Curl()
        handle.exchange = None
        if self.user_agent:
            handle.setopt(pycurl.USERAGENT, self.user_agent)
        handle.setopt(pycurl.FOLLOWLOCATION, 0)
        handle.setopt(pycurl.HEADEROPT, pycurl.HEADER_SEPARATE)  # HTTPHEADER to the site, PROXYHEADER to the proxy
        handle.setopt(pycurl.NOSIGNAL, 1)
        handle.setopt(pycurl.BUFFERSIZE, BUFFER_BYTES)
        handle.setopt(pycurl.LOW_SPEED_LIMIT, 1)
        handle.setopt(pycurl.LOW_SPEED_TIME, LOW_SPEED_SECONDS)
        handle.setopt(pycurl.PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS)
        if self._cafile:
            handle.setopt(pycurl.CAINFO, self._cafile)
        if self.proxy:
            handle.setopt(pycurl.PROXY, self.proxy)
            # An HTTP proxy's answer to CONNECT is not the site's: kept from the header lines. (Only a
            # request that opens a tunnel has one; one on a tunnel kept open has not, so skipping the
            # first answer of every request through the proxy failed every second one.)
            handle.setopt(SUPPRESS_CONNECT_HEADERS, 1)
        else:
            handle.setopt(pycurl.PROXY, "")  # never a proxy from the environment but the one asked for
            if self.address_check is not None:
                handle.setopt(pycurl.OPENSOCKETFUNCTION, lambda purpose, address: self._open(handle, address))
        handle.setopt(pycurl.WRITEFUNCTION, lambda chunk: self._on_body(handle, chunk))
        return handle

    def _open(self, handle: pycurl.Curl, address):
        exchange = handle.exchange
        family, socktype, protocol, where = address
        why = self.address_check(exchange.host, where[0])
        if why:
            exchange.refused = why
            return pycurl.SOCKET_BAD
        return socket.socket(family, socktype, protocol)

    def _on_body(self, handle: pycurl.Curl, chunk: bytes):
        exchange = handle.exchange
        if not exchange.opened and not exchange.open():
            return -1  # libcurl aborts the exchange
        if exchange.sink is None:
            return None
        try:
            exchange.sink(chunk)
        except BaseException as exc:  # noqa: BLE001
            exchange.error = exc
            return -1
        return None

    # -- driving libcurl from the loop ------------------------------------------------
    def _on_socket(self, what: int, fd: int, multi, data) -> None:
        """libcurl says what it waits for on a socket: kept in the engine's epoll set."""
        epoll = self._epoll
        if epoll is None:
            if not _EPOLL:
                self._watch_on_loop(what, fd)
            return
        want = _EPOLL_WANTS.get(what, 0)
        old = self._watched.pop(fd, 0)
        if old:
            try:
                if want:
                    epoll.modify(fd, want)
                else:
                    epoll.unregister(fd)
            except OSError:  # closed meanwhile, so the kernel dropped it: register it afresh
                old = 0
        if want:
            if not old:
                try:
                    epoll.register(fd, want)
                except FileExistsError:  # a number reused before libcurl said the old one was gone
                    epoll.modify(fd, want)
            self._watched[fd] = want

    def _watch_on_loop(self, what: int, fd: int) -> None:
        """Without epoll: the loop itself watches the socket, a reader and a writer for each."""
        old = self._watched.get(fd, 0)
        want = 0 if what == pycurl.POLL_REMOVE else _LOOP_WANTS.get(what, 0)
        if old & 1 and not want & 1:
            self._loop.remove_reader(fd)
        if old & 2 and not want & 2:
            self._loop.remove_writer(fd)
        if want & 1 and not old & 1:
            self._loop.add_reader(fd, self._act, fd, pycurl.CSELECT_IN)
        if want & 2 and not old & 2:
            self._loop.add_writer(fd, self._act, fd, pycurl.CSELECT_OUT)
        if want:
            self._watched[fd] = want
        else:
            self._watched.pop(fd, None)

    def _pump(self) -> None:
        """The epoll set is ready: tell libcurl about each ready socket, then collect what
        finished. An error or hang-up counts as ready both ways, as the loop's own selector has it."""
        if self._multi is None or self._epoll is None:
            return
        for fd, events in self._epoll.poll(0):
            want = self._watched.get(fd, 0)
            flags = 0
            if want & select.EPOLLIN and events & ~select.EPOLLOUT:
                flags |= pycurl.CSELECT_IN
            if want & select.EPOLLOUT and events & ~select.EPOLLIN:
                flags |= pycurl.CSELECT_OUT
            if flags:
                self._socket_action(fd, flags)
        self._collect()

    def _on_timer(self, ms: int) -> None:
        """libcurl's one timer: act at `ms` from now (-1: no timer). A timer already set for an
        earlier moment stays; when it fires it sets itself again for libcurl's latest wish, so
        the two wishes of each exchange rarely cost a new loop timer."""
        if ms < 0:
            self._due = None
            return
        self._due = self._loop.time() + ms / 1000
        if self._timer is not None:
            if self._timer.when() <= self._due:
                return
            self._timer.cancel()
        self._timer = self._loop.call_at(self._due, self._on_due)

    def _on_due(self) -> None:
        self._timer = None
        due = self._due
        if due is None:
            return  # libcurl took its timer back
        if due > self._loop.time():  # set for an earlier wish that libcurl replaced
            self._timer = self._loop.call_at(due, self._on_due)
            return
        self._due = None
        self._act(pycurl.SOCKET_TIMEOUT, 0)

    def _act(self, fd: int, event: int) -> None:
        if self._multi is None:
            return
        self._socket_action(fd, event)
        self._collect()

    def _socket_action(self, fd: int, event: int) -> None:
        while True:
            code, _running = self._multi.socket_action(fd, event)
            if code != pycurl.E_CALL_MULTI_PERFORM:
                break

    def _collect(self) -> None:
        while True:
            _queued, done, failed = self._multi.info_read()
            for handle in done:
                exchange = self._finish(handle)
                if exchange is not None and not exchange.future.done():
                    if exchange.opened or exchange.open():  # an answer without a body
                        exchange.future.set_result(exchange.head)
                    else:
                        exchange.future.set_exception(exchange.error)
            for handle, errno, message in failed:
                exchange = self._finish(handle)
                if exchange is not None and not exchange.future.done():
                    exchange.future.set_exception(self._error(exchange, errno, message))
            if not _queued:
                return

    def _finish(self, handle: pycurl.Curl) -> _Exchange | None:
        exchange = getattr(handle, "exchange", None)
        if exchange is None:
            return None
        handle.exchange = None
        self._active.discard(handle)
        if self._multi is not None:
            try:
                self._multi.remove_handle(handle)
            except pycurl.error:
                pass
        if len(self._idle) < self.concurrency * 2:
            self._idle.append(handle)
        else:
            handle.close()
        return exchange

    @staticmethod
    def _error(exchange: _Exchange, errno: int, message: str) -> BaseException:
        if exchange.error is not None:
            return exchange.error
        if exchange.refused:
            return Refused(exchange.refused, "blocked address")
        if errno == pycurl.E_RECV_ERROR and message.startswith("Too large response headers"):
            # a server sends the same headers every time: not a reset worth another try
            return TransferError(f"response headers over the cap ({message}; curl {errno})", "too large")
        if errno == pycurl.E_RECV_ERROR and "chunk" in message.lower():
            # a chunked body libcurl cannot parse ('chunk hex-length char not a hex digit'): the
            # server's answer is broken, the connection was not reset
            return TransferError(f"{message} (curl {errno})", "bad answer")
        cause = _CAUSES.get(errno, "connection error")
        return TransferError(f"{message or 'libcurl error'} (curl {errno})", cause)
