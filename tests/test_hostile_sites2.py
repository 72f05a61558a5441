"""A second round against hostile sites and broken job files: bytes outside ASCII in headers both
ways, Retry-After in odd digits, job-file values no path or URL can hold.

Each test found a defect (fixed since) and runs the real command line against
tests/hostile_site.py on loopback; a traceback always fails it (run_cli).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from mirror.verify import verify
from tests.conftest import run_cli
from tests.hostile_site import HostileSite, body, index_row, jpeg, key_of, listing, mesa, raw, redirect, sequence
from tests.test_hostile_more import crawl, site  # noqa: F401 (a fixture)
from tests.test_hostile_site import archived, crawl_bounded

SECRET = "tok3n-S3CRET"


def failures(out: Path) -> list[dict]:
    path = out / "failures.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def one_line(proc) -> bool:
    return len(proc.stderr.strip().splitlines()) == 1


def write_job(tmp_path: Path, root: str, extra: str) -> Path:
    job = tmp_path / "job.toml"
    job.write_text(f"[source]\nsite = 'resultados2024'\nroot = '{root}'\n{extra}")
    return job


# -- a header value outside ASCII in a flag or a job file ---------------------------------------
@pytest.mark.parametrize("flags,needle", [(["--header", "Referer: https://example.org/año"], "--header"),
                                          (["--user-agent", "añejo/1.0"], "user_agent")], ids=["header", "user-agent"])
def test_a_header_outside_ascii_in_the_flags_is_refused_before_any_request(site, tmp_path, flags, needle):
    """Was: every request failed as 'unexpected UnicodeEncodeError', and the run ended with
    'cannot read the index ... check --root and the network': the user's typo blamed on the site."""
    site.serve_index(site.good_actas(1))
    proc = crawl(site.url, tmp_path / "m", *flags)
    assert proc.returncode == 2 and one_line(proc) and needle in proc.stderr, proc.stderr
    assert "network" not in proc.stderr and not site.hits and not (tmp_path / "m").exists()


@pytest.mark.parametrize("extra,key", [
    (f"[fetch]\nheaders = {{ Authorization = 'Bearer {SECRET}ñ' }}\n", "fetch.headers"),
    ("[fetch]\nuser_agent = 'añejo/1.0'\n", "fetch.user_agent"),
], ids=["header", "user-agent"])
def test_a_header_outside_ascii_in_a_job_file_is_one_line_naming_the_key(site, tmp_path, extra, key):
    site.serve_index(site.good_actas(1))
    job = write_job(tmp_path, site.url, extra + "[publish]\nallow_none = true\n[sign]\nrequired = false\n")
    proc = run_cli("run", str(job), "--no-publish", timeout=120)
    assert proc.returncode == 2 and one_line(proc) and key in proc.stderr and str(job) in proc.stderr, proc.stderr
    assert SECRET not in proc.stdout + proc.stderr and not site.hits


# -- validators with bytes outside ASCII ---------------------------------------------------------
def image_answer(data: bytes, *headers: bytes) -> bytes:
    head = b"".join(h + b"\r\n" for h in headers)
    return (b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: " + str(len(data)).encode() + b"\r\n"
            + head + b"\r\n" + data)


@pytest.mark.parametrize("validator", [b'ETag: "caf\xe9"', b"Last-Modified: Mon, 01 Jan 2024 00:00:00 GMT\xe9"],
                         ids=["etag", "last-modified"])
def test_a_validator_with_a_byte_outside_ascii_still_lets_a_changed_acta_in(site, tmp_path, validator):
    """RFC 9110 lets an ETag hold bytes 0x80-0xFF (obs-text). Was: the next run could not send it
    back (libcurl was handed a str of ASCII only), so that acta failed as 'unexpected error' on
    every later run and a changed upstream file never became a new version."""
    rows = site.good_actas(2)
    site.routes["/img/0.jpg"] = sequence(raw(image_answer(jpeg(0), validator)), raw(image_answer(jpeg(500), validator)))
    site.serve_index(rows)
    out = tmp_path / "m"
    first = crawl(site.url, out)
    assert first.returncode == 0, first.stdout + first.stderr
    second = crawl(site.url, out, "--json")
    assert second.returncode == 0 and failures(out) == [], second.stdout + second.stderr
    assert json.loads(second.stdout)["archived"] == 1
    versions = archived(out)[key_of(0)]
    assert len(versions) == 2 and len({v.sha256 for v in versions}) == 2 and verify(out) == []


# -- Retry-After in digits that are not ASCII ---------------------------------------------------
def test_a_retry_after_of_superscript_digits_is_a_retry_not_an_unexpected_error(site, tmp_path):
    """'²' (0xB2, a latin-1 byte) passes str.isdigit() but not float(). Was: the 503 became
    'unexpected error' and the acta was never asked again; now the header is ignored (as garbage)
    and the retry policy asks again."""
    rows = site.good_actas(2)
    site.routes["/img/1.jpg"] = sequence(raw(b"HTTP/1.1 503 Busy\r\nRetry-After: \xb2\r\nContent-Length: 0\r\n\r\n"),
                                         body(jpeg(1)))
    site.serve_index(rows)
    out = tmp_path / "m"
    proc = crawl(site.url, out)
    assert proc.returncode == 0 and failures(out) == [], proc.stdout + proc.stderr
    assert set(archived(out)) == {key_of(0), key_of(1)} and site.hits["/img/1.jpg"] == 2


# -- job-file values no path or URL can hold -------------------------------------------------------
NO_PUBLISH = "[publish]\nallow_none = true\n[sign]\nrequired = false\n"


@pytest.mark.parametrize("extra,key", [
    (f"[sign]\ntsa = 'http://archivist:{SECRET}@[::1'\nrequired = false\n[publish]\nallow_none = true\n", "sign.tsa"),
    ("[sign]\ntsa = 'ftp://127.0.0.1/tsa'\nrequired = false\n[publish]\nallow_none = true\n", "sign.tsa"),
], ids=["tsa-bad-ipv6", "tsa-not-http"])
def test_a_time_stamping_authority_that_is_no_url_fails_before_the_crawl(site, tmp_path, extra, key):
    """Was: the crawl ran, then the timestamp step raised ValueError (a traceback) or failed the
    run after the work was done."""
    site.serve_index(site.good_actas(1))
    job = write_job(tmp_path, site.url, extra)
    proc = run_cli("run", str(job), timeout=120)
    assert proc.returncode == 2 and one_line(proc) and key in proc.stderr and str(job) in proc.stderr, proc.stderr
    assert SECRET not in proc.stdout + proc.stderr and not site.hits


@pytest.mark.parametrize("extra,key", [
    ('[output]\ndir = "mirror\\u0000x"\n' + NO_PUBLISH, "output.dir"),
    ('[publish]\ncar = "x\\u0000.car"\nallow_none = true\n[sign]\nrequired = false\n', "publish.car"),
    ('[publish]\nmanifests = "state\\u0000"\nallow_none = true\n[sign]\nrequired = false\n', "publish.manifests"),
    ('hosts = ["cdn\\u0000.example"]\n' + NO_PUBLISH, "source.hosts"),
], ids=["output-dir", "car", "manifests", "hosts"])
def test_a_nul_in_a_job_files_string_is_one_line_naming_the_key(site, tmp_path, extra, key):
    """No path, URL or name holds a NUL. Was: a traceback (ValueError: embedded null byte) from
    whichever step first used the value, some of them after the crawl."""
    site.serve_index(site.good_actas(1))
    job = write_job(tmp_path, site.url, extra)
    proc = run_cli("run", str(job), timeout=120)
    assert proc.returncode == 2 and one_line(proc) and key in proc.stderr and str(job) in proc.stderr, proc.stderr
    assert not site.hits


# -- a redirect to another host -------------------------------------------------------------------
@pytest.fixture
def other_host():
    with HostileSite("127.0.0.2") as s:
        yield s


def _recording(asked: dict[str, dict]):
    """recording(name, n): a handler serving acta n's image that keeps the headers it was sent in asked[name]."""
    from aiohttp import web

    def recording(name: str, n: int):
        async def handle(request):
            asked[name] = dict(request.headers)
            return web.Response(body=jpeg(n), headers={"Content-Type": "image/jpeg"})
        return handle
    return recording


def test_credentials_in_headers_never_follow_a_redirect_to_another_host(site, other_host, tmp_path):
    """--header 'Authorization: ...' and 'Cookie: ...' are the user's credentials for the site.
    Was: sent on every hop, so a redirect to another allowed host (a CDN, the adapter's own
    image host) handed them over; now they go only to the origin (scheme, host, port) asked
    for, as curl and browsers do, and the file is still fetched."""
    asked: dict[str, dict] = {}
    recording = _recording(asked)

    other_host.routes["/img/1.jpg"] = recording("other", 1)
    site.routes["/img/1.jpg"] = redirect(f"{other_host.url}/img/1.jpg")
    site.routes["/img/2.jpg"] = redirect("/same/2.jpg")
    site.routes["/same/2.jpg"] = recording("same", 2)
    site.serve_index([index_row(1, f"{site.url}/img/1.jpg"), index_row(2, f"{site.url}/img/2.jpg")])
    out = tmp_path / "m"
    proc = crawl(site.url, out, "--allow-host", "127.0.0.2", "--header", f"Authorization: Bearer {SECRET}",
                 "--header", f"Cookie: sid={SECRET}", "--header", "Referer: https://example.org/")
    assert proc.returncode == 0 and set(archived(out)) == {key_of(1), key_of(2)}, proc.stdout + proc.stderr
    assert SECRET not in json.dumps(asked["other"]) and asked["other"]["Referer"] == "https://example.org/"
    assert asked["same"]["Authorization"] == f"Bearer {SECRET}" and asked["same"]["Cookie"] == f"sid={SECRET}"


def test_credentials_in_headers_go_to_the_roots_origin_alone_whatever_the_index_names(site, other_host, tmp_path):
    """The rule above held for redirects only: an index row naming an allowed CDN, or the root's
    own host on another port (plain HTTP beside an HTTPS root, say), was the origin asked for,
    so the user's Authorization and Cookie went there. Now they go to the root's scheme, host
    and port alone, however the site names a URL, and every file is still fetched."""
    asked: dict[str, dict] = {}
    recording = _recording(asked)

    with HostileSite("127.0.0.1") as port:  # the root's host, another port
        other_host.routes["/img/1.jpg"] = recording("other host", 1)
        port.routes["/img/2.jpg"] = recording("other port", 2)
        site.routes["/img/3.jpg"] = recording("root", 3)
        site.serve_index([index_row(1, f"{other_host.url}/img/1.jpg"), index_row(2, f"{port.url}/img/2.jpg"),
                          index_row(3, "img/3.jpg")])
        out = tmp_path / "m"
        proc = crawl(site.url, out, "--allow-host", "127.0.0.2", "--header", f"Authorization: Bearer {SECRET}",
                     "--header", f"Cookie: sid={SECRET}", "--header", "Referer: https://example.org/")
    assert proc.returncode == 0 and set(archived(out)) == {key_of(1), key_of(2), key_of(3)}, proc.stdout + proc.stderr
    for name in ("other host", "other port"):
        assert SECRET not in json.dumps(asked[name]) and asked[name]["Referer"] == "https://example.org/", name
    assert asked["root"]["Authorization"] == f"Bearer {SECRET}" and asked["root"]["Cookie"] == f"sid={SECRET}"


def test_an_index_moved_by_a_redirect_resolves_its_relative_urls_where_it_now_is(site, tmp_path):
    """The index 301s to /v2/, whose rows name images relative to it ('img/1.jpg'). They were
    resolved against the URL asked for, so the crawl archived /img/1.jpg, other and older
    images, as those tables' actas, and exited 0. Browsers, curl and wget resolve against
    where the bytes came from (RFC 3986 5.1.3): /v2/img/1.jpg. So does the crawl now (and a
    dry run reads the moved index too)."""
    import hashlib

    for i in range(1, 4):
        site.routes[f"/v2/img/{i}.jpg"] = body(jpeg(i))
        site.routes[f"/img/{i}.jpg"] = body(jpeg(40 + i))  # what the asked-for URL would have led to
    site.serve_index([index_row(i, f"img/{i}.jpg") for i in range(1, 4)], "/v2/RESULTADOS_2024_CSV_V1.csv")
    site.routes["/RESULTADOS_2024_CSV_V1.csv"] = redirect("/v2/RESULTADOS_2024_CSV_V1.csv", 301)
    out = tmp_path / "m"
    proc = crawl(site.url, out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = {key: entries[-1] for key, entries in archived(out).items()}
    assert {key: (e.url, e.sha256) for key, e in got.items()} == {
        key_of(i): (f"{site.url}/v2/img/{i}.jpg", hashlib.sha256(jpeg(i)).hexdigest()) for i in range(1, 4)}
    assert {e.page for e in got.values()} == {f"{site.url}/v2/RESULTADOS_2024_CSV_V1.csv"}
    plan = run_cli("crawl", "resultados2024", "--root", site.url, "--out", str(tmp_path / "dry"), "--dry-run")
    assert plan.returncode == 0 and "new: 3 of 3 would be downloaded" in plan.stdout, plan.stdout + plan.stderr


@pytest.mark.parametrize("discover", ["csv", "html"])
def test_relative_urls_in_what_an_alternate_served_resolve_on_the_site(site, tmp_path, discover):
    """With the root down, the index or pages come from an --alternate that copies the site
    under /mirror/. Their relative URLs were resolved against the alternate's URL, so each image
    (and each page) was asked at the alternate's top level first (a 404 each), and the records
    named URLs that exist nowhere. They resolve on the site's own host now, as the code before
    the redirect rule did: the fetcher asks the site, then the alternate under its path."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        root = f"http://127.0.0.1:{s.getsockname()[1]}"  # closed again: nothing listens there
    site.routes["/mirror/img/1.jpg"] = body(jpeg(1))
    site.serve_index([index_row(1, "img/1.jpg")], "/mirror/RESULTADOS_2024_CSV_V1.csv")
    site.routes["/mirror/"] = body(listing([("e/0", "E")]), "text/html")
    for page, child in (("e/0", "m/0"), ("m/0", "p/0"), ("p/0", "c/0"), ("c/0", "t/0")):
        site.routes[f"/mirror/{page}"] = body(listing([(f"/{child}", child)]), "text/html")  # root-relative, as a copy keeps them
    site.routes["/mirror/t/0"] = body(mesa("/img/1.jpg", 1), "text/html")
    out = tmp_path / "m"
    result = crawl_bounded(root + "/", out, alternates=(f"{site.url}/mirror",), discover=discover, retry_attempts=1)
    assert result.failures == [], result.failures
    entry = archived(out)[key_of(1)][-1]
    assert (entry.url, entry.final_url) == (f"{root}/img/1.jpg", f"{site.url}/mirror/img/1.jpg")
    assert entry.page.startswith(root + "/")  # the site's page, which the alternate copies
    assert all(path.startswith("/mirror/") for path in site.hits), site.hits  # nothing asked outside the copy


def test_a_redirect_with_a_body_that_never_ends_is_cut_off_at_a_small_cap(site, tmp_path):
    """A redirect's body is dropped, but was read whole: a 302 streaming for ever made libcurl take
    gigabytes per request, until the timeout, then again on each retry (max_bytes never applied).
    Now a redirect's body past fetch.REDIRECT_BODY_BYTES (1 MiB) is a 'too large' failure, not retried."""
    from aiohttp import web

    sent = [0]

    async def endless_redirect(request):
        resp = web.StreamResponse(status=302, headers={"Location": "/img/0.jpg", "Content-Type": "text/html"})
        await resp.prepare(request)
        try:
            while sent[0] < 1 << 30:  # a bound for the test itself; the client hangs up long before
                await resp.write(b"x" * 65536)
                sent[0] += 65536
        except ConnectionError:
            pass
        return resp

    rows = site.good_actas(1)
    site.routes["/img/r.jpg"] = endless_redirect
    site.serve_index(rows + [index_row(1, f"{site.url}/img/r.jpg")])
    out = tmp_path / "m"
    proc = crawl(site.url, out)
    assert proc.returncode == 1 and key_of(0) in archived(out), proc.stdout + proc.stderr
    (failure,) = failures(out)
    assert failure["cause"] == "too large" and failure["attempts"] == 1 and site.hits["/img/r.jpg"] == 1, failure
    assert sent[0] < 64 << 20  # what the socket buffers held when the client hung up


def test_an_answer_of_too_many_short_headers_is_named_and_asked_once(site, tmp_path):
    """6,000 headers of a few bytes each pass libcurl's cap on header bytes but not its cap on
    their number (curl error 100). Was: 'connection error', asked six times, like a network
    fault; now 'too large', as the header bomb of long headers already was."""
    J = jpeg(1)
    many = b"".join(b"X-%d: a\r\n" % i for i in range(6000))
    rows = site.good_actas(1)
    site.routes["/img/1.jpg"] = raw(b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n%s\r\n%s"
                                    % (len(J), many, J))
    site.serve_index(rows + [index_row(1, f"{site.url}/img/1.jpg")])
    out = tmp_path / "m"
    proc = crawl(site.url, out)
    assert proc.returncode == 1 and key_of(0) in archived(out), proc.stdout + proc.stderr
    (failure,) = failures(out)
    assert failure["cause"] == "too large" and site.hits["/img/1.jpg"] == 1, failure


# -- the workflow script's own flags -------------------------------------------------------------
def test_the_workflow_scripts_shard_flag_without_a_value_is_one_line_and_exit_2(tmp_path):
    """Was: IndexError, a traceback, from `mirror_job.py crawl JOB --shard`."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    job = write_job(tmp_path, "http://127.0.0.1:9", NO_PUBLISH)
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "mirror_job.py"), "crawl", str(job), "--shard"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and one_line(proc) and "--shard" in proc.stderr, proc.stderr
    assert not (tmp_path / "mirror").exists()


@pytest.mark.parametrize("value", ["Mon, 01 Jan 2024 00:00:00 +9999999999999999",
                                   "Mon, 01 Jan 99999999999 00:00:00 GMT"], ids=["offset", "year"])
def test_a_retry_after_date_out_of_every_range_is_a_retry_not_an_unexpected_error(site, tmp_path, value):
    """Was: OverflowError out of the date parser, so the 503 became 'unexpected error', never retried."""
    from tests.hostile_site import status

    rows = site.good_actas(2)
    site.routes["/img/1.jpg"] = sequence(status(503, **{"Retry-After": value}), body(jpeg(1)))
    site.serve_index(rows)
    out = tmp_path / "m"
    proc = crawl(site.url, out)
    assert proc.returncode == 0 and failures(out) == [], proc.stdout + proc.stderr
    assert set(archived(out)) == {key_of(0), key_of(1)} and site.hits["/img/1.jpg"] == 2


@pytest.mark.parametrize("service", [f"http://archivist:{SECRET}@[::1", "ftp://127.0.0.1/pins"], ids=["bad-ipv6", "ftp"])
def test_a_pinning_service_that_is_no_url_fails_before_the_crawl(site, tmp_path, service):
    """Was: the crawl and the upload ran, then the pin failed as 'an answer that is not the
    Pinning Services API' (or an aiohttp error): the job file's typo found an hour late."""
    site.serve_index(site.good_actas(1))
    job = write_job(tmp_path, site.url, f"[publish]\nipfs = ['ipfs://127.0.0.1:9']\npin_service = '{service}'\n"
                                        "[sign]\nrequired = false\n")
    proc = run_cli("run", str(job), timeout=120)
    assert proc.returncode == 2 and one_line(proc) and "publish.pin_service" in proc.stderr, proc.stderr
    assert SECRET not in proc.stdout + proc.stderr and not site.hits


@pytest.mark.parametrize("host", ["http://127.0.0.2", "127.0.0.2:80", ""], ids=["scheme", "port", "empty"])
def test_an_allowed_host_that_is_no_host_name_is_one_line_before_any_request(site, tmp_path, host):
    """The policy compares host names; 'https://cdn.example' or 'cdn.example:443' never matched
    one, so every image from that CDN failed as an 'off-site URL' whose hint was to declare it
    with --allow-host, which the user had done (and '' was dropped without a word)."""
    site.serve_index(site.good_actas(1))
    job = write_job(tmp_path, site.url, f"hosts = ['{host}']\n" + NO_PUBLISH)
    proc = run_cli("run", str(job), timeout=120)
    assert proc.returncode == 2 and one_line(proc) and "source.hosts" in proc.stderr, proc.stderr
    flag = crawl(site.url, tmp_path / "m", "--allow-host", host)
    assert flag.returncode == 2 and one_line(flag) and "--allow-host" in flag.stderr, flag.stderr
    assert not site.hits


# -- request headers that change what a GET returns ------------------------------------------------
def test_a_job_header_that_would_make_a_changed_acta_unchanged_is_refused(site, tmp_path):
    """fetch.headers = { If-Modified-Since = <a future date> }: the fetcher sends If-None-Match
    only when the archive knows an ETag and no Last-Modified, so the user's header went along;
    a server that honours If-Modified-Since answered 304 and a changed acta was counted
    unchanged. Now such headers (validators, Range, Accept-Encoding...) are refused when the
    job file is read."""
    from aiohttp import web

    state = {"n": 0}

    async def image(request):
        if "If-Modified-Since" in request.headers:
            return web.Response(status=304)
        return web.Response(body=jpeg(state["n"]), headers={"Content-Type": "image/jpeg", "ETag": f'"{state["n"]}"'})

    site.routes["/img/0.jpg"] = image
    site.serve_index([index_row(0, f"{site.url}/img/0.jpg")])
    job = write_job(tmp_path, site.url, NO_PUBLISH)
    assert run_cli("run", str(job), timeout=120).returncode == 0
    state["n"] = 7  # the acta changes upstream
    job.write_text(job.read_text().replace(
        "[publish]", "[fetch]\nheaders = { If-Modified-Since = 'Fri, 01 Jan 2100 00:00:00 GMT' }\n[publish]"))
    hits = sum(site.hits.values())
    proc = run_cli("run", str(job), timeout=120)
    assert proc.returncode == 2 and one_line(proc) and "fetch.headers" in proc.stderr, proc.stdout + proc.stderr
    assert "If-Modified-Since" in proc.stderr and sum(site.hits.values()) == hits


@pytest.mark.parametrize("header", ["Range: bytes=0-99", "accept-encoding: gzip", "If-None-Match: *"])
def test_a_header_flag_that_changes_what_a_get_returns_is_refused(site, tmp_path, header):
    site.serve_index(site.good_actas(1))
    proc = crawl(site.url, tmp_path / "m", "--header", header)
    assert proc.returncode == 2 and one_line(proc) and "--header" in proc.stderr, proc.stderr
    assert header.split(":")[0] in proc.stderr and not site.hits


# -- an acta put back as it was ------------------------------------------------------------------
def test_an_acta_put_back_as_it_was_is_a_change_not_unchanged(site, tmp_path):
    """The site serves A, then B, then A again (a tampered acta quietly restored). Was: the third
    run counted it unchanged, since A's bytes were among the acta's versions, and recorded
    nothing: the mirror went on saying the site serves B. Now the return to A is a change
    (a new version, a 'changed' record from B to A); asked again unchanged, it stays one."""
    site.serve_index(site.good_actas(2))
    out = tmp_path / "m"
    shown = []
    for n in (0, 500, 0, 0):
        site.routes["/img/0.jpg"] = body(jpeg(n))
        proc = crawl(site.url, out, "--json")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        shown.append((json.loads(proc.stdout)["archived"], json.loads(proc.stdout)["unchanged"]))
    assert shown == [(2, 0), (1, 1), (1, 1), (0, 2)], shown
    a, b, again = [v.sha256 for v in archived(out)[key_of(0)]]
    assert a == again != b and verify(out) == []
    changes = [json.loads(x) for x in (out / "changes.jsonl").read_text().splitlines()]
    assert [(c["change"], c.get("old_sha256"), c["sha256"]) for c in changes if c["key"] == key_of(0)] == [
        ("added", None, a), ("changed", a, b), ("changed", b, a)]


def test_bytes_flipping_between_two_known_versions_on_every_request_add_no_version(site, tmp_path):
    """The guard of the test above: a return to older bytes is asked twice, as any change, so a
    server alternating between two archived versions request by request adds none."""
    site.serve_index(site.good_actas(2))
    out = tmp_path / "m"
    for n in (0, 500):
        site.routes["/img/0.jpg"] = body(jpeg(n))
        assert crawl(site.url, out).returncode == 0
    flips = {"n": 0}

    async def flipping(request):
        flips["n"] += 1
        return await body(jpeg(500 if flips["n"] % 2 == 0 else 0))(request)

    site.routes["/img/0.jpg"] = flipping
    for _ in range(3):
        crawl(site.url, out)
    assert len(archived(out)[key_of(0)]) == 2 and verify(out) == []
    assert {f["cause"] for f in failures(out)} <= {"unstable bytes"}


@pytest.mark.parametrize("extra,key", [
    ("[output]\ndir = 'manifests/mirror'\n[publish]\nmanifests = 'manifests'\n", "publish.manifests"),
    ("[output]\ndir = 'mirror'\n[publish]\nmanifests = 'manifests'\ncar = 'manifests/mirror.car'\n", "publish.car"),
], ids=["mirror", "car"])
def test_a_mirror_or_car_inside_the_manifests_folder_is_refused_before_the_crawl(site, tmp_path, extra, key):
    """output.dir = 'manifests/mirror' (or publish.car = 'manifests/mirror.car') with
    publish.manifests = 'manifests': was accepted, so the folder the workflow commits between
    runs ('git add -- manifests') held every archived image and the mirror's own state
    (.acta-mirror/index.sqlite, the lock), or the whole mirror as one CAR file. The reverse
    (the folder inside the mirror) was already refused."""
    site.serve_index(site.good_actas(1))
    (tmp_path / "manifests").mkdir()
    job = write_job(tmp_path, site.url, extra.replace("[publish]\n", "[publish]\nallow_none = true\n")
                    + "[sign]\nrequired = false\n")
    proc = run_cli("run", str(job), timeout=120)
    assert proc.returncode == 2 and one_line(proc) and key in proc.stderr, proc.stderr
    assert not site.hits and list((tmp_path / "manifests").iterdir()) == []


# -- server-given text that the record keeps --------------------------------------------------------
def test_long_redirect_urls_and_validators_never_bloat_the_record(site, tmp_path):
    """Each hop's URL and the ETag and Last-Modified go into the acta's provenance line, which
    is published and committed between runs. Was: a chain of 10 redirects to URLs of ~180 KB
    (a 60 KB Location of 'ñ', percent-encoded), or an ETag of 90 KB, made a line of megabytes
    or ~100 KB per acta (gigabytes over an index). Now a URL over fetch.MAX_URL_CHARS is refused
    (cause 'invalid URL', never asked), and a validator over fetch.MAX_VALIDATOR_CHARS is not
    kept (the next run asks without it)."""
    from aiohttp import web

    pad = "ñ" * 30000

    async def hop(request):
        n = int(request.query.get("n", "0"))
        if n >= 9:
            return await body(jpeg(1))(request)
        return web.Response(status=302, headers={"Location": f"/hop?n={n + 1}&pad={pad}"})

    site.routes["/hop"] = hop
    site.routes["/img/2.jpg"] = body(jpeg(2), ETag='"' + "e" * 90_000 + '"', **{"Last-Modified": "x" * 90_000})
    site.serve_index([index_row(1, f"{site.url}/hop"), index_row(2, f"{site.url}/img/2.jpg")])
    out = tmp_path / "m"
    proc = crawl(site.url, out)
    assert proc.returncode == 1 and set(archived(out)) == {key_of(2)}, proc.stdout + proc.stderr
    (failure,) = failures(out)
    assert failure["cause"] == "invalid URL" and failure["key"] == key_of(1), failure
    assert max(len(line) for line in (out / "provenance.jsonl").read_text().splitlines()) < 16_384
    assert len((out / "failures.jsonl").read_text()) < 16_384 and verify(out) == []
    again = crawl(site.url, out)  # the long validators were not kept: asked without them, same bytes
    assert again.returncode == 1 and len(archived(out)[key_of(2)]) == 1, again.stdout + again.stderr


def test_a_huge_link_text_in_a_walk_never_bloats_every_record_below_it(site, tmp_path):
    """A walk names each acta's state, municipality and parish after the link texts above it,
    and every provenance line keeps them. Was: one link text of 1.5 MB on the root's listing
    (pages may hold 2,000,000 characters) went whole into the line of every acta below it.
    Now a name is cut at sites.MAX_NAME_CHARS."""
    from tests.hostile_site import listing, mesa

    site.routes["/"] = body(listing([("/e/0", "E" * 1_500_000)]), "text/html")
    for a, b in (("/e/0", "/m/0"), ("/m/0", "/p/0"), ("/p/0", "/c/0")):
        site.routes[a] = body(listing([(b, "x")]), "text/html")
    site.routes["/c/0"] = body(listing([("/t/0", "1"), ("/t/1", "2")]), "text/html")
    for i in (0, 1):
        site.routes[f"/t/{i}"] = body(mesa(f"/img/{i}.jpg", i), "text/html")
        site.routes[f"/img/{i}.jpg"] = body(jpeg(i))
    out = tmp_path / "m"
    proc = crawl(site.url + "/", out, "--discover", "html")
    assert proc.returncode == 0 and set(archived(out)) == {key_of(0), key_of(1)}, proc.stdout + proc.stderr
    assert max(len(line) for line in (out / "provenance.jsonl").read_text().splitlines()) < 16_384
    assert verify(out) == []


def test_names_a_site_gives_never_reach_a_spreadsheet_as_formulas(site, tmp_path):
    """The coverage and tally CSVs are opened in spreadsheets, which run a cell starting with =,
    +, -, @ as a formula: a place name from a hostile index is written there as text."""
    import csv

    site.routes["/img/0.jpg"] = body(jpeg(0))
    names = {"municipality": "=1+2", "parish": "@SUM(9)"}
    site.serve_index([f"1,DTTO. CAPITAL,1,{names['municipality']},1,{names['parish']},{10101000:09d},1,"
                      f"{site.url}/img/0.jpg\n"])
    out = tmp_path / "m"
    assert crawl(site.url, out).returncode == 0
    proc = run_cli("tally", str(out), "--coverage", str(tmp_path / "coverage.csv"), "--format", "csv")
    rows = list(csv.DictReader(open(tmp_path / "coverage.csv", encoding="utf-8")))
    assert [(r["municipality"], r["parish"]) for r in rows] == [("'=1+2", "'@SUM(9)")]
    cells = [c for r in rows for c in r.values()] + [c for r in csv.reader(proc.stdout.splitlines()) for c in r]
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@")]
    report = json.loads(run_cli("tally", str(out), "--format", "json").stdout)  # the JSON keeps them as they are
    assert {(u["name"]) for u in report["levels"]["municipality"]} == {"=1+2"}
