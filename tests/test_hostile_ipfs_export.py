"""IPFS publishing against a broken or hostile node and pinning service, and the WACZ checker
against hostile packages: found by an adversarial review. A hostile peer is a small aiohttp
server speaking just enough of its protocol (it is the attacker, not a stand-in for a component
we rely on); everything else is real (the js-ipfs node, the CLI, unzip). Each test failed on the
code before its fix.
"""
from __future__ import annotations

import gzip
import io
import json
import resource
import shutil
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import pytest

from tests.test_stranger import CHECK_WARC, LIMIT, add_response, append_record, http_of, image_urls, made  # noqa: F401


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
    from warcio.archiveiterator import ArchiveIterator

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


# -- car and IPFS: a mirror to publish --------------------------------------------
@pytest.fixture(scope="module")
def pristine_mirror(tmp_path_factory) -> Path:
    import asyncio

    from mirror.crawl import CrawlOptions, crawl
    from mirror.replay import Replay, ReplayThread

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
    from mirror.archive import published_files
    from mirror.cid import Dag

    return Dag(mirror, published_files(mirror))


# -- car: the file it writes --------------------------------------------------------------------------
def test_car_never_writes_through_a_link_at_its_temporary_name(mirror, tmp_path):
    """car wrote into OUT.part, a fixed name, following a symbolic link there: OUT.part planted
    as a link to the mirror's manifest made car write the CAR over the manifest (exit 0), and
    the renamed link left OUT pointing into the mirror."""
    from tests.conftest import run_cli

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
    from tests.conftest import run_cli

    acta = next(p for p in sorted((mirror / "data").rglob("*.jpg")))
    acta.write_bytes(acta.read_bytes()[:-1] + b"\x00")
    proc = run_cli("car", str(mirror), "-o", str(tmp_path / "m.car"), timeout=LIMIT)
    assert proc.returncode == 1 and not (tmp_path / "m.car").exists(), proc.stdout + proc.stderr
    codes = run_cli("car", "--help").stdout.split("exit codes:", 1)[1]
    assert any(line.split()[:1] == ["1"] for line in codes.splitlines()), codes
