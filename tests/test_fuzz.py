"""Fuzzing every parser of outside input: any input gives a result or one clean error, never a crash.

Hypothesis drives each parser with arbitrary and with near-valid inputs. The 'clean' errors are
the ones the CLI turns into one line and an exit code (MirrorError) or the documented
ValueError subclasses of the record parsers.
"""
from __future__ import annotations

import json
import os
import string
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mirror.audit.crosscheck import load_figures
from mirror.config import load_job
from mirror.evidence import check_proof
from mirror.manifest import parse_manifest_text, provenance_lines, read_bag_info
from mirror.models import Entry, MirrorError
from mirror.qrformat import QrFormatError, parse_qr
from mirror.replay.faults import FaultPlan
from mirror.sign import SignatureError
from mirror.sites.cne import _results
from mirror.sites.resultados2024 import _listing, _mesa, parse_index_bytes

EXAMPLES = int(os.environ.get("ACTA_MIRROR_FUZZ_EXAMPLES", "300"))  # scripts/fault_campaign.py raises it
FUZZ = settings(max_examples=EXAMPLES, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
HEADER = "COD_EDO,EDO,COD_MUN,MUN,COD_PAR,PAR,CENTRO,MESA,RE,VOTOS_VALIDOS,VOTOS_NULOS,EG,NM,LM,JABE,JOBR,AE,CF,DC,EM,BERA,URL\n"
cells = st.text(alphabet=string.printable + "ñáé\u00a0\u2028\x00", max_size=12)


@FUZZ
@given(st.binary(max_size=2000))
def test_index_csv_bytes(raw):
    try:
        list(parse_index_bytes(raw, "http://x/i.csv"))
    except MirrorError:
        pass


@FUZZ
@given(st.lists(st.lists(cells, min_size=0, max_size=24), max_size=8), st.sampled_from(["utf-8-sig", "latin-1"]))
def test_index_csv_near_valid(rows, encoding):
    text = HEADER + "".join(",".join(r) + "\n" for r in rows)
    try:
        for acta in parse_index_bytes(text.encode(encoding, errors="replace"), "http://x/i.csv"):
            assert len(acta.key) == 12 and acta.key[9] == "."
    except MirrorError:
        pass


html_bits = st.lists(st.sampled_from([
    "<tbody id=\"dependencyTableBody\">", "</tbody>", "<a href=\"/estado/1\">", "</a>", "<a>", "<div id=\"acta\">",
    "<img src=\"/x.jpg\">", "<img>", "<dd id=\"codigo-centro\">010101001</dd>", "<dd id=\"numero-mesa\">", "12",
    "abc", "</dd>", "<table id=\"tablaResultados\">", "<td>", "<a href=\"../1/reg_010000.html\">", "&amp;", "<!--",
]), max_size=30).map("".join)


@FUZZ
@given(st.one_of(st.text(max_size=500), html_bits))
def test_html_pages(page):
    for parse in (_listing, _mesa, _results):
        try:
            parse(page, "http://x/p")
        except MirrorError:
            pass


@FUZZ
@given(st.one_of(st.text(max_size=300), st.builds(
    lambda key, fields, tail: f"{key}!{','.join(fields)}!{tail}",
    st.from_regex(r"\d{9}\.\d{2}\.1\.\d{4}", fullmatch=True) | st.text(max_size=20),
    st.lists(st.from_regex(r"-?\d{0,7}", fullmatch=True), max_size=40),
    st.text(max_size=10))))
def test_qr_strings(text):
    try:
        votes = parse_qr(text)
    except QrFormatError:
        return
    assert len(votes.parties) == 38 and all(v >= 0 for v in votes.parties)


@FUZZ
@given(st.text(max_size=1000))
def test_manifests(text):
    try:
        parse_manifest_text(text)
    except MirrorError:
        pass


@FUZZ
@given(st.one_of(st.text(max_size=400), st.dictionaries(st.sampled_from(
    ["key", "kind", "version", "path", "sha256", "size", "cid", "url", "status", "supersedes"]),
    st.one_of(st.none(), st.integers(), st.text(max_size=70), st.booleans()), max_size=10).map(json.dumps)))
def test_provenance_lines(line):
    try:
        Entry.from_json(line)
    except ValueError:
        pass
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "provenance.jsonl"
        path.write_text(line + "\n", encoding="utf-8", errors="replace")
        try:
            list(provenance_lines(path))
        except MirrorError:
            pass
        (Path(d) / "bag-info.txt").write_text(line, encoding="utf-8", errors="replace")
        read_bag_info(Path(d) / "bag-info.txt")


@FUZZ
@given(st.one_of(st.dictionaries(st.text(max_size=12), st.one_of(st.integers(), st.text(max_size=70),
                                                                  st.lists(st.text(max_size=70), max_size=4)),
                                 max_size=6),
                 st.builds(lambda i, n, h: {"version": 1, "path": "data/x.jpg", "sha256": "0" * 64, "leaf_index": i,
                                            "tree_size": n, "root": "", "audit_path": h},
                           st.integers(-5, 50), st.integers(-5, 50), st.lists(st.text(max_size=70), max_size=6))),
       st.text(max_size=70))
def test_proofs(proof, root):
    with tempfile.NamedTemporaryFile() as f:
        f.write(b"acta")
        f.flush()
        try:
            check_proof(f.name, proof, root)
        except (MirrorError, SignatureError):
            pass


toml_bits = st.lists(st.sampled_from([
    "[source]\n", "[fetch]\n", "[publish]\n", "[sign]\n", "[output]\n", "[nope]\n", "site = \"resultados2024\"\n",
    "root = \"http://x\"\n", "concurrency = 0\n", "concurrency = \"9\"\n", "rate = -1\n", "git = [1]\n",
    "git = [\"git+file:///x\"]\n", "dir = 3\n", "key = \"\"\n", "discover = \"both\"\n", "= broken\n", "[[a]]\n",
]), max_size=12).map("".join)


@FUZZ
@given(st.one_of(toml_bits, st.text(max_size=200)))
def test_job_files(text):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "job.toml"
        path.write_text(text, encoding="utf-8")
        try:
            load_job(path)
        except MirrorError:
            pass


@FUZZ
@given(st.text(max_size=80))
def test_fault_plans(text):
    try:
        FaultPlan.parse(text)
    except MirrorError:
        pass


@FUZZ
@given(st.lists(st.lists(cells, max_size=6), max_size=6), st.sampled_from(
    ["level,code,EG,NM\n", "CENTRO,MESA,EG\n", "foo\n", ""]))
def test_official_results_files(rows, header):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "official.csv"
        path.write_text(header + "".join(",".join(r) + "\n" for r in rows), encoding="utf-8", errors="replace")
        try:
            load_figures(path)
        except MirrorError:
            pass


# -- the mirror reader (state.py) and everything that reads through it --------------------------
HOSTILE_PATHS = ["data/a.jpg", "data/x/010101001.01.jpg", "data/index/i.csv", "/etc/passwd", "/dev/zero", "../x",
                 "data/../../x", "data//a.jpg", "data/./a.jpg", "bagit.txt", "data/fifo", "data/zero", "data/link",
                 "data/linkdir/f", "", "data/\x00", "data/a%0Ab", "provenance.jsonl", "../outside.txt"]
ENTRY = {"key": "010101001.01", "kind": "acta", "version": 1, "path": "data/x/010101001.01.jpg", "sha256": "0" * 64,
         "size": 4, "cid": "", "url": "u", "final_url": "u", "host": "h", "fetched_at": "t", "status": 200,
         "etag": "", "last_modified": "", "content_type": "image/jpeg", "site": "s", "page": "p"}
odd_values = st.one_of(st.sampled_from(HOSTILE_PATHS), st.integers(-2, 3), st.integers(-10**40, 10**40), st.none(),
                       st.booleans(), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
                       st.sampled_from(["index/i.csv", "index/..", "index", "acta", "010101001.1", "0" * 64]),
                       st.lists(st.integers(), max_size=2))
entry_lines = st.builds(
    lambda changes, drop: json.dumps({k: v for k, v in {**ENTRY, **changes}.items() if k not in drop}),
    st.dictionaries(st.sampled_from(sorted(ENTRY) + ["supersedes", "extra"]), odd_values, max_size=4),
    st.sets(st.sampled_from(sorted(ENTRY)), max_size=2))
text_lines = st.one_of(entry_lines, st.text(max_size=80), st.just('{"size": 1e400}'), st.just("[" * 5000),
                       st.binary(max_size=40).map(lambda b: b.decode("latin-1")))
hexish = st.one_of(st.just("0" * 64), st.just("F" * 64), st.text("0123456789abcdefg", min_size=60, max_size=66))
manifest_lines = st.lists(st.one_of(st.builds(lambda h, p, sep: f"{h}{sep}{p}", hexish, st.sampled_from(HOSTILE_PATHS),
                                              st.sampled_from(["  ", " *", " ", ""])),
                                    st.text(max_size=40)), max_size=6)


def _snapshot(folder: Path) -> dict:
    return {str(p): (p.lstat().st_mode, p.lstat().st_size, p.lstat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def _alarm(signum, frame):
    raise TimeoutError("the reader hung")


@FUZZ
@given(st.lists(text_lines, max_size=6), manifest_lines, manifest_lines, st.text(max_size=120), st.binary(max_size=30),
       st.sets(st.sampled_from(["fifo", "zero", "link", "linkdir", "data-link", "provenance-link", "no-tags"]),
               max_size=3))
def test_mirror_reader(provenance, manifest, tags, bag_info, raw_tail, layout):
    import signal

    from mirror.evidence import check_seal
    from mirror.state import read_state
    from mirror.verify import verify

    with tempfile.TemporaryDirectory() as d:
        top = Path(d)
        (top / "outside.txt").write_text("the host's file\n")
        root = top / "m"
        (root / "data" / "x").mkdir(parents=True)
        (root / "data" / "a.jpg").write_bytes(b"acta")
        (root / "data" / "x" / "010101001.01.jpg").write_bytes(b"acta")
        (root / "bagit.txt").write_text("BagIt-Version: 1.0\n")
        (root / "manifest-sha256.txt").write_text("".join(x + "\n" for x in manifest), errors="replace")
        if "no-tags" not in layout:
            (root / "tagmanifest-sha256.txt").write_text("".join(x + "\n" for x in tags), errors="replace")
        (root / "bag-info.txt").write_text(bag_info, errors="replace")
        body = "".join(x + "\n" for x in provenance).encode("utf-8", "surrogatepass") + raw_tail
        (top / "prov").write_bytes(body)
        if "provenance-link" in layout:
            os.symlink(top / "prov", root / "provenance.jsonl")
        else:
            (root / "provenance.jsonl").write_bytes(body)
        if "fifo" in layout:
            os.mkfifo(root / "data" / "fifo")
        if "zero" in layout:
            os.symlink("/dev/zero", root / "data" / "zero")
        if "link" in layout:
            os.symlink(top / "outside.txt", root / "data" / "link")
        if "linkdir" in layout:
            os.symlink(top, root / "data" / "linkdir")
        if "data-link" in layout:
            os.rename(root / "data", top / "data")
            os.symlink(top / "data", root / "data")
        before = _snapshot(top)
        old = signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, 20)
        try:
            for read in (lambda: read_state(root).latest_actas(), lambda: verify(root, cids=True),
                         lambda: verify(root, fast=True), lambda: check_seal(root)):
                try:
                    read()
                except MirrorError:
                    pass
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
        assert _snapshot(top) == before  # nothing written, inside the mirror or out



URL_PARTS = st.tuples(st.sampled_from(["http://", "https://", "HTTP://", "Http://", "", "//", "ftp://"]),
                      st.sampled_from(["h", "h:8", "[::1]", "u:p@h", "", "h\t", "H"]),
                      st.lists(st.sampled_from(["/", "a.jpg", "?", "#", "?q", ";p", ";", "./", "../", "%2e", " ", "\t",
                                                "\x00", "\\", "é", ":", "//", "\x7f", "\n"]), max_size=6))


@FUZZ
@given(st.sampled_from(["http://b/i.csv", "https://b/x/y/i.csv", "ftp://b/i", "", "http://b"]), URL_PARTS)
@example("http://b/i.csv", ("http://", "h", ["/", "a.jpg", "?"]))  # urljoin drops an empty query...
@example("http://b/i.csv", ("http://", "h", ["/", "a.jpg", "#"]))  # ...and an empty fragment
@example("http://b/i.csv", ("HTTP://", "h", ["/", "a.jpg"]))  # ...and lowercases the scheme
@example("http://b/i.csv", ("http://", "h", ["/", "\t", "a.jpg"]))  # ...and removes tabs
@example("http://b/i.csv", ("http://", "h", ["/", "a.jpg", ";"]))  # ...and empty parameters after the last '/'
def test_join_fast_path_gives_what_urljoin_gives(base, parts):
    """join() hands back plain absolute URLs without parsing them: only where urljoin would;
    then what no URL may hold (non-ASCII, spaces, controls) is percent-encoded."""
    from urllib.parse import quote, urljoin

    from mirror.sites import join

    href = parts[0] + parts[1] + "".join(parts[2])
    try:
        joined = urljoin(base, href)
    except ValueError:
        joined = href
    assert join(base, href) == "".join(c if "\x21" <= c <= "\x7e" else quote(c, safe="") for c in joined)
