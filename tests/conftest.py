"""Shared fixtures: a replay on loopback, and running the real command line."""
from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mirror.replay import FaultPlan, Replay, ReplayThread

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Working state (Git staging repositories) goes to the user's cache: a fresh one per test."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@contextlib.contextmanager
def small_replay(faults: str, limit: int = 30):
    """A small replay for a module-scoped fixture (replay_factory serves one test only)."""
    thread = ReplayThread(Replay(small=True, limit=limit, faults=FaultPlan.parse(faults, 0)))
    thread.start()
    try:
        yield thread
    finally:
        thread.stop()


def crawl_into(url: str, out: Path, shard: tuple[int, int] = (1, 1)) -> None:
    """One crawl of the resultados2024 replay at url into out, in this process."""
    from mirror.crawl import CrawlOptions, crawl

    asyncio.run(crawl(CrawlOptions(site="resultados2024", root=url, out=str(out), shard=shard)))


@pytest.fixture
def replay_factory():
    started = []

    def start(**kwargs) -> ReplayThread:
        kwargs.setdefault("small", True)
        kwargs.setdefault("limit", 40)
        if isinstance(kwargs.get("faults"), str):
            kwargs["faults"] = FaultPlan.parse(kwargs["faults"], kwargs.get("seed", 0))
        thread = ReplayThread(Replay(**kwargs))
        thread.start()
        started.append(thread)
        return thread

    yield start
    for thread in started:
        thread.stop()


@pytest.fixture
def replay(replay_factory) -> ReplayThread:
    return replay_factory()


def run_cli(*args: str, timeout: float = 300, check_traceback: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Run `python -m mirror ARGS` as a user would; a traceback is always a test failure."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **kwargs.get("env", {})}
    proc = subprocess.run([sys.executable, "-m", "mirror", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=kwargs.get("cwd"), input=kwargs.get("input"))
    if check_traceback:
        assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def killed_crawls(root_url: str, out: Path, *, seed: int, times: int, earliest: float, after=None) -> list[str]:
    """Start `acta-mirror crawl` into out and kill it with SIGKILL at a random moment, `times`
    times; after() runs after each kill. Returns the command, for the run that finishes."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "mirror", "crawl", "resultados2024", "--root", root_url, "--out", str(out),
           "--quiet", "--concurrency", "8"]
    rng = random.Random(seed)
    codes = []
    for _ in range(times):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(earliest, 2.5))
        proc.send_signal(signal.SIGKILL)
        codes.append(proc.wait())
        if after:
            after()
    assert -signal.SIGKILL in codes, f"no kill found a crawl still running (exit codes {codes}): nothing was tested"
    return cmd


@contextlib.contextmanager
def local_proxy(listen: str, log=subprocess.DEVNULL):
    """A real proxy (pproxy) on a free loopback port; listen is its -l argument with {port} in it
    (http+socks5://127.0.0.1:{port}). Yields the port once the proxy accepts connections."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    verbose = ["-v"] if log is not subprocess.DEVNULL else []
    proc = subprocess.Popen([sys.executable, "-m", "pproxy", "-l", listen.format(port=port), *verbose],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise AssertionError(f"the proxy ({listen}) did not start")
            time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def tmpfs(tmp_path: Path, size: str):
    """A tmpfs of this test's own, of `size` (mount's syntax: 4m), at tmp_path/disk; unmounted after."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    where = tmp_path / "disk"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
