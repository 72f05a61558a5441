"""A second fetcher in a process of its own, so that a crawl's downloads use two cores.

The crawl's Fetcher hands it image downloads once it runs (Fetcher.fetch decides which). The child
is a whole Fetcher, with the same policy, retries and checks, reading requests as JSON lines on
its stdin and answering each on its stdout. Its temp files land in the same folder, where the
archive takes them. Its requests and retries are counted into the parent's figures; a host whose
breaker trips in either process is left alone by both. If the child dies, what it held is asked
again by the parent: nothing is lost, only time.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys

import msgspec

from .models import ArchiveWriteError, Deferred, Fetched, FetchError, NotAnImage, TooLarge, plain

_ERRORS = {cls.__name__: cls for cls in (FetchError, NotAnImage, TooLarge, Deferred)}
FETCHED_FIELDS = tuple(f.name for f in dataclasses.fields(Fetched))  # flat: asdict's deep copy cost more


def _encode(message: dict) -> bytes:
    """One message as a JSON line, written in C (a subclass of str or int as its plain value, as
    json writes it); one holding a lone surrogate (a folder name of bytes that are not UTF-8, as
    os.fsdecode gives it), which msgspec refuses to write, as json escapes it."""
    try:
        return msgspec.json.encode(message, enc_hook=plain)
    except UnicodeEncodeError:
        return json.dumps(message).encode()


def _decode(line: bytes):
    """A message _encode wrote (msgspec refuses the escaped lone surrogate: json reads it).
    Neither JSON: a ValueError."""
    try:
        return msgspec.json.decode(line)
    except msgspec.DecodeError:
        return json.loads(line)


CLOSE_SECONDS = 10.0  # how long a child may take to finish once told to stop, before it is killed


class Gone(Exception):
    """The child process is not there (it never started, or it died): ask locally instead."""


class Remote:
    """The parent's handle on the child: send a request, await its answer."""

    def __init__(self, config: dict, on_trip):
        self.config = config
        self.on_trip = on_trip  # (host, reason): the child's breaker tripped for host
        self.in_flight = 0
        self.requests = 0  # what the child has counted so far
        self.retries = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._pending: dict[int, asyncio.Future] = {}
        self._serial = 0
        self._outbox: list[bytes] = []
        self._reader: asyncio.Task | None = None
        self.alive = False

    async def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (_package_root(), os.environ.get("PYTHONPATH")) if p)}
        try:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "mirror.fetchworker", stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, env=env, limit=1 << 20)
        except OSError:
            return  # no second process: the parent fetches everything
        self.alive = True
        self._send({"config": self.config})
        self._reader = asyncio.create_task(self._read())

    def _send(self, message: dict) -> None:
        """Queue a line; the lines of one turn of the loop go in one write (a write wakes the child)."""
        self._outbox.append(_encode(message))
        if len(self._outbox) == 1:
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        lines, self._outbox = self._outbox, []
        if not lines or self._proc is None:
            return
        try:
            self._proc.stdin.write(b"\n".join(lines) + b"\n")
        except (ConnectionError, RuntimeError):
            self._gone()

    async def fetch(self, url: str, etag: str, last_modified: str, expect_image: bool) -> Fetched:
        if not self.alive:
            raise Gone()
        self._serial += 1
        serial = self._serial
        future = asyncio.get_running_loop().create_future()
        self._pending[serial] = future
        self.in_flight += 1
        try:
            self._send({"id": serial, "url": url, "etag": etag, "last_modified": last_modified,
                        "expect_image": expect_image})
            return await future
        finally:
            self.in_flight -= 1
            self._pending.pop(serial, None)

    def trip(self, host: str, reason: str) -> None:
        if self.alive:
            self._send({"trip": host, "reason": reason})

    async def _read(self) -> None:
        try:
            while line := await self._proc.stdout.readline():
                answer = _decode(line)
                self.requests += answer.get("requests", 0)
                self.retries += answer.get("retries", 0)
                for host, reason in answer.get("tripped", {}).items():
                    self.on_trip(host, reason)
                future = self._pending.get(answer.get("id"))
                if future is None or future.done():
                    continue
                if "ok" in answer:
                    ok = answer["ok"]
                    future.set_result(Fetched(**{**ok, "redirects": tuple(ok["redirects"])}))
                elif "disk" in answer:
                    future.set_exception(ArchiveWriteError(answer["disk"]))
                else:
                    kind, url, reason, cause, attempts = answer["error"]
                    future.set_exception(_ERRORS.get(kind, FetchError)(url, reason, cause=cause, attempts=attempts))
        except (ValueError, KeyError, TypeError, ConnectionError):
            pass  # a child that speaks nonsense is treated as gone
        finally:
            self._gone()

    def _gone(self) -> None:
        self.alive = False
        for future in self._pending.values():
            if not future.done():
                future.set_exception(Gone())

    async def close(self) -> None:
        if self._proc is None:
            return
        self.alive = False
        try:
            self._proc.stdin.close()
        except (ConnectionError, RuntimeError):
            pass
        try:
            await asyncio.wait_for(self._proc.wait(), CLOSE_SECONDS)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            self._proc.kill()
            await self._proc.wait()
        if self._reader is not None:
            await self._reader


def _package_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- the child ---------------------------------------------------------------------------
async def _serve() -> None:
    from .fetch import Fetcher, HostPolicy

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    first = await reader.readline()
    if not first:
        return
    config = _decode(first)["config"]
    config["policy"] = HostPolicy(frozenset(config["policy"]["hosts"]), frozenset(config["policy"]["also"]),
                                  config["policy"]["root"], config["policy"]["site"])
    config["alternates"] = tuple(config["alternates"])
    out = sys.stdout.buffer
    counted = [0, 0]  # requests and retries already reported
    told: set[str] = set()  # hosts whose trip the parent knows of
    outbox: list[bytes] = []

    async with Fetcher(**config) as fetcher:
        def answer(message: dict) -> None:
            message["requests"], message["retries"] = fetcher.requests - counted[0], fetcher.retries - counted[1]
            counted[:] = [fetcher.requests, fetcher.retries]
            tripped = {h: why for h, why in fetcher.tripped().items() if h not in told}
            if tripped:
                told.update(tripped)
                message["tripped"] = tripped
            outbox.append(_encode(message))
            if len(outbox) == 1:  # the answers of one turn of the loop go in one write
                loop.call_soon(flush)

        def flush() -> None:
            out.write(b"\n".join(outbox) + b"\n")
            out.flush()
            outbox.clear()

        async def one(request: dict) -> None:
            try:
                fetched = await fetcher.fetch(request["url"], etag=request["etag"],
                                              last_modified=request["last_modified"],
                                              expect_image=request["expect_image"])
                answer({"id": request["id"], "ok": {name: getattr(fetched, name) for name in FETCHED_FIELDS}})
            except FetchError as exc:
                answer({"id": request["id"], "error": [type(exc).__name__, exc.url, exc.reason, exc.cause,
                                                       exc.attempts]})
            except ArchiveWriteError as exc:
                answer({"id": request["id"], "disk": str(exc)})
            except Exception as exc:  # noqa: BLE001 (never leave the parent waiting: a named failure, as the crawl names it)
                answer({"id": request["id"], "error": ["FetchError", request.get("url"),
                                                       f"unexpected {type(exc).__name__}: {exc}", "unexpected error", 1]})

        tasks: set[asyncio.Task] = set()
        while line := await reader.readline():
            request = _decode(line)
            if "trip" in request:
                told.add(request["trip"])
                fetcher._host(request["trip"]).trip(request["reason"])
                continue
            task = asyncio.create_task(one(request))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        for task in tasks:  # the parent has stopped listening: its answers would go nowhere
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def main() -> int:
    try:
        asyncio.run(_serve())
    except (KeyboardInterrupt, BrokenPipeError):
        return 130
    except Exception as exc:  # noqa: BLE001 (the parent asks again what this process held)
        print(f"acta-mirror: the second download process stopped ({type(exc).__name__}: {exc}); "
              "the crawl goes on in one process", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
