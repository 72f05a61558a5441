"""The transfer engine under the fetcher, and the second downloading process (fetchworker.py)."""
from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import urllib.request

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


@pytest.fixture
def wide_replay(replay_factory):
    return replay_factory(limit=120)


def test_a_second_process_takes_a_share_and_its_answers_are_whole(wide_replay, tmp_path, monkeypatch):
    monkeypatch.setattr(fetch, "SECOND_PROCESS_AFTER", 10)
    urls = image_urls(wide_replay)
    missing = [f"{wide_replay.url}/no-such-acta-{i}.jpg" for i in range(30)]

    async def go():
        async with fetcher(tmp_path, wide_replay, concurrency=8) as f:
            first = await fetch_all(f, urls[:20])
            await asyncio.sleep(1.0)  # the child starts in the background
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
            await fetch_all(f, urls[:10])
            await asyncio.sleep(1.0)
            assert f._remote.alive
            f._remote._proc.kill()
            return await fetch_all(f, urls[10:])

    results = asyncio.run(go())
    assert all(not isinstance(r, BaseException) and r.status == 200 for r in results), results


def test_crawls_with_one_and_two_processes_archive_the_same_bag(replay_factory, tmp_path):
    replay = replay_factory(limit=300)  # over SECOND_PROCESS_AFTER images
    for n in ("1", "2"):
        proc = run_cli("crawl", "resultados2024", "--root", replay.url, "--out", str(tmp_path / n),
                       "--processes", n, "--quiet")
        assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "1" / "manifest-sha256.txt").read_text() == (tmp_path / "2" / "manifest-sha256.txt").read_text()
    assert not list((tmp_path / "2" / ".acta-mirror" / "tmp").iterdir()), "no temp file is left behind"
    verified = run_cli("verify", str(tmp_path / "2"))
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_processes_out_of_range_is_a_usage_error(replay, tmp_path):
    proc = run_cli("crawl", "resultados2024", "--root", replay.url, "--out", str(tmp_path / "m"), "--processes", "3")
    assert proc.returncode == 2 and "--processes" in proc.stderr
