"""verify names each damaged, missing or added file; bad input exits 2 with one clear line."""
from __future__ import annotations

import asyncio
import http.server
import json
import os
import socket
import threading
from pathlib import Path

import pytest

from mirror.archive import safe_component
from mirror.crawl import CrawlOptions, crawl, in_shard, parse_shard
from mirror.fetch import parse_retry_after
from mirror.manifest import decode_path, encode_path, read_provenance
from mirror.models import Entry, UsageError
from mirror.verify import verify
from tests.conftest import run_cli


@pytest.fixture
def mirror_dir(replay, tmp_path) -> Path:
    out = tmp_path / "m"
    asyncio.run(crawl(CrawlOptions(site="resultados2024", root=replay.url, out=str(out))))
    return out


def _some_acta(out: Path) -> Path:
    entry = next(e for e in read_provenance(out / "provenance.jsonl") if e.kind == "acta")
    return out / entry.path


def test_verify_intact_exit_0(mirror_dir):
    proc = run_cli("verify", str(mirror_dir))
    assert proc.returncode == 0 and "intact" in proc.stdout


def test_verify_names_a_flipped_byte(mirror_dir):
    victim = _some_acta(mirror_dir)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    rel = victim.relative_to(mirror_dir).as_posix()
    assert [(p.kind, p.path) for p in verify(mirror_dir)] == [("changed", rel)]
    proc = run_cli("verify", str(mirror_dir), "--json")
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert report["ok"] is False and report["problems"][0]["path"] == rel


def test_verify_names_a_deleted_and_an_added_file(mirror_dir):
    victim = _some_acta(mirror_dir)
    victim.unlink()
    extra = mirror_dir / "data" / "planted.jpg"
    extra.write_bytes(b"\xff\xd8\xff not evidence")
    kinds = {(p.kind, p.path) for p in verify(mirror_dir)}
    assert ("missing", victim.relative_to(mirror_dir).as_posix()) in kinds
    assert ("unlisted", "data/planted.jpg") in kinds
    assert any(k == "oxum" for k, _ in kinds)
    proc = run_cli("verify", str(mirror_dir), "--fast")
    assert proc.returncode == 1 and "data/planted.jpg" in proc.stdout and "missing" in proc.stdout


def test_verify_fast_names_a_missing_file_a_size_change_and_a_changed_root(mirror_dir):
    entries = [e for e in read_provenance(mirror_dir / "provenance.jsonl") if e.kind == "acta"]
    gone, grown = entries[0], entries[1]
    (mirror_dir / gone.path).unlink()
    with open(mirror_dir / grown.path, "ab") as fh:
        fh.write(b"\0")
    manifest = mirror_dir / "manifest-sha256.txt"
    lines = manifest.read_text().splitlines(keepends=True)
    third = next(i for i, line in enumerate(lines) if line.rstrip("\n").endswith(entries[2].path))
    lines[third] = "0" * 64 + lines[third][64:]  # the manifest now lists other bytes: another Merkle root
    manifest.write_text("".join(lines))
    proc = run_cli("verify", str(mirror_dir), "--fast", "--json")
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    found = {(p["kind"], p["path"]) for p in report["problems"]}
    assert {("missing", gone.path), ("changed", grown.path), ("root", "bag-info.txt"),
            ("tag-changed", "manifest-sha256.txt"), ("provenance", entries[2].path)} <= found
    assert report["ok"] is False and report["hashed"] is False and "not detected" in report["not_checked"]
    size_line = next(p for p in report["problems"] if p["path"] == grown.path)
    assert size_line["detail"] == f"{grown.size + 1} bytes, provenance.jsonl says {grown.size} (sizes only: not hashed)"


def test_verify_fast_says_it_did_not_hash_and_plain_verify_sees_the_same_size_flip(mirror_dir):
    victim = _some_acta(mirror_dir)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    fast = run_cli("verify", str(mirror_dir), "--fast")
    assert fast.returncode == 0, fast.stdout + fast.stderr
    assert "NOT CHECKED: --fast hashed no file in data/: a change that keeps a file's size is not detected" \
        in fast.stdout
    assert "is intact" not in fast.stdout
    plain = run_cli("verify", str(mirror_dir))
    assert plain.returncode == 1 and f"changed: {victim.relative_to(mirror_dir).as_posix()}" in plain.stdout
    assert "NOT CHECKED" not in plain.stdout
    both = run_cli("verify", str(mirror_dir), "--fast", "--cids")
    assert both.returncode == 2 and both.stdout == "" and len(both.stderr.strip().splitlines()) == 1


def test_verify_catches_an_edited_manifest(mirror_dir):
    manifest = mirror_dir / "manifest-sha256.txt"
    text = manifest.read_text()
    manifest.write_text(text.replace(text[0], "0" if text[0] != "0" else "1", 1))
    kinds = {p.kind for p in verify(mirror_dir)}
    assert "tag-changed" in kinds and "changed" in kinds


@pytest.mark.parametrize("damage", ['{"torn', "[1, 2]", '{"path": 7, "size": "x"}'])
def test_verify_cids_names_a_damaged_provenance_line_without_a_traceback(mirror_dir, damage):
    with open(mirror_dir / "provenance.jsonl", "a", encoding="utf-8") as fh:
        fh.write(damage + "\n")
    proc = run_cli("verify", str(mirror_dir), "--cids", "--json")
    assert proc.returncode == 1, proc.stderr
    kinds = {(p["kind"], p["path"]) for p in json.loads(proc.stdout)["problems"]}
    assert ("provenance", "provenance.jsonl") in kinds and ("tag-changed", "provenance.jsonl") in kinds


def test_verify_on_something_that_is_not_a_mirror(tmp_path):
    proc = run_cli("verify", str(tmp_path))
    assert proc.returncode == 2 and "not a mirror" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_malformed_csv_exits_2_with_one_line(replay, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("this,is,not\n1,2,3\n")
    proc = run_cli("crawl", "resultados2024", "--root", replay.url, "--out", str(tmp_path / "m"), "--index", str(bad))
    assert proc.returncode == 2
    assert "missing column" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    row = bad.with_name("row.csv")
    row.write_text("COD_EDO,EDO,COD_MUN,MUN,COD_PAR,PAR,CENTRO,MESA,URL\n1,A,1,B,1,C,notdigits,1,http://x/y.jpg\n")
    proc = run_cli("crawl", "resultados2024", "--root", replay.url, "--out", str(tmp_path / "m2"), "--index", str(row))
    assert proc.returncode == 1 and "row.csv:2" in proc.stderr  # a bad row is reported and skipped


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_malformed_html_root_exits_2(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<html><body><p>nothing to list</p></body></html>")
    handler = lambda *a, **k: _Quiet(*a, directory=str(site), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        proc = run_cli("crawl", "resultados2024", "--root", url, "--out", str(tmp_path / "m"), "--discover", "html")
        assert proc.returncode == 2 and "dependencyTableBody" in proc.stderr
    finally:
        server.shutdown()


def test_unreachable_root_exits_2(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    proc = run_cli("crawl", "resultados2024", "--root", f"http://127.0.0.1:{port}", "--out", str(tmp_path / "m"))
    assert proc.returncode == 2 and "cannot read the index" in proc.stderr


@pytest.mark.parametrize("out, index, needle", [
    ("", "", "--out is empty: name the mirror's folder"),  # was exit 0, the bag made in the current folder
    ("afile/m", "", "afile is not a folder"),  # was exit 3, 'free space or fix permissions'
    ("afile/m/deeper", "", "afile is not a folder"),
    ("afile/../m", "", "afile is not a folder"),  # the system goes through afile to find '..'
    ("nowhere", "", "--out nowhere: a symbolic link to nothing"),
    ("nowhere/m", "", "nowhere is a symbolic link to nothing"),
    ("m", "fifo", "--index fifo: not a regular file"),  # was 'no such file'
    ("m", "/dev/null", "--index /dev/null: not a regular file"),
    ("m", "/proc/self/mem", "file:mem: cannot be read (Input/output error)"),  # was 'Input/output error', naming nothing
    # a regular file of 0 bytes that reads 256 GB: the run hashed it until killed (and ignored SIGTERM for minutes)
    ("m", "/proc/self/pagemap", "file:pagemap: over 268,435,456 bytes, larger than any index; not read on"),
], ids=["empty", "under-a-file", "deep-under-a-file", "dotdot-through-a-file", "dangling-link", "under-a-dangling-link",
        "index-fifo", "index-device", "index-unreadable", "index-endless"])
def test_an_out_or_index_that_can_never_work_is_one_line_and_exit_2(tmp_path, out, index, needle):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "nowhere").symlink_to(tmp_path / "gone" / "m")
    os.mkfifo(tmp_path / "fifo")
    args = ["--index", index] if index else []
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = run_cli("crawl", "resultados2024", "--root", "http://127.0.0.1:9", "--out", out, *args, cwd=tmp_path,
                   timeout=60)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stdout + proc.stderr
    assert needle in proc.stderr, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before and (tmp_path / "afile").read_text() == "x"


@pytest.mark.parametrize("flags", [["--discover", "csv"], ["--discover", "both"], ["--dry-run"]])
def test_an_index_the_user_may_not_read_is_one_line_and_exit_2(tmp_path, flags):
    """Was exit 3 and 'Permission denied: idx.csv' (the disk-error path) with --discover both and
    --dry-run. Root reads a file of mode 000, so the run drops the capabilities that let it."""
    import shutil
    import subprocess
    import sys

    from tests.conftest import ROOT

    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) is needed to run without the capability to read any file")
    (tmp_path / "idx.csv").write_text("x")
    (tmp_path / "idx.csv").chmod(0)
    proc = subprocess.run(["setpriv", "--bounding-set=-dac_override,-dac_read_search", sys.executable, "-m", "mirror",
                           "crawl", "resultados2024", "--root", "http://127.0.0.1:9/", "--out", "m", "--index", "idx.csv",
                           *flags], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    if os.geteuid() == 0 and "Operation not permitted" in proc.stderr:
        pytest.skip("this machine lets no process drop capabilities")
    assert proc.returncode == 2 and proc.stderr == "acta-mirror: file:idx.csv: cannot be read (Permission denied)\n", \
        proc.stderr


@pytest.mark.parametrize("what", ["fifo", "device"])
def test_a_job_file_that_is_a_fifo_or_a_device_is_refused_unread(tmp_path, what):
    """`acta-mirror run FIFO` waited for ever for a writer; /dev/zero was read up to the size limit."""
    job = tmp_path / "job.toml"
    if what == "fifo":
        os.mkfifo(job)
    else:
        job = Path("/dev/zero")
    proc = run_cli("run", str(job), timeout=30)
    assert proc.returncode == 2 and f"{job}: not a regular file: not a job file" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args,needle", [
    (["crawl", "resultados2024", "--root", "ftp://x", "--out", "o"], "--root"),
    (["crawl", "nosuchsite", "--root", "http://127.0.0.1:9", "--out", "o"], "unknown site"),
    (["crawl", "resultados2024", "--root", "http://127.0.0.1:9", "--out", "o", "--shard", "5/4"], "--shard"),
    (["crawl", "resultados2024", "--root", "http://127.0.0.1:9", "--out", "o", "--concurrency", "0"], "1 or more"),
    (["crawl", "resultados2024", "--root", "http://127.0.0.1:9", "--out", "o", "--proxy", "gopher://x"], "proxy"),
    (["crawl", "--bogus"], "acta-mirror"),
    (["replay", "--faults", "nonsense"], "--faults"),
])
def test_bad_usage_is_one_line_exit_2(tmp_path, args, needle):
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_out_dir_that_is_someone_elses_is_refused(replay, tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    proc = run_cli("crawl", "resultados2024", "--root", replay.url, "--out", str(tmp_path))
    assert proc.returncode == 2 and (tmp_path / "precious.txt").read_text() == "keep me"


def test_hostile_names_stay_inside_data(replay, tmp_path):
    rows = ["COD_EDO,EDO,COD_MUN,MUN,COD_PAR,PAR,CENTRO,MESA,URL"]
    names = ["../../../../tmp/evil", "..", "a/b\\c", ".hidden", "\u0065\u0301x\r\ny", "%2e%2e", "~root", "/abs"]
    for i, name in enumerate(names):
        rows.append(f'"{i}","{name}","1","{name}","1","{name}",{10101001 + i},1,{replay.url}/'
                    f"{replay.replay.rows and sorted(replay.replay.rows)[i]}")
    index = tmp_path / "hostile.csv"
    index.write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "m"
    asyncio.run(crawl(CrawlOptions(site="resultados2024", root=replay.url, out=str(out), index=str(index))))
    entries = read_provenance(out / "provenance.jsonl")
    assert len(entries) == len(names)
    for e in entries:
        resolved = (out / e.path).resolve()
        assert resolved.is_relative_to((out / "data").resolve()) and resolved.exists()
        assert all(part not in ("", ".", "..") and not part.startswith(".") for part in e.path.split("/"))
    assert not list(tmp_path.glob("evil*")) and not Path("/tmp/evil").exists()
    assert verify(out) == []


def test_safe_component_rules():
    assert safe_component("../..") == "_"
    assert "/" not in safe_component("a/b") and "\\" not in safe_component("a\\b")
    assert safe_component("e\u0301") == "\u00e9"  # NFC
    assert safe_component("x" * 500) == "x" * 80


def test_manifest_path_encoding_round_trips():
    for path in ["data/a%b", "data/line\nbreak", "data/cr\rx", "data/plain.jpg"]:
        enc = encode_path(path)
        assert "\n" not in enc and "\r" not in enc and decode_path(enc) == path


def test_retry_after_forms():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("garbage") is None and parse_retry_after(None) is None


def test_shards_partition_the_keys():
    keys = [f"{c:09d}.{t:02d}" for c in range(10101001, 10101201) for t in (1, 2, 3)]
    parts = [[k for k in keys if in_shard(k, (i, 3))] for i in (1, 2, 3)]
    assert sorted(sum(parts, [])) == sorted(keys) and all(parts)
    with pytest.raises(UsageError):
        parse_shard("0/3")


def test_provenance_line_parser_rejects_bad_lines():
    good = Entry(key="k", kind="acta", version=1, path="data/x.jpg", sha256="a" * 64, size=1, cid="",
                 url="u", final_url="u", host="h", fetched_at="t", status=200, etag="", last_modified="",
                 content_type="image/jpeg", site="s", page="p").to_json()
    assert Entry.from_json(good).path == "data/x.jpg"
    for bad in ["", "[]", "{}", good.replace('"data/x.jpg"', '"../x.jpg"'), json.dumps({**json.loads(good), "size": "1"}),
                good.replace("a" * 64, "z" * 64)]:
        with pytest.raises(ValueError):
            Entry.from_json(bad)


@pytest.mark.parametrize("damage", ["size-1e400", "path-number", "no-key", "not-utf8"])
def test_damaged_provenance_is_one_line_for_every_reader(mirror_dir, damage):
    lines = (mirror_dir / "provenance.jsonl").read_bytes().splitlines()
    obj = json.loads(lines[1])
    if damage == "size-1e400":
        bad = json.dumps(obj).replace(f'"size": {obj["size"]}', '"size": 1e400').encode()
    elif damage == "path-number":
        bad = json.dumps({**obj, "path": 7}).encode()
    elif damage == "no-key":
        bad = json.dumps({k: v for k, v in obj.items() if k != "key"}).encode()
    else:
        bad = json.dumps(obj).encode().replace(b'"acta"', b'"act\xe1"')
    (mirror_dir / "provenance.jsonl").write_bytes(b"\n".join([lines[0], bad] + lines[2:]) + b"\n")
    verified = run_cli("verify", str(mirror_dir), "--json", "--cids")
    assert verified.returncode == 1
    details = [p["detail"] for p in json.loads(verified.stdout)["problems"] if p["path"] == "provenance.jsonl"]
    assert details and details[0].startswith("line 2: ")
    for args in (["tally", str(mirror_dir)], ["diff", str(mirror_dir), str(mirror_dir)]):
        proc = run_cli(*args)
        assert proc.returncode == 2 and "provenance.jsonl" in proc.stderr, args
        assert len(proc.stderr.strip().splitlines()) == 1


def test_verify_names_how_many_files_it_checked(mirror_dir):
    """Each verdict gives its denominator: the files the manifest lists and those found in data/."""
    listed = len((mirror_dir / "manifest-sha256.txt").read_text().splitlines())
    ok = run_cli("verify", str(mirror_dir))
    assert ok.returncode == 0 and f"{listed:,} of {listed:,} listed files hashed and matched" in ok.stdout
    _some_acta(mirror_dir).unlink()
    bad = run_cli("verify", str(mirror_dir), "--json")
    report = json.loads(bad.stdout)
    assert bad.returncode == 1 and (report["files_listed"], report["files_found"]) == (listed, listed - 1)
    text = run_cli("verify", str(mirror_dir))
    assert f"({listed:,} files listed in the manifest, {listed - 1:,} found in data/)" in text.stderr


@pytest.fixture(scope="module")
def giant_index(tmp_path_factory):
    """A text index one byte over MAX_INDEX_BYTES: a header, then one line with no end."""
    from mirror.models import MAX_INDEX_BYTES

    path = tmp_path_factory.mktemp("giant") / "giant.csv"
    header = b"COD_EDO,EDO,COD_MUN,MUN,COD_PAR,PAR,CENTRO,MESA,RE,VOTOS_VALIDOS,VOTOS_NULOS,EG,NM,LM,JABE,JOBR," \
             b"AE,CF,DC,EM,BERA,URL\n"
    with open(path, "wb") as fh:
        fh.write(header)
        left = MAX_INDEX_BYTES + 1 - len(header)
        while left:
            fh.write(b"a" * min(left, 1 << 24))
            left -= min(left, 1 << 24)
    return path


@pytest.mark.parametrize("flags", [[], ["--dry-run"], ["--discover", "both"], ["--discover", "both", "--dry-run"]])
def test_an_index_larger_than_any_is_refused_on_every_path(tmp_path, giant_index, flags):
    """Only the crawl of --discover csv refused an index over 256 MiB: --dry-run read a 1 GiB one
    whole (2 GB of memory) and planned a crawl from it, exit 0; --discover both read it too."""
    proc = run_cli("crawl", "resultados2024", "--root", "http://127.0.0.1:9/", "--out", str(tmp_path / "m"),
                   "--index", str(giant_index), *flags, timeout=120)
    assert proc.returncode == 2 and proc.stderr == "acta-mirror: file:giant.csv: over 268,435,456 bytes, " \
        "larger than any index; not read on\n", proc.stdout + proc.stderr
    assert not (tmp_path / "m").exists()
