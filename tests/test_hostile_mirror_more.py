"""More of a stranger's copy: found by an adversarial review of verify, verify-file, the audit and
the commands that write, each run through the real command line on a real signed mirror edited
the way an attacker would edit it. Every command runs under a timeout: a hang fails the test.
"""
from __future__ import annotations

import json
import os

import pytest

from mirror.evidence import tag_file_hashes, tree_root, manifest_items
from tests.conftest import run_cli
from tests.test_hostile_evidence import (LIMIT, _an_acta, _lines, _retag, _sha, _verify,  # noqa: F401
                                         _write_lines, pristine, pub, signed)

NESTED = "[" * 400_000 + "]" * 400_000  # deeper than Python's recursion limit: json.loads raises RecursionError


def _one_line(proc) -> str:
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("acta-mirror:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


# -- verify: a statement that names no key ------------------------------------------------------
@pytest.mark.parametrize("key", ["dropped", "not text"])
def test_a_statement_without_its_key_cannot_vouch_for_an_altered_image(signed, key):
    """The signature's key ID was shown as the signer's and verify said OK, while the signature
    was never checked: a copy whose statement lost public_key could say anything."""
    _flip_and_rehash(signed)
    root = tree_root(manifest_items(signed))
    info = (signed / "bag-info.txt").read_text().splitlines()
    (signed / "bag-info.txt").write_text("".join(
        (f"Acta-Mirror-Merkle-Root: {root}" if x.startswith("Acta-Mirror-Merkle-Root:") else x) + "\n" for x in info))
    statement = json.loads((signed / "signed-root.json").read_text())
    key_id = statement["key_id"]
    statement.update(merkle_root=root, tag_files=tag_file_hashes(signed))
    if key == "dropped":
        del statement["public_key"]
    else:
        statement["public_key"] = 5
    (signed / "signed-root.json").write_text(json.dumps(statement, indent=1, sort_keys=True) + "\n")
    _retag(signed)  # the old signature stays: it names the real signer's key ID
    for extra in ((), ("--fast",)):
        code, problems, report = _verify(signed, *extra)
        assert code == 1 and ("signature", "signed-root.json") in problems, report
        assert report["signature"]["key_id"] == key_id and not report["signature"]["trusted"]
    plain = run_cli("verify", str(signed), timeout=LIMIT)
    assert plain.returncode == 1 and "OK" not in plain.stdout and "--pubkey" in plain.stdout


# -- JSON nested deeper than the parser goes ----------------------------------------------------
@pytest.mark.parametrize("where,command,code", [
    ("signed-root.json", "verify", 1),
    ("signed-root.json", "site", 1),
    ("failures.jsonl", "tally", 0),
    ("failures.jsonl", "site", 1),
    ("changes.jsonl", "tally", 0),
    ("changes.jsonl", "crosscheck", 0),
])
def test_json_nested_too_deep_is_a_damaged_record_not_a_traceback(signed, where, command, code):
    if where == "signed-root.json":
        (signed / where).write_text(NESTED)
    else:
        with open(signed / where, "a") as fh:
            fh.write(NESTED + "\n")
    args = [command, str(signed)]
    if command == "crosscheck":
        args += ["--against", str(signed / "data/index/RESULTADOS_2024_CSV_V1.csv")]
    proc = run_cli(*args, timeout=LIMIT)  # a traceback fails run_cli
    assert proc.returncode == code, proc.stdout + proc.stderr
    if command == "verify":
        assert "signature: signed-root.json (not a root statement)" in proc.stdout


# -- verify-file: a hostile file or proof --------------------------------------------------------
@pytest.fixture
def proof(signed, tmp_path):
    victim = _an_acta(signed)["path"]
    made = run_cli("prove", str(signed), victim)
    assert made.returncode == 0, made.stderr
    return signed / victim, json.loads(made.stdout), tmp_path / "proof.json"


def _verify_file(file, proof_obj, where, *, raw: str | None = None, root: str | None = None):
    where.write_text(raw if raw is not None else json.dumps(proof_obj))
    return run_cli("verify-file", str(file), "--proof", str(where), "--root", root or proof_obj["root"], timeout=LIMIT)


@pytest.mark.parametrize("special", ["fifo", "/dev/zero"])
def test_verify_file_never_reads_a_fifo_or_a_device(proof, tmp_path, special):
    """verify-file opened the file it was given with a plain open: a FIFO blocked for ever,
    /dev/zero was read for ever."""
    file, good, where = proof
    if special == "fifo":
        target = tmp_path / "image.jpg"
        os.mkfifo(target)
    else:
        target = special
    proc = _verify_file(target, good, where)
    assert proc.returncode == 2 and "not a regular file" in _one_line(proc)
    assert _verify_file(file, good, where).returncode == 0  # the real file still verifies


@pytest.mark.parametrize("change", [
    {"path": 5}, {"path": ["data/x"]}, {"leaf_index": 3.5}, {"leaf_index": True}, {"tree_size": "45"},
])
def test_verify_file_refuses_a_malformed_proof_in_one_line(proof, change):
    file, good, where = proof
    proc = _verify_file(file, {**good, **change}, where)
    assert proc.returncode == 2 and "malformed" in _one_line(proc), proc.stdout + proc.stderr
    assert "VERIFIED" not in proc.stdout


def test_verify_file_refuses_a_proof_nested_too_deep(proof):
    file, good, where = proof
    proc = _verify_file(file, good, where, raw=NESTED)
    assert proc.returncode == 2 and "nested too deeply" in _one_line(proc)


# -- what verify prints cannot draw its own lines ------------------------------------------------
def test_a_name_with_control_characters_cannot_forge_an_ok_line(signed):
    """A file named 'a<ESC>[2J<CR>OK: ...' cleared the terminal and drew an 'OK' line of its own."""
    (signed / "data" / "a\x1b[2J\rOK: intact\u202e.jpg").write_bytes(b"planted")
    proc = run_cli("verify", str(signed), timeout=LIMIT)
    assert proc.returncode == 1
    assert "\x1b" not in proc.stdout and "\r" not in proc.stdout and "\u202e" not in proc.stdout
    assert "unlisted: data/a\\x1b[2J\\rOK: intact\\u202e.jpg" in proc.stdout


# -- crosscheck: what the copy dropped is not agreement ------------------------------------------
def _drop(mirror, paths: set[str]) -> None:
    """Remove files and every record of them, as a careful attacker would; the copy is then
    unsigned (a signature over the old root would give the removal away)."""
    for rel in paths:
        (mirror / rel).unlink()
    kept = [o for o in _lines(mirror) if o["path"] not in paths]
    _write_lines(mirror, kept)
    manifest = mirror / "manifest-sha256.txt"
    manifest.write_text("".join(line + "\n" for line in manifest.read_text().splitlines()
                                if line.split("  ", 1)[1] not in paths))
    info = [x for x in (mirror / "bag-info.txt").read_text().splitlines() if not x.startswith("Acta-Mirror-Merkle")]
    (mirror / "bag-info.txt").write_text("".join(
        (f"Payload-Oxum: {sum(o['size'] for o in kept)}.{len(kept)}" if x.startswith("Payload-Oxum:") else x) + "\n"
        for x in info))
    for name in ("signed-root.json", "signed-root.json.minisig"):
        (mirror / name).unlink()
    tags = mirror / "tagmanifest-sha256.txt"
    tags.write_text("".join(x + "\n" for x in tags.read_text().splitlines() if "signed-root" not in x))
    _retag(mirror)


def test_crosscheck_does_not_pass_a_copy_that_dropped_tables_and_its_index(signed, tmp_path):
    """With its index gone the copy's list of tables is what it holds: the trusted index's
    figures for the dropped tables were 'not checked', and crosscheck still exited 0."""
    index = tmp_path / "RESULTADOS_2024_CSV_V1.csv"  # the journalist's trusted copy of the index
    index.write_bytes((signed / "data/index/RESULTADOS_2024_CSV_V1.csv").read_bytes())
    dropped = {o["path"] for o in _lines(signed) if o["kind"] == "index"} | {_an_acta(signed, n)["path"] for n in range(3)}
    _drop(signed, dropped)
    assert run_cli("verify", str(signed), timeout=LIMIT).returncode == 0  # a consistent, smaller, unsigned bag
    proc = run_cli("crosscheck", str(signed), "--against", str(index), timeout=LIMIT)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    given = sum(1 for line in index.read_text().splitlines()[1:] if line.strip())  # one table a row
    assert f"3 of {given:,} units the files give could not be checked" in proc.stdout
    assert run_cli("crosscheck", str(signed), "--against", str(index), "--allow-incomplete",
                   timeout=LIMIT).returncode == 0


# -- publish, restore and merge check the signature as verify does --------------------------------
def _flip_and_rehash(mirror) -> str:
    """Flip a byte of an image and give provenance and the manifest its new sha256; its path."""
    victim = _an_acta(mirror)["path"]
    data = bytearray((mirror / victim).read_bytes())
    data[len(data) // 2] ^= 1
    (mirror / victim).write_bytes(bytes(data))
    objs = _lines(mirror)
    for o in objs:
        if o["path"] == victim:
            o["sha256"] = _sha(mirror / victim)
    _write_lines(mirror, objs)
    manifest = mirror / "manifest-sha256.txt"
    manifest.write_text("".join(f"{_sha(mirror / victim)}  {victim}\n" if line.endswith("  " + victim) else line + "\n"
                                for line in manifest.read_text().splitlines()))
    return victim


def _tamper_and_rehash(mirror) -> str:
    """Flip a byte of an image and make every unsigned record agree; the signed statement stays."""
    victim = _flip_and_rehash(mirror)
    info = [x for x in (mirror / "bag-info.txt").read_text().splitlines() if not x.startswith("Acta-Mirror-Merkle")]
    (mirror / "bag-info.txt").write_text("".join(x + "\n" for x in info))
    _retag(mirror)
    return victim


def test_publish_refuses_a_copy_whose_signature_no_longer_matches(signed, tmp_path):
    """publish checked names, sizes and tag files, not the signed statement: a re-hashed
    altered image went out as if intact."""
    _tamper_and_rehash(signed)
    assert _verify(signed)[0] == 1
    proc = run_cli("publish", str(signed), "--to", f"git+file://{tmp_path / 'remote'}", timeout=LIMIT)
    assert proc.returncode == 1 and "does not verify" in proc.stderr, proc.stdout + proc.stderr
    assert not (tmp_path / "remote").exists() or not any((tmp_path / "remote").rglob("*.jpg"))


def test_restore_does_not_call_a_copy_verified_when_its_signature_fails(signed, tmp_path, monkeypatch):
    """An attacker's remote, published by a tool that checks nothing: restore said 'restored
    and verified' of a copy that 'acta-mirror verify' then failed."""
    from mirror.publish import git as publish_git

    _tamper_and_rehash(signed)
    remote = tmp_path / "remote"
    monkeypatch.setattr(publish_git, "verified", lambda *a, **k: (None, None))  # the attacker's publisher
    publish_git.GitPublisher(f"git+file://{remote}").publish(signed)
    monkeypatch.undo()
    proc = run_cli("restore", "--from", f"git+file://{remote}", "--out", str(tmp_path / "restored"), timeout=LIMIT)
    assert proc.returncode == 1 and "does not verify" in proc.stderr, proc.stdout + proc.stderr
    assert "restored and verified" not in proc.stdout


def test_merge_into_a_signed_mirror_needs_the_key_and_touches_nothing_without_it(signed, tmp_path, pristine):
    """merge said 'verified' and left out's old signature over a mirror it had changed."""
    out = tmp_path / "out"
    import shutil

    shutil.copytree(signed, out, symlinks=True)
    gone = _an_acta(out)["path"]
    _drop(out, {gone})  # an earlier merge that lacked one file, then signed
    key = f"{pristine[1]}.key"
    assert run_cli("sign", str(out), "--key", key).returncode == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and ".acta-mirror" not in p.parts}
    proc = run_cli("merge", str(out), str(signed), timeout=LIMIT)
    assert proc.returncode == 2 and "--sign-key" in _one_line(proc)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and ".acta-mirror" not in p.parts} == before
    proc = run_cli("merge", str(out), str(signed), "--sign-key", key, timeout=LIMIT)
    assert proc.returncode == 0, proc.stderr
    assert run_cli("verify", str(out), "--pubkey", f"{pristine[1]}.pub", timeout=LIMIT).returncode == 0


# -- files the user names from a copy: never a hang ----------------------------------------------
@pytest.mark.parametrize("special", ["fifo", "/dev/zero"])
@pytest.mark.parametrize("command", ["compare", "crosscheck"])
def test_a_fifo_or_a_device_named_as_the_other_copy_or_figures_is_refused(signed, tmp_path, special, command):
    """compare's sha256 list and crosscheck's --against were read with a plain read: a FIFO
    (say, their copy's sha256sums.txt) blocked for ever, /dev/zero filled memory."""
    if special == "fifo":
        target = tmp_path / "sha256sums.txt"
        os.mkfifo(target)
    else:
        target = special
    args = ["compare", str(signed), str(target)] if command == "compare" else \
        ["crosscheck", str(signed), "--against", str(target)]
    proc = run_cli(*args, timeout=LIMIT)
    assert proc.returncode == 2 and "not a regular file" in _one_line(proc), proc.stdout + proc.stderr


def test_planted_files_do_not_count_as_progress_over_the_listed_files(signed):
    """'46 of 45 files (102%)': the progress counted planted files against the listed ones."""
    listed = len((signed / "manifest-sha256.txt").read_text().splitlines())
    for i in range(3):
        (signed / "data" / f"planted-{i}.jpg").write_bytes(b"planted")
    proc = run_cli("verify", str(signed), timeout=LIMIT)
    assert proc.returncode == 1
    assert f"{listed} of {listed} files" in proc.stderr and f"{listed + 3} of {listed}" not in proc.stderr, proc.stderr


def test_a_proof_cannot_draw_a_verified_line_over_its_refusal(proof):
    """The proof's sha256 is quoted in the refusal: a carriage return in it redrew the line."""
    file, good, where = proof
    proc = _verify_file(file, {**good, "sha256": "0" * 64 + "\rVERIFIED: the acta is authentic" + " " * 200}, where)
    assert proc.returncode == 1 and "\r" not in proc.stdout and proc.stdout.startswith("NOT VERIFIED")
    assert "\\rVERIFIED" in proc.stdout


def test_names_and_reasons_from_a_copy_are_printed_escaped_by_tally_and_compare(signed, tmp_path):
    """A failure reason in the copy's failures.jsonl, or a file name in their folder, reached
    the terminal raw: an escape sequence cleared it, a carriage return redrew the line."""
    victim = _an_acta(signed)
    _drop(signed, {victim["path"]})
    with open(signed / "failures.jsonl", "a") as fh:
        fh.write(json.dumps({"key": victim["key"], "url": victim["url"], "reason": "\x1b[2J\rall tables read"}) + "\n")
    _retag(signed)
    tally = run_cli("tally", str(signed), "--quiet", timeout=LIMIT)
    assert tally.returncode == 0, tally.stderr
    assert "\x1b" not in tally.stdout and "\r" not in tally.stdout and "\\x1b[2J\\rall tables read" in tally.stdout
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / f"{_an_acta(signed)['key']}\x1b[2J.jpg").write_bytes(b"not the acta")
    compare = run_cli("compare", str(signed), str(theirs), timeout=LIMIT)
    assert compare.returncode == 1 and "\x1b" not in compare.stdout and "\\x1b[2J.jpg" in compare.stdout


@pytest.mark.parametrize("name", ["site", "site.part"])
def test_site_replaces_a_fifo_planted_where_the_site_goes_without_hanging(signed, name):
    """The last site is removed before the new one is moved in; a FIFO there was opened by
    rmtree and blocked for ever."""
    os.mkfifo(signed / name)
    proc = run_cli("site", str(signed), timeout=LIMIT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (signed / "site" / "index.html").is_file() and not os.path.lexists(signed / "site.part")


@pytest.mark.parametrize("special", ["fifo", "/dev/zero"])
def test_a_fifo_or_a_device_named_as_the_tsa_ca_is_refused(signed, tmp_path, special):
    if special == "fifo":
        target = tmp_path / "ca.pem"
        os.mkfifo(target)
    else:
        target = special
    proc = run_cli("verify", str(signed), "--quiet", "--tsa-ca", str(target), timeout=LIMIT)
    assert proc.returncode == 2 and "not a regular file" in _one_line(proc), proc.stdout + proc.stderr


def test_fast_says_it_misses_a_resized_change_in_an_unsigned_copy(signed):
    """--fast said only 'a change that keeps a file's size is not detected' and exit 0 for an
    unsigned copy whose image was replaced, its new size written into provenance.jsonl."""
    victim = _an_acta(signed)
    _drop(signed, set())  # unsigned
    (signed / victim["path"]).write_bytes(b"another picture, another size")
    objs = _lines(signed)
    for o in objs:
        if o["path"] == victim["path"]:
            o["size"] = (signed / victim["path"]).stat().st_size
    _write_lines(signed, objs)
    info = (signed / "bag-info.txt").read_text().splitlines()
    (signed / "bag-info.txt").write_text("".join(
        (f"Payload-Oxum: {sum(o['size'] for o in objs)}.{len(objs)}" if x.startswith("Payload-Oxum:") else x) + "\n"
        for x in info))
    _retag(signed)
    code, problems, report = _verify(signed, "--fast")
    assert code == 0  # what --fast cannot see...
    assert "not signed" in report["not_checked"] and "provenance.jsonl" in report["not_checked"]  # ...it says
    assert _verify(signed)[0] == 1


# -- crawl and merge into a hostile copy (mirror/archive.py) ---------------------------------------
@pytest.fixture
def replay_url():
    from mirror.replay import Replay, ReplayThread

    with ReplayThread(Replay(small=True, limit=40)) as r:
        yield r.url


def test_crawl_into_a_copy_whose_change_record_is_nested_too_deep(signed, replay_url):
    (signed / "changes.jsonl").write_text(NESTED + "\n" + (signed / "changes.jsonl").read_text())
    (signed / ".acta-mirror" / "index.sqlite").unlink()  # the index is rebuilt from the records
    proc = run_cli("crawl", "resultados2024", "--root", replay_url, "--out", str(signed), "--quiet", timeout=LIMIT)
    assert proc.returncode in (0, 1, 2)


@pytest.mark.parametrize("record", ["provenance.jsonl", "changes.jsonl"])
def test_merge_never_appends_to_a_hard_linked_record(signed, tmp_path, pristine, record):
    """A record appended to that has a second name (a hard-linked backup copy, or planted)
    gets a copy of its own first: the other name keeps its bytes, the merge goes on."""
    out = tmp_path / "out"
    import shutil

    shutil.copytree(signed, out, symlinks=True)
    _drop(out, {_an_acta(out)["path"]})
    host = tmp_path / "host-file.txt"
    os.link(out / record, host)  # the same file under a name outside the mirror
    before = host.read_bytes()
    proc = run_cli("merge", str(out), str(signed), timeout=LIMIT)
    assert host.read_bytes() == before
    assert proc.returncode == 0 and os.stat(out / record).st_nlink == 1, proc.stderr
    assert (out / "provenance.jsonl").read_bytes() != before or record != "provenance.jsonl"


@pytest.mark.parametrize("planted", ["hard link", "fifo"])
def test_the_publish_receipt_never_writes_through_a_hard_link_or_into_a_fifo(signed, tmp_path, planted):
    """The receipt was appended through a hard link planted at publish-receipts.jsonl: the
    file of ours it shared grew a line."""
    host = tmp_path / "host-file.txt"
    host.write_text("a file of the user's\n")
    receipts = signed / "publish-receipts.jsonl"
    if planted == "hard link":
        os.link(host, receipts)
    else:
        os.mkfifo(receipts)
    proc = run_cli("publish", str(signed), "--to", f"git+file://{tmp_path / 'remote'}", "--quiet", timeout=LIMIT)
    assert host.read_text() == "a file of the user's\n"
    if planted == "hard link":
        assert proc.returncode == 0, proc.stderr
        assert receipts.read_text().startswith("a file of the user's\n") and len(receipts.read_text().splitlines()) == 2
    else:
        assert proc.returncode == 2 and "not a regular file" in _one_line(proc)


def test_a_crawl_without_the_key_into_a_signed_mirror_says_when_the_signature_is_stale(pristine, tmp_path):
    from mirror.replay import Replay, ReplayThread

    mirror, key = tmp_path / "m", f"{pristine[1]}.key"
    with ReplayThread(Replay(small=True, limit=30)) as r:
        run = [run_cli("crawl", "resultados2024", "--root", r.url, "--out", str(mirror), "--quiet", *extra,
                       timeout=LIMIT) for extra in (("--sign-key", key), ())]  # signed; then nothing new
    with ReplayThread(Replay(small=True, limit=35)) as r:  # five more, and the index changed
        run.append(run_cli("crawl", "resultados2024", "--root", r.url, "--out", str(mirror), "--quiet", timeout=LIMIT))
    assert [p.returncode for p in run] == [0, 0, 0], [p.stderr for p in run]
    assert ["no longer matches" in p.stderr for p in run] == [False, False, True], [p.stderr for p in run]
    assert _verify(mirror)[0] == 1  # what the line said
