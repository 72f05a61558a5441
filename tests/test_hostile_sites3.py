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
from tests.conftest import run_cli
from tests.hostile_site import HEADER, HostileSite, index_row, jpeg, key_of, raw
from tests.test_hostile_more import crawl, site  # noqa: F401 (a fixture)

SECRET = "tok3n-S3CRET"


def failures(out: Path) -> list[dict]:
    path = out / "failures.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


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
    assert SECRET not in proc.stdout + proc.stderr and "***@example.org" in proc.stderr, proc.stderr


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
