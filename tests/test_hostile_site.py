"""A blocked, slow or hostile site never hangs the crawl, breaks the bag or slips a fake image in.

Each test runs the crawl against tests/hostile_site.py on loopback (127.0.0.2 is "another
host"), bounded by asyncio.wait_for or a subprocess timeout so that a hang fails the test
instead of stalling the suite. After every hostile run the mirror verifies and every good
acta is archived.
"""
from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mirror import fetch, sites, transfer
from mirror.crawl import CrawlOptions, crawl
from mirror.fetch import Fetcher, HostPolicy
from mirror.imagecheck import NotImage, check_bytes
from mirror.manifest import read_provenance
from mirror.models import Deferred, FetchError, Page
from mirror.verify import verify
from tests.conftest import ROOT, run_cli
from tests.hostile_site import (HEADER, HostileSite, body, changing, drip, index_row, jpeg, key_of, listing, mesa, png,
                                redirect, split, status)

BOUND = 90  # seconds any one hostile crawl may take before it counts as hung


def crawl_bounded(root: str, out: Path, bound: float = BOUND, **kw):
    async def go():
        return await asyncio.wait_for(crawl(CrawlOptions(site="resultados2024", root=root, out=str(out), **kw)), bound)
    return asyncio.run(go())


def archived(out: Path) -> dict[str, list]:
    entries: dict[str, list] = {}
    for e in read_provenance(out / "provenance.jsonl"):
        if e.kind == "acta":
            entries.setdefault(e.key, []).append(e)
    return entries


def assert_sound(out: Path, good: list[str]) -> None:
    """The mirror verifies, and every good acta is in it."""
    assert verify(out) == []
    missing = set(good) - set(archived(out))
    assert not missing, f"good actas not archived: {sorted(missing)}"


def failures(out: Path) -> dict[str, dict]:
    lines = [json.loads(x) for x in (out / "failures.jsonl").read_text().splitlines()]
    for f in lines:
        assert {"key", "url", "reason", "cause", "at", "attempts"} <= set(f), f
        assert f["at"].endswith("Z") and isinstance(f["attempts"], int)
    return {f["url"]: f for f in lines}


@pytest.fixture
def site():
    with HostileSite() as s:
        yield s


@pytest.fixture
def other_host():
    with HostileSite("127.0.0.2") as s:
        yield s


# -- 1 and 2: slow pages and slow images are network failures, never hangs or disk errors ---
def test_slow_pages_in_a_walk_are_named_failures_and_the_walk_ends(site, tmp_path):
    root_links = [(f"/e/{i}", f"E{i}") for i in range(3)]
    site.routes["/"] = body(listing(root_links), "text/html")
    good = []
    for i in range(3):
        if i == 1:  # a whole slow branch
            site.routes[f"/e/{i}"] = drip(listing([("/never", "x")]).encode(), 1.0, "text/html")
            continue
        site.routes[f"/e/{i}"] = body(listing([(f"/m/{i}", "M")]), "text/html")
        site.routes[f"/m/{i}"] = body(listing([(f"/p/{i}", "P")]), "text/html")
        site.routes[f"/p/{i}"] = body(listing([(f"/c/{i}", "C")]), "text/html")
        site.routes[f"/c/{i}"] = body(listing([(f"/t/{i}", "T")]), "text/html")
        site.routes[f"/t/{i}"] = body(mesa(f"/img/{i}.jpg", i), "text/html")
        site.routes[f"/img/{i}.jpg"] = body(jpeg(i))
        good.append(key_of(i))
    out = tmp_path / "m"
    result = crawl_bounded(site.url + "/", out, discover="html", timeout=1.0, retry_attempts=2)
    slow = [f for f in result.failures if f["url"].endswith("/e/1")]
    assert slow and slow[0]["cause"] == "timeout" and slow[0]["key"] == "page", result.failures
    assert_sound(out, good)
    again = crawl_bounded(site.url + "/", out, discover="html", timeout=1.0, retry_attempts=2)  # the lock was let go
    assert len(again.failures) == 1


def test_a_slow_image_is_a_network_failure_not_a_disk_error(site, tmp_path):
    rows = site.good_actas(3)
    site.routes["/img/slow.jpg"] = drip(jpeg(99), 1.0)
    site.serve_index(rows + [index_row(99, f"{site.url}/img/slow.jpg")])
    out = tmp_path / "m"
    proc = run_cli("crawl", "resultados2024", "--root", site.url, "--out", str(out), "--quiet", "--timeout", "1",
                   timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "cannot write" not in proc.stderr and "slow.jpg" in proc.stderr
    assert failures(out)[f"{site.url}/img/slow.jpg"]["cause"] == "timeout"
    assert failures(out)[f"{site.url}/img/slow.jpg"]["attempts"] == 6
    assert_sound(out, [key_of(i) for i in range(3)])


# -- 3: every path ends in a valid bag ---------------------------------------------------------
def test_a_bad_index_row_after_good_ones_is_reported_and_skipped(site, tmp_path):
    rows = site.good_actas(4)
    bad = index_row(50, f"{site.url}/img/50.jpg").replace("010101050", "01010X050")
    rows2 = site.good_actas(3, start=4)
    site.serve_index(rows + [bad] + rows2)
    out = tmp_path / "m"
    result = crawl_bounded(site.url, out)
    assert [f["cause"] for f in result.failures] == ["bad index row"]
    assert "01010X050" in result.failures[0]["reason"]
    assert_sound(out, [key_of(i) for i in range(7)])


def serve_with_slow_tail(site, good: int, total: int) -> None:
    """An index of `good` quick actas, then slow ones (a byte a second) up to `total`."""
    rows = site.good_actas(good)
    for i in range(good, total):
        site.routes[f"/img/{i}.jpg"] = drip(jpeg(i), 1.0)
        rows.append(index_row(i, f"{site.url}/img/{i}.jpg"))
    site.serve_index(rows)


def actas_recorded(provenance: Path) -> int:
    """How many acta records provenance.jsonl holds now (a line still being written is not one).
    Records are parsed, never matched as text: the writer's spacing is not part of the format."""
    count = 0
    if provenance.exists():
        for line in provenance.read_bytes().splitlines():
            try:
                count += json.loads(line).get("kind") == "acta"
            except ValueError:
                pass
    return count


def stop_after_six(proc, provenance: Path, sig) -> str:
    """Send sig to proc once provenance records six actas (the slow ones are then in flight);
    its stderr once it has stopped (killed if it has not within a minute). The six must come
    within a minute: a signal sent on a timeout instead would test nothing in flight."""
    try:
        deadline = time.monotonic() + 60
        while actas_recorded(provenance) < 6 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert actas_recorded(provenance) >= 6, f"six actas not recorded within a minute: {provenance}"
        proc.send_signal(sig)
        return proc.communicate(timeout=60)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_crawl_leaves_a_valid_bag(site, tmp_path, sig):
    serve_with_slow_tail(site, 6, 10)
    out = tmp_path / "m"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "mirror", "crawl", "resultados2024", "--root", site.url,
                             "--out", str(out), "--quiet", "--timeout", "600"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err = stop_after_six(proc, out / "provenance.jsonl", sig)  # the good ones recorded, the slow ones in flight
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted; re-run to resume" in err
    assert_sound(out, [key_of(i) for i in range(6)])


# -- 4: a 304 nobody asked for ---------------------------------------------------------------
def test_an_unasked_304_is_a_failure_not_unchanged(site, tmp_path):
    rows = site.good_actas(3)
    site.routes["/img/304.jpg"] = status(304)
    site.serve_index(rows + [index_row(30, f"{site.url}/img/304.jpg")])
    out = tmp_path / "m"
    result = crawl_bounded(site.url, out)
    assert result.counters.unchanged == 0
    assert [f["cause"] for f in result.failures] == ["HTTP 304 unasked"]
    assert_sound(out, [key_of(i) for i in range(3)])


def test_a_304_on_the_index_with_no_earlier_copy_is_one_clear_line(site, tmp_path):
    site.routes["/RESULTADOS_2024_CSV_V1.csv"] = status(304)
    proc = run_cli("crawl", "resultados2024", "--root", site.url, "--out", str(tmp_path / "m"), "--quiet")
    assert proc.returncode == 2
    assert "cannot read the index" in proc.stderr and "304" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


# -- 5: bounded walks ------------------------------------------------------------------------
def test_a_page_linking_to_itself_is_fetched_once(site, tmp_path):
    site.routes["/"] = body(listing([("/", "root"), ("/e/0", "E"), ("/e/0#x", "E again")]), "text/html")
    site.routes["/e/0"] = body(listing([("/e/0", "self"), ("/", "up"), ("/m/0", "M")]), "text/html")
    site.routes["/m/0"] = body(listing([("/m/0", "self"), ("/p/0", "P")]), "text/html")
    site.routes["/p/0"] = body(listing([("/c/0", "C")]), "text/html")
    site.routes["/c/0"] = body(listing([("/t/0", "T"), ("/c/0", "self")]), "text/html")
    site.routes["/t/0"] = body(mesa("/img/0.jpg", 0), "text/html")
    site.routes["/img/0.jpg"] = body(jpeg(0))
    out = tmp_path / "m"
    result = crawl_bounded(site.url + "/", out, discover="html")
    assert result.failures == []
    assert all(n == 1 for n in site.hits.values()), site.hits
    assert_sound(out, [key_of(0)])


@pytest.mark.parametrize("how", ["redirect", "base href", "both"])
def test_a_walks_relative_links_resolve_where_the_page_came_from_and_against_its_base(site, tmp_path, how):
    """A table page redirected to /v2/mesa/0/, or one with <base href="/v2/">, names its image
    as 'acta.jpg': the walk resolved it against the URL it asked for, so it archived /t/acta.jpg,
    another image, as that table's acta, and exited 0. Browsers resolve against where the page
    came from, then its <base href>; so does the walk now, and records that page."""
    import hashlib

    site.routes["/"] = body(listing([("/e/0", "E")]), "text/html")
    site.routes["/e/0"] = body(listing([("/m/0", "M")]), "text/html")
    site.routes["/m/0"] = body(listing([("/p/0", "P")]), "text/html")
    site.routes["/p/0"] = body(listing([("/c/0", "C")]), "text/html")
    site.routes["/c/0"] = body(listing([("/t/0/", "T")]), "text/html")
    page = mesa("acta.jpg", 0)
    if how != "redirect":  # 'both': a relative base, itself resolved against where the page came from
        page = page.replace("<body>", '<head><BASE href="/v2/mesa/0/"></head><body>' if how == "base href"
                            else '<head><base href="mesa/0/"></head><body>')
    if how == "base href":
        site.routes["/t/0/"] = body(page, "text/html")
    else:
        site.routes["/t/0/"] = redirect("/v2/mesa/0/" if how == "redirect" else "/v2/")
        site.routes["/v2/mesa/0/" if how == "redirect" else "/v2/"] = body(page, "text/html")
    site.routes["/v2/mesa/0/acta.jpg"] = body(jpeg(0))
    site.routes["/t/0/acta.jpg"] = body(jpeg(7))  # what the asked-for URL would have led to
    out = tmp_path / "m"
    result = crawl_bounded(site.url + "/", out, discover="html")
    assert result.failures == []
    entry = archived(out)[key_of(0)][-1]
    assert (entry.url, entry.sha256) == (f"{site.url}/v2/mesa/0/acta.jpg", hashlib.sha256(jpeg(0)).hexdigest())
    assert entry.page == site.url + ("/t/0/" if how == "base href" else "/v2/mesa/0/" if how == "redirect" else "/v2/")
    assert_sound(out, [key_of(0)])


@pytest.mark.parametrize("html, base", [
    ('<head><base href="/v2/"></head>', "http://site.test/v2/"),
    ('<BASE HREF=" mesa/ ">', "http://site.test/t/0/mesa/"),  # HTML's own spaces stripped
    ('<body><base href="/in-body/">', "http://site.test/in-body/"),
    ('<base><base href="/second/">', "http://site.test/second/"),  # the first that has an href
    ('<template><base href="/other/"></template>', None),  # not the document's: a browser ignores these
    ('<svg><base href="/other/"/></svg>', None),
    ('<math><base href="/other/"/></math>', None),
    ('<noscript><base href="/other/"></noscript>', None),
    ('<!-- <base href="/other/"> --><script>"<base href=/other/>"</script>', None),
    ('<base href="javascript:alert(1)">', None), ('<base href="data:text/html,x">', None),
    ('<base href="\u00a0/other/">', "http://site.test/t/0/%C2%A0/other/"),  # NBSP is no HTML space: a relative path
])
def test_a_pages_base_is_the_one_a_browser_takes(html, base):
    """A <base> in a <template>, <svg>, <math> or <noscript>, or one naming javascript: or data:,
    was taken as the page's base: a browser ignores them."""
    url = "http://site.test/t/0/"
    assert sites.page_base(Page(f"<html>{html}<p>x</p></html>", url)) == (base or url)


def test_a_page_too_long_to_read_is_not_parsed_for_its_base(monkeypatch):
    """page_base parsed a 30 MB page (9 s of CPU) before parse_page refused it for its length."""
    monkeypatch.setattr(sites, "MAX_PAGE_CHARS", 100)
    big = Page('<base href="/v2/">' + "x" * 200, "http://site.test/t/0/")
    assert sites.page_base(big) == big.url
    assert sites.page_base(Page(big.text[:100], big.url)) == "http://site.test/v2/"


def test_a_listing_that_lists_itself_without_end_is_cut_by_depth_and_budget(site, tmp_path, monkeypatch):
    monkeypatch.setattr(sites, "MAX_PAGES", 40)
    count = 0

    async def fan_out(request):
        nonlocal count
        count += 1
        n = count
        await asyncio.sleep(1.0)  # slower than the good branch, which must not lose the race for the budget
        links = [(f"/loop?n={n}-{j}", "more") for j in range(3)]
        return await body(listing(links), "text/html")(request)

    site.routes["/"] = body(listing([("/loop?n=0", "L"), ("/e/0", "E")]), "text/html")
    site.routes["/loop"] = fan_out
    site.routes["/e/0"] = body(listing([("/m/0", "M")]), "text/html")
    site.routes["/m/0"] = body(listing([("/p/0", "P")]), "text/html")
    site.routes["/p/0"] = body(listing([("/c/0", "C")]), "text/html")
    site.routes["/c/0"] = body(listing([("/t/0", "T")]), "text/html")
    site.routes["/t/0"] = body(mesa("/img/0.jpg", 0), "text/html")
    site.routes["/img/0.jpg"] = body(jpeg(0))
    out = tmp_path / "m"
    result = crawl_bounded(site.url + "/", out, discover="html", bound=60)
    assert sum(n for p, n in site.hits.items() if p.startswith("/loop")) <= 40
    assert any(f["cause"] == "walk limit" for f in result.failures), result.failures
    assert_sound(out, [key_of(0)])


def _cne(links: list[str]) -> str:
    rows = "".join(f'<tr><td><a href="{h}">x</a></td></tr>' for h in links)
    return f'<html><body><table id="tablaResultados">{rows}</table></body></html>'


def test_a_chain_of_new_pages_is_cut_at_the_depth_limit(site, tmp_path):
    # cne pages say their level by their code's length: a code that never reaches a table's
    # 11 digits makes every page a listing, one level deeper than the last
    site.routes["/r/0/reg_000000.html"] = body(_cne(["/r/1/reg_100.html", "/r/5/reg_01010100001.html"]), "text/html")
    for n in range(100, 130):
        site.routes[f"/r/1/reg_{n}.html"] = body(_cne([f"/r/1/reg_{n + 1}.html"]), "text/html")
    site.routes["/r/5/reg_01010100001.html"] = body('<table id="tablaResultados"></table><a id="acta" href="/img/0.jpg">acta</a>',
                                                    "text/html")
    site.routes["/img/0.jpg"] = body(jpeg(0))
    out = tmp_path / "m"
    result = asyncio.run(asyncio.wait_for(crawl(CrawlOptions(site="cne", root=site.url, out=str(out))), BOUND))
    assert sum(n for p, n in site.hits.items() if p.startswith("/r/1/")) == sites.MAX_DEPTH
    assert [f["cause"] for f in result.failures] == ["walk limit"]
    assert_sound(out, [key_of(0)])


def test_a_walk_survives_an_unexpected_exception_in_a_page_visit():
    seen = []

    def visit(url, html, context):
        seen.append(url)
        if url == "b":
            raise KeyError("no such thing")
        return ([("b", ()), ("c", ())], []) if url == "a" else ([], [])

    async def get_page(url):
        return Page("<html></html>", url)

    reports = []

    async def go():
        return [a async for a in sites.walk_pages([("a", ())], visit, get_page, lambda *r: reports.append(r))]

    assert asyncio.run(asyncio.wait_for(go(), 10)) == []
    assert sorted(seen) == ["a", "b", "c"]
    assert reports and reports[0][0] == "b" and "KeyError" in reports[0][1]


def test_pages_are_parsed_off_the_event_loop():
    threads = set()

    def visit(url, html, context):
        threads.add(threading.get_ident())
        return [], []

    async def get_page(url):
        return Page("<html></html>", url)

    async def go():
        loop_thread = threading.get_ident()
        [a async for a in sites.walk_pages([("a", ()), ("b", ())], visit, get_page, lambda *r: None)]
        return loop_thread

    loop_thread = asyncio.run(asyncio.wait_for(go(), 10))
    assert threads and loop_thread not in threads


# -- 6: an image is an image -----------------------------------------------------------------
def _fakes() -> dict[str, bytes]:
    real = jpeg(7)
    whole_png = png(3)
    return {
        "png-html": b"\x89PNG\r\n\x1a\n<!DOCTYPE html><html><body><h1>Access denied</h1></body></html>",
        "jpeg-random": b"\xff\xd8\xff" + bytes((i * 7919 + 13) % 256 for i in range(4000)) + b"\xff\xd9",
        "polyglot": real[:2] + b"\xff\xfe\x00\x3f<html><script>location='http://x/'</script></html>"
                    + b" " * 10 + real[2:],
        "png-half": whole_png[:len(whole_png) // 2],
    }


def test_fake_images_are_refused_and_real_ones_kept(site, tmp_path):
    rows = site.good_actas(3)
    fakes = _fakes()
    for n, (name, data) in enumerate(fakes.items()):
        site.routes[f"/img/{name}.jpg"] = body(data, "image/png" if name.startswith("png") else "image/jpeg")
        rows.append(index_row(40 + n, f"{site.url}/img/{name}.jpg"))
    junk = jpeg(8) + bytes(10 * 1024 * 1024)
    site.routes["/img/junk.jpg"] = body(junk)
    rows.append(index_row(8, f"{site.url}/img/junk.jpg"))
    site.routes["/img/tor.jpg"] = split(jpeg(9), 2)
    rows.append(index_row(9, f"{site.url}/img/tor.jpg"))
    site.serve_index(rows)
    out = tmp_path / "m"
    result = crawl_bounded(site.url, out, retry_attempts=2)
    failed = failures(out)
    assert {u.rsplit("/", 1)[1] for u in failed} == {f"{n}.jpg" for n in fakes}, failed
    causes = {u.rsplit("/", 1)[1]: f["cause"] for u, f in failed.items()}
    assert causes["png-html.jpg"] == "HTML instead of an image"
    assert causes["polyglot.jpg"] == "polyglot"
    assert causes["png-half.jpg"] == "truncated image"
    assert causes["jpeg-random.jpg"] == "not an image"
    assert result.counters.archived == 5
    kept = archived(out)
    assert kept[key_of(8)][0].trailing_bytes == 10 * 1024 * 1024  # kept, as served, and flagged
    assert kept[key_of(9)][0].trailing_bytes == 0
    assert_sound(out, [key_of(i) for i in (0, 1, 2, 8, 9)])


def test_the_check_reads_structure_not_magic_bytes():
    for data in _fakes().values():
        with pytest.raises(NotImage):
            check_bytes(data)
    assert check_bytes(jpeg(1)).kind == "image/jpeg" and check_bytes(png(1)).kind == "image/png"
    from PIL import Image
    progressive = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(progressive, "JPEG", progressive=True)
    assert check_bytes(progressive.getvalue()).trailing == 0
    real = sorted((ROOT / "mirror/replay/data/resultados2024/actas").glob("*.jpg"))
    assert len(real) == 20, "the real actas the project carries"
    for path in real:
        assert check_bytes(path.read_bytes()).kind == "image/jpeg", path
    small = bytearray(jpeg(3))  # a frame header claiming far more pixels than the scan holds
    sof = small.find(b"\xff\xc0")
    small[sof + 5:sof + 9] = (4000).to_bytes(2, "big") * 2
    with pytest.raises(NotImage, match="cannot hold"):
        check_bytes(bytes(small))


def _without(data: bytes, marker: int) -> bytes:
    """A JPEG with every segment of one kind removed (up to the first scan)."""
    out, pos = bytearray(data[:2]), 2
    while data[pos + 1] != 0xDA:
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if data[pos + 1] != marker:
            out += data[pos:pos + 2 + length]
        pos += 2 + length
    return bytes(out + data[pos:])


def test_an_unusual_structure_is_decoded_and_a_broken_one_refused(site, tmp_path):
    rows = site.good_actas(2)
    no_dht = _without(jpeg(5), 0xC4)  # Motion-JPEG style: decodes with the standard tables
    no_dqt = _without(jpeg(6), 0xDB)  # no quantization table: structure fine, no decoder takes it
    assert check_bytes(no_dht).needs_decode and check_bytes(no_dqt).needs_decode
    site.routes["/img/5.jpg"], site.routes["/img/6.jpg"] = body(no_dht), body(no_dqt)
    site.serve_index(rows + [index_row(5, f"{site.url}/img/5.jpg"), index_row(6, f"{site.url}/img/6.jpg")])
    out = tmp_path / "m"
    result = crawl_bounded(site.url, out)
    assert [(f["url"].rsplit("/", 1)[1], f["cause"]) for f in result.failures] == [("6.jpg", "not an image")]
    assert "does not decode" in result.failures[0]["reason"]
    assert_sound(out, [key_of(0), key_of(1), key_of(5)])


# -- 7: a host that says stop is left alone ----------------------------------------------------
@pytest.mark.parametrize("answer", [status(429, **{"Retry-After": "999999"}), status(503)], ids=["429-wait", "503"])
def test_a_host_that_says_stop_trips_its_breaker(site, other_host, tmp_path, answer, monkeypatch):
    monkeypatch.setattr(fetch, "BREAKER_SECONDS", 0.0)  # production waits 30 s of nothing but 429/503
    rows = []
    for i in range(40):
        site.routes[f"/img/{i}.jpg"] = answer
        rows.append(index_row(i, f"{site.url}/img/{i}.jpg"))
    for i in range(40, 43):  # the same site's CDN is fine
        other_host.routes[f"/img/{i}.jpg"] = body(jpeg(i))
        rows.append(index_row(i, f"{other_host.url}/img/{i}.jpg"))
    site.serve_index(rows)
    out = tmp_path / "m"
    result = crawl_bounded(site.url, out, bound=60, allow_hosts=("127.0.0.2",))
    asked = sum(n for p, n in site.hits.items() if p.startswith("/img/"))
    assert asked <= 40, f"{asked} requests for 40 images from a host that said stop"
    deferred = [f for f in result.failures if f["cause"] == "deferred: host breaker"]
    assert len(deferred) + sum(f["cause"].startswith("HTTP") for f in result.failures) == 40
    assert len(deferred) >= 20 and "127.0.0.1" in deferred[0]["reason"]
    assert any(f["attempts"] == 0 for f in deferred)  # the rest were not even asked
    assert result.counters.deferred == len(deferred)
    assert_sound(out, [key_of(i) for i in range(40, 43)])



def test_a_host_that_cannot_be_reached_trips_its_breaker(site, other_host, tmp_path, monkeypatch):
    """A site taken down (here: a port bound but never listening, so every connection is
    refused) is asked about BREAKER_STRIKES times, not six times per acta with backoff."""
    monkeypatch.setattr(fetch, "BREAKER_SECONDS", 0.0)  # production waits 30 s of nothing but refusals
    dead = socket.socket()
    dead.bind(("127.0.0.3", 0))  # held, never listened on: connect() is refused
    try:
        rows = [index_row(i, f"http://127.0.0.3:{dead.getsockname()[1]}/img/{i}.jpg") for i in range(60)]
        for i in range(60, 63):  # the site's other host is fine, and stays asked
            other_host.routes[f"/img/{i}.jpg"] = body(jpeg(i))
            rows.append(index_row(i, f"{other_host.url}/img/{i}.jpg"))
        site.serve_index(rows)
        out = tmp_path / "m"
        result = crawl_bounded(site.url, out, bound=60, allow_hosts=("127.0.0.2", "127.0.0.3"))
    finally:
        dead.close()
    deferred = [f for f in result.failures if f["cause"] == "deferred: host breaker"]
    refused = [f for f in result.failures if f["cause"] == "connection refused"]
    assert len(deferred) + len(refused) == 60
    assert deferred and all("127.0.0.3" in f["reason"] and "got no answer" in f["reason"] for f in deferred)
    assert "connection refused" in deferred[0]["reason"]
    asked = sum(f["attempts"] for f in result.failures)
    assert asked <= fetch.BREAKER_STRIKES + 2 * 16, f"{asked} requests to a host that refused every one"
    assert any(f["attempts"] == 0 for f in deferred)  # the rest were not even asked
    assert_sound(out, [key_of(i) for i in range(60, 63)])


def test_a_tarpit_that_sends_headers_then_nothing_trips_its_breaker(site, other_host, tmp_path, monkeypatch):
    """A host that answers every request's headers at once and then stalls its body is no
    better than one that does not answer: it is asked about BREAKER_STRIKES times and left
    alone, not asked six times per acta, each until the timeout."""
    monkeypatch.setattr(fetch, "BREAKER_SECONDS", 0.0)  # production waits 30 s of nothing whole
    with HostileSite("127.0.0.3") as tarpit:
        rows = []
        for i in range(60):
            tarpit.routes[f"/img/{i}.jpg"] = drip(jpeg(i), 3600.0)  # 16 bytes, then one an hour
            rows.append(index_row(i, f"{tarpit.url}/img/{i}.jpg"))
        for i in range(60, 63):  # the site's other host is fine, and stays asked
            other_host.routes[f"/img/{i}.jpg"] = body(jpeg(i))
            rows.append(index_row(i, f"{other_host.url}/img/{i}.jpg"))
        site.serve_index(rows)
        out = tmp_path / "m"
        result = crawl_bounded(site.url, out, timeout=1.0, allow_hosts=("127.0.0.2", "127.0.0.3"))
    deferred = [f for f in result.failures if f["cause"] == "deferred: host breaker"]
    assert len(result.failures) == 60 and deferred, result.failures
    assert all("127.0.0.3" in f["reason"] and "none whole" in f["reason"] for f in deferred), deferred[0]
    asked = sum(f["attempts"] for f in result.failures)
    assert asked <= fetch.BREAKER_STRIKES + 2 * 16, f"{asked} requests to a host that stalled every body"
    assert_sound(out, [key_of(i) for i in range(60, 63)])


def test_one_answer_starts_the_count_of_unreached_requests_again(monkeypatch):
    """Refusals with answers between them never add up to a trip."""
    monkeypatch.setattr(fetch, "BREAKER_SECONDS", 0.0)
    from mirror.transfer import TransferError

    async def go():
        async with fetch.Fetcher() as fetcher:
            host = fetcher._host("example.org")
            refused = TransferError("refused", "connection refused")
            for _ in range(3):
                for _ in range(fetch.BREAKER_STRIKES - 1):
                    fetcher._unreached(host, "example.org", refused, "http://example.org/a")
                fetcher._answered(host)
            assert not host.tripped
            for _ in range(fetch.BREAKER_STRIKES - 1):
                fetcher._unreached(host, "example.org", refused, "http://example.org/a")
            with pytest.raises(Deferred):
                fetcher._unreached(host, "example.org", refused, "http://example.org/a")
            assert host.tripped.startswith(f"{fetch.BREAKER_STRIKES} requests in a row got no answer")
    asyncio.run(go())

def test_the_deadline_stops_the_run_cleanly_and_the_next_run_resumes(site, tmp_path):
    serve_with_slow_tail(site, 3, 8)
    out = tmp_path / "m"
    proc = run_cli("crawl", "resultados2024", "--root", site.url, "--out", str(out), "--quiet",
                   "--deadline", "3", "--concurrency", "4", timeout=60)
    assert proc.returncode == 1, proc.stderr
    late = failures(out)
    assert {u.rsplit("/", 1)[1] for u in late} == {f"{i}.jpg" for i in range(3, 8)}
    assert {f["cause"] for f in late.values()} == {"deadline"}
    assert_sound(out, [key_of(i) for i in range(3)])
    for i in range(3, 8):
        site.routes[f"/img/{i}.jpg"] = body(jpeg(i))
    again = run_cli("crawl", "resultados2024", "--root", site.url, "--out", str(out), "--quiet", "--deadline", "30")
    assert again.returncode == 0, again.stderr
    assert_sound(out, [key_of(i) for i in range(8)])


def test_a_deadline_in_the_job_file_and_an_infinite_timeout(site, tmp_path):
    site.serve_index(site.good_actas(2))
    job = tmp_path / "job.toml"
    job.write_text(f'[source]\nsite = "resultados2024"\nroot = "{site.url}"\n[fetch]\ntimeout = inf\n')
    bad = run_cli("run", str(job), "--no-publish")
    assert bad.returncode == 2 and "fetch.timeout" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert run_cli("crawl", "resultados2024", "--root", site.url, "--out", str(tmp_path / "x"),
                   "--timeout", "inf").returncode == 2
    job.write_text(f'[source]\nsite = "resultados2024"\nroot = "{site.url}"\n[fetch]\ndeadline = 30\n')
    ok = run_cli("run", str(job), "--no-publish")
    assert ok.returncode == 0, ok.stderr
    assert_sound(tmp_path / "mirror", [key_of(0), key_of(1)])


# -- 8: where images may come from ---------------------------------------------------------------
def test_redirects_and_rows_to_other_hosts_are_refused(site, other_host, tmp_path):
    rows = site.good_actas(2)
    other_host.routes["/evil.jpg"] = body(jpeg(66))
    targets = {
        "to-other": redirect(f"{other_host.url}/evil.jpg"),
        "to-ipv6": redirect("http://[::1]:9/evil.jpg"),
        "to-metadata": redirect("http://169.254.169.254/latest/meta-data/"),
        "to-file": redirect("file:///etc/passwd"),
    }
    for n, (name, handler) in enumerate(targets.items()):
        site.routes[f"/img/{name}.jpg"] = handler
        rows.append(index_row(10 + n, f"{site.url}/img/{name}.jpg"))
    rows.append(index_row(20, f"{other_host.url}/evil.jpg"))
    rows.append(index_row(21, "ftp://127.0.0.1/x.jpg"))
    site.serve_index(rows)
    out = tmp_path / "m"
    crawl_bounded(site.url, out)
    failed = failures(out)
    causes = {u.rsplit("/", 1)[1]: f["cause"] for u, f in failed.items()}
    assert causes == {"to-other.jpg": "off-site redirect", "to-ipv6.jpg": "off-site redirect",
                      "to-metadata.jpg": "off-site redirect", "to-file.jpg": "unsupported scheme",
                      "evil.jpg": "off-site URL", "x.jpg": "unsupported scheme"}, failed
    assert failed["ftp://127.0.0.1/x.jpg"]["attempts"] == 0  # refused at once, never sent nor retried
    assert sum(other_host.hits.values()) == 0
    assert_sound(out, [key_of(0), key_of(1)])


def test_a_declared_cdn_is_followed_with_every_hop_recorded_and_bad_addresses_refused(site, other_host, tmp_path):
    rows = site.good_actas(1)
    other_host.routes["/cdn/5.jpg"] = body(jpeg(5))
    site.routes["/img/5.jpg"] = redirect("/hop/5.jpg")
    site.routes["/hop/5.jpg"] = redirect(f"{other_host.url}/cdn/5.jpg", 301)
    rows.append(index_row(5, f"{site.url}/img/5.jpg"))
    rows.append(index_row(6, "http://169.254.169.254/latest/meta-data/"))
    site.serve_index(rows)
    out = tmp_path / "m"
    result = crawl_bounded(site.url, out, allow_hosts=("127.0.0.2", "169.254.169.254"))
    assert [f["cause"] for f in result.failures] == ["blocked address"]
    entry = archived(out)[key_of(5)][0]
    assert entry.redirects == (f"{site.url}/img/5.jpg", f"{site.url}/hop/5.jpg")
    assert entry.final_url == f"{other_host.url}/cdn/5.jpg" and entry.host == "127.0.0.2"
    assert_sound(out, [key_of(0), key_of(5)])


def test_a_name_that_resolves_to_a_blocked_address_is_refused(site, tmp_path):
    site.routes["/img/0.jpg"] = body(jpeg(0))
    port = site.url.rsplit(":", 1)[1]

    async def go():
        # a public root (by name; nothing is asked of it) that declares "localhost" as a CDN
        policy = HostPolicy.for_root("http://results.example/", extra_hosts=("localhost",))
        async with Fetcher(policy=policy, tmp_dir=str(tmp_path)) as fetcher:
            with pytest.raises(FetchError) as refused:
                await fetcher.fetch(f"http://localhost:{port}/img/0.jpg")
        return refused.value

    refused = asyncio.run(asyncio.wait_for(go(), 30))
    assert refused.cause == "blocked address" and "loopback" in refused.reason
    assert refused.attempts == 1 and site.hits["/img/0.jpg"] == 0


# -- 9: many URLs, one acta ---------------------------------------------------------------------
def test_one_acta_under_many_urls_is_one_version(site, tmp_path):
    rows = site.good_actas(2)
    for j in range(200):
        site.routes[f"/dup/{j}.jpg"] = body(jpeg(500 + j))
        rows.append(index_row(77, f"{site.url}/dup/{j}.jpg"))
    site.serve_index(rows)
    out = tmp_path / "m"
    result = crawl_bounded(site.url, out)
    versions = archived(out)[key_of(77)]
    assert len(versions) == 1 and versions[0].url == f"{site.url}/dup/0.jpg"  # the first listed, always
    assert sum(n for p, n in site.hits.items() if p.startswith("/dup/")) <= 4
    causes = [f["cause"] for f in result.failures]
    assert causes.count("too many URLs") == 196 and causes.count("too many versions") == 3
    assert_sound(out, [key_of(0), key_of(1), key_of(77)])


def test_bytes_that_change_on_every_request_do_not_add_a_version_per_run(site, tmp_path):
    rows = site.good_actas(1)
    site.routes["/img/shifty.jpg"] = changing()
    rows.append(index_row(88, f"{site.url}/img/shifty.jpg"))
    site.serve_index(rows)
    out = tmp_path / "m"
    for _ in range(3):
        result = crawl_bounded(site.url, out)
    assert len(archived(out)[key_of(88)]) == 1
    assert [f["cause"] for f in result.failures] == ["unstable bytes"]
    assert_sound(out, [key_of(0), key_of(88)])


# -- 10 and issue 13: no tracebacks ---------------------------------------------------------------
def test_broken_links_odd_charsets_and_odd_index_urls_give_no_traceback(site, tmp_path):
    site.routes["/"] = body(listing([("http://[::1/x", "broken"), ("/e/0", "E")]), "text/html; charset=idna")
    site.routes["/e/0"] = body(listing([("/m/0", "M")]), "text/html")
    site.routes["/m/0"] = body(listing([("/p/0", "P")]), "text/html")
    site.routes["/p/0"] = body(listing([("/c/0", "C")]), "text/html")
    site.routes["/c/0"] = body(listing([("/t/0", "T")]), "text/html")
    site.routes["/t/0"] = body(mesa("http://[::1/img.jpg", 0), "text/html")
    out = tmp_path / "m"
    proc = run_cli("crawl", "resultados2024", "--root", site.url + "/", "--out", str(out), "--quiet",
                   "--discover", "html")
    assert proc.returncode == 1, proc.stderr
    causes = sorted(f["cause"] for f in failures(out).values())
    assert causes == ["invalid URL", "invalid URL"], causes
    assert verify(out) == []
    # an index URL ending in "/.": archived under a safe name, a valid bag
    rows = site.good_actas(2)
    site.routes["/"] = site.routes["/."] = body("".join(["COD_EDO,EDO,COD_MUN,MUN,COD_PAR,PAR,CENTRO,MESA,URL\n", *rows]), "text/csv")
    idx = tmp_path / "i"
    proc = run_cli("crawl", "resultados2024", "--root", site.url, "--index", site.url + "/.", "--out", str(idx),
                   "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert (idx / "data/index/index.csv").is_file()
    assert_sound(idx, [key_of(0), key_of(1)])
    for root in ("http://[::1", "http://h:x/", "http://"):
        bad = run_cli("crawl", "resultados2024", "--root", root, "--out", str(tmp_path / "bad"), "--quiet")
        assert bad.returncode == 2 and "--root must be" in bad.stderr


@pytest.mark.parametrize("charset", ["utf-7", "unicode-escape"])
def test_pages_in_a_charset_that_decodes_to_lone_surrogates_are_read_as_utf8(site, tmp_path, charset):
    """UTF-7 (which no browser reads) and the escape codecs make a lone surrogate of some
    bytes even when told to replace what they cannot read, and no parser or UTF-8 file takes
    one: a listing in one ended the crawl in a traceback from the HTML parser. Such a page is
    read as UTF-8 (as one whose charset names no text codec is): every acta is archived, the
    mirror verifies, and the odd bytes are kept as they were sent."""
    odd = "+2AA-" if charset == "utf-7" else "\\ud800"  # a lone U+D800 in that charset
    site.routes["/img/0.jpg"] = body(jpeg(0))
    site.routes["/"] = body(listing([("/e/0", f"E {odd}X")]), f"text/html; charset={charset}")
    site.routes["/e/0"] = body(listing([("/m/0", f"M {odd}")]), f"text/html; charset={charset}")
    site.routes["/m/0"] = body(listing([("/p/0", "P")]), "text/html")
    site.routes["/p/0"] = body(listing([("/c/0", "C")]), "text/html")
    site.routes["/c/0"] = body(listing([("/t/0", "T")]), "text/html")
    site.routes["/t/0"] = body(mesa("/img/0.jpg", 0), f"text/html; charset={charset}")
    out = tmp_path / "m"
    proc = run_cli("crawl", "resultados2024", "--root", site.url + "/", "--out", str(out), "--quiet",
                   "--discover", "html")
    assert proc.returncode == 0, proc.stderr
    assert_sound(out, [key_of(0)])
    (entry,) = archived(out)[key_of(0)]
    assert (entry.state, entry.municipality) == (f"E {odd}X", f"M {odd}")
    # the CSV index is read as UTF-8 whatever it declares: the same bytes there are plain text
    rows = site.good_actas(2)
    rows[1] = rows[1].replace("PQ. ALTAGRACIA", f"PQ. {odd}ALTAGRACIA")
    site.routes["/RESULTADOS_2024_CSV_V1.csv"] = body(HEADER + "".join(rows), f"text/csv; charset={charset}")
    out = tmp_path / "csv"
    proc = run_cli("crawl", "resultados2024", "--root", site.url, "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert_sound(out, [key_of(0), key_of(1)])
    assert archived(out)[key_of(1)][0].parish == f"PQ. {odd}ALTAGRACIA"


# -- fuzz: the image check is a parser of outside input ------------------------------------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_EXAMPLES = int(os.environ.get("ACTA_MIRROR_FUZZ_EXAMPLES", "300"))
_SEEDS = [jpeg(1), png(2), b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n"]


def _judge(data: bytes, cuts: list[int]):
    from mirror.imagecheck import ImageCheck
    check, last = ImageCheck(), 0
    try:
        for cut in sorted(c % (len(data) + 1) for c in cuts) + [len(data)]:
            check.feed(data[last:cut])
            last = cut
        return check.finish()
    except NotImage as exc:
        return exc.cause


def test_a_real_acta_is_judged_the_same_however_its_scan_arrives():
    """The check searches the compressed data where it lies while nothing is held back: cut
    after a 0xFF (whose next byte decides), inside the end marker, one byte at a time around
    it, or in a large piece, the verdict is the whole file's."""
    for path in sorted((ROOT / "mirror/replay/data/resultados2024/actas").glob("*.jpg"))[:4]:
        data = path.read_bytes()
        whole = _judge(data, [])
        assert whole == check_bytes(data) and whole.kind == "image/jpeg"
        end = data.rindex(b"\xff\xd9")
        ffs = [i + 1 for i in range(len(data) // 2, end) if data[i] == 0xFF][:3]
        assert ffs, path  # stuffed bytes in the scan: a piece can end on one
        for cuts in ([16384], [16384, 16384 + 262144], ffs, [end + 1], [end, end + 1, end + 2],
                     list(range(end - 3, end + 3)), [16384, *ffs, end + 1]):
            assert _judge(data, cuts) == whole, (path.name, cuts)
        assert _judge(data[:end + 1], [16384, end]) == "truncated image"  # a cut inside the end marker
        from mirror.imagecheck import ImageCheck
        again = ImageCheck()
        for piece in (data, b"", b"ju", b"", b"nk"):  # an empty piece counts nothing; junk after the end counts once
            again.feed(piece)
        assert again.finish().trailing == check_bytes(data + b"junk").trailing == whole.trailing + 4


@settings(max_examples=_EXAMPLES, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.sampled_from(_SEEDS), edits=st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), max_size=6),
       cut=st.integers(0, 4000), tail=st.binary(max_size=64), cuts=st.lists(st.integers(0, 5000), max_size=8))
def test_the_image_check_never_crashes_and_ignores_how_bytes_arrive(seed, edits, cut, tail, cuts):
    data = bytearray(seed)
    for pos, value in edits:
        if data:
            data[pos % len(data)] = value
    data = bytes(data[:cut] if cut < len(data) else data) + tail
    whole = _judge(data, [])
    assert whole == _judge(data, cuts)  # a Verdict or a NotImage cause, the same however chunked


_ACTAS = sorted((ROOT / "mirror/replay/data/resultados2024/actas").glob("*.jpg"))[:6]
_POLYGLOT = b"\xff\xfe\x00\x1a<html><script>x</script>zz"  # a comment segment holding markup


@settings(max_examples=min(_EXAMPLES, 60), deadline=5000, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.integers(0, 5),
       edit=st.sampled_from(["none", "ff", "rst", "fill", "eoi", "cut", "tail", "polyglot", "marker"]),
       where=st.floats(0.05, 0.999), tail=st.binary(max_size=40),
       cuts=st.lists(st.integers(0, 300_000), max_size=10), near=st.lists(st.integers(-3, 3), max_size=4))
def test_a_real_acta_is_judged_the_same_fed_in_pieces_at_any_offsets(which, edit, where, tail, cuts, near):
    """Hostile edits of a real acta's scan (a 0xFF at a piece's end, restart markers, 0xFF fill, an
    end marker early or cut, junk after it, markup in a segment straddling the pieces, a stray
    marker mid-scan), cut anywhere and fed piece by piece: the verdict is the whole file's."""
    data = _ACTAS[which].read_bytes()
    end = data.rindex(b"\xff\xd9")
    scan = data.index(b"\xff\xda")
    at = scan + 20 + int((end - scan - 20) * where)
    inserted = {"none": b"", "ff": b"\xff", "rst": b"\xff\xd3", "fill": b"\xff\xff\xff", "eoi": b"\xff\xd9",
                "polyglot": _POLYGLOT, "marker": b"\xff\xc4\x00\x02", "cut": b"", "tail": b""}[edit]
    if edit == "cut":
        data = data[:at]
    elif edit == "tail":
        data = data + tail
    else:
        data = data[:at] + inserted + data[at:]
    ff = data.find(b"\xff", at)  # a piece ending on a 0xFF in the scan: the next byte decides
    cuts = [*cuts, *(at + d for d in near), *(end + d for d in near), *([ff + 1] if ff > 0 else [])]
    whole = _judge(data, [])
    assert _judge(data, cuts) == whole, (edit, cuts)
    if edit == "polyglot":
        assert whole == "polyglot"
    if edit in ("cut", "eoi"):
        assert whole in ("truncated image", "not an image") or whole.trailing > 0


def test_fill_bytes_before_a_marker_change_no_verdict_and_are_held_back_at_most_once():
    """Any number of 0xFF fill bytes may come before a marker. Runs of them between a real acta's
    segments, cut anywhere or fed a few bytes at a time, leave the verdict the acta's own; and the
    check holds back at most one of them while it waits for more, so a hostile body of fill
    trickled in small pieces is read once, not once for every piece that follows (it was held
    whole, and searched again at every piece: seconds of the event loop for 2 MiB)."""
    from mirror.imagecheck import ImageCheck
    data = _ACTAS[0].read_bytes()
    whole = _judge(data, [])
    scan = data.index(b"\xff\xda")
    for at in (2, scan):  # after the start of image; before the scan header
        filled = data[:at] + b"\xff" * 5000 + data[at:]
        for cuts in ([], [at + 1, at + 2, at + 3], list(range(at, at + 5003, 7)), [at + 4999, at + 5000, at + 5001]):
            assert _judge(filled, cuts) == whole, (at, cuts[:5])
    check = ImageCheck()
    check.feed(b"\xff\xd8")
    for _ in range(2000):
        check.feed(b"\xff" * 16)
        assert len(check._buf) <= 1
    check.feed(b"\xff" * 100 + b"\xdb\x00\x43" + b"q" * 10)  # a marker, then part of its segment
    assert len(check._buf) <= 1 + 3 + 10
    assert _judge(b"\xff\xd8" + b"\xff" * 40_000, list(range(0, 40_002, 16))) == "truncated image"


def test_bodies_checked_piece_by_piece_keep_their_verdict(site, tmp_path, monkeypatch):
    """A body is checked, hashed and written piece by piece as it comes (here in 16 KB pieces):
    a real acta with junk after its end keeps its size and trailing count, markup past the first
    pieces (and straddling a piece boundary) is still refused as a polyglot, an early end marker
    left alone, a cut one refused; each time no temp file is left but the kept one."""
    monkeypatch.setattr(transfer, "BUFFER_BYTES", 16 * 1024)
    monkeypatch.setattr(fetch, "BACKOFF_BASE", 0.0)  # a cut file is retried: at once
    data = _ACTAS[0].read_bytes()
    scan = data.index(b"\xff\xda") + 20
    at = 81_920 - 16  # pieces of 16 KB: the markup straddles the fifth boundary
    cases = {"/ok.jpg": data + b"junk" * 3000, "/poly.jpg": data[:at] + _POLYGLOT + data[at:],
             "/cut.jpg": data[:-1], "/small.jpg": data[:scan + 2000] + b"\xff\xd9",
             "/early.jpg": data[:at] + _POLYGLOT + data[at:] * 12}  # refused before it is read whole
    for path, raw in cases.items():
        site.routes[path] = body(raw)
    read: dict[str, int] = {}
    write = fetch._Body.write

    def counted(self, chunk):
        read[self.url.rsplit("/", 1)[1]] = self.size + len(chunk)
        write(self, chunk)
    monkeypatch.setattr(fetch._Body, "write", counted)

    async def go():
        got = {}
        async with Fetcher(policy=HostPolicy.for_root(site.url), tmp_dir=str(tmp_path)) as fetcher:
            for path in cases:
                try:
                    got[path] = await fetcher.fetch(site.url + path)
                except FetchError as exc:
                    got[path] = exc.cause
        return got

    got = asyncio.run(asyncio.wait_for(go(), 60))
    ok = got["/ok.jpg"]
    assert ok.size == len(cases["/ok.jpg"]) and ok.trailing_bytes == 12000 == check_bytes(cases["/ok.jpg"]).trailing
    assert Path(ok.tmp_path).read_bytes() == cases["/ok.jpg"]
    assert got["/poly.jpg"] == "polyglot" == _judge(cases["/poly.jpg"], [])
    assert got["/cut.jpg"] == "truncated image"
    assert got["/small.jpg"] == _judge(cases["/small.jpg"], []) == "not an image"  # the scan too small
    assert got["/early.jpg"] == "polyglot" and read["early.jpg"] <= at + len(_POLYGLOT) + 2 * 16384, read
    assert sorted(tmp_path.iterdir()) == [Path(ok.tmp_path)]
