"""A stranger's copy, attacked again: found by an adversarial review of every command that reads a
copy someone else made (verify, restore, merge, tally, crosscheck, site, export, the checkers).
Each attack edits a real signed mirror the way an attacker would, then runs the real command line
under a timeout; each test failed on the code before its fix.
"""
from __future__ import annotations

import dataclasses
import gzip
import json
import os
import re
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mirror.replay.data import index_file
from mirror.replay.images import render
from tests.conftest import ROOT, run_cli
from tests.test_hostile_evidence import LIMIT, _an_acta, _retag, pristine, signed  # noqa: F401
from tests.test_stranger import (CHECK_WARC, add_response, append_record, git, http_of, image_urls,  # noqa: F401
                                 index_lines, made, warc_member)


def _resign_without_tag_files(signed: Path, pristine) -> None:
    """Sign the copy's statement again with the real key, its tag_files dropped: a statement of
    the payload manifest only, as versions before tag files were signed wrote."""
    from mirror.sign import load_secret, sign_file

    statement = json.loads((signed / "signed-root.json").read_text())
    del statement["tag_files"]
    (signed / "signed-root.json").write_text(json.dumps(statement, indent=1, sort_keys=True) + "\n")
    comment = f"acta-mirror merkle root {statement['merkle_root']} size {statement['tree_size']}"
    (signed / "signed-root.json.minisig").write_text(
        sign_file(signed / "signed-root.json", load_secret(f"{pristine[1]}.key"), comment))


def _forge_votes(mirror, acta: dict, extra: int) -> None:
    """The acta's image re-rendered with `extra` more votes for EG in its QR: a forgery whose QR
    names the right table, written over the archived file (the records are left as they are)."""
    row = next(r for r in index_file(1).rows if r.key == acta["key"])
    votes = tuple((c, v + extra if c == "EG" else v) for c, v in row.votes)
    (mirror / acta["path"]).write_bytes(render(dataclasses.replace(row, votes=votes), row.filename, small=True))


def _cli_in_memory(limit: int, *args: str) -> subprocess.CompletedProcess:
    """The command line with its address space capped: a file read whole fails fast, not the machine."""
    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return subprocess.run([sys.executable, "-m", "mirror", *args], capture_output=True, text=True, timeout=LIMIT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, preexec_fn=cap)


def _nation_eg(proc) -> int:
    return json.loads(proc.stdout)["levels"]["nation"][0]["votes"]["EG"]


# -- tally: an edited image's votes -----------------------------------------------------------------
def test_tally_never_counts_the_votes_of_an_image_that_is_not_the_archived_one(signed, pristine):
    """tally read the QR of whatever bytes lay under an acta's name: a copy with one image redrawn
    (500 more votes for one candidate, the right table in its QR) was tallied '52 of 52 tables
    read', the 500 votes in the nation's total, exit 0."""
    honest = run_cli("tally", str(pristine[0]), "--format", "json", "--quiet", timeout=LIMIT)
    assert honest.returncode == 0, honest.stderr
    acta = _an_acta(signed)
    _forge_votes(signed, acta, 500)
    proc = run_cli("tally", str(signed), "--format", "json", "--quiet", timeout=LIMIT)
    report = json.loads(proc.stdout)
    table = next(t for t in report["tables"] if t["key"] == acta["key"])
    assert table["votes"] is None and table["cause"] == "not the archived bytes", table
    assert _nation_eg(proc) == _nation_eg(honest) - dict(
        (t["key"], t["votes"]) for t in json.loads(honest.stdout)["tables"])[acta["key"]]["EG"]
    assert proc.returncode == 1
    assert f"1 of {len(report['tables'])} archived actas are not the bytes" in proc.stderr
    assert "Traceback" not in proc.stderr


# -- verify: a planted giant where the timestamp token goes ---------------------------------------
@pytest.mark.parametrize("name", ["signed-root.json.tsr", "signed-root.json.tsr.chain.pem"])
def test_verify_refuses_a_giant_timestamp_file_without_reading_it(signed, name):
    """verify read the copy's timestamp token (and its chain) whole: a 4 GiB sparse file there
    took all memory, and ended in a MemoryError traceback."""
    if name.endswith(".pem"):
        (signed / "signed-root.json.tsr").write_bytes(b"not a token")
    with open(signed / name, "wb") as fh:
        fh.truncate(4 << 30)
    proc = _cli_in_memory(2 << 30, "verify", str(signed))
    assert "Traceback" not in proc.stderr and "MemoryError" not in proc.stderr, proc.stderr[-2000:]
    assert proc.returncode == 1
    assert f"timestamp: {name}" in proc.stdout and "larger than" in proc.stdout, proc.stdout


@pytest.mark.parametrize("name", ["bag-info.txt", "tagmanifest-sha256.txt", "bagit.txt"])
def test_verify_refuses_a_giant_tag_file_without_reading_it(signed, name):
    """The tag files were read whole: a 3 GiB sparse bag-info.txt (or tag manifest, or bagit.txt)
    took all memory and ended in a MemoryError traceback."""
    with open(signed / name, "r+b") as fh:
        fh.truncate(3 << 30)
    proc = _cli_in_memory(2 << 30, "verify", str(signed))
    assert "Traceback" not in proc.stderr and "MemoryError" not in proc.stderr, proc.stderr[-2000:]
    assert proc.returncode == 1
    assert f"unsafe: {name} ({3 << 30:,} bytes, larger than 1,048,576; not read)" in proc.stdout or name == "bag-info.txt", \
        proc.stdout
    assert f"signed: {name}" in proc.stdout or name != "bag-info.txt", proc.stdout


# -- verify: provenance that misstates a file's size ---------------------------------------------
def _unsign_and_retag(mirror) -> None:
    """An unsigned copy whose tag manifest agrees with its edited tag files (what anyone can make)."""
    for name in ("signed-root.json", "signed-root.json.minisig"):
        (mirror / name).unlink()
    lines = (mirror / "tagmanifest-sha256.txt").read_text().splitlines()
    (mirror / "tagmanifest-sha256.txt").write_text("".join(x + "\n" for x in lines if "  signed-root.json" not in x))
    _retag(mirror)


def test_verify_names_provenance_sizes_that_are_not_the_files(signed):
    """verify hashed every file but compared provenance's sizes with nothing: records giving one
    acta 100 bytes more and another 100 less (Payload-Oxum unchanged) were 'intact', exit 0,
    while --fast, which reads only sizes, named both."""
    objs = [json.loads(x) for x in (signed / "provenance.jsonl").read_text().splitlines()]
    objs[1]["size"] += 100
    objs[2]["size"] -= 100
    (signed / "provenance.jsonl").write_text("".join(json.dumps(o) + "\n" for o in objs))
    _unsign_and_retag(signed)
    proc = run_cli("verify", str(signed), "--json", timeout=LIMIT)
    found = {(p["kind"], p["path"]) for p in json.loads(proc.stdout)["problems"]}
    assert found == {("provenance", objs[1]["path"]), ("provenance", objs[2]["path"])}, found
    assert proc.returncode == 1


# -- check_warc.py: a signed payload under a head that sends the replay elsewhere ----------------
def _redirect(wacz: Path, urls: list[str]) -> None:
    """A later capture of table A's URL: A's own signed bytes, under a 302 to table B's image."""
    head, payload = http_of(wacz, urls[0]).split(b"\r\n\r\n", 1)
    head = head.replace(b"HTTP/1.1 200 OK", b"HTTP/1.1 302 Found") + f"\r\nLocation: {urls[1]}".encode()
    add_response(wacz, urls[0], head + b"\r\n\r\n" + payload)


def _refresh(wacz: Path, urls: list[str]) -> None:
    """The same, as a 200 whose Refresh header sends the visitor to table B's image."""
    head, payload = http_of(wacz, urls[0]).split(b"\r\n\r\n", 1)
    add_response(wacz, urls[0], head + f"\r\nRefresh: 0; url={urls[1]}".encode() + b"\r\n\r\n" + payload)


def _revisit_redirect(wacz: Path, urls: list[str]) -> None:
    """A revisit of table A's URL, A's own digest, carrying a head that redirects to table B's image
    (a replay serves a revisit with its own HTTP head)."""
    digest = next(w["digest"] for w in index_lines(wacz) if w["url"] == urls[0])
    head = f"HTTP/1.1 302 Found\r\nLocation: {urls[1]}\r\nContent-Length: 0\r\n\r\n".encode()
    append_record(wacz, warc_member("revisit", urls[0], head, **{"WARC-Payload-Digest": digest,
                                                                 "Content-Type": "application/http; msgtype=response"}),
                  urls[0])


def _bare_lf(wacz: Path, urls: list[str]) -> None:
    """A Location hidden after a bare LF inside an allowed header (parsers that split on LF see it)."""
    head, payload = http_of(wacz, urls[0]).split(b"\r\n\r\n", 1)
    head = head.replace(b"\r\nContent-Type: image/jpeg", f"\r\nContent-Type: image/jpeg\nRefresh: 0; url={urls[1]}".encode())
    add_response(wacz, urls[0], head + b"\r\n\r\n" + payload)


@pytest.mark.parametrize("edit", [_redirect, _refresh, _revisit_redirect, _bare_lf])
def test_check_warc_refuses_a_signed_payload_under_a_head_that_sends_the_replay_elsewhere(made, tmp_path, edit):
    """check_warc.py checked a response's payload, Content-Length and encodings, not its status or
    other headers, and a revisit's digest, not its head: a record of table A's URL holding A's
    signed bytes under '302 Found, Location: <table B's image>' (or a Refresh header, or a
    revisit carrying that head) passed every step of the recipe, and a replay following it
    shows B's acta for table A."""
    work = tmp_path / "wacz"
    shutil.copytree(made / "wacz", work)
    edit(work, image_urls(work)[:2])
    proc = subprocess.run([sys.executable, str(CHECK_WARC)], cwd=work, capture_output=True, text=True, timeout=LIMIT)
    assert proc.returncode == 1, proc.stdout
    assert "whose HTTP head would make a replay serve other bytes than its payload" in proc.stdout, proc.stdout


# -- restore: a blob bomb in a shard ---------------------------------------------------------------
@pytest.mark.parametrize("name", ["full-bag/bag-info.txt", "shards.json"])
def test_restore_refuses_a_giant_blob_unread(made, tmp_path, name):
    """restore read shard 01's records (full-bag/ files, shards.json) whole from git: a 600 MiB file
    of zeros, which git keeps in kilobytes, was inflated into memory (a 3 GiB one ended restore in
    a MemoryError traceback), and written out in full before verify refused it."""
    work = tmp_path / "work"
    git("clone", "-q", str(made / "git" / "actas.git"), str(work))
    with open(work / name, "r+b") as fh:
        fh.truncate(600 << 20)
    git("-c", "core.compression=1", "add", "-A", cwd=work)
    git("commit", "-q", "-m", "update", cwd=work)
    git("init", "-q", "--bare", str(tmp_path / "hostile.git"))
    git("-c", "core.compression=1", "push", "-q", str(tmp_path / "hostile.git"), "HEAD:main", cwd=work)
    shutil.rmtree(work)
    proc = run_cli("restore", "--from", f"git+file://{tmp_path}/hostile.git", "--out", str(tmp_path / "r"), "--quiet",
                   timeout=LIMIT, env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"{name}: 629,145,600 bytes, larger than any record of a mirror; not read" in proc.stderr, proc.stderr
    assert not (tmp_path / "r").exists()


def _hostile_remote(made: Path, tmp_path: Path, edit) -> str:
    """The published shard, edited in a clone and pushed to a bare repository of its own."""
    work = tmp_path / "work"
    git("clone", "-q", str(made / "git" / "actas.git"), str(work))
    edit(work)
    git("-c", "user.name=x", "-c", "user.email=x@y", "commit", "-q", "-m", "update", cwd=work)
    git("init", "-q", "--bare", str(tmp_path / "hostile.git"))
    git("push", "-q", str(tmp_path / "hostile.git"), "HEAD:main", cwd=work)
    return f"git+file://{tmp_path}/hostile.git"


@pytest.mark.parametrize("name", ["full-bag/changes.jsonl", "full-bag/manifest-sha256.txt"])
def test_restore_names_a_submodule_where_a_bag_file_belongs(made, tmp_path, name):
    """A gitlink (a submodule's commit) in place of one of shard 01's full-bag/ files: git's
    object reader raised a bare ValueError, and restore ended in a traceback."""
    def edit(work):
        git("rm", "-q", "--cached", name, cwd=work)
        git("update-index", "--add", "--cacheinfo", f"160000,{'1' * 40},{name}", cwd=work)

    url = _hostile_remote(made, tmp_path, edit)
    proc = run_cli("restore", "--from", url, "--out", str(tmp_path / "r"), "--quiet", timeout=LIMIT,
                   env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.strip() == f"acta-mirror: shard 01: {name} is not a regular file (git mode 160000)"
    assert not (tmp_path / "r").exists()


def test_restore_names_a_repository_of_sha256_object_names(made, tmp_path):
    """The shard's files committed into a SHA-256 repository (git init --object-format=sha256):
    git's object reader failed to parse its objects, and restore ended in a traceback."""
    work, tree = tmp_path / "work", tmp_path / "tree.tar"
    with open(tree, "wb") as fh:
        subprocess.run(["git", "-C", str(made / "git" / "actas.git"), "archive", "main"], stdout=fh, check=True)
    git("init", "-q", "--object-format=sha256", "-b", "main", str(work))
    subprocess.run(["tar", "-xf", str(tree), "-C", str(work)], check=True)
    git("add", "-A", cwd=work)
    git("-c", "user.name=x", "-c", "user.email=x@y", "commit", "-q", "-m", "sha256", cwd=work)
    git("init", "-q", "--bare", "--object-format=sha256", str(tmp_path / "hostile.git"))
    git("push", "-q", str(tmp_path / "hostile.git"), "main", cwd=work)
    proc = run_cli("restore", "--from", f"git+file://{tmp_path}/hostile.git", "--out", str(tmp_path / "r"), "--quiet",
                   timeout=LIMIT, env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "shard 01: a repository of sha256 object names; restore reads SHA-1 ones" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "r").exists()

# -- tally, crosscheck, site: an edited index ------------------------------------------------------
@pytest.mark.parametrize("command", ["tally", "crosscheck", "site"])
def test_an_index_that_is_not_the_archived_one_is_never_the_denominator(signed, command):
    """The index was read without checking its bytes: a copy whose index lost four rows (the
    tables, kept in data/, no longer listed) tallied '48 of 48 tables read', exit 0, and the site
    showed the edited index's figures as the published ones."""
    index = next((signed / "data" / "index").iterdir())
    lines = index.read_bytes().splitlines(keepends=True)
    index.write_bytes(b"".join(lines[:1] + lines[5:]))
    extra = {"crosscheck": ["--against", str(index)], "site": [], "tally": ["--quiet"]}[command]
    proc = run_cli(command, str(signed), *extra, timeout=LIMIT)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"data/index/{index.name} is not the archived index" in proc.stderr, proc.stderr
    assert "give the directory" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (signed / "site").exists()


# -- site: the exit code it returns is the one it documents ----------------------------------------
def test_site_documents_the_exit_1_it_gives_an_unsigned_copy(signed):
    """site exits 1 when a visitor's check would fail (an unsigned copy), but its --help and
    README's table listed only 0, 2 and 3: a script reading 1 as 'not documented' could not tell."""
    _unsign_and_retag(signed)
    proc = run_cli("site", str(signed), timeout=LIMIT)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    codes = run_cli("site", "--help").stdout.split("exit codes:", 1)[1]
    assert any(line.split()[:1] == ["1"] for line in codes.splitlines()), codes


# -- merge: an upstream swap whose bytes the mirror holds under another name ------------------------
def test_merge_keeps_a_table_that_now_serves_another_tables_bytes(signed, pristine, tmp_path):
    """merge skipped a shard's new bytes for a path whenever those bytes were anywhere in the
    mirror: a later crawl that found table A's URL serving table B's image (the swap a forger
    makes upstream) was dropped, its record lost, and counted as 'there already'."""
    shard = tmp_path / "shard"
    shutil.copytree(pristine[0], shard, symlinks=True)
    objs = [json.loads(x) for x in (shard / "provenance.jsonl").read_text().splitlines()]
    a, b = [o for o in objs if o["kind"] == "acta"][:2]
    shutil.copyfile(shard / b["path"], shard / a["path"])
    a.update(sha256=b["sha256"], size=b["size"], cid=b["cid"], fetched_at="2030-01-01T00:00:00Z")
    (shard / "provenance.jsonl").write_text("".join(json.dumps(o) + "\n" for o in objs))
    proc = run_cli("merge", str(signed), str(shard), "--sign-key", f"{pristine[1]}.key", timeout=LIMIT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 files added" in proc.stdout and "1 kept as new versions" in proc.stdout, proc.stdout
    stem, ext = os.path.splitext(a["path"])
    merged = {o["path"]: o for o in map(json.loads, (signed / "provenance.jsonl").read_text().splitlines())}
    assert merged[f"{stem}.v2{ext}"]["sha256"] == b["sha256"] and merged[f"{stem}.v2{ext}"]["key"] == a["key"]
    assert merged[a["path"]]["sha256"] != b["sha256"]  # the first version is kept as it was


# -- records: a line of gigabytes --------------------------------------------------------------------
@pytest.mark.parametrize("name, command", [("provenance.jsonl", "verify"), ("changes.jsonl", "tally"),
                                           ("failures.jsonl", "tally")])
def test_a_giant_record_line_is_skipped_not_read_whole(signed, name, command):
    """The records were read a line at a time, but a line was read whole: 3 GiB of zeros after
    the last newline of provenance.jsonl (or changes.jsonl, failures.jsonl) took all memory and
    ended verify or tally in a MemoryError traceback."""
    with open(signed / name, "r+b") as fh:
        fh.truncate(3 << 30)
    proc = _cli_in_memory(2 << 30, command, str(signed))
    assert "Traceback" not in proc.stderr and "MemoryError" not in proc.stderr, proc.stderr[-2000:]
    if command == "verify":
        assert proc.returncode == 1
        assert f"provenance: {name} (line 54: longer than 16,777,216 bytes; not read)" in proc.stdout, proc.stdout
    else:
        assert proc.returncode == 0 and "52 of 52 tables read" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.parametrize("name, command", [(".acta-mirror/checked.json", "export"),
                                           ("data/index/RESULTADOS_2024_CSV_V1.csv", "tally")])
def test_a_giant_checked_json_or_index_is_not_read_whole(signed, tmp_path, name, command):
    """export read the copy's .acta-mirror/checked.json whole, and tally the index whole before
    comparing its sha256: 3 GiB of zeros there ended them in a MemoryError traceback."""
    (signed / ".acta-mirror").mkdir(exist_ok=True)
    with open(signed / name, "ab") as fh:
        fh.truncate(3 << 30)
    args = ["--wacz", str(tmp_path / "m.wacz")] if command == "export" else []
    proc = _cli_in_memory(2 << 30, command, str(signed), *args)
    assert "Traceback" not in proc.stderr and "MemoryError" not in proc.stderr, proc.stderr[-2000:]
    if command == "export":
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "checked.json unreadable (larger than 268,435,456 bytes): no revisit records" in proc.stdout
    else:
        assert proc.returncode == 2 and "is not the archived index" in proc.stderr, proc.stderr


@pytest.mark.parametrize("name", ["manifest-sha256.txt", "index.csv"])
def test_diff_never_reads_a_giant_manifest_or_index_whole(signed, tmp_path, name):
    """diff read a manifest or an index CSV it was given whole: 3 GiB of zeros ended it in a
    MemoryError traceback."""
    with open(tmp_path / name, "wb") as fh:
        fh.truncate(3 << 30)
    proc = _cli_in_memory(2 << 30, "diff", str(tmp_path / name), str(signed))
    assert "Traceback" not in proc.stderr and "MemoryError" not in proc.stderr, proc.stderr[-2000:]
    assert proc.returncode == 2 and "larger than" in proc.stderr and len(proc.stderr.splitlines()) == 1, proc.stderr


# -- verify --pubkey: a statement that signs the payload manifest only -------------------------------
def test_verify_says_when_the_statement_does_not_sign_the_records(signed, pristine):
    """A statement without tag_files (made before the records were signed) checked against the
    signer's key was 'signed by key …, checked against the key you gave' and OK, while the
    copy's provenance, changes and failures were covered by nothing: an attacker holding such a
    statement could rewrite every URL and date in provenance.jsonl unnoticed."""
    _resign_without_tag_files(signed, pristine)
    objs = [json.loads(x) for x in (signed / "provenance.jsonl").read_text().splitlines()]
    objs[1]["fetched_at"] = "2020-01-01T00:00:00Z"  # a date the signature never covered
    (signed / "provenance.jsonl").write_text("".join(json.dumps(o) + "\n" for o in objs))
    _retag(signed)
    proc = run_cli("verify", str(signed), "--pubkey", f"{pristine[1]}.pub", timeout=LIMIT)
    assert "checked against the key you gave; the statement signs the payload manifest only, not bag-info.txt, " \
           "provenance.jsonl, changes.jsonl, failures.jsonl" in proc.stdout, proc.stdout
    report = json.loads(run_cli("verify", str(signed), "--pubkey", f"{pristine[1]}.pub", "--json").stdout)
    assert report["signature"]["trusted"] and not report["signature"]["records_signed"], report
    check = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_signed.py")], cwd=signed,
                           capture_output=True, text=True, timeout=LIMIT)
    assert check.returncode == 1 and "NOT SIGNED" in check.stdout


# -- merge: a shard path that has no place in the mirror ----------------------------------------------
def test_a_merge_refused_half_way_leaves_the_mirror_as_it_was(signed, pristine, tmp_path):
    """merge moved the shard's files into the mirror one by one and found a conflict only when it
    came to it: a shard listing a new acta, then one inside a folder that is an archived acta's
    file in the mirror, was refused (exit 2) after the first had been moved in, unrecorded, so the
    mirror no longer verified (an unlisted file, a wrong Payload-Oxum)."""
    shard = tmp_path / "shard"
    shutil.copytree(pristine[0], shard, symlinks=True)
    objs = [json.loads(x) for x in (shard / "provenance.jsonl").read_text().splitlines()]
    a, b = [o for o in objs if o["kind"] == "acta"][:2]
    first = dict(b, key="999999999.01", path="data/zz/999999999.01.jpg")
    inside = dict(b, key="999999999.02", path=a["path"] + "/999999999.02.jpg")  # a's file is a folder here
    (shard / "data" / "zz").mkdir()
    shutil.copyfile(shard / b["path"], shard / first["path"])
    os.unlink(shard / a["path"])
    (shard / a["path"]).mkdir()
    shutil.copyfile(shard / b["path"], shard / inside["path"])
    (shard / "provenance.jsonl").write_text(json.dumps(first) + "\n" + json.dumps(inside) + "\n")
    proc = run_cli("merge", str(signed), str(shard), "--sign-key", f"{pristine[1]}.key", timeout=LIMIT)
    assert proc.returncode == 2 and "not a folder" in proc.stderr, proc.stdout + proc.stderr
    assert not (signed / "data" / "zz").exists()
    check = run_cli("verify", str(signed), "--pubkey", f"{pristine[1]}.pub", timeout=LIMIT)
    assert check.returncode == 0, check.stdout


# -- restore: records that are not UTF-8 -------------------------------------------------------------
@pytest.mark.parametrize("name", ["provenance.jsonl", "full-provenance/000000.jsonl"])
def test_restore_names_a_shard_record_that_is_not_utf8(made, tmp_path, name):
    """A shard whose provenance.jsonl held two bytes that are not UTF-8 ended restore in a
    UnicodeEncodeError traceback; in full-provenance/ they were quietly replaced by U+FFFD."""
    work = tmp_path / "work"
    git("clone", "-q", str(made / "git" / "actas.git"), str(work))
    raw = (work / name).read_bytes()
    broken = re.sub(rb'"center_name": ?""', b'"center_name":"\xff\xfe"', raw, count=1)
    assert broken != raw
    (work / name).write_bytes(broken)
    git("commit", "-q", "-am", "update", cwd=work)
    git("init", "-q", "--bare", str(tmp_path / "hostile.git"))
    git("push", "-q", str(tmp_path / "hostile.git"), "HEAD:main", cwd=work)
    proc = run_cli("restore", "--from", f"git+file://{tmp_path}/hostile.git", "--out", str(tmp_path / "r"), "--quiet",
                   timeout=LIMIT, env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"is damaged: {name.split('/')[0]}" in proc.stderr and ":1: bad provenance line: not UTF-8" in proc.stderr, \
        proc.stderr


# -- verify --tsa-ca: a CA that ships with the copy ---------------------------------------------------
def _self_signed_ca(path: Path) -> None:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Forger TSA root")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(key, hashes.SHA256()))
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def test_verify_refuses_a_tsa_ca_inside_the_copy(signed):
    """--pubkey inside the copy was refused, --tsa-ca was not: a copy shipping its own CA (and a
    token made under it) had its 'existed by' time 'verified up to' that CA."""
    _self_signed_ca(signed / "tsa-ca.pem")
    proc = run_cli("verify", str(signed), "--tsa-ca", str(signed / "tsa-ca.pem"), timeout=LIMIT)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "is inside the copy to be checked" in proc.stderr and len(proc.stderr.splitlines()) == 1, proc.stderr


def test_site_refuses_a_pubkey_inside_the_copy(signed, tmp_path):
    """verify refused a --pubkey inside the copy, site did not: the page it builds would show a
    copy re-signed with a key the copy itself ships as 'signed with the key you gave'."""
    assert run_cli("keygen", "--out", str(signed / "signer")).returncode == 0
    proc = run_cli("site", str(signed), "--pubkey", str(signed / "signer.pub"), timeout=LIMIT)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "is inside the copy to be checked" in proc.stderr and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert not (signed / "site").exists()


# -- check_warc.py: an index line whose lookup key is another URL's ----------------------------------
def test_check_warc_refuses_an_index_key_that_is_not_its_urls(made, tmp_path):
    """check_warc.py checked that each index line's JSON url matched the record it points at, not
    the line's key, which is what pywb looks a URL up by: table A's line rewritten to carry B's url
    and B's record (A's key kept, B's own line dropped) passed, and a replay looking up A serves
    B's acta."""
    import surt

    work = tmp_path / "wacz"
    shutil.copytree(made / "wacz", work)
    lines = (work / "indexes/index.cdx").read_text().splitlines()
    parsed = [(line.split(" ", 2), json.loads(line.split(" ", 2)[2])) for line in lines]
    (key_a, ts_a, _), a = next(p for p in parsed if p[1]["mime"] == "image/jpeg")
    b = next(w for _, w in parsed if w["mime"] == "image/jpeg" and w["url"] != a["url"])
    assert key_a == surt.surt(a["url"])  # the key is what a replay tool looks the URL up by
    out = [line for line, (_, w) in zip(lines, parsed) if w["url"] not in (a["url"], b["url"])]
    out.append(f"{key_a} {ts_a} {json.dumps(b)}")
    (work / "indexes/index.cdx").write_text("\n".join(sorted(out)) + "\n")
    proc = subprocess.run([sys.executable, str(CHECK_WARC)], cwd=work, capture_output=True, text=True, timeout=LIMIT)
    assert proc.returncode == 1, proc.stdout
    assert f"index.cdx: the key {key_a} is not the key of {b['url']}" in proc.stdout, proc.stdout


def test_check_warc_refuses_an_index_line_into_another_warc(made, tmp_path):
    """check_warc.py read every index line's record from archive/data.warc.gz whatever file the
    line names: a line for table A naming archive/other.warc.gz (a WARC it never reads, where a
    forger can put anything) at the offset of A's genuine record passed, and a replay reads the
    other file."""
    work = tmp_path / "wacz"
    shutil.copytree(made / "wacz", work)
    shutil.copyfile(work / "archive/data.warc.gz", work / "archive/other.warc.gz")
    lines = (work / "indexes/index.cdx").read_text().splitlines()
    key, ts, where = lines[0].split(" ", 2)
    lines[0] = f"{key} {ts} {json.dumps({**json.loads(where), 'filename': 'other.warc.gz'})}"
    (work / "indexes/index.cdx").write_text("\n".join(lines) + "\n")
    proc = subprocess.run([sys.executable, str(CHECK_WARC)], cwd=work, capture_output=True, text=True, timeout=LIMIT)
    assert proc.returncode == 1, proc.stdout
    assert "other.warc.gz" in proc.stdout, proc.stdout


def test_check_warc_refuses_an_index_it_does_not_read(made, tmp_path):
    """check_warc.py checked the lines of indexes/index.cdx only: another index beside it (a replay
    tool may read index.cdx.gz or index.idx first), pointing anywhere, passed unread."""
    work = tmp_path / "wacz"
    shutil.copytree(made / "wacz", work)
    with gzip.open(work / "indexes/index.cdx.gz", "wb") as fh:
        fh.write((work / "indexes/index.cdx").read_bytes().replace(b'"offset": "', b'"offset": "1'))
    proc = subprocess.run([sys.executable, str(CHECK_WARC)], cwd=work, capture_output=True, text=True, timeout=LIMIT)
    assert proc.returncode == 1 and "indexes/index.cdx.gz" in proc.stdout, proc.stdout


def test_crosscheck_allow_incomplete_does_not_pass_a_changed_acta(signed):
    """With --allow-incomplete, unchecked tables do not fail crosscheck: a copy with one acta
    redrawn (its votes left out as not the archived bytes) was 'all agree', exit 0."""
    acta = _an_acta(signed)
    _forge_votes(signed, acta, 500)
    index = next((signed / "data" / "index").iterdir())
    proc = run_cli("crosscheck", str(signed), "--against", str(index), "--allow-incomplete", timeout=LIMIT)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "are not the bytes the archive recorded" in proc.stderr, proc.stderr


def test_site_warns_that_a_changed_actas_check_will_fail(signed):
    """site built the pages of a copy with a redrawn acta and exited 0, though that table's
    in-browser check must fail: its exit 1 is for exactly that."""
    acta = _an_acta(signed)
    _forge_votes(signed, acta, 500)
    proc = run_cli("site", str(signed), timeout=LIMIT)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"(first: {acta['key']}): their pages' check will fail" in proc.stderr, proc.stderr


def test_restore_says_when_the_statement_does_not_sign_the_records(signed, pristine, tmp_path):
    """restore --pubkey ended 'signed with the key you gave' for a statement that signs the payload
    manifest only, as verify did."""
    _resign_without_tag_files(signed, pristine)
    _retag(signed)
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    target = f"git+file://{tmp_path}/git/actas.git"
    assert run_cli("publish", str(signed), "--to", target, "--quiet", timeout=LIMIT, env=env).returncode == 0
    proc = run_cli("restore", "--from", target, "--out", str(tmp_path / "r"), "--quiet", "--pubkey",
                   f"{pristine[1]}.pub", timeout=LIMIT, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "signed with the key you gave (the payload manifest only" in proc.stdout, proc.stdout


# -- merge: the change and failure records, byte for byte ----------------------------------------------
def test_merge_never_rewrites_a_record_line(signed, pristine, tmp_path):
    """merge rebuilt changes.jsonl and failures.jsonl from text decoded with 'replace' and split
    by str.splitlines: a line of the mirror's own changes.jsonl holding bytes that are not UTF-8
    was rewritten with U+FFFD (evidence changed, then signed), and a shard's failure whose reason
    held a U+2028 (json.dumps(ensure_ascii=False) writes it raw) was broken into two lines."""
    ours = (signed / "changes.jsonl").read_bytes().splitlines(keepends=True)
    odd = b'{"at": "x", "change": "note \xff\xfe", "key": "010113042.01"}\n'
    (signed / "changes.jsonl").write_bytes(b"".join(ours[:3] + [odd] + ours[3:]))
    before = (signed / "changes.jsonl").read_bytes()
    shard = tmp_path / "shard"
    shutil.copytree(pristine[0], shard, symlinks=True)
    failure = json.dumps({"key": "999999999.01", "url": "http://x/", "reason": "refused\u2028by the server",
                          "at": "2030-01-01T00:00:00Z"}, ensure_ascii=False) + "\n"
    (shard / "failures.jsonl").write_text(failure, encoding="utf-8")
    proc = run_cli("merge", str(signed), str(shard), "--sign-key", f"{pristine[1]}.key", timeout=LIMIT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (signed / "changes.jsonl").read_bytes() == before
    assert (signed / "failures.jsonl").read_text(encoding="utf-8").endswith(failure)


# -- tally, crosscheck: a report written into the copy -------------------------------------------------
def test_reports_never_write_through_a_link_the_copy_planted(signed, tmp_path):
    """tally --out and --coverage opened the name given for writing and followed a symbolic link
    there: a copy shipping tally.txt -> a file of the user's, run as 'tally copy/ --out
    copy/tally.txt', overwrote that file. crosscheck --coverage into a missing folder ended in a
    FileNotFoundError traceback."""
    precious = tmp_path / "precious.txt"
    precious.write_text("the user's own file\n")
    for name in ("tally.txt", "coverage.csv"):
        (signed / name).symlink_to(precious)
    proc = run_cli("tally", str(signed), "--quiet", "--out", str(signed / "tally.txt"),
                   "--coverage", str(signed / "coverage.csv"), timeout=LIMIT)
    assert proc.returncode == 0, proc.stderr
    assert precious.read_text() == "the user's own file\n"
    assert not (signed / "tally.txt").is_symlink() and "tables read" in (signed / "tally.txt").read_text()
    index = next((signed / "data" / "index").iterdir())
    proc = run_cli("crosscheck", str(signed), "--against", str(index), "--coverage", str(tmp_path / "no" / "c.csv"),
                   timeout=LIMIT)
    assert proc.returncode == 2 and f"({tmp_path / 'no' / 'c.csv'})" in proc.stderr, proc.stderr


def test_check_warc_refuses_a_page_list_that_names_a_table_wrongly(made, tmp_path):
    """check_warc.py never read pages/pages.jsonl, the list a replay tool shows to pick a page
    from: two tables' titles swapped (a reader choosing table A opens B's acta) passed."""
    work = tmp_path / "wacz"
    shutil.copytree(made / "wacz", work)
    lines = [json.loads(x) for x in (work / "pages/pages.jsonl").read_text().splitlines()]
    a, b = [x for x in lines if x.get("url", "").endswith((".jpg", ".JPG"))][:2]
    a["title"], b["title"] = b["title"], a["title"]
    (work / "pages/pages.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    proc = subprocess.run([sys.executable, str(CHECK_WARC)], cwd=work, capture_output=True, text=True, timeout=LIMIT)
    assert proc.returncode == 1 and f"pages.jsonl: {a['url']} is titled" in proc.stdout, proc.stdout
