"""A third round against hostile sites and broken job files.

Each test found a defect (fixed since) and runs the real command line against
tests/hostile_site.py on loopback; a traceback always fails it (run_cli).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web

from mirror.manifest import read_provenance
from tests.conftest import local_proxy, run_cli
from tests.hostile_site import HEADER, HostileSite, index_row, jpeg, key_of, raw
from tests.test_hostile_more import crawl, site  # noqa: F401 (a fixture)
from tests.test_hostile_sites2 import SECRET, failures


def keys_archived(out: Path) -> list[str]:
    return sorted(e.key for e in read_provenance(out / "provenance.jsonl") if e.kind == "acta")


def etagged(data: bytes, tag: str = '"v1"', content_type: str = "image/jpeg"):
    """A file that answers 304 to If-None-Match: its ETag, as a static file server does."""
    async def handle(request: web.Request) -> web.Response:
        if request.headers.get("If-None-Match") == tag:
            return web.Response(status=304, headers={"ETag": tag})
        return web.Response(body=data, headers={"Content-Type": content_type, "ETag": tag})
    return handle


# -- one image URL listed under two tables ------------------------------------------------------
@pytest.mark.parametrize("flags", [[], ["--recheck-after", "86400"]], ids=["conditional", "recheck-after"])
def test_one_image_url_listed_under_two_tables_archives_both(site, tmp_path, flags):
    """Was: the second table was asked with the first one's ETag (or spared by the first one's
    check time), the site answered 304, and the table was counted 'unchanged' on every run
    without ever being archived. Now validators and check times of a URL serve only the acta
    whose file it gave."""
    site.routes["/img/shared.jpg"] = etagged(jpeg(7))
    site.serve_index([index_row(0, f"{site.url}/img/shared.jpg"), index_row(1, f"{site.url}/img/shared.jpg")])
    out = tmp_path / "m"
    for run in range(2):
        proc = crawl(site.url, out, "--concurrency", "1", "--processes", "1", *flags)
        assert proc.returncode == 0, proc.stderr
        assert keys_archived(out) == [key_of(0), key_of(1)], (run, proc.stdout)
        assert f"{2 - 2 * run} archived" in proc.stdout, proc.stdout


def test_two_tables_whose_image_urls_are_swapped_are_recorded_as_changed(site, tmp_path):
    """The index swaps two tables' image URLs (a tampered listing: each table now shows the
    other's tally sheet). Was: each table was asked with the validators of the file its new URL
    gave the other table, the site answered 304, and both were counted 'unchanged'. Now both are
    downloaded again and recorded as changed, each with the other's bytes as a new version."""
    site.routes["/img/a.jpg"] = etagged(jpeg(1), '"a"')
    site.routes["/img/b.jpg"] = etagged(jpeg(2), '"b"')
    site.serve_index([index_row(0, f"{site.url}/img/a.jpg"), index_row(1, f"{site.url}/img/b.jpg")])
    out = tmp_path / "m"
    assert crawl(site.url, out).returncode == 0
    site.serve_index([index_row(0, f"{site.url}/img/b.jpg"), index_row(1, f"{site.url}/img/a.jpg")])
    proc = crawl(site.url, out)
    assert proc.returncode == 0 and "2 archived, 0 unchanged" in proc.stdout, proc.stdout
    changes = [json.loads(x) for x in (out / "changes.jsonl").read_text().splitlines()]
    assert sorted(c["key"] for c in changes if c["change"] == "changed") == [key_of(0), key_of(1)], changes


# -- the user's credentials and an alternate host ------------------------------------------------
@pytest.fixture
def other_host():
    with HostileSite("127.0.0.2") as s:
        yield s


def test_credentials_in_headers_never_go_to_an_alternate_host(site, other_host, tmp_path):
    """--header 'Authorization: ...' and 'Cookie: ...' are the user's credentials for the site:
    they never follow a redirect to another host. Was: an image the root could not give was asked
    of each --alternate (a mirror, a bucket: another party) with them; now an alternate on
    another origin is asked without them (its own query token still goes), and the file is
    still fetched."""
    asked: list[dict] = []

    async def recording(request: web.Request) -> web.Response:
        asked.append(dict(request.headers))
        return web.Response(body=jpeg(1), headers={"Content-Type": "image/jpeg"})

    other_host.routes["/alt/img/1.jpg"] = recording
    site.serve_index([index_row(1, f"{site.url}/img/1.jpg")])  # the root answers 404
    out = tmp_path / "m"
    proc = crawl(site.url, out, "--alternate", f"{other_host.url}/alt", "--header", f"Authorization: Bearer {SECRET}",
                 "--header", f"Cookie: sid={SECRET}", "--header", "Referer: https://example.org/")
    assert proc.returncode == 0 and keys_archived(out) == [key_of(1)], proc.stdout + proc.stderr
    assert len(asked) == 1 and SECRET not in json.dumps(asked[0]) and asked[0]["Referer"] == "https://example.org/"


# -- control characters in the headers the record keeps ------------------------------------------
def raw_answer(data: bytes, content_type: bytes, *headers: bytes) -> bytes:
    head = b"".join(h + b"\r\n" for h in headers)
    return (b"HTTP/1.1 200 OK\r\nContent-Type: " + content_type + b"\r\nContent-Length: "
            + str(len(data)).encode() + b"\r\n" + head + b"\r\n" + data)


def test_control_characters_in_validators_never_reach_the_record_or_break_the_export(site, tmp_path):
    """An ETag with an escape sequence, a Last-Modified with a bell, an index's Content-Type with
    a vertical tab: libcurl passes them, and the record kept them. Was: `export` refused the
    whole mirror from then on ('etag holds a control character'; exit 2), for bytes a server
    chose. Now such a value is not kept (as one too long), and the next run asks without it."""
    rows = site.good_actas(1)
    site.routes["/img/5.jpg"] = raw(raw_answer(jpeg(5), b"image/jpeg", b'ETag: "\x1b[31mred\x1b[0m"',
                                               b"Last-Modified: Mon, 01 Jan 2024 00:00:00 GMT\x07"))
    rows.append(index_row(5, f"{site.url}/img/5.jpg"))
    csv = (HEADER + "".join(rows)).encode()
    site.routes["/RESULTADOS_2024_CSV_V1.csv"] = raw(raw_answer(csv, b"text/csv;\x0bcharset=utf-8", b'ETag: "i\x01"'))
    out = tmp_path / "m"
    proc = crawl(site.url, out)
    assert proc.returncode == 0, proc.stderr
    text = (out / "provenance.jsonl").read_text()
    assert "\\u00" not in text and len(keys_archived(out)) == 2, text
    warc = run_cli("export", str(out), "--warc", str(tmp_path / "m.warc.gz"), "--quiet")
    assert warc.returncode == 0, warc.stderr


# -- a URL given without its scheme, with a password in it ----------------------------------------
@pytest.mark.parametrize("value", [f"archivist:{SECRET}@example.org", f"https:/archivist:{SECRET}@example.org/"],
                         ids=["no-scheme", "one-slash"])
@pytest.mark.parametrize("flag", ["--root", "--alternate", "--index", "source.root"])
def test_a_url_without_its_scheme_is_refused_without_showing_its_password(tmp_path, flag, value):
    """'user:password@host' (the https:// forgotten) is no URL, so redact() saw none in it. Was:
    the one-line error quoted it whole, password included (a CI log is often public)."""
    if flag == "source.root":
        job = tmp_path / "job.toml"
        job.write_text(f"[source]\nsite = 'resultados2024'\nroot = '{value}'\n[publish]\nallow_none = true\n"
                       "[sign]\nrequired = false\n")
        proc = run_cli("run", str(job), "--no-publish", timeout=60)
    else:
        root = value if flag == "--root" else "http://127.0.0.1:9/"
        extra = [] if flag == "--root" else [flag, value]
        proc = run_cli("crawl", "resultados2024", "--root", root, "--out", str(tmp_path / "m"), *extra, timeout=60)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert SECRET not in proc.stdout + proc.stderr, proc.stderr
    assert (f"{job}: source.root: the value (not shown" if flag == "source.root" else "***@example.org") in proc.stderr


@pytest.mark.parametrize("key,text", [("root", "'ftp://example.org/'"), ("alternates", "['example.org']")])
def test_a_job_file_source_that_is_no_url_is_named_by_its_file_and_key(tmp_path, key, text):
    """A wrong job file fails with one line naming the file and the key (config.py). Was:
    'source.root' or 'source.alternates' that is no http(s) URL came out as the crawl's flag
    ('--root must be an http(s) URL, not ...'), naming neither."""
    job = tmp_path / "job.toml"
    body = {"root": f"root = {text}\n", "alternates": f"root = 'http://127.0.0.1:9/'\nalternates = {text}\n"}[key]
    job.write_text(f"[source]\nsite = 'resultados2024'\n{body}[publish]\nallow_none = true\n[sign]\nrequired = false\n")
    proc = run_cli("run", str(job), "--no-publish", timeout=60)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert f"{job}: source.{key}: " in proc.stderr and "not an http(s) URL" in proc.stderr, proc.stderr


# -- a sandbox without /proc ---------------------------------------------------------------------
def test_a_rerun_whose_index_is_unchanged_works_where_proc_is_not_mounted(site, tmp_path):
    """On a 304 for the index, the archived copy was read through /proc/self/fd/N: in a sandbox
    or chroot without /proc every re-run of an unchanged site failed ('No such file or directory:
    /proc/self/fd/15', exit 2). Now the parser reads a copy made through the checked descriptor."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("unmounting /proc in a mount namespace of its own needs root and unshare")
    rows = site.good_actas(2)
    site.routes["/RESULTADOS_2024_CSV_V1.csv"] = etagged((HEADER + "".join(rows)).encode(), content_type="text/csv")
    out = tmp_path / "m"
    root = Path(__file__).resolve().parent.parent
    for run in range(2):
        proc = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                               f'umount -l /proc && exec "{sys.executable}" -m mirror crawl resultados2024 '
                               f'--root {site.url} --out "{out}" --quiet'],
                              capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(root)})
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, (run, proc.stdout + proc.stderr)
    assert "0 archived, 2 unchanged" in proc.stdout and site.hits["/RESULTADOS_2024_CSV_V1.csv"] == 2, proc.stdout


# -- two runs of a job without output.dir at once -------------------------------------------------
def test_two_runs_of_a_job_on_one_manifests_folder_never_lose_a_version(site, tmp_path):
    """A job without output.dir reads its manifests folder at the start and writes it back at
    the end. Was: two runs at once (a timer and a manual run) read the same state, each
    archived the version of the acta it was served, both said 'manifests written' with exit 0,
    and the second save put back a folder without the first one's version. Now the folder is
    locked from its read to its save: the second run exits with 2 and one line, or waits with
    output.wait_lock and then archives its version beside the first."""
    import asyncio
    import subprocess as sp

    async def by_agent(request: web.Request) -> web.Response:  # each run is served its own version
        n = {"A": 2, "B": 3}.get(request.headers.get("User-Agent", ""), 1)
        return web.Response(body=jpeg(100 + n), headers={"Content-Type": "image/jpeg"})

    text = (HEADER + index_row(0, f"{site.url}/img/0.jpg")).encode()

    async def slow_index(request: web.Request) -> web.Response:  # both runs have read the folder before either saves
        if request.headers.get("User-Agent") in ("A", "B"):
            await asyncio.sleep(2)
        return web.Response(body=text, headers={"Content-Type": "text/csv"})

    site.routes["/img/0.jpg"] = by_agent
    site.routes["/RESULTADOS_2024_CSV_V1.csv"] = slow_index
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    for wait in (False, True):
        job = tmp_path / f"job-{wait}.toml"
        job.write_text(f"[source]\nsite = 'resultados2024'\nroot = '{site.url}'\n[output]\nwait_lock = {str(wait).lower()}\n"
                       f"[publish]\nmanifests = 'manifests-{wait}'\nallow_none = true\n[sign]\nrequired = false\n")
        assert run_cli("run", str(job), "--quiet").returncode == 0
        runs = [sp.Popen([sys.executable, "-m", "mirror", "run", str(job), "--quiet", "--user-agent", agent],
                         stdout=sp.PIPE, stderr=sp.PIPE, text=True, env=env) for agent in ("A", "B")]
        ends = [(r.wait(timeout=120), r.stdout.read(), r.stderr.read()) for r in runs]
        versions = [e.sha256 for e in read_provenance(tmp_path / f"manifests-{wait}" / "provenance.jsonl")
                    if e.kind == "acta"]
        if wait:
            assert [code for code, *_ in ends] == [0, 0] and len(versions) == 3, ends
        else:
            assert sorted(code for code, *_ in ends) == [0, 2] and len(versions) == 2, ends
            refused = next(err for code, _out, err in ends if code == 2)
            assert "another run" in refused and len(refused.strip().splitlines()) == 1, refused


# -- figures and their denominators ----------------------------------------------------------------
def test_the_run_summary_counts_refused_index_rows_against_the_rows_read(site, tmp_path):
    """`crawl` and `run` said '1 index row(s) refused' with no denominator on the summary line
    (pages had theirs: '2 of 40 page(s) unreadable'). Now: '1 of 4 index row(s) refused'."""
    rows = site.good_actas(3)
    rows.insert(1, "not,a,results,row\n")
    site.serve_index(rows)
    job = tmp_path / "job.toml"
    job.write_text(f"[source]\nsite = 'resultados2024'\nroot = '{site.url}'\n[output]\ndir = 'm'\n"
                   "[publish]\nallow_none = true\n[sign]\nrequired = false\n")
    proc = run_cli("run", str(job), "--no-publish", "--quiet", timeout=120)
    assert proc.returncode == 1 and "1 of 4 index row(s) refused" in proc.stdout, proc.stdout + proc.stderr


# -- an HTTPS site through an HTTP proxy (CONNECT tunnels) ---------------------------------------
@pytest.fixture
def tls_site(tmp_path):
    """A results site over HTTPS on loopback (a self-signed certificate the crawl is told to
    trust through SSL_CERT_FILE), recording each request's headers."""
    import asyncio
    import ssl
    import threading

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    seen: list[dict] = []
    state = {}

    async def handle(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        if request.path.endswith(".csv"):
            rows = "".join(index_row(i, f"{state['url']}/img/{i}.jpg") for i in range(4))
            return web.Response(body=(HEADER + rows).encode(), headers={"Content-Type": "text/csv"})
        return web.Response(body=jpeg(int(request.path.split("/")[-1].split(".")[0])), headers={"Content-Type": "image/jpeg"})

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start():
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(cert), str(key))
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
        return runner, runner.addresses[0][1]

    runner, port = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    state["url"] = f"https://127.0.0.1:{port}"
    yield state["url"], seen, {"SSL_CERT_FILE": str(cert)}
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


@pytest.fixture
def auth_proxy():
    """A real HTTP proxy on loopback (pproxy) that wants Basic proxy:pr0xy-S3CRET."""
    import base64

    with local_proxy("http://127.0.0.1:{port}#proxy:pr0xy-S3CRET") as port:
        yield f"http://127.0.0.1:{port}", "Basic " + base64.b64encode(b"proxy:pr0xy-S3CRET").decode()


def test_a_proxy_authorization_header_goes_to_the_proxy_never_to_the_site(tls_site, auth_proxy, tmp_path):
    """--header 'Proxy-Authorization: ...' is the proxy's password. Was: libcurl sent the
    --header lines to the site inside the CONNECT tunnel, so an HTTPS site got the proxy's
    password and the proxy, never given it, refused the tunnel (407: the crawl failed). Now it
    goes to the proxy alone (libcurl's PROXYHEADER); without --proxy it goes nowhere."""
    url, seen, env = tls_site
    proxy, credential = auth_proxy
    proc = run_cli("crawl", "resultados2024", "--root", url, "--out", str(tmp_path / "m"), "--quiet", "--proxy", proxy,
                   "--header", f"Proxy-Authorization: {credential}", "--header", "Authorization: Bearer site-token",
                   env=env, timeout=120)
    assert proc.returncode == 0 and len(keys_archived(tmp_path / "m")) == 4, proc.stdout + proc.stderr
    assert seen and all("Proxy-Authorization" not in h and h["Authorization"] == "Bearer site-token" for h in seen)


def test_requests_through_a_kept_open_https_tunnel_are_read_as_answered(tls_site, auth_proxy, tmp_path):
    """Through an HTTP proxy, the first block of header lines of an HTTPS request was skipped
    as the proxy's answer to CONNECT. Only a request that opens a tunnel has one: on a tunnel
    kept open the site's own answer was skipped ('an answer without a status line'), so every
    second request through the proxy failed and was asked again. Now libcurl keeps CONNECT
    answers from the header lines (SUPPRESS_CONNECT_HEADERS): no retry, one request a file."""
    url, seen, env = tls_site
    proxy, credential = auth_proxy
    proc = run_cli("crawl", "resultados2024", "--root", url, "--out", str(tmp_path / "m"), "--json", "--proxy", proxy,
                   "--header", f"Proxy-Authorization: {credential}", "--concurrency", "1", "--processes", "1",
                   env=env, timeout=120)
    report = json.loads(proc.stdout)
    assert proc.returncode == 0 and report["archived"] == 4, proc.stdout + proc.stderr
    assert report["retries"] == 0 and report["requests"] == 5 and len(seen) == 5, report


# -- a walk whose first page cannot be read ------------------------------------------------------
@pytest.mark.parametrize("flags", [["resultados2024", "--discover", "html"], ["cne"],
                                   ["resultados2024", "--discover", "html", "--dry-run"]],
                         ids=["resultados2024", "cne", "dry-run"])
def test_a_walk_whose_first_page_cannot_be_read_is_an_unreachable_root(site, tmp_path, flags):
    """An index that cannot be read is an unreachable root: exit 2, one line ('cannot read the
    index ...'), as the README's table of exit codes says. Was: a walk's first page that answered
    404 or 500 ended the run with exit 1, the code of a crawl that finished with some actas
    failed, though it never started."""
    out = tmp_path / "m"
    proc = run_cli("crawl", *flags, "--root", site.url, "--out", str(out), "--quiet", "--timeout", "5", timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stdout + proc.stderr
    assert "cannot read the site's first page" in proc.stderr and "HTTP 404" in proc.stderr, proc.stderr
    assert not out.exists()


# -- a chunked body libcurl cannot parse ---------------------------------------------------------
@pytest.mark.parametrize("size", [b"FFFFFFFFFFFFFFFFFFFFFFFF", b"zz"], ids=["huge", "not-hex"])
def test_a_chunked_body_with_a_bad_chunk_size_is_a_bad_answer_not_a_reset(site, tmp_path, size):
    """libcurl refuses a chunk size it cannot read (curl 56, as it reports a reset). Was: the
    failure's cause said 'connection reset', blaming the network for the server's broken answer.
    Now its cause is 'bad answer'; it is never archived."""
    data = jpeg(5)
    answer = (b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\n\r\n"
              + size + b"\r\n" + data + b"\r\n0\r\n\r\n")
    rows = site.good_actas(1)
    site.routes["/img/5.jpg"] = raw(answer)
    rows.append(index_row(5, f"{site.url}/img/5.jpg"))
    site.serve_index(rows)
    out = tmp_path / "m"
    proc = crawl(site.url, out)
    assert proc.returncode == 1 and keys_archived(out) == [key_of(0)], proc.stdout + proc.stderr
    (failure,) = failures(out)
    assert failure["cause"] == "bad answer" and "chunk" in failure["reason"], failure


# -- a password with a quote, a credential the site sends back, a dry run's counts ---------------
def leaks(out: Path, secret: str) -> list[str]:
    """The files of a mirror (its working state included) holding secret."""
    return [str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


@pytest.mark.parametrize("password", ["s3cr'etPW", 's3cr"et<PW>', "a'etPW"], ids=["quote", "double-quote-and-angle", "short"])
def test_a_password_holding_a_quote_is_never_written_nor_shown(site, tmp_path, password):
    """Text is searched for URLs up to a quote or an angle bracket (a message quotes a URL), so
    'http://alice:s3cr'etPW@host' was no URL with a password to redact() and went whole into
    bag-info.txt, the records, the on-disk index and the one-line error of an unreachable root.
    Was: also a dry run counted every acta of such a root as new (it compared the listing's
    URLs, password and all, with the archive's, which hides it)."""
    site.serve_index(site.good_actas(3))
    root = site.url.replace("http://", f"http://alice:{password}@")
    out = tmp_path / "m"
    proc = crawl(root, out)
    assert proc.returncode == 0 and len(keys_archived(out)) == 3, proc.stdout + proc.stderr
    assert password not in proc.stdout + proc.stderr and leaks(out, password) == [] and leaks(out, "etPW") == []
    plan = crawl(root, out, "--dry-run")
    assert plan.returncode == 0 and "known: 3 of 3" in plan.stdout and "new: 0 of 3" in plan.stdout, plan.stdout
    assert "etPW" not in plan.stdout + plan.stderr
    down = crawl(f"http://alice:{password}@127.0.0.1:9/", tmp_path / "down")  # nothing listens on port 9
    assert down.returncode == 2 and "etPW" not in down.stdout + down.stderr, down.stderr
    proxy = crawl(site.url, tmp_path / "p", "--proxy", f"http://u:{password}@127.0.0.1:9", "-v")
    assert "etPW" not in proxy.stdout + proxy.stderr, proxy.stderr


def test_a_credential_the_site_sends_back_never_reaches_the_records(site, tmp_path):
    """--header 'Authorization: Bearer …' and 'Cookie: sid=…' are the user's. A site that put the
    token into a redirect's Location and an ETag had it written into the records (final_url,
    etag), which are published with the mirror. Now the values of those headers are hidden as
    the passwords of the user's URLs are."""
    async def echo(request: web.Request) -> web.Response:
        token = request.headers.get("Authorization", "").rpartition(" ")[2]
        cookie = request.headers.get("Cookie", "").partition("=")[2]
        return web.Response(status=302, headers={"Location": f"/img/{request.match_info['tail'][5:]}?auth={token}"
                                                             f"&sid={cookie}"})

    async def image(request: web.Request) -> web.Response:
        n = int(request.path.rsplit("/", 1)[1].split(".")[0])
        return web.Response(body=jpeg(n), headers={"Content-Type": "image/jpeg", "ETag": f'"{request.query["auth"]}"'})

    rows = []
    for i in range(3):
        site.routes[f"/echo/{i}.jpg"] = echo
        site.routes[f"/img/{i}.jpg"] = image
        rows.append(index_row(i, f"{site.url}/echo/{i}.jpg"))
    site.serve_index(rows)
    out = tmp_path / "m"
    cookie = "c00kie-s3ssion-0123"  # a session's length: a cookie of fewer than 16 characters is no secret
    proc = crawl(site.url, out, "--header", f"Authorization: Bearer {SECRET}", "--header", f"Cookie: sid={cookie}")
    assert proc.returncode == 0 and len(keys_archived(out)) == 3, proc.stdout + proc.stderr
    assert leaks(out, SECRET) == [] and leaks(out, cookie) == [], (leaks(out, SECRET), leaks(out, cookie))
    records = [json.loads(line) for line in (out / "provenance.jsonl").read_text().splitlines()]
    assert all(r["etag"] == '"***"' and r["final_url"].endswith("?auth=***&sid=***") for r in records
               if r["kind"] == "acta"), records
