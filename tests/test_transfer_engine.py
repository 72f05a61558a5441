"""The transfer engine's own driving of libcurl (its epoll set and its one loop timer) under attack.

Each test drives mirror.transfer.Engine against real servers on 127.0.0.1 (a thread of their own
with its own loop, so the engine's loop runs the engine alone), bounded by asyncio.wait_for so a
lost timer or a lost socket fails the test instead of hanging it. What is checked: every
timeout libcurl asks for fires (total, low speed, connect; a short one asked for while a long
one is in flight and the reverse), socket numbers closed and reused, kept-open and dropped
connections, resets, closing an engine with exchanges in flight, no descriptor left behind,
and no busy loop while an exchange waits (the process's CPU time over the wait).
"""
from __future__ import annotations

import asyncio
import os
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time

import pytest

from mirror import transfer
from mirror.transfer import Engine, Head, TransferError
from tests.conftest import local_proxy

BOUND = 20  # seconds any one exchange may take before the test counts it as hung


# -- servers ------------------------------------------------------------------------------
class Server:
    """A loopback TCP server on a thread of its own; `handler(reader, writer)` per connection."""

    def __init__(self, handler, host: str = "127.0.0.1", ssl_context: ssl.SSLContext | None = None):
        self.handler, self.host, self.ssl_context = handler, host, ssl_context
        self.connections = 0
        self.requests: list[bytes] = []
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def _serve(self, reader, writer):
        self.connections += 1
        try:
            await self.handler(self, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    def __enter__(self) -> "Server":
        self._thread.start()

        async def start():
            self.server = await asyncio.start_server(self._serve, self.host, 0, ssl=self.ssl_context)
            return self.server.sockets[0].getsockname()[1]
        self.port = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        self.url = f"{'https' if self.ssl_context else 'http'}://{self.host}:{self.port}"
        return self

    def __exit__(self, *exc) -> None:
        async def stop():
            self.server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    async def request(self, reader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        self.requests.append(head)
        return head


def answer(body: bytes, *extra: str) -> bytes:
    lines = "".join(f"{h}\r\n" for h in extra)
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n" % (len(body), lines.encode()) + body


def reset(writer) -> None:
    """Close with an RST (SO_LINGER 0), not a FIN."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def body_of(path: bytes) -> bytes:
    return b"body of " + path * 50


async def keep_alive(server, reader, writer):
    """Answers every request on the connection, keeps it open."""
    while True:
        head = await server.request(reader)
        writer.write(answer(body_of(head.split(b" ")[1])))
        await writer.drain()


async def one_then_close(server, reader, writer):
    head = await server.request(reader)
    writer.write(answer(body_of(head.split(b" ")[1]), "Connection: close"))
    await writer.drain()


async def until_hung_up(reader) -> None:
    while await reader.read(65536):
        pass


async def silent(server, reader, writer):
    await server.request(reader)
    await until_hung_up(reader)  # never an answer


async def stall_after_head(server, reader, writer):
    await server.request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nabc")
    await writer.drain()
    await until_hung_up(reader)  # never the rest


# -- driving the engine -------------------------------------------------------------------
class Got:
    """The body of one exchange."""

    def __init__(self):
        self.chunks: list[bytes] = []
        self.head: Head | None = None

    def on_head(self, head: Head):
        self.head = head
        return self.chunks.append

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)


async def get(engine: Engine, url: str, *, timeout: float = 10, connect_timeout: float = 5) -> Got:
    got = Got()
    await asyncio.wait_for(engine.get(url, {}, timeout=timeout, connect_timeout=connect_timeout,
                                      on_head=got.on_head), BOUND)
    return got


async def failure(engine: Engine, url: str, **kw) -> TransferError:
    with pytest.raises(TransferError) as caught:
        await get(engine, url, **kw)
    return caught.value


def run(coro):
    """Run coro on a fresh loop; any error the loop itself saw (a callback that raised) fails the test."""
    seen: list = []

    async def main():
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: seen.append(context))
        return await coro

    result = asyncio.run(main())
    assert not seen, seen
    return result


def cpu_over(seconds: float):
    """A context measuring the process's CPU time (every thread) over a span of `seconds` or more."""
    class Span:
        def __enter__(self):
            self.start = time.process_time()
            return self

        def __exit__(self, *exc):
            self.used = time.process_time() - self.start
    return Span()


# -- timeouts: each one libcurl asks for fires -------------------------------------------------
def test_a_server_that_never_answers_is_cut_off_at_the_total_timeout():
    async def go():
        loop = asyncio.get_running_loop()
        async with Engine(concurrency=2) as engine:
            start = loop.time()
            exc = await failure(engine, server.url + "/x", timeout=1.0)
            return exc, loop.time() - start

    with Server(silent) as server:
        exc, took = run(go())
    assert exc.cause == "timeout" and "timed out" in exc.reason, exc.reason
    assert took >= 0.95, f"cut off after {took:.3f} s, before the 1 s asked"


def test_a_body_that_stalls_is_cut_off_by_the_low_speed_limit(monkeypatch):
    monkeypatch.setattr(transfer, "LOW_SPEED_SECONDS", 1)

    async def go():
        async with Engine(concurrency=2) as engine:
            return await failure(engine, server.url + "/x", timeout=60)

    with Server(stall_after_head) as server:
        exc = run(go())
    assert exc.cause == "timeout" and "too slow" in exc.reason, exc.reason


@pytest.fixture
def unanswered_port():
    """A listening socket whose accept queue is full and never read: a connect to it waits."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    yield Unanswered(port, listener)
    for s in fillers + [listener]:
        s.close()


class Unanswered:
    def __init__(self, port: int, listener: socket.socket):
        self.port, self.listener = port, listener


def test_a_connect_that_never_completes_is_cut_off_at_the_connect_timeout(unanswered_port):
    async def go():
        loop = asyncio.get_running_loop()
        async with Engine(concurrency=2) as engine:
            start = loop.time()
            exc = await failure(engine, f"http://127.0.0.1:{unanswered_port.port}/x", timeout=30, connect_timeout=1.0)
            return exc, loop.time() - start

    exc, took = run(go())
    assert exc.cause == "timeout" and "Connection timed out" in exc.reason, exc.reason
    assert took >= 0.95, f"cut off after {took:.3f} s, before the 1 s asked"


def test_a_short_timeout_asked_while_a_long_one_waits_fires_first():
    """libcurl's wish moves earlier: the loop timer set for the long one is replaced."""
    async def go():
        loop = asyncio.get_running_loop()
        async with Engine(concurrency=4) as engine:
            # 3 s: its connect timeout (libcurl's first wish for it) is then 3 s too; a wish for
            # an earlier moment that waited for that timer would end the short one after the long one
            long = asyncio.ensure_future(failure(engine, server.url + "/long", timeout=3.0))
            await asyncio.sleep(0.3)  # the long one is connected and waiting
            start = loop.time()
            short = await failure(engine, server.url + "/short", timeout=1.0)
            took, long_done = loop.time() - start, long.done()
            long.cancel()
            await asyncio.gather(long, return_exceptions=True)
            return short, took, long_done

    with Server(silent) as server:
        short, took, long_done = run(go())
    assert short.cause == "timeout" and not long_done, (short.reason, long_done)
    assert took >= 0.95, took


def test_a_long_timeout_asked_while_a_short_one_waits_leaves_both_on_time():
    """libcurl's wish moves later while a loop timer is set for an earlier moment: the timer
    stays, and each exchange is still cut off at its own timeout (the later one too)."""
    async def go():
        loop = asyncio.get_running_loop()
        async with Engine(concurrency=4) as engine:
            start = loop.time()
            short = asyncio.ensure_future(failure(engine, server.url + "/short", timeout=1.0))
            await asyncio.sleep(0.2)
            long = asyncio.ensure_future(failure(engine, server.url + "/long", timeout=2.0))
            short_exc = await short
            short_took, long_done = loop.time() - start, long.done()
            long_exc = await long
            return short_exc, short_took, long_done, long_exc, loop.time() - start

    with Server(silent) as server:
        short, short_took, long_done, long, long_took = run(go())
    assert short.cause == "timeout" and long.cause == "timeout", (short.reason, long.reason)
    assert not long_done, "the long exchange ended with the short one"
    assert short_took >= 0.95 and long_took >= 2.15, (short_took, long_took)


def test_an_exchange_ending_before_its_timeout_leaves_the_next_ones_timeout_in_force():
    """The earliest timeout libcurl keeps is a quick exchange's; it is answered, so libcurl's wish
    moves later (the slow one's timeout) while the loop timer is set for the earlier moment:
    that timer fires early and must set itself again, or the slow exchange waits for ever."""
    async def late_answer(server, reader, writer):
        await server.request(reader)
        await asyncio.sleep(0.3)
        writer.write(answer(b"late", "Connection: close"))
        await writer.drain()

    async def go():
        loop = asyncio.get_running_loop()
        async with Engine(concurrency=4) as engine:
            start = loop.time()
            quick = asyncio.ensure_future(get(engine, answering.url + "/q", timeout=1.0))
            await asyncio.sleep(0.1)
            slow = await failure(engine, quiet.url + "/s", timeout=1.5)
            return (await quick).body, slow, loop.time() - start

    with Server(late_answer) as answering, Server(silent) as quiet:
        body, slow, took = run(go())
    assert body == b"late" and slow.cause == "timeout", (body, slow.reason)
    assert took >= 1.55, took


def test_timeouts_asked_in_a_row_each_fire():
    """An exchange cut off, then another on the same engine: the timer is asked for afresh each
    time (libcurl taking its timer back in between)."""
    async def go():
        async with Engine(concurrency=2) as engine:
            causes = []
            for _ in range(3):
                causes.append((await failure(engine, server.url + "/x", timeout=0.4)).cause)
                got = await get(engine, good.url + "/y")  # and a good one between
                causes.append(got.head.status)
            return causes

    with Server(silent) as server, Server(keep_alive) as good:
        causes = run(go())
    assert causes == ["timeout", 200] * 3, causes


# -- socket numbers closed and reused; kept-open, dropped and reset connections ---------------------
@pytest.mark.parametrize("checked", [False, True], ids=["libcurls-sockets", "sockets-opened-by-the-address-check"])
def test_many_short_connections_reuse_socket_numbers_and_every_body_is_whole(checked):
    """Every answer closes its connection: libcurl closes each socket and the next connection gets
    the same number, which the engine's epoll set must see as a new socket. With an address
    check (the fetcher's, without a proxy) each socket is opened in Python and handed to libcurl."""
    numbers: list[int] = []
    asked: list[str] = []

    async def go():
        engine = Engine(concurrency=4, address_check=(lambda host, address: asked.append(address)) if checked else None)
        real = engine._on_socket

        def spy(what, fd, multi, data):
            numbers.append(fd)
            return real(what, fd, multi, data)
        engine._on_socket = spy
        async with engine:
            urls = [f"{server.url}/f{i}" for i in range(120)]
            results = []
            for start in range(0, len(urls), 8):  # batches: more asked than concurrency, then a gap
                results += await asyncio.gather(*(get(engine, u) for u in urls[start:start + 8]))
            return urls, results, dict(engine._watched)

    with Server(one_then_close) as server:
        urls, results, watched = run(go())
        connections = server.connections
    for url, got in zip(urls, results):
        assert got.head.status == 200 and got.body == body_of(url.split(server.url)[1].encode())
    assert connections == len(urls) and len(asked) == (len(urls) if checked else 0)
    assert len(set(numbers)) < len(urls) // 4, "socket numbers were reused (what this test is for)"
    assert watched == {}, "no socket is left watched once every exchange ended"


def test_a_kept_open_connection_carries_every_request():
    async def go():
        async with Engine(concurrency=1) as engine:
            return [await get(engine, f"{server.url}/k{i}") for i in range(30)]

    with Server(keep_alive) as server:
        results = run(go())
        assert server.connections == 1, server.connections
    assert [g.body for g in results] == [body_of(f"/k{i}".encode()) for i in range(30)]


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_a_server_dropping_idle_kept_open_connections_costs_a_new_connection_not_a_failure(how):
    async def drop_when_idle(server, reader, writer):
        head = await server.request(reader)
        writer.write(answer(body_of(head.split(b" ")[1])))  # no Connection: close
        await writer.drain()
        await asyncio.sleep(0.05)
        if how == "rst":
            reset(writer)

    async def go():
        async with Engine(concurrency=2) as engine:
            results = []
            for i in range(8):
                results.append(await get(engine, f"{server.url}/d{i}"))
                await asyncio.sleep(0.15)  # the server has dropped it by now
            return results

    with Server(drop_when_idle) as server:
        results = run(go())
        assert server.connections == 8
    assert [g.body for g in results] == [body_of(f"/d{i}".encode()) for i in range(8)]


def test_a_partial_body_then_a_reset_is_a_failure_and_the_engine_goes_on():
    async def partial_then_reset(server, reader, writer):
        head = await server.request(reader)
        if b"/good" in head:
            writer.write(answer(b"fine", "Connection: close"))
            await writer.drain()
            return
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 5000)
        await writer.drain()
        await asyncio.sleep(0.05)
        reset(writer)

    async def go():
        async with Engine(concurrency=4) as engine:
            out = []
            for i in range(10):
                bad = asyncio.ensure_future(failure(engine, f"{server.url}/bad{i}"))
                good = asyncio.ensure_future(get(engine, f"{server.url}/good{i}"))
                out.append(((await bad).cause, (await good).body))
            return out

    with Server(partial_then_reset) as server:
        out = run(go())
    assert all(cause in ("connection reset", "body cut off") and body == b"fine" for cause, body in out), out


def test_a_refused_connect_is_named_and_the_next_exchange_connects():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]  # nothing listens there once closed

    async def go():
        async with Engine(concurrency=2) as engine:
            out = []
            for i in range(5):
                out.append((await failure(engine, f"http://127.0.0.1:{closed_port}/x")).cause)
                out.append((await get(engine, f"{server.url}/r{i}")).head.status)
            return out

    with Server(one_then_close) as server:
        out = run(go())
    assert out == ["connection refused", 200] * 5, out


def test_a_connect_refused_while_it_waits_is_named_at_once_without_spinning(unanswered_port):
    """A connect waiting on a full accept queue; the listener then goes, so the retried SYN gets a
    reset: the socket libcurl waits to write on reports an error and a hang-up, which must reach
    libcurl as writable (it then names the refusal), not wake the loop for ever unheard."""
    async def go():
        async with Engine(concurrency=2) as engine:
            with cpu_over(1) as span:
                task = asyncio.ensure_future(failure(engine, f"http://127.0.0.1:{unanswered_port.port}/x",
                                                     timeout=12, connect_timeout=8))
                await asyncio.sleep(0.3)
                unanswered_port.listener.close()
                exc = await task
            return exc, span.used

    exc, used = run(go())
    print(f"CPU while the connect waited and was refused: {used:.4f} s")
    assert exc.cause == "connection refused", exc.reason
    assert used < 1.0, f"{used:.2f} s of CPU while a connect waited: the loop spins"


# -- no busy loop while an exchange waits --------------------------------------------------
def test_a_stalled_exchange_waits_without_spinning_beside_dropped_and_reset_connections():
    """Two connections libcurl keeps for reuse are dropped by their servers (one FIN, one RST),
    then an exchange stalls for 3 s after its head: nothing is ready for libcurl in that time,
    so the loop sleeps. A socket left in the epoll set after libcurl dropped it, or a ready one
    never handed to libcurl, would wake the loop again and again (a second of CPU a second)."""
    async def drop_fin(server, reader, writer):
        await server.request(reader)
        writer.write(answer(b"ok"))
        await writer.drain()
        await asyncio.sleep(0.05)

    async def drop_rst(server, reader, writer):
        await drop_fin(server, reader, writer)
        reset(writer)

    async def go():
        async with Engine(concurrency=4) as engine:
            assert (await get(engine, fin.url + "/a")).body == b"ok"
            assert (await get(engine, rst.url + "/a")).body == b"ok"
            await asyncio.sleep(0.2)  # both dropped by their servers, still in libcurl's cache
            with cpu_over(3) as span:
                exc = await failure(engine, stall.url + "/x", timeout=3.0)
            return exc, span.used

    with Server(drop_fin) as fin, Server(drop_rst) as rst, Server(stall_after_head) as stall:
        exc, used = run(go())
    print(f"CPU over a 3 s stall: {used:.4f} s")
    assert exc.cause == "timeout"
    assert used < 1.0, f"{used:.2f} s of CPU while an exchange waited 3 s: the loop spins"


# -- closing ------------------------------------------------------------------------------
def test_closing_with_exchanges_in_flight_cancels_them_and_nothing_fires_afterwards(unanswered_port):
    async def go():
        loop = asyncio.get_running_loop()
        engine = Engine(concurrency=4)
        await engine.__aenter__()
        tasks = [asyncio.ensure_future(get(engine, silent_server.url + f"/s{i}", timeout=1.0)) for i in range(3)]
        tasks.append(asyncio.ensure_future(get(engine, f"http://127.0.0.1:{unanswered_port.port}/c", timeout=1.0,
                                               connect_timeout=0.5)))
        tasks.append(asyncio.ensure_future(get(engine, stall.url + "/h", timeout=1.0)))
        await asyncio.sleep(0.3)
        epoll = getattr(engine, "_epoll", None)  # (the engine before its epoll set had none)
        assert engine._watched, "sockets are being watched (what this test closes)"
        engine.close()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        # every timeout libcurl had asked for passes: nothing may fire into the closed engine
        await asyncio.sleep(1.5)
        with pytest.raises(RuntimeError):
            await engine.get(silent_server.url + "/after", {}, timeout=1, connect_timeout=1, on_head=lambda h: None)
        engine.close()  # twice: nothing
        return outcomes, epoll, loop

    with Server(silent) as silent_server, Server(stall_after_head) as stall:
        outcomes, epoll, loop = run(go())
    assert all(isinstance(o, asyncio.CancelledError) for o in outcomes), outcomes
    assert epoll is None or epoll.closed


def _descriptors() -> dict[str, int]:
    kinds: dict[str, int] = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        kind = target.split(":")[0] if ":" in target else "file"
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def test_opening_and_closing_engines_in_one_loop_leaves_no_descriptor_behind():
    async def go():
        before = _descriptors()
        for round_ in range(25):
            async with Engine(concurrency=2) as engine:
                assert (await get(engine, f"{server.url}/o{round_}")).head.status == 200  # a kept connection
                if round_ % 3 == 0:  # and one still in flight when the engine closes
                    pending = asyncio.ensure_future(get(engine, f"{quiet.url}/q{round_}"))
                    await asyncio.sleep(0.05)
            if round_ % 3 == 0:
                assert (await asyncio.gather(pending, return_exceptions=True))[0].__class__ is asyncio.CancelledError
        for _ in range(100):  # the servers' ends close on their own thread
            after = _descriptors()
            if after == before:
                break
            await asyncio.sleep(0.05)
        return before, after

    with Server(keep_alive) as server, Server(silent) as quiet:
        before, after = run(go())
    assert after == before, (before, after)


def test_one_engine_opened_again_after_closing_works():
    async def go():
        engine = Engine(concurrency=2)
        bodies = []
        for i in range(3):
            async with engine:
                bodies.append((await get(engine, f"{server.url}/again{i}")).body)
                bodies.append((await failure(engine, f"{quiet.url}/q", timeout=0.3)).cause)
        return bodies

    with Server(keep_alive) as server, Server(silent) as quiet:
        bodies = run(go())
    assert bodies == [x for i in range(3) for x in (body_of(f"/again{i}".encode()), "timeout")]


# -- many sockets ready at once; chunked bodies with trailers; redirects -------------------------------
def test_many_exchanges_at_once_each_get_their_own_body():
    async def slow_keep_alive(server, reader, writer):
        while True:
            head = await server.request(reader)
            path = head.split(b" ")[1]
            body = body_of(path) * 40
            writer.write(answer(body)[:100])  # a part, then the rest: many sockets ready together
            await writer.drain()
            await asyncio.sleep(0.01)
            writer.write(answer(body)[100:])
            await writer.drain()

    async def go():
        async with Engine(concurrency=16) as engine:
            urls = [f"{server.url}/m{i}" for i in range(200)]
            return urls, await asyncio.gather(*(get(engine, u) for u in urls))

    with Server(slow_keep_alive) as server:
        urls, results = run(go())
        assert server.connections <= 16
    for url, got in zip(urls, results):
        assert got.body == body_of(url.split(server.url)[1].encode()) * 40


def test_a_chunked_body_in_pieces_with_trailers_is_whole_and_the_connection_is_kept():
    async def chunked(server, reader, writer):
        while True:
            head = await server.request(reader)
            path = head.split(b" ")[1]
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n")
            for piece in (path, b"-" * 3000, path):
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
                await asyncio.sleep(0.02)
            writer.write(b"0\r\nX-Sum: 42\r\n\r\n")
            await writer.drain()

    async def go():
        async with Engine(concurrency=1) as engine:
            return [await get(engine, f"{server.url}/c{i}") for i in range(4)]

    with Server(chunked) as server:
        results = run(go())
        assert server.connections == 1
    for i, got in enumerate(results):
        path = f"/c{i}".encode()
        assert got.body == path + b"-" * 3000 + path
        assert got.head.status == 200 and "x-sum" not in got.head.headers


def test_redirects_are_answers_the_engine_hands_back_unfollowed():
    async def redirecting(server, reader, writer):
        while True:
            head = await server.request(reader)
            path = head.split(b" ")[1]
            if path.startswith(b"/hop"):
                n = int(path[4:])
                target = b"/hop%d" % (n + 1) if n < 5 else b"/end"
                writer.write(b"HTTP/1.1 302 Found\r\nLocation: %s\r\nContent-Length: 5\r\n\r\nmoved" % target)
            else:
                writer.write(answer(b"the end"))
            await writer.drain()

    async def go():
        async with Engine(concurrency=2) as engine:
            url, seen = f"{server.url}/hop0", []
            while True:
                got = await get(engine, url)
                seen.append(got.head.status)
                if got.head.status != 302:
                    return seen, got.body
                url = server.url + got.head.get("Location")

    with Server(redirecting) as server:
        seen, body = run(go())
        assert server.connections == 1
    assert seen == [302] * 6 + [200] and body == b"the end"


# -- proxies: a real one (pproxy) on loopback, HTTP, CONNECT tunnels and SOCKS5 -------------------------
@pytest.fixture(scope="module")
def proxy_port():
    with local_proxy("http+socks5://127.0.0.1:{port}") as port:
        yield port


@pytest.fixture(scope="module")
def tls_context(tmp_path_factory):
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    return context, str(cert)


@pytest.mark.parametrize("scheme,tls", [("http", False), ("http", True), ("socks5", False), ("socks5h", True)])
def test_through_a_proxy_every_exchange_is_answered_and_a_silent_site_times_out(
        proxy_port, tls_context, monkeypatch, scheme, tls):
    context, cert = tls_context
    monkeypatch.setenv("SSL_CERT_FILE", cert)  # read when the engine is made

    async def go():
        proxy = f"{scheme}://127.0.0.1:{proxy_port}"
        async with Engine(concurrency=3, proxy=proxy) as engine:
            urls = [f"{server.url}/p{i}" for i in range(12)]
            results = await asyncio.gather(*(get(engine, u) for u in urls))
        # an engine of its own: this proxy sends every plain-HTTP request on a connection of
        # the client's to the host that connection first asked for
        async with Engine(concurrency=3, proxy=proxy) as engine:
            exc = await failure(engine, quiet.url + "/x", timeout=1.0)
        return urls, results, exc

    with Server(keep_alive, ssl_context=context if tls else None) as server, \
            Server(silent, ssl_context=context if tls else None) as quiet:
        urls, results, exc = run(go())
    for url, got in zip(urls, results):
        assert got.head.status == 200 and got.body == body_of(url.split(server.url)[1].encode())
    assert exc.cause == "timeout", exc.reason


# -- where select has no epoll (macOS, the BSDs) -------------------------------------------------
WITHOUT_EPOLL = r'''
import select, sys
for name in [n for n in dir(select) if n.lower().startswith("epoll")]:
    delattr(select, name)  # before asyncio picks its selector: as on a system without epoll
import asyncio, json
from mirror.transfer import Engine, TransferError

async def serve(reader, writer):
    head = await reader.readuntil(b"\r\n\r\n")
    if b"/silent" in head:
        while await reader.read(65536):
            pass
    else:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
        await writer.drain()
    writer.close()

async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    url = "http://127.0.0.1:%d" % server.sockets[0].getsockname()[1]
    out = []
    async with Engine(concurrency=2) as engine:
        for i in range(5):
            chunks = []
            head = await engine.get(url + "/a%d" % i, {}, timeout=5, connect_timeout=5, on_head=lambda h: chunks.append)
            out.append([head.status, b"".join(chunks).decode()])
        try:
            await engine.get(url + "/silent", {}, timeout=0.5, connect_timeout=5, on_head=lambda h: None)
        except TransferError as exc:
            out.append(exc.cause)
        pending = asyncio.ensure_future(engine.get(url + "/silent", {}, timeout=5, connect_timeout=5,
                                                   on_head=lambda h: None))
        await asyncio.sleep(0.2)
    out.append(type((await asyncio.gather(pending, return_exceptions=True))[0]).__name__)
    server.close()
    print(json.dumps(out))

asyncio.run(main())
'''


def test_where_select_has_no_epoll_the_engine_still_works():
    """The project runs where Linux's calls are missing (workers.py, manifest.py's syncfs): the
    engine must not need select.epoll to be imported, opened or driven."""
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, "-c", WITHOUT_EPOLL], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout) == [[200, "hello"]] * 5 + ["timeout", "CancelledError"], proc.stdout
