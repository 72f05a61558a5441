"""IPFS publishing against a broken or hostile node and pinning service, car and export writing
where they should not, and the WACZ checker against hostile packages: found by an adversarial
review. A hostile peer is a small aiohttp server speaking just enough of its protocol (it is the
attacker, not a stand-in for a component we rely on; tests/test_ipfs.py runs the real js-ipfs
node); everything else is real (the command line, unzip, an exported and signed WACZ). Each test
failed on the code before its fix.
"""
from __future__ import annotations

import asyncio
import functools
import gzip
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import zipfile
import zlib
from pathlib import Path

import pytest
from aiohttp import web
from warcio.archiveiterator import ArchiveIterator

from mirror.archive import published_files
from mirror.cid import Dag, cid_to_str, raw_cid
from mirror.crawl import CrawlOptions, crawl
from mirror.replay import Replay, ReplayThread
from tests.conftest import run_cli
from tests.test_ipfs import _Server
from tests.test_stranger import (CHECK_WARC, LIMIT, add_response, append_record, http_of, image_urls,  # noqa: F401
                                 index_lines, made)


def check_warc(folder: Path, wacz: Path, limit: int | None = None) -> subprocess.CompletedProcess:
    """The README's step 4, run in the unzipped folder (limit: an address-space cap in bytes)."""
    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return subprocess.run([sys.executable, str(CHECK_WARC), str(wacz)], cwd=folder, capture_output=True, text=True,
                          timeout=LIMIT, preexec_fn=cap if limit else None)


def zip_folder(folder: Path, out: Path, extra: list[tuple[str, bytes]] = ()) -> None:
    """folder zipped as a WACZ, then the extra members after it (zipfile warns of a duplicate name)."""
    import warnings

    with zipfile.ZipFile(out, "w") as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, str(path.relative_to(folder)))
        for name, data in extra:
            zf.writestr(name, data)


# -- check_warc.py: a WACZ whose member names unzip and a replay tool read differently ---------
@pytest.mark.parametrize("name", ["archive/data.warc.gz", "Archive/data.warc.gz", "archive\\data.warc.gz",
                                  "/archive/data.warc.gz", "archive/../archive/data.warc.gz", "archive//data.warc.gz"])
def test_check_warc_refuses_member_names_unzip_and_a_replay_read_differently(made, tmp_path, name):
    """A WACZ holding the genuine archive/data.warc.gz and, after it, a forged one under the same
    name (or one unzip maps onto it: another case, a backslash, '/' or '..' or an empty part):
    unzip keeps the first, Python's zipfile (and a replay tool reading the zip) the last. The
    checker read only the unzipped folder, the genuine one, and passed the WACZ."""
    forged = tmp_path / "forged"
    shutil.copytree(made / "wacz", forged)
    victim, donor = image_urls(forged)[:2]
    add_response(forged, victim, http_of(forged, donor))  # table A's URL serving table B's acta
    wacz = tmp_path / "hostile.wacz"
    zip_folder(made / "wacz", wacz, [(name, (forged / "archive/data.warc.gz").read_bytes())])
    if name == "archive/data.warc.gz":
        subprocess.run(["unzip", "-q", str(wacz), "-d", str(tmp_path / "copy")], stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=LIMIT)
        assert (tmp_path / "copy/archive/data.warc.gz").read_bytes() == (made / "wacz/archive/data.warc.gz").read_bytes()
        with zipfile.ZipFile(wacz) as zf:  # what a replay reading the zip by name gets
            assert zf.read(name) == (forged / "archive/data.warc.gz").read_bytes()
    proc = check_warc(made / "wacz", wacz)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout.startswith(f"NOT SIGNED: {wacz}: ") and repr(name) in proc.stdout, proc.stdout
    assert len(proc.stdout.splitlines()) == 1 and not proc.stderr, proc.stdout + proc.stderr


def test_check_warc_wants_the_wacz_and_passes_a_genuine_one(made):
    """Without the .wacz the checker cannot see its member names: it says so (exit 1); with it, a
    genuine export passes."""
    proc = subprocess.run([sys.executable, str(CHECK_WARC)], cwd=made / "wacz", capture_output=True, text=True,
                          timeout=LIMIT)
    assert proc.returncode == 1 and "give the .wacz" in proc.stdout, proc.stdout
    proc = check_warc(made / "wacz", made / "m.wacz")
    assert proc.returncode == 0 and proc.stdout.startswith("0 problem(s)"), proc.stdout + proc.stderr
    proc = check_warc(made / "wacz", made / "wacz/evidence/manifest-sha256.txt")  # not a zip
    assert proc.returncode == 1 and "the WACZ cannot be read (BadZipFile" in proc.stdout, proc.stdout


# -- check_warc.py: a record that says two things ------------------------------------------------
def test_check_warc_refuses_a_record_that_repeats_its_type(made, tmp_path):
    """A record of table A's URL holding table B's acta, typed 'WARC-Type: response' and then
    'WARC-Type: request': a replay (warcio) reads the first and serves it as A's response, the
    checker kept the last, skipped it as a request, and passed."""
    work = tmp_path / "wacz"
    shutil.copytree(made / "wacz", work)
    victim, donor = image_urls(work)[:2]
    block = http_of(work, donor)
    head = (f"WARC/1.1\r\nWARC-Type: response\r\nWARC-Target-URI: {victim}\r\nWARC-Date: 2030-01-01T00:00:00Z\r\n"
            "WARC-Record-ID: <urn:uuid:00000000-0000-0000-0000-000000000001>\r\n"
            "Content-Type: application/http; msgtype=response\r\nWARC-Type: request\r\n"
            f"Content-Length: {len(block)}\r\n\r\n")
    member = gzip.compress(head.encode() + block + b"\r\n\r\n")
    assert [r.rec_type for r in ArchiveIterator(io.BytesIO(member))] == ["response"]  # what a replay sees
    append_record(work, member, victim)
    proc = check_warc(work, made / "m.wacz")
    assert proc.returncode == 1, proc.stdout
    assert "'warc-type' twice" in proc.stdout and "Traceback" not in proc.stderr, proc.stdout + proc.stderr


def test_check_warc_refuses_a_gzip_bomb_unread(made, tmp_path):
    """A record declaring 1.5 GiB (zeros: 1.5 MB gzipped) was read whole into memory: under a
    1 GiB address space the checker ended in a MemoryError traceback."""
    work = tmp_path / "wacz"
    shutil.copytree(made / "wacz", work)
    url = image_urls(work)[0]
    size = 3 << 29
    z = zlib.compressobj(1, zlib.DEFLATED, 31)
    head = (f"WARC/1.1\r\nWARC-Type: response\r\nWARC-Target-URI: {url}\r\n"
            f"Content-Type: application/http; msgtype=response\r\nContent-Length: {size}\r\n\r\n").encode()
    parts, zeros = [z.compress(head)], bytes(1 << 20)
    parts += [z.compress(zeros) for _ in range(size >> 20)]
    append_record(work, b"".join(parts) + z.compress(b"\r\n\r\n") + z.flush(), url)
    proc = check_warc(work, made / "m.wacz", limit=1 << 30)
    assert "Traceback" not in proc.stderr and "MemoryError" not in proc.stderr, proc.stderr[-2000:]
    assert proc.returncode == 1 and "larger than any signed file" in proc.stdout, proc.stdout


def _under_own_key(work: Path, url: str) -> None:
    """The last index line (append_record's) moved under url's own key, where a replay looks url up."""
    lines = (work / "indexes/index.cdx").read_text().splitlines()
    key = next(line.split(" ", 1)[0] for line in lines if json.loads(line.split(" ", 2)[2])["url"] == url)
    lines[-1] = f"{key} {lines[-1].split(' ', 1)[1]}"
    (work / "indexes/index.cdx").write_text("\n".join(sorted(lines)) + "\n")


@pytest.mark.parametrize("kind", ["request", "warcinfo"])
def test_check_warc_refuses_an_index_line_at_a_record_a_replay_must_not_serve(made, tmp_path, kind):
    """The checker passes request and warcinfo records unread (a replay does not serve them as
    such), also where an index line points: a 'request' of table A's URL whose block is an HTTP
    200 with table B's acta, named by A's index line, passed; a replay reading the record the
    line names serves B's acta for A."""
    work = tmp_path / "wacz"
    shutil.copytree(made / "wacz", work)
    victim, donor = image_urls(work)[:2]
    head = (f"WARC/1.1\r\nWARC-Type: {kind}\r\nWARC-Target-URI: {victim}\r\nWARC-Date: 2030-01-01T00:00:00Z\r\n"
            "Content-Type: application/http; msgtype=response\r\n"
            f"Content-Length: {len(http_of(work, donor))}\r\n\r\n")
    append_record(work, gzip.compress(head.encode() + http_of(work, donor) + b"\r\n\r\n"), victim)
    _under_own_key(work, victim)
    proc = check_warc(work, made / "m.wacz")
    assert proc.returncode == 1, proc.stdout
    assert proc.stdout.startswith(f"NOT SIGNED: index.cdx: {victim} points at a {kind} record, not a response\n1 problem"), \
        proc.stdout


@pytest.mark.parametrize("liar", ["record", "index line"])
def test_check_warc_refuses_a_digest_that_is_not_the_payloads(made, tmp_path, liar):
    """A response of table B's URL holding B's own signed bytes whose WARC-Payload-Digest (or whose
    index line's digest) is table A's passed: the checker hashed the payload and never read the
    digest, while a replay finds the payload of A's revisit by that digest and may serve B's acta."""
    work = tmp_path / "wacz"
    shutil.copytree(made / "wacz", work)
    a, b = image_urls(work)[:2]
    digests = {w["url"]: w["digest"] for w in index_lines(work)}
    block = http_of(work, b)
    head = (f"WARC/1.1\r\nWARC-Type: response\r\nWARC-Target-URI: {b}\r\nWARC-Date: 2030-01-01T00:00:00Z\r\n"
            f"WARC-Payload-Digest: {digests[a] if liar == 'record' else digests[b]}\r\n"
            f"Content-Type: application/http; msgtype=response\r\nContent-Length: {len(block)}\r\n\r\n")
    append_record(work, gzip.compress(head.encode() + block + b"\r\n\r\n"), b)
    lines = (work / "indexes/index.cdx").read_text().splitlines()
    where = json.loads(lines[-1].split(" ", 2)[2])
    lines[-1] = f"x 20300101000000 {json.dumps({**where, 'digest': digests[a]})}"
    (work / "indexes/index.cdx").write_text("\n".join(lines) + "\n")
    _under_own_key(work, b)
    proc = check_warc(work, made / "m.wacz")
    assert proc.returncode == 1, proc.stdout
    says = f"{b}: a response whose WARC-Payload-Digest is not its payload's" if liar == "record" else \
        f"index.cdx: {b}'s digest is not its record's"
    assert says in proc.stdout, proc.stdout


# -- check_warc.py: the page list -----------------------------------------------------------------
def test_check_warc_checks_every_page_line(made, tmp_path):
    """A page line carrying a 'format' key was skipped as the list's header wherever it stood: a
    second line titled as table A but opening table B's URL passed. A line that is no JSON object
    ended the checker in an AttributeError traceback."""
    work = tmp_path / "wacz"
    shutil.copytree(made / "wacz", work)
    pages = [json.loads(x) for x in (work / "pages/pages.jsonl").read_text().splitlines()]
    a, b = [p for p in pages if p.get("url", "").endswith((".jpg", ".JPG"))][:2]
    pages.insert(1, {"format": "json-pages-1.0", "id": "x", "url": b["url"], "ts": b["ts"], "title": a["title"]})
    (work / "pages/pages.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pages))
    proc = check_warc(work, made / "m.wacz")
    assert proc.returncode == 1 and f"pages.jsonl: {b['url']} is titled" in proc.stdout, proc.stdout
    (work / "pages/pages.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pages[:1] + [[1]] + pages[2:]))
    proc = check_warc(work, made / "m.wacz")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "the WACZ cannot be read (AttributeError" in proc.stdout, proc.stdout


# -- IPFS: a hostile node and a hostile pinning service --------------------------------------------
TOKEN = "rpc-token-7f3a9c2e51"
PIN_TOKEN = "pin-token-0b8d4e6a17"


@pytest.fixture(scope="module")
def pristine_mirror(tmp_path_factory) -> Path:
    thread = ReplayThread(Replay(small=True, limit=12))
    thread.start()
    out = tmp_path_factory.mktemp("ipfs") / "mirror"
    try:
        asyncio.run(crawl(CrawlOptions(site="resultados2024", root=thread.url, out=str(out))))
    finally:
        thread.stop()
    return out


@pytest.fixture
def mirror(pristine_mirror, tmp_path) -> Path:
    shutil.copytree(pristine_mirror, tmp_path / "mirror", symlinks=True)
    return tmp_path / "mirror"


def _dag(mirror: Path):
    return Dag(mirror, published_files(mirror))


async def _endless(request, status: int = 200, line: bytes = b"{}\n"):
    """An answer that never ends (until the client hangs up)."""
    await request.read()
    resp = web.StreamResponse(status=status, headers={"Content-Type": "application/json"})
    await resp.prepare(request)
    try:
        while True:
            await resp.write(line * 4096)
    except (ConnectionError, RuntimeError):
        pass
    return resp


def hostile_node(mirror: Path, **endpoints):
    """A node speaking just enough of the Kubo RPC: each endpoint answers what `endpoints` gives
    (NDJSON bytes, (status, bytes) or a handler), otherwise what an honest node holding nothing
    would answer for this mirror."""
    dag = _dag(mirror)
    honest = {"version": b'{"Version": "0.0.1"}\n', "refs/local": b"",
              "add": b'{"Name": "", "Hash": "%s"}\n' % dag.root_cid.encode(),
              "dag/import": b'{"Root": {"Cid": {"/": "%s"}, "PinErrorMsg": ""}}\n' % dag.root_cid.encode(),
              "name/publish": b'{"Name": "k51hostile", "Value": "/ipfs/%s"}\n' % dag.root_cid.encode()}
    honest.update({k.replace("_", "/"): v for k, v in endpoints.items()})

    async def answer(request):
        endpoint = request.match_info["tail"]
        await request.read()
        given = honest.get(endpoint, b"")
        if endpoint == "pin/add" and endpoint not in honest:
            given = json.dumps({"Pins": [request.query["arg"]]}).encode()
        if callable(given):
            return await given(request)
        status, body = given if isinstance(given, tuple) else (200, given)
        return web.Response(status=status, body=body, content_type="application/json")

    return _Server({"/api/v0/{tail:.*}": answer})


def publish(url: str, mirror: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return run_cli("publish", str(mirror), "--to", url.replace("http://", "ipfs://"), "--quiet", *args, timeout=LIMIT,
                   env=env or {})


def _one_line(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def _all_held(mirror: Path) -> bytes:
    return "".join(json.dumps({"Ref": cid_to_str(cid)}) + "\n" for cid, _t in _dag(mirror).files.values()).encode()


@pytest.mark.parametrize("endpoint, body, args", [
    ("refs/local", b'{"Ref": "not a cid"}\n', ()),
    ("refs/local", b'[1]\n{"Ref": 7}\n', ()),
    ("refs/local", b'{"Ref": "not a cid"}\n', ("--dry-run",)),
    ("dag/import", b'{"Root": {"Cid": {"/": "zzz!"}}}\n', ()),
    ("dag/import", b'{"Root": "bafy"}\n', ()),
    ("refs/local", b"[" * 100_000 + b"\n", ()),
    ("version", (500, b"[" * 100_000), ()),
    ("add", lambda request: _endless(request, line=b"\n"), ()),
    ("add", lambda request: _endless(request, line=b" \r\n"), ()),
], ids=["no-cid", "no-object", "no-cid-dry-run", "import-no-cid", "import-no-object", "deep-json", "deep-error",
        "empty-lines", "blank-lines"])
def test_a_node_answering_what_is_no_rpc_answer_is_one_line(mirror, endpoint, body, args):
    """A node answering refs/local or dag/import with text that is no CID or no object: each
    ended publish (or its dry run) in a ValueError or AttributeError traceback. JSON nested past
    Python's stack (as an answer or an error's message) ended it in a RecursionError traceback,
    and an add answered with empty lines for ever (each one restarting the read timeout, none
    counted as an answer) never ended."""
    answers = {endpoint.replace("/", "_"): body}
    if endpoint == "dag/import":  # a node that says it holds every file gets the directories as a CAR
        answers["refs_local"] = _all_held(mirror)
    with hostile_node(mirror, **answers) as url:
        proc = publish(url, mirror, *args)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert _one_line(proc).startswith(("acta-mirror: failed: ", "acta-mirror: cannot plan: ")), proc.stderr
    assert not (mirror / "publish-receipts.jsonl").exists()


@pytest.mark.parametrize("body", [b"", b'"a string"\n', b'{"Version": "1\\n\\u001b[2Jbafyforged"}\n'])
def test_a_node_version_that_is_no_answer_is_only_logged(mirror, body):
    """The version is only logged: an empty answer ended publish in an IndexError traceback, one
    that is no object in an AttributeError one, and a version holding a newline and an escape
    sequence was printed raw (a forged last line, a cleared terminal)."""
    with hostile_node(mirror, version=body) as url:
        proc = publish(url, mirror)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "\x1b" not in proc.stdout and "node " in proc.stdout, proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == _dag(mirror).root_cid


def test_ipns_that_answers_nothing_is_still_best_effort(mirror):
    """An empty name/publish answer ended the run in an IndexError traceback; IPNS never fails it."""
    with hostile_node(mirror, name_publish=b"") as url:
        proc = publish(url, mirror, "--ipns", "self")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "IPNS not published (best effort)" in proc.stdout and "answered no name" in proc.stdout, proc.stdout


def test_a_pin_the_node_never_confirms_is_not_reported_pinned(mirror):
    """pin/add answering 200 with no pin named (a node, or a proxy before it, that did nothing)
    was reported 'pinned root …', exit 0, and a receipt written."""
    with hostile_node(mirror, pin_add=b"{}\n") as url:
        proc = publish(url, mirror)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "pinned root" not in proc.stdout and "answered without naming it pinned" in _one_line(proc), proc.stderr
    assert not (mirror / "publish-receipts.jsonl").exists()


def test_a_token_echoed_back_is_never_shown(mirror):
    """A node (or pinning service) whose error message quotes the request's Authorization header
    had the token printed on stderr (and, on GitHub Actions, in the run's public summary)."""
    async def echo(request):
        return web.json_response({"Message": f"bad credentials: {request.headers.get('Authorization')}"}, status=403)

    env = {"ACTA_MIRROR_IPFS_TOKEN": TOKEN, "ACTA_MIRROR_PIN_TOKEN": PIN_TOKEN, "GITHUB_ACTIONS": "true"}
    with hostile_node(mirror, version=echo) as url:
        proc = publish(url, mirror, env=env)
    assert proc.returncode == 1 and "bad credentials: Bearer ***" in proc.stderr, proc.stderr
    with hostile_node(mirror) as url, _Server({"/pins": echo}) as service:
        proc = publish(url, mirror, "--pin-service", service, env=env)
    assert proc.returncode == 1 and "pinning service" in proc.stderr, proc.stdout + proc.stderr
    for text in (proc.stdout, proc.stderr, *(p.read_text() for p in mirror.glob("publish-receipts.jsonl"))):
        assert TOKEN not in text and PIN_TOKEN not in text, text


def test_an_error_answer_that_never_ends_is_cut(mirror):
    """A node answering 500 with a body that never ends was read until the 600 s limit, growing
    in memory all the while; its first bytes are enough for the message."""
    with hostile_node(mirror, version=functools.partial(_endless, status=500, line=b"x")) as url:
        proc = publish(url, mirror)
    assert proc.returncode == 1 and "version answered HTTP 500: xxx" in _one_line(proc), proc.stderr


def test_what_a_node_says_in_an_error_is_one_line(mirror):
    """An answer that is one line longer than aiohttp reads (512 KiB) ended publish in a LineTooLong
    traceback (aiohttp 3.14 raises that, where the code expected the ValueError of older versions),
    and an error message holding a newline was printed as two lines: a forged one after it."""
    with hostile_node(mirror, version=functools.partial(_endless, line=b"x")) as url:
        proc = publish(url, mirror)
    assert proc.returncode == 1 and "version failed (LineTooLong" in _one_line(proc), proc.stderr
    forged = json.dumps({"Message": "busy\npublished ipfs://node: root CID bafyforged\x1b[2J"}).encode()
    with hostile_node(mirror, refs_local=(500, forged)) as url:
        proc = publish(url, mirror)
    assert proc.returncode == 1 and "\\npublished ipfs://node" in _one_line(proc) and "\x1b" not in proc.stderr, \
        proc.stderr


def test_an_add_answer_that_never_ends_is_refused(mirror):
    """An add answered with lines that never end (none naming a CID) kept publish reading forever:
    its read timeout restarts with every line."""
    with hostile_node(mirror, add=_endless) as url:
        proc = publish(url, mirror)
    assert proc.returncode == 1 and "add answered more than" in _one_line(proc), proc.stderr
    assert not (mirror / "publish-receipts.jsonl").exists()


def test_an_answer_that_never_ends_is_refused_whatever_the_call(mirror):
    """version answered with lines that never end was kept line by line for up to 600 s, growing
    in memory all the while."""
    with hostile_node(mirror, version=_endless) as url:
        proc = publish(url, mirror)
    assert proc.returncode == 1 and "version answered more than 10,000 lines" in _one_line(proc), proc.stderr


def test_a_token_in_the_pinning_services_url_is_never_shown(mirror):
    """A pinning service URL carrying its key as ?token=… was printed whole on stdout and written
    into publish-receipts.jsonl: the values of credential-named parameters of the user's URLs are
    hidden everywhere else (register_secrets)."""
    async def service(request):
        if request.method == "POST":
            pin = await request.json()
            return web.json_response({"requestid": "r-1", "status": "queued", "pin": pin}, status=202)
        return web.json_response({"requestid": "r-1", "status": "pinned", "pin": {"cid": _dag(mirror).root_cid}})

    with hostile_node(mirror) as url, _Server({"/{tail:.*}": service}) as pins:
        proc = publish(url, mirror, "--pin-service", f"{pins}/?token={PIN_TOKEN}")
    assert proc.returncode == 0 and "pinned" in proc.stdout, proc.stdout + proc.stderr
    for text in (proc.stdout, proc.stderr, (mirror / "publish-receipts.jsonl").read_text()):
        assert PIN_TOKEN not in text, text


def test_a_node_on_an_ipv6_address(mirror):
    """ipfs://[::1]:PORT lost its brackets (http://::1:PORT/…): every call failed with an
    InvalidUrlClientError, so a node on an IPv6 address could not be used."""
    class OnIPv6(_Server):
        """The same server, listening on ::1."""

        def __enter__(self) -> str:
            self.loop = asyncio.new_event_loop()
            threading.Thread(target=self.loop.run_forever, daemon=True).start()

            async def start():
                app = web.Application(client_max_size=1 << 30)
                for path, handler in self.routes.items():
                    app.router.add_route("*", path, handler)
                self.runner = web.AppRunner(app)
                await self.runner.setup()
                site = web.TCPSite(self.runner, "::1", 0)
                await site.start()
                return site._server.sockets[0].getsockname()[1]

            return f"http://[::1]:{asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)}"

    with OnIPv6(hostile_node(mirror).routes) as url:  # an honest node's answers
        proc = publish(url, mirror)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == _dag(mirror).root_cid


async def _never(request):
    """No answer for longer than the client's 30 s (and short enough for the server to stop)."""
    await asyncio.sleep(35)


@pytest.mark.parametrize("answer", ["another CID", "not a state", "a list", "no answer"])
def test_a_pinning_service_is_believed_only_for_our_cid(mirror, answer):
    """A pinning service answering 'pinned' for another CID was reported as having pinned ours
    (exit 0); a status outside the API's ('ok') was printed as the service's word; a JSON list
    ended publish in an AttributeError traceback, and a service that never answered in a
    TimeoutError one."""
    async def create(request):
        if answer == "no answer":
            return await _never(request)
        pin = await request.json()
        status = {"requestid": "r-1", "status": "pinned", "pin": pin}
        if answer == "another CID":
            status["pin"] = {"cid": raw_cid("00" * 32)}
        elif answer == "not a state":
            status["status"] = "ok"
        return web.json_response([status] if answer == "a list" else status, status=202)

    with hostile_node(mirror) as url, _Server({"/pins": create}) as service:
        proc = publish(url, mirror, "--pin-service", service)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "pinning service" in _one_line(proc) and " pinned" not in proc.stdout, proc.stdout + proc.stderr


# -- car: the file it writes --------------------------------------------------------------------------
def test_car_never_writes_through_a_link_at_its_temporary_name(mirror, tmp_path):
    """car wrote into OUT.part, a fixed name, following a symbolic link there: OUT.part planted
    as a link to the mirror's manifest made car write the CAR over the manifest (exit 0), and
    the renamed link left OUT pointing into the mirror."""
    manifest = (mirror / "manifest-sha256.txt").read_bytes()
    out = tmp_path / "out" / "m.car"
    out.parent.mkdir()
    (out.parent / "m.car.part").symlink_to(mirror / "manifest-sha256.txt")
    proc = run_cli("car", str(mirror), "-o", str(out), timeout=LIMIT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (mirror / "manifest-sha256.txt").read_bytes() == manifest
    assert out.is_file() and not out.is_symlink() and proc.stdout.strip().splitlines()[-1] == _dag(mirror).root_cid
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.car", "m.car.part"]  # the link left as it was


def test_car_documents_the_exit_1_it_gives_a_changed_file(mirror, tmp_path):
    """car exits 1 for a file that no longer matches its manifest (README says so), but its --help
    and README's exit-code table listed only 0, 2 and 3."""
    acta = next(p for p in sorted((mirror / "data").rglob("*.jpg")))
    acta.write_bytes(acta.read_bytes()[:-1] + b"\x00")
    proc = run_cli("car", str(mirror), "-o", str(tmp_path / "m.car"), timeout=LIMIT)
    assert proc.returncode == 1 and not (tmp_path / "m.car").exists(), proc.stdout + proc.stderr
    codes = run_cli("car", "--help").stdout.split("exit codes:", 1)[1]
    assert any(line.split()[:1] == ["1"] for line in codes.splitlines()), codes


# -- export: where it writes -----------------------------------------------------------------------
@pytest.mark.parametrize("form", ["--warc", "--wacz"])
def test_export_refuses_to_write_inside_the_mirror(mirror, tmp_path, form):
    """export wrote OUT wherever it was told: inside the mirror's data/ (directly, or through a
    folder linked there) it added a file the manifest does not list, exit 0, and the mirror no
    longer verified."""
    (tmp_path / "link").symlink_to(mirror / "data")
    for out in (mirror / "data" / "x.export", tmp_path / "link" / "y.export"):
        proc = run_cli("export", str(mirror), form, str(out), timeout=LIMIT)
        assert proc.returncode == 2 and "inside the mirror" in _one_line(proc), proc.stdout + proc.stderr
        assert not os.path.lexists(out)
    assert sorted(p.name for p in (mirror / "data").iterdir() if p.is_file()) == []  # no temporary file left either
    assert run_cli("verify", str(mirror), timeout=LIMIT).returncode == 0


@pytest.mark.parametrize("field, value, said", [
    ("fetched_at", "0001-01-01T00:00:00+01:00", "fetched_at '0001-01-01T00:00:00+01:00' is out of range"),
    ("fetched_at", "9999-12-31T23:59:59-01:00", "fetched_at '9999-12-31T23:59:59-01:00' is out of range"),
    ("final_url", "http://[::1/x.jpg", "final_url is not an http(s) URL"),
    ("final_url", "http://example.com/\u00e9", "final_url holds a character no URL may (not ASCII)"),
    ("url", "http://example.com/\u2028x.jpg", "url holds a character no URL may (not ASCII)"),
])
@pytest.mark.parametrize("form", ["--warc", "--wacz"])
def test_export_names_a_record_it_cannot_write_in_one_line(mirror, tmp_path, form, field, value, said):
    """A provenance record whose date falls outside what a date can hold in UTC, whose URL does
    not parse, or holds what no URI may (the crawl records URLs percent-encoded): export ended
    in a traceback (OverflowError, ValueError, warcio's UnicodeEncodeError)."""
    lines = (mirror / "provenance.jsonl").read_text().splitlines()
    record = json.loads(lines[1])
    record[field] = value
    lines[1] = json.dumps(record, ensure_ascii=False)
    (mirror / "provenance.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "m.export"
    proc = run_cli("export", str(mirror), form, str(out), timeout=LIMIT)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"provenance.jsonl: {record['path']}: {said}" in _one_line(proc)
    assert not out.exists()


# -- IPFS: a token is for one host ------------------------------------------------------------------
def test_an_rpc_token_for_two_hosts_refuses_before_any_call(mirror):
    """ACTA_MIRROR_IPFS_TOKEN went to every node --to named: a second node on another host (a
    stranger's, a typo) was handed the token of the first. Now: one line, exit 2, nothing sent."""
    asked = []

    async def version(request):
        asked.append(request.headers.get("Authorization"))
        return web.json_response({"Version": "0.66.1"})

    with hostile_node(mirror, version=version) as url:
        url = url.replace("http://", "ipfs://")
        proc = run_cli("publish", str(mirror), "--to", url, "--to", url.replace("127.0.0.1", "localhost"),
                       "--quiet", timeout=LIMIT, env={"ACTA_MIRROR_IPFS_TOKEN": TOKEN})
    assert proc.returncode == 2 and "ACTA_MIRROR_IPFS_TOKEN_FOR" in _one_line(proc), proc.stdout + proc.stderr
    assert "127.0.0.1, localhost" in proc.stderr and not asked, (proc.stderr, asked)


def test_a_pin_token_goes_only_to_the_host_it_is_for(mirror):
    """With ACTA_MIRROR_PIN_TOKEN_FOR naming another host, the pinning service here is asked
    without the token (and may refuse); with it naming this host, with it."""
    seen = []

    async def service(request):
        seen.append(request.headers.get("Authorization"))
        if request.method == "POST":
            pin = await request.json()
            return web.json_response({"requestid": "r-1", "status": "pinned", "pin": pin}, status=202)
        return web.json_response({"requestid": "r-1", "status": "pinned", "pin": {"cid": _dag(mirror).root_cid}})

    for scope, want in (("pins.example.org", None), ("127.0.0.1", f"Bearer {PIN_TOKEN}")):
        seen.clear()
        with hostile_node(mirror) as url, _Server({"/{tail:.*}": service}) as pins:
            proc = publish(url, mirror, "--pin-service", pins,
                           env={"ACTA_MIRROR_PIN_TOKEN": PIN_TOKEN, "ACTA_MIRROR_PIN_TOKEN_FOR": scope})
        assert proc.returncode == 0 and seen and set(seen) == {want}, (scope, seen, proc.stderr)
