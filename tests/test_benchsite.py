"""The benchmark site's helpers: the JPEG maker makes images the crawl accepts, and nginx serves them."""
from __future__ import annotations

import random
import shutil
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from mirror.imagecheck import check_bytes
from mirror.replay.data import index_file
from mirror.sites.resultados2024 import parse_index_bytes
from scripts.bench_crawl import measure
from scripts.benchsite import INDEX_NAME, Site, jpeg, synthetic_lines


@pytest.mark.parametrize("size", [8_000, 265_000])
def test_jpeg_is_whole_and_of_its_size(size):
    name = "408106_387187_0096Acta0096.jpg"
    body = jpeg(name, size, random.Random(size))
    picture = jpeg(name, 0, random.Random(size))  # no padding
    assert len(body) == size
    verdict = check_bytes(body)  # raises NotImage on a broken or polyglot JPEG
    assert verdict.kind == "image/jpeg" and verdict.trailing == 0
    # the padding (COM segments after SOI) never holds "<": random bytes would now and then
    # spell markup the crawl refuses as a polyglot
    assert body[:2] + body[len(body) - len(picture) + 2:] == picture
    assert b"<" not in body[2:len(body) - len(picture) + 2]


@pytest.mark.skipif(not (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()), reason="needs nginx")
def test_site_serves_images_index_and_fallback(tmp_path):
    v1 = index_file(1)
    site = Site(tmp_path / "site", fallback="one.jpg")
    row = v1.rows[0]
    image = jpeg(row.filename, 8_000, random.Random(1))
    (site.www / row.filename).write_bytes(image)
    (site.www / "one.jpg").write_bytes(b"fallback")
    site.write_index(v1.lines[:1], v1.header)
    site.start()
    try:
        with urllib.request.urlopen(f"{site.url}/{INDEX_NAME}") as r:
            index = r.read()
        url = index.splitlines()[1].rsplit(b",", 1)[1].decode()
        assert url == f"{site.url}/{row.filename}"
        with urllib.request.urlopen(url) as r:
            assert r.read() == image and r.headers["ETag"]
        with urllib.request.urlopen(f"{site.url}/not-there.jpg") as r:
            assert r.read() == b"fallback"
        # nginx logs a request after it has answered it: the last line may come a moment later
        deadline = time.monotonic() + 10
        while (requests := site.downloaded(0)[1]) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert requests == 3
    finally:
        site.stop()


def test_synthetic_index_has_distinct_keys_the_site_reads():
    lines = synthetic_lines(1_000)
    raw = index_file(1).header + b"".join(lines)
    actas = list(parse_index_bytes(raw, "synthetic.csv"))
    assert len(actas) == 1_000
    assert len({a.key for a in actas}) == 1_000
    assert not {a.key for a in actas} & {r.key for r in index_file(1).rows}


def test_measure_counts_the_command_not_the_bench(tmp_path):
    # a child's ru_maxrss starts at its parent's size at fork: the bench (this test's process
    # holds the whole V1 index) must not be counted as the command's memory
    index_file(1)
    small = measure(["true"], tmp_path / "true.err")
    big = measure([sys.executable, "-c", "b = bytearray(80_000_000); b[::4096] = b'x' * len(b[::4096])"],
                  tmp_path / "big.err")
    assert small.rc == 0 and big.rc == 0
    assert small.rss_mb < 20
    assert big.rss_mb >= 80
    # the CPU it spent (touching 80 MB takes some) is counted, and the machine's includes it
    assert 0 <= small.cpu_s < big.cpu_s
    assert big.machine_cpu_s >= big.cpu_s - 0.05  # /proc/stat counts in ticks of 10 ms
