"""The transfer engine under the fetcher, and the second downloading process (fetchworker.py)."""
from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import os
import signal
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest

from mirror import fetch
from mirror.fetch import Fetcher, HostPolicy
from mirror.models import FetchError

from conftest import run_cli


def image_urls(replay) -> list[str]:
    raw = urllib.request.urlopen(f"{replay.url}/RESULTADOS_2024_CSV_V1.csv").read().decode("utf-8-sig")
    return [row["URL"] for row in csv.DictReader(io.StringIO(raw)) if row["URL"]]


def fetcher(tmp_path, replay, **kwargs) -> Fetcher:
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return Fetcher(tmp_dir=str(tmp_path / "tmp"), policy=HostPolicy.for_root(replay.url), processes=2,
                   retry_attempts=2, **kwargs)


async def fetch_all(f: Fetcher, urls: list[str]) -> list:
    return await asyncio.gather(*(f.fetch(u) for u in urls), return_exceptions=True)


async def past_the_start(f: Fetcher, urls: list[str]) -> list:
    """Fetch the first images here, then wait for the second process they start."""
    results = await fetch_all(f, urls)
    await child_running(f)
    return results


async def child_running(f: Fetcher) -> None:
    """Wait (10 s at most) for the second process, which starts in the background."""
    for _ in range(100):
        if f._remote is not None and f._remote.alive:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the second process did not start")


@pytest.fixture
def wide_replay(replay_factory):
    return replay_factory(limit=120)


def test_a_second_process_takes_the_images_and_its_answers_are_whole(wide_replay, tmp_path, monkeypatch):
    monkeypatch.setattr(fetch, "SECOND_PROCESS_AFTER", 10)
    urls = image_urls(wide_replay)
    missing = [f"{wide_replay.url}/no-such-acta-{i}.jpg" for i in range(30)]

    async def go():
        async with fetcher(tmp_path, wide_replay, concurrency=8) as f:
            first = await past_the_start(f, urls[:20])
            rest = await fetch_all(f, urls[20:] + missing)
            remote = f._remote
            return first + rest, remote.requests, f.requests, f._requests

    results, child, total, here = asyncio.run(go())
    fetched, failed = results[:len(urls)], results[len(urls):]
    assert child > 0 and here > 0, "both processes downloaded"
    assert total == child + here == len(urls) + len(missing)
    for url, got in zip(urls, fetched):
        assert not isinstance(got, BaseException), got
        body = urllib.request.urlopen(url).read()
        with open(got.tmp_path, "rb") as fh:
            assert fh.read() == body
        assert got.sha256 == hashlib.sha256(body).hexdigest() and got.size == len(body)
    # a failure in either process is the same named failure
    assert all(isinstance(exc, FetchError) and exc.cause == "HTTP 404" for exc in failed), failed


def test_when_the_second_process_dies_the_rest_is_fetched_here(wide_replay, tmp_path, monkeypatch):
    monkeypatch.setattr(fetch, "SECOND_PROCESS_AFTER", 5)
    urls = image_urls(wide_replay)

    async def go():
        async with fetcher(tmp_path, wide_replay, concurrency=8) as f:
            await past_the_start(f, urls[:10])
            assert f._remote.alive
            f._remote._proc.kill()
            return await fetch_all(f, urls[10:])

    results = asyncio.run(go())
    assert all(not isinstance(r, BaseException) and r.status == 200 for r in results), results


def test_crawls_with_one_and_two_processes_archive_the_same_bag(replay_factory, tmp_path):
    replay = replay_factory(limit=300, latency=0.005)  # over SECOND_PROCESS_AFTER images
    for n in ("1", "2"):
        replay.replay.stats.clear()
        proc = run_cli("crawl", "resultados2024", "--root", replay.url, "--out", str(tmp_path / n),
                       "--processes", n, "--concurrency", "4", "--quiet")
        assert proc.returncode == 0, proc.stderr
        assert replay.replay.stats["peak_in_flight"] <= 4, "--concurrency bounds both processes together"
    assert (tmp_path / "1" / "manifest-sha256.txt").read_text() == (tmp_path / "2" / "manifest-sha256.txt").read_text()
    assert not list((tmp_path / "2" / ".acta-mirror" / "tmp").iterdir()), "no temp file is left behind"
    verified = run_cli("verify", str(tmp_path / "2"))
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_processes_out_of_range_is_a_usage_error(replay, tmp_path):
    proc = run_cli("crawl", "resultados2024", "--root", replay.url, "--out", str(tmp_path / "m"), "--processes", "3")
    assert proc.returncode == 2 and "--processes" in proc.stderr


# -- answers libcurl reads differently: each found by attacking the engine --------------------
def _jpeg() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("L", (48, 64), 200).save(out, "JPEG")
    return out.getvalue()


class RawServer:
    """A loopback server that answers every connection with fixed bytes (per path), then closes."""

    def __init__(self, host: str = "127.0.0.1"):
        self.host, self.answers, self.asked = host, {}, []

    async def __aenter__(self):
        self.server = await asyncio.start_server(self._serve, self.host, 0)
        self.url = f"http://{self.host}:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc):
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader, writer):
        request = await reader.readuntil(b"\r\n\r\n")
        path = request.split(b" ")[1].decode()
        self.asked.append(path)
        writer.write(self.answers.get(path, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"))
        await writer.drain()
        writer.close()


def test_a_chunked_bodys_trailers_are_never_read_as_the_answer(tmp_path):
    async def go():
        async with RawServer() as site:
            jpeg = _jpeg()
            site.answers["/ok"] = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(jpeg) + jpeg
            site.answers["/trailer"] = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"
                                        b"HTTP/1.1 302 Found: x\r\nLocation: " + site.url.encode() + b"/ok\r\n\r\n")
            (tmp_path / "tmp").mkdir()
            async with Fetcher(tmp_dir=str(tmp_path / "tmp"), policy=HostPolicy.for_root(site.url),
                               retry_attempts=1) as f:
                with pytest.raises(FetchError) as caught:
                    await f.fetch(site.url + "/trailer")
            return caught.value, site.asked

    exc, asked = asyncio.run(go())
    assert exc.cause == "not an image" and asked == ["/trailer"], (exc.cause, exc.reason, asked)


def test_an_answer_that_is_not_http_is_retried_and_then_the_alternate_serves(tmp_path):
    async def go():
        async with RawServer() as bad, RawServer("127.0.0.2") as good:
            bad.answers["/a.jpg"] = b"garbage, not HTTP\r\n"
            jpeg = _jpeg()
            good.answers["/a.jpg"] = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(jpeg) + jpeg
            (tmp_path / "tmp").mkdir()
            async with Fetcher(tmp_dir=str(tmp_path / "tmp"), policy=HostPolicy.for_root(bad.url, (good.url,)),
                               alternates=(good.url,), retry_attempts=2) as f:
                got = await f.fetch(bad.url + "/a.jpg")
            return got, bad.asked, good.asked

    got, bad_asked, good_asked = asyncio.run(go())
    assert got.status == 200 and got.host == "127.0.0.2"
    assert len(bad_asked) == 2 and good_asked == ["/a.jpg"], "retried by policy, then the alternate"


def test_closing_the_fetcher_cancels_what_is_in_flight_instead_of_failing_it(tmp_path):
    async def go():
        async with RawServer() as site:
            async def hang(reader, writer):
                await reader.readuntil(b"\r\n\r\n")
                await asyncio.sleep(30)
            site.server.close()
            site.server = await asyncio.start_server(hang, "127.0.0.1", 0)
            url = f"http://127.0.0.1:{site.server.sockets[0].getsockname()[1]}/a.jpg"
            (tmp_path / "tmp").mkdir()
            f = Fetcher(tmp_dir=str(tmp_path / "tmp"), policy=HostPolicy.for_root(url))
            await f.__aenter__()
            task = asyncio.create_task(f.fetch(url))
            await asyncio.sleep(0.5)
            await f.__aexit__(None, None, None)  # as an interrupted crawl leaves its fetcher
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                return "cancelled"
            except BaseException as exc:  # noqa: BLE001
                return f"{type(exc).__name__}: {exc}"
            return "finished"

    assert asyncio.run(go()) == "cancelled"
    assert not list((tmp_path / "tmp").iterdir())


@pytest.mark.parametrize("proxy", ["socks5://[::1", "ftp://127.0.0.1:21", "http://:8080"])
def test_a_bad_proxy_is_one_line_and_exit_2(replay, tmp_path, proxy):
    proc = run_cli("crawl", "resultados2024", "--root", replay.url, "--out", str(tmp_path / "m"), "--proxy", proxy)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "proxy" in proc.stderr, proc.stderr
    assert not (tmp_path / "m").exists()


def test_an_index_header_past_the_csv_limit_is_one_line_and_exit_2(replay, tmp_path):
    index = tmp_path / "index.csv"
    index.write_text("A" * 200_000 + "\n")
    proc = run_cli("crawl", "resultados2024", "--root", replay.url, "--index", str(index), "--out", str(tmp_path / "m"))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "header" in proc.stderr, proc.stderr


def test_a_fifo_where_the_archived_index_was_is_never_read(replay, tmp_path):
    import os

    out = tmp_path / "m"
    first = run_cli("crawl", "resultados2024", "--root", replay.url, "--out", str(out), "--quiet")
    assert first.returncode == 0, first.stderr
    (archived,) = (out / "data" / "index").iterdir()
    archived.unlink()
    os.mkfifo(archived)  # a copy made by someone else; reading it on a 304 would block for ever
    proc = run_cli("crawl", "resultados2024", "--root", replay.url, "--out", str(out), "--quiet", timeout=60)
    assert "the index" not in proc.stderr, proc.stderr
    listed = first.stdout.split(" actas discovered")[0]
    assert proc.returncode == 0 and f"{listed} actas discovered: 0 archived, {listed} unchanged" in proc.stdout, \
        proc.stdout + proc.stderr  # the index was asked for whole, and read from the download


def test_bodies_streamed_to_disk_are_whole(wide_replay, tmp_path):
    """Every body is hashed and written piece by piece as it comes: same bytes, same sha256,
    whatever the order the pieces of 4 downloads at once arrive in."""
    urls = image_urls(wide_replay)[:12]

    async def go():
        async with fetcher(tmp_path, wide_replay, concurrency=4) as f:
            return await fetch_all(f, urls)

    for url, got in zip(urls, asyncio.run(go())):
        assert not isinstance(got, BaseException), got
        body = urllib.request.urlopen(url).read()
        with open(got.tmp_path, "rb") as fh:
            assert fh.read() == body
        assert got.sha256 == hashlib.sha256(body).hexdigest() and got.size == len(body)


def test_the_time_of_a_download_is_written_as_datetime_writes_it(monkeypatch):
    """utc_now makes a second's text once and adds the microseconds: across a second's end, at
    its first and last microsecond, and back to an earlier second, it writes what datetime writes."""
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    for ns in (1_722_254_400_123_456_789, 1_722_254_400_999_999_999, 1_722_254_401_000_000_000,
               1_722_254_401_000_000_999, 1_722_254_400_000_001_000, 86_399_999_999_000, 0):
        monkeypatch.setattr(fetch.time, "time_ns", lambda ns=ns: ns)
        want = (epoch + timedelta(microseconds=ns // 1000)).isoformat(timespec="microseconds").replace("+00:00", "Z")
        assert fetch.utc_now() == want, ns


def test_making_spare_temp_files_ahead_raises_nothing(tmp_path):
    """_make_spares runs on a worker thread whose future nobody reads: an exception there would
    pass unseen (a stray line once set a flag from an undefined name after every batch)."""
    f = Fetcher(tmp_dir=str(tmp_path))
    f._make_spares()
    assert len(f._spares) == fetch.SPARES_BATCH and not f._refilling
    f._drop_spares()
    assert not list(tmp_path.iterdir())


def test_a_host_left_alone_before_the_second_process_ran_is_left_alone_by_it(wide_replay, tmp_path, monkeypatch):
    """A breaker that tripped here while the child was starting must reach the child, though
    every image now goes to it (no fetch here afterwards would tell it)."""
    monkeypatch.setattr(fetch, "SECOND_PROCESS_AFTER", 5)
    urls = image_urls(wide_replay)

    async def go():
        async with fetcher(tmp_path, wide_replay, concurrency=8) as f:
            f._host("127.0.0.1").trip("it asked to wait 3600 s (Retry-After, HTTP 429)")
            early = await fetch_all(f, urls[:10])  # asked here: the child starts after the fifth
            await child_running(f)
            assert f._remote.alive
            late = await fetch_all(f, urls[10:30])
            return early, late, f._remote.requests

    early, late, child_requests = asyncio.run(go())
    for got in early + late:
        assert isinstance(got, fetch.Deferred) and "left alone" in got.reason, got
    assert child_requests == 0, "the second process asked a host that was left alone"


def test_the_second_process_answers_even_what_it_did_not_expect(tmp_path):
    """A request that fails in a way no FetchError names still gets an answer (a named
    failure), so the archiving process never waits for it forever."""
    import json
    import os
    import subprocess
    import sys

    f = Fetcher(tmp_dir=str(tmp_path), policy=HostPolicy.for_root("http://127.0.0.1:9"), processes=2)
    lines = [{"config": f._child_config()},
             {"id": 1, "url": 12345, "etag": "", "last_modified": "", "expect_image": True}]  # not a URL at all
    root = os.path.dirname(os.path.dirname(os.path.abspath(fetch.__file__)))
    child = subprocess.run([sys.executable, "-m", "mirror.fetchworker"], input="".join(json.dumps(x) + "\n" for x in lines),
                           capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": root})
    answers = [json.loads(line) for line in child.stdout.splitlines()]
    assert [a["id"] for a in answers] == [1], child.stderr
    kind, _url, reason, cause, _attempts = answers[0]["error"]
    assert (kind, cause) == ("FetchError", "unexpected error") and reason.startswith("unexpected ")


def test_the_second_process_carries_a_folder_name_of_bytes_that_are_not_utf8(wide_replay, tmp_path, monkeypatch):
    """A mirror in a folder whose name is not UTF-8 (os.fsdecode makes a lone surrogate of
    each such byte) is told to the second process and back: its temp files land in that
    folder, and no request waits for ever on a message that could not be written."""
    import os

    monkeypatch.setattr(fetch, "SECOND_PROCESS_AFTER", 10)
    urls = image_urls(wide_replay)
    odd = tmp_path / os.fsdecode(b"mirror-\xff\xfe")
    odd.mkdir()

    async def go():
        async with fetcher(odd, wide_replay, concurrency=8) as f:
            await past_the_start(f, urls[:20])
            results = await asyncio.wait_for(fetch_all(f, urls[20:60]), 60)
            return results, f._remote.requests

    results, child = asyncio.run(go())
    assert all(isinstance(r, fetch.Fetched) for r in results), results
    assert child > 0 and all(os.path.dirname(r.tmp_path) == str(odd / "tmp") for r in results)
    assert all(os.path.getsize(r.tmp_path) == r.size > 0 for r in results)


@pytest.mark.parametrize("large", [False, True])
def test_once_the_second_process_runs_it_takes_small_images_all_and_large_ones_in_part(
        wide_replay, tmp_path, monkeypatch, large):
    """Small images all go to the second process (the first is busy archiving them); when
    images are large on average, the first also fetches some: one in every SECOND_PROCESS_SHARE
    + 1 while the second keeps up (more when it holds all but the last slot), so most still go there."""
    monkeypatch.setattr(fetch, "SECOND_PROCESS_AFTER", 10)
    if large:  # the replay's images are small: make the threshold smaller still
        monkeypatch.setattr(fetch, "SHARE_FROM_BYTES", 1)
    urls = image_urls(wide_replay)

    async def go():
        async with fetcher(tmp_path, wide_replay, concurrency=8) as f:
            await past_the_start(f, urls[:20])
            here = f._requests
            results = await fetch_all(f, urls[20:])
            return results, f._requests - here, f._remote.requests, f._split

    results, here, child, split = asyncio.run(go())
    assert all(not isinstance(r, BaseException) for r in results), results
    assert here + child >= len(urls) - 20 and child > 0
    assert (0 < here < child) if large else (here == 0), (here, child)
    if large:  # every one counted where it went, and never more than the share there for each one here
        assert split == [here, child] and child <= fetch.SECOND_PROCESS_SHARE * (here + 1), (split, here, child)


def test_a_second_process_that_stops_answering_never_holds_every_slot(wide_replay, tmp_path, monkeypatch):
    """Large images are shared by count, three in four to the second process; one that is alive
    but answers nothing (stopped here with SIGSTOP, as a stuck loop would be) is never given the
    last slot, so the first goes on fetching; once it answers again, what it held comes back whole."""
    monkeypatch.setattr(fetch, "SECOND_PROCESS_AFTER", 10)
    monkeypatch.setattr(fetch, "SHARE_FROM_BYTES", 1)
    urls = image_urls(wide_replay)[:80]

    async def go():
        async with fetcher(tmp_path, wide_replay, concurrency=4) as f:
            await past_the_start(f, urls[:20])
            pid, here = f._remote._proc.pid, f._requests
            os.kill(pid, signal.SIGSTOP)
            try:
                tasks = [asyncio.ensure_future(f.fetch(url)) for url in urls[20:]]
                for _ in range(600):  # a minute at most
                    if f._requests - here >= 40:
                        break
                    await asyncio.sleep(0.1)
                went_on = f._requests - here
            finally:
                os.kill(pid, signal.SIGCONT)
            results = await asyncio.gather(*tasks, return_exceptions=True)
            return went_on, results, f._requests - here, f._remote.requests

    went_on, results, local, child = asyncio.run(go())
    assert went_on >= 40, went_on
    assert all(not isinstance(r, BaseException) for r in results), results
    assert 0 < child and local + child >= len(urls) - 20, (local, child)


@pytest.mark.parametrize("large", [False, True])
def test_callers_may_ask_deeper_than_concurrency_yet_the_server_never_sees_more_in_flight(
        replay_factory, tmp_path, monkeypatch, large):
    """The crawl keeps Fetcher.depth downloads asked for (more than --concurrency) so the second
    process always has the next one waiting; the server still sees at most `concurrency` at
    once, while the second process takes them all and while both processes fetch."""
    monkeypatch.setattr(fetch, "SECOND_PROCESS_AFTER", 10)
    if large:
        monkeypatch.setattr(fetch, "SHARE_FROM_BYTES", 1)
    replay = replay_factory(limit=200, latency=0.02)  # an answer takes long enough to overlap
    urls = image_urls(replay)

    async def go():
        async with fetcher(tmp_path, replay, concurrency=4) as f:
            assert f.depth > f.concurrency
            # the first 60 are asked for before the second process runs, and are still in
            # flight here when the rest go to it
            first = asyncio.ensure_future(fetch_all(f, urls[:60]))
            await child_running(f)
            crossed = not first.done()
            rest = await fetch_all(f, urls[60:])
            return await first + rest, crossed, f._remote.requests, f._requests

    results, crossed, child, here = asyncio.run(go())
    assert all(not isinstance(r, BaseException) for r in results), results
    assert crossed and child > 0 and (here > 60) == large, (crossed, child, here)
    assert replay.replay.stats["peak_in_flight"] == 4, replay.replay.stats
