"""Resilience: every site adapter with its replay, proxies, alternate hosts, a full disk, kills."""
from __future__ import annotations

import asyncio
import hashlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import bagit
import pytest

from mirror.crawl import CrawlOptions, crawl
from mirror.manifest import read_manifest, read_provenance
from mirror.replay import Replay, ReplayThread, replay_for
from mirror.sites import all_sites
from mirror.verify import verify
from tests.conftest import ROOT, local_proxy, run_cli, tmpfs

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("site", sorted(all_sites()))
def test_every_adapter_crawls_its_replay(site, tmp_path):
    with ReplayThread(replay_for(site, small=True, limit=30)) as r:
        result = asyncio.run(crawl(CrawlOptions(site=site, root=r.url, out=str(tmp_path / "m"))))
        expected = r.replay.expected()
    assert result.failures == []
    archived = {e.key for e in read_provenance(tmp_path / "m" / "provenance.jsonl") if e.kind == "acta"}
    assert archived == set(expected) and len(archived) >= 30
    bagit.Bag(str(tmp_path / "m")).validate()
    tally = run_cli("tally", str(tmp_path / "m"))
    assert f"{len(expected)} of {len(expected)} tables read" in tally.stdout


@pytest.fixture
def proxy(tmp_path):
    with open(tmp_path / "proxy.log", "w") as log, local_proxy("http+socks5://127.0.0.1:{port}", log) as port:
        yield port, tmp_path / "proxy.log"


@pytest.mark.parametrize("scheme", ["http", "socks5", "socks5h"])
def test_crawl_through_a_real_local_proxy(replay, proxy, tmp_path, scheme):
    port, log = proxy
    out = tmp_path / "m"
    proc = run_cli("crawl", "resultados2024", "--root", replay.url, "--out", str(out), "--quiet",
                   "--proxy", f"{scheme}://127.0.0.1:{port}")
    assert proc.returncode == 0, proc.stderr
    assert verify(out) == []
    replay_port = replay.url.rsplit(":", 1)[1]
    seen = log.read_text()
    assert f":{replay_port}" in seen, seen[-2000:]  # the proxy carried the requests
    down = run_cli("crawl", "resultados2024", "--root", replay.url, "--out", str(tmp_path / "n"), "--quiet",
                   "--proxy", f"{scheme}://127.0.0.1:{_port()}")
    assert down.returncode == 2 and "cannot read the index" in down.stderr


def test_alternate_host_serves_what_the_primary_does_not(tmp_path):
    primary = ReplayThread(Replay(small=True, limit=30))
    alternate = ReplayThread(Replay(small=True, limit=30))
    with primary, alternate:
        names = sorted(primary.replay.expected().values())[:4]
        primary.replay.faults = primary.replay.faults.with_files(**{n: "404" for n in names[:2]},
                                                                  **{names[2]: "denied"})
        out = tmp_path / "m"
        result = asyncio.run(crawl(CrawlOptions(site="resultados2024", root=primary.url, out=str(out),
                                                alternates=(alternate.url,))))
        assert result.failures == []
        entries = {e.url.rsplit("/", 1)[1]: e for e in read_provenance(out / "provenance.jsonl")}
        alt_host = alternate.url.split("//")[1]
        for name in names[:3]:
            assert entries[name].host == alt_host.split(":")[0] or alt_host in entries[name].final_url
            assert entries[name].final_url.startswith(alternate.url) and entries[name].url.startswith(primary.url)
        assert entries[names[3]].final_url.startswith(primary.url)
    # the primary entirely down: the index too comes from the alternate
    with ReplayThread(Replay(small=True, limit=30)) as alternate:
        proc = run_cli("crawl", "resultados2024", "--root", f"http://127.0.0.1:{_port()}", "--out",
                       str(tmp_path / "down"), "--alternate", alternate.url, "--quiet")
        assert proc.returncode == 0, proc.stderr
        assert verify(tmp_path / "down") == []


@pytest.fixture
def small_disk(tmp_path):
    with tmpfs(tmp_path, "4m") as mount:
        yield mount


def test_full_disk_is_a_clear_error_and_nothing_archived_is_damaged(small_disk, tmp_path):
    out = small_disk / "m"
    with ReplayThread(Replay(small=False, limit=60)) as r:
        first = run_cli("crawl", "resultados2024", "--root", r.url, "--out", str(out), "--quiet",
                        "--index", _first_rows(r, tmp_path, 4))
        assert first.returncode == 0, first.stderr
        before = read_manifest(out / "manifest-sha256.txt")
        full = run_cli("crawl", "resultados2024", "--root", r.url, "--out", str(out), "--quiet")
        assert full.returncode == 3, full.stdout + full.stderr
        assert "disk full" in full.stderr and len(full.stderr.strip().splitlines()) == 1
        for entry in read_provenance(out / "provenance.jsonl"):  # every recorded file is whole
            assert hashlib.sha256((out / entry.path).read_bytes()).hexdigest() == entry.sha256
        for rel, digest in before.items():
            assert hashlib.sha256((out / rel).read_bytes()).hexdigest() == digest
        rescued = tmp_path / "rescued"
        subprocess.run(["cp", "-a", str(out), str(rescued)], check=True)
        again = run_cli("crawl", "resultados2024", "--root", r.url, "--out", str(rescued), "--quiet")
        assert again.returncode == 0, again.stderr
        assert verify(rescued) == []


def test_a_full_disk_under_the_crawls_own_counts_is_one_line_and_exit_3(tmp_path):
    """The crawl's scratch SQLite files (the count of listed actas a progress display shows, a dry
    run's plan) meeting a full disk: the same one line and exit 3 as any other write, not
    SQLite's traceback."""
    index = tmp_path / "index.csv"
    for name in ("counting", "planning"):
        (tmp_path / name).mkdir()
    with ReplayThread(Replay(small=True)) as r:
        index.write_bytes(r.replay.index_bytes(1))  # the whole index: 24,532 pairs, some MB to count
        with tmpfs(tmp_path / "counting", "320k") as disk:
            counting = run_cli("crawl", "resultados2024", "--root", r.url, "--out", str(disk / "m"),
                               "--index", str(index))  # not --quiet: the display counts the actas first
        with tmpfs(tmp_path / "planning", "320k") as disk:
            planning = run_cli("crawl", "resultados2024", "--root", r.url, "--out", str(tmp_path / "plan"),
                               "--index", str(index), "--dry-run", env={"TMPDIR": str(disk)})
    for proc, what in ((counting, "the count of the listed actas in "), (planning, "the dry run's plan in ")):
        assert proc.returncode == 3 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
        line = proc.stderr.strip().splitlines()[-1]
        assert line.startswith(f"acta-mirror: disk full while writing {what}"), proc.stderr
        assert line.endswith("everything archived before is intact, re-run when there is space"), proc.stderr


def _first_rows(r, tmp_path: Path, n: int) -> str:
    lines = r.replay.index_bytes(1).splitlines(keepends=True)
    path = tmp_path / "first.csv"
    path.write_bytes(b"".join(lines[: n + 1]))
    return str(path)


def _kill_loop(cmd: list[str], times: int, seed: int, low: float, high: float) -> int:
    rng = random.Random(seed)
    killed = 0
    for _ in range(times):
        proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(low, high))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait()
    return killed


def test_kill_during_publish_then_publish_again(replay, tmp_path):
    mirror = tmp_path / "m"
    asyncio.run(crawl(CrawlOptions(site="resultados2024", root=replay.url, out=str(mirror))))
    remote = tmp_path / "remote" / "a.git"
    cmd = [sys.executable, "-m", "mirror", "publish", str(mirror), "--to", f"git+file://{remote}",
           "--max-push-bytes", "150000", "--max-repo-bytes", "600000"]
    _kill_loop(cmd, 5, seed=3, low=0.3, high=1.5)
    final = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    restored = tmp_path / "restored"
    assert run_cli("restore", "--from", f"git+file://{remote}", "--out", str(restored)).returncode == 0
    assert read_manifest(restored / "manifest-sha256.txt") == read_manifest(mirror / "manifest-sha256.txt")


def test_kill_during_merge_then_merge_again(replay, tmp_path):
    shards = []
    for i in (1, 2):
        out = tmp_path / f"s{i}"
        asyncio.run(crawl(CrawlOptions(site="resultados2024", root=replay.url, out=str(out), shard=(i, 2))))
        shards.append(str(out))
    merged = tmp_path / "merged"
    cmd = [sys.executable, "-m", "mirror", "merge", str(merged), *shards]
    _kill_loop(cmd, 5, seed=5, low=0.2, high=0.9)
    final = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    single = tmp_path / "single"
    asyncio.run(crawl(CrawlOptions(site="resultados2024", root=replay.url, out=str(single))))
    assert (merged / "manifest-sha256.txt").read_bytes() == (single / "manifest-sha256.txt").read_bytes()
    keys = [e.path for e in read_provenance(merged / "provenance.jsonl")]
    assert len(keys) == len(set(keys))  # nothing recorded twice


def test_pool_workers_end_with_a_killed_parent(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(
        "import os, sys, time\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from mirror.workers import pool\n"
        "ex = pool(2)\n"
        "futures = [ex.submit(time.sleep, 60) for _ in range(2)]\n"
        "time.sleep(1.5)\n"
        "print(' '.join(str(p) for p in ex._processes), flush=True)\n"
        "time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    workers = [int(p) for p in proc.stdout.readline().split()]
    assert len(workers) == 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    alive = workers
    while alive and time.monotonic() < deadline:
        alive = [p for p in workers if Path(f"/proc/{p}").exists() and "Z" not in Path(f"/proc/{p}/stat").read_text().split()[2]]
        time.sleep(0.1)
    assert alive == [], "pool workers outlived their killed parent"


def test_a_primary_that_says_stop_is_left_alone_and_the_alternate_serves(tmp_path, monkeypatch):
    from mirror import fetch
    from tests.hostile_site import HostileSite, body, index_row, jpeg, key_of, status

    monkeypatch.setattr(fetch, "BREAKER_SECONDS", 0.0)  # production waits 30 s of nothing but 503

    with HostileSite() as primary, HostileSite("127.0.0.2") as alternate:
        rows = []
        for i in range(40):
            primary.routes[f"/img/{i}.jpg"] = status(503)
            alternate.routes[f"/img/{i}.jpg"] = body(jpeg(i))
            rows.append(index_row(i, f"{primary.url}/img/{i}.jpg"))
        primary.serve_index(rows)
        out = tmp_path / "m"

        async def go():
            return await asyncio.wait_for(crawl(CrawlOptions(site="resultados2024", root=primary.url, out=str(out),
                                                             alternates=(alternate.url,))), 90)
        result = asyncio.run(go())
        assert result.failures == []
        assert sum(n for p, n in primary.hits.items() if p.startswith("/img/")) <= 40  # not 6 tries each
        entries = {e.key: e for e in read_provenance(out / "provenance.jsonl") if e.kind == "acta"}
        assert set(entries) == {key_of(i) for i in range(40)}
        assert all(e.host == "127.0.0.2" and e.url.startswith(primary.url) for e in entries.values())
        assert verify(out) == []
