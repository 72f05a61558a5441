"""A stranger's copy, a third time: found by an adversarial review of verify, compare, tally and
site on copies and folders someone else made. Each attack edits a real signed mirror (or builds
their folder from its images) the way an attacker would, and runs the real command line under a
timeout: a hang fails the test, and so does a traceback (run_cli). Each test failed before its fix.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.test_hostile_evidence import LIMIT, _an_acta, _lines, _verify, pristine, signed  # noqa: F401
from tests.test_stranger import copy, made  # noqa: F401

TERABYTE = 1 << 40  # a sparse file: no block on disk, an hour of hashing
DEEP = 1100  # folders: deeper than Python's recursion limit (1000), well within PATH_MAX


def _images(mirror: Path, folder: Path) -> dict[str, Path]:
    """Every acta's latest file copied flat into folder, as a volunteer's copy holds them: key -> file."""
    folder.mkdir()
    out = {}
    for o in _lines(mirror):
        if o["kind"] == "acta":
            out[o["key"]] = folder / f"{o['key']}.jpg"
            shutil.copyfile(mirror / o["path"], out[o["key"]])
    return out


def _nest(top: Path, depth: int) -> int:
    """A chain of `depth` folders named 'a' under top; returns a descriptor of the deepest
    (made relative to each parent: the whole path is never given to one call)."""
    top.mkdir(exist_ok=True)
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        os.mkdir("a", dir_fd=fd)
        deeper = os.open("a", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = deeper
    return fd


@pytest.fixture
def nested():
    """_nest, with each chain removed after the test by rm -rf (pytest's own cleanup recurses too)."""
    made: list[Path] = []

    def nest(top: Path, depth: int) -> int:
        made.append(top)
        return _nest(top, depth)
    yield nest
    for top in made:
        subprocess.run(["rm", "-rf", "--", str(top)], check=False)


def _sparse(path: Path, size: int) -> None:
    path.unlink(missing_ok=True)
    with open(path, "wb") as fh:
        fh.truncate(size)


# -- compare: a forgery beside the genuine file --------------------------------------------------
def test_compare_names_a_forged_picture_kept_beside_the_genuine_one(signed, tmp_path):
    """Their folder held every genuine acta and, in a subfolder, another table's image under one
    acta's name: the best of their files named the acta, so compare said every acta identical,
    exit 0, and listed nothing: the copies 'agree' while theirs carries a forgery."""
    theirs = tmp_path / "theirs"
    files = _images(signed, theirs)
    victim, donor = sorted(files)[:2]
    (theirs / "dup").mkdir()
    shutil.copyfile(files[donor], theirs / "dup" / files[victim].name)
    proc = run_cli("compare", str(signed), str(theirs), "--json", timeout=LIMIT)
    report = json.loads(proc.stdout)
    assert proc.returncode == 1, proc.stdout
    row = next(a for a in report["actas"] if a["key"] == victim)
    assert row["label"] == "different_picture" and row["there"] == f"dup/{victim}.jpg", row
    assert f"also identical: {victim}.jpg" in row["detail"]
    assert report["counts"]["different_picture"] == 1 and report["counts"]["identical"] == len(files) - 1


def test_compare_reads_a_folder_nested_deeper_than_the_recursion_limit(signed, tmp_path, nested):
    """os.walk recurses once per folder: their folder with a file 1100 folders down stopped
    compare with a RecursionError traceback."""
    theirs = tmp_path / "theirs"
    files = _images(signed, theirs)
    victim, donor = sorted(files)[:2]
    fd = nested(theirs / "deep", DEEP)
    try:
        with open(f"{victim}.jpg", "wb", opener=lambda name, flags: os.open(name, flags, 0o644, dir_fd=fd)) as fh:
            fh.write(files[donor].read_bytes())
    finally:
        os.close(fd)
    proc = run_cli("compare", str(signed), str(theirs), "--json", timeout=LIMIT)
    assert proc.returncode == 1, proc.stderr
    row = next(a for a in json.loads(proc.stdout)["actas"] if a["key"] == victim)
    assert row["label"] == "different_picture" and row["there"].endswith("/a/" + f"{victim}.jpg"), row



def test_compare_never_hashes_a_sparse_terabyte_in_their_folder(signed, tmp_path):
    """compare hashed each of their files whole: a sparse terabyte under an acta's name held it
    for about an hour. A file larger than any acta is now named unread, and the copies are not
    said to agree."""
    theirs = tmp_path / "theirs"
    files = _images(signed, theirs)
    victim = sorted(files)[0]
    _sparse(files[victim], TERABYTE)
    proc = run_cli("compare", str(signed), str(theirs), "--json", timeout=LIMIT)
    report = json.loads(proc.stdout)
    assert proc.returncode == 1, proc.stderr
    assert report["unread"] == [f"{victim}.jpg"] and report["counts"]["identical"] == len(files) - 1
    assert any("not read" in note and f"{TERABYTE:,} bytes" in note for note in report["notes"]), report["notes"]

# -- site: a planted site/ too deep to remove --------------------------------------------------
def test_site_refuses_in_one_line_a_planted_site_folder_too_deep_to_remove(signed, nested):
    """The last site is removed with shutil.rmtree, which recurses per folder: a copy shipping
    a site/ nested 1100 folders deep stopped the command with a RecursionError traceback."""
    os.close(nested(signed / "site", DEEP))
    proc = run_cli("site", str(signed), timeout=LIMIT)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("acta-mirror:")]
    assert len(lines) == 1 and "nested too deep" in lines[0] and "rm -rf" in lines[0], proc.stderr
    assert (signed / "site").is_dir()  # left for the user to remove: nothing half-removed said to be done


# -- a sparse terabyte in place of a file --------------------------------------------------------
def test_verify_never_hashes_a_sparse_terabyte_planted_in_data(signed):
    """verify hashed every regular file as it walked data/, listed or not: a sparse terabyte
    (no disk space, made in a moment) held it for about an hour, whether planted as an unlisted
    file or in place of a listed acta. Neither can be an archived file: each is named unread."""
    victim = _an_acta(signed)
    _sparse(signed / victim["path"], TERABYTE)
    _sparse(signed / "data" / "planted.bin", TERABYTE)
    code, problems, report = _verify(signed)
    assert code == 1
    assert {("changed", victim["path"]), ("unlisted", "data/planted.bin")} <= problems, problems
    detail = next(p["detail"] for p in report["problems"] if p["path"] == victim["path"])
    assert "not hashed" in detail and f"{TERABYTE:,} bytes" in detail


def test_verify_still_hashes_a_large_file_whose_record_gives_its_size(signed):
    """The other side of the rule above: a file over the size hashed unasked is still hashed
    when its provenance record says it is that large, and a change in it is still found."""
    victim = _an_acta(signed)
    big = 70 << 20
    (signed / victim["path"]).write_bytes(b"\0" * big)
    objs = _lines(signed)
    for o in objs:
        if o["path"] == victim["path"]:
            o["size"] = big
    (signed / "provenance.jsonl").write_text("".join(json.dumps(o) + "\n" for o in objs))
    code, problems, report = _verify(signed)
    assert code == 1 and ("changed", victim["path"]) in problems, problems
    detail = next(p["detail"] for p in report["problems"] if p["kind"] == "changed")
    assert detail.startswith("sha256 ") and victim["sha256"] in detail


def test_tally_never_hashes_a_sparse_terabyte_in_place_of_an_acta(signed):
    """tally hashed each acta whole before comparing it with the recorded sha256: a sparse
    terabyte under an acta's name held it for about an hour. A file whose size is not the
    recorded one is not the archived bytes and is not read; its table is not counted."""
    victim = _an_acta(signed)
    _sparse(signed / victim["path"], TERABYTE)
    proc = run_cli("tally", str(signed), "--quiet", timeout=LIMIT)
    assert proc.returncode == 1, proc.stderr
    assert "1 unreadable (1 not the archived bytes)" in proc.stdout, proc.stdout
    assert f"(first: {victim['key']})" in proc.stderr and "not counted" in proc.stderr


def test_verify_never_hashes_a_sparse_terabyte_a_tag_manifest_line_names(signed):
    """The tag manifest is not signed: anyone may add a line naming a file beside the records,
    and verify hashed every file it names, whole. A planted line for a sparse terabyte held it
    for about an hour; a tag file other than the records over 1 MiB is now named, unread."""
    _sparse(signed / "notes.txt", TERABYTE)
    with open(signed / "tagmanifest-sha256.txt", "a") as fh:
        fh.write(f"{'0' * 64}  notes.txt\n")
    code, problems, report = _verify(signed)
    assert code == 1 and ("unsafe", "notes.txt") in problems, problems
    assert not report["ok"]


def test_export_never_hashes_a_sparse_terabyte_in_place_of_an_acta(signed, tmp_path):
    """export hashed each file whole before comparing its size with its record: a sparse
    terabyte under an acta's name held it for over an hour. It is now left out, unread."""
    victim = _an_acta(signed)
    _sparse(signed / victim["path"], TERABYTE)
    out = tmp_path / "m.warc.gz"
    proc = run_cli("export", str(signed), "--warc", str(out), timeout=LIMIT)
    assert proc.returncode == 1, proc.stderr
    total = len(_lines(signed))
    assert f"{total - 1} of {total} recorded files as responses" in proc.stdout + proc.stderr
    assert f"{TERABYTE:,} bytes, its record says {victim['size']:,}; not exported" in proc.stdout + proc.stderr


# -- merge: a shard's record files ----------------------------------------------------------------
def _shard_adding_one_acta(pristine, tmp_path) -> Path:
    """A copy of the mirror as a shard, with one new acta (another's bytes under a new key)."""
    shard = tmp_path / "shard"
    shutil.copytree(pristine[0], shard, symlinks=True)
    donor = _an_acta(shard, 1)
    new = dict(donor, key="999999999.01", path="data/zz/999999999.01.jpg")
    (shard / "data" / "zz").mkdir()
    shutil.copyfile(shard / donor["path"], shard / new["path"])
    with open(shard / "provenance.jsonl", "a") as fh:
        fh.write(json.dumps(new) + "\n")
    return shard


@pytest.mark.parametrize("name", ["changes.jsonl", "failures.jsonl", "bag-info.txt"])
def test_a_merge_refused_for_a_shards_record_file_leaves_the_mirror_as_it_was(signed, pristine, tmp_path, name):
    """A shard's changes, failures and bag-info were read only after its files had been moved
    into the mirror and its provenance lines appended: one that is a symbolic link was refused
    (exit 2, 'not merging it') with the mirror half-merged, no longer verifying."""
    shard = _shard_adding_one_acta(pristine, tmp_path)
    (shard / name).unlink(missing_ok=True)
    (shard / name).symlink_to(signed / name)
    proc = run_cli("merge", str(signed), str(shard), "--sign-key", f"{pristine[1]}.key", timeout=LIMIT)
    assert proc.returncode == 2 and f"{name}: a symbolic link" in proc.stderr, proc.stdout + proc.stderr
    assert not (signed / "data" / "zz").exists()
    check = run_cli("verify", str(signed), "--pubkey", f"{pristine[1]}.pub", timeout=LIMIT)
    assert check.returncode == 0, check.stdout


def test_merge_never_reads_a_shards_giant_record_file_into_memory(signed, pristine, tmp_path):
    """A shard's changes.jsonl was read whole into memory: a sparse terabyte stopped merge with
    a MemoryError traceback (or the machine, without a limit). It is refused in one line."""
    from tests.test_hostile_copies import _cli_in_memory

    shard = _shard_adding_one_acta(pristine, tmp_path)
    _sparse(shard / "changes.jsonl", TERABYTE)
    proc = _cli_in_memory(2 << 30, "merge", str(signed), str(shard), "--sign-key", f"{pristine[1]}.key")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"changes.jsonl: {TERABYTE:,} bytes, larger than" in proc.stderr, proc.stderr
    assert not (signed / "data" / "zz").exists()


def test_merge_never_hashes_a_sparse_terabyte_in_a_shard(signed, pristine, tmp_path):
    """merge hashed each shard file whole before comparing its size with its line: a sparse
    terabyte in place of the acta a shard adds held it for about an hour."""
    shard = _shard_adding_one_acta(pristine, tmp_path)
    _sparse(shard / "data" / "zz" / "999999999.01.jpg", TERABYTE)
    proc = run_cli("merge", str(signed), str(shard), "--sign-key", f"{pristine[1]}.key", timeout=LIMIT)
    assert proc.returncode == 2 and "does not match its provenance line" in proc.stderr, proc.stderr
    assert not (signed / "data" / "zz").exists()


# -- the audit: an index its record says is huge -----------------------------------------------------
@pytest.mark.parametrize("whose", ["ours, 0644", "ours, 0666", "ours, 0664", "another user's, 0644"])
def test_merge_links_a_shards_file_only_when_nobody_else_may_rewrite_it(signed, pristine, tmp_path, whose):
    """merge hard-linked every shard file into the mirror: one file under two names, so a shard
    from a tarball or a USB stick (mode 0666) or another user's folder could be rewritten through
    its own name after the merge, changing the mirror's evidence. Such a file is copied now; a
    file of ours that only we may write is still linked (no second copy of gigabytes)."""
    shard = _shard_adding_one_acta(pristine, tmp_path)
    new = shard / "data" / "zz" / "999999999.01.jpg"
    os.chmod(new, int(whose[-4:], 8))
    if whose.startswith("another"):
        if os.geteuid() != 0:
            pytest.skip("a file of another user's needs root to make")
        os.chown(new, 54321, 54321)
    proc = run_cli("merge", str(signed), str(shard), "--sign-key", f"{pristine[1]}.key", timeout=LIMIT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    merged = signed / "data" / "zz" / "999999999.01.jpg"
    assert merged.read_bytes() == new.read_bytes()
    assert os.path.samefile(merged, new) == (whose == "ours, 0644")
    if whose != "ours, 0644":
        assert merged.stat().st_nlink == 1 and merged.stat().st_uid == os.geteuid()
        assert merged.stat().st_mode & 0o022 == 0
        with open(new, "r+b") as fh:  # the shard's maker rewrites their file in place
            fh.write(b"\x00")
    check = run_cli("verify", str(signed), "--pubkey", f"{pristine[1]}.pub", timeout=LIMIT)
    assert check.returncode == 0, check.stdout


def test_merge_refuses_a_shard_file_rewritten_between_its_check_and_its_copy(signed, pristine, tmp_path,
                                                                            monkeypatch):
    """A shard file others may write is copied, not linked: it was hashed, then read again for
    the copy, so bytes written between the two landed in the mirror (caught only by the final
    verify, after the records were appended). The bytes copied are hashed as they are copied."""
    import hashlib

    from mirror import job
    from mirror.models import UsageError

    shard = _shard_adding_one_acta(pristine, tmp_path)
    new = shard / "data" / "zz" / "999999999.01.jpg"
    os.chmod(new, 0o666)
    checked = hashlib.file_digest

    def then_rewritten(fh, name):  # another user's write, just after the check
        digest = checked(fh, name)
        if os.path.samefile(f"/proc/self/fd/{fh.fileno()}", new):
            with open(new, "r+b") as w:
                w.write(b"\x00")
        return digest

    monkeypatch.setattr(hashlib, "file_digest", then_rewritten)
    before = {p: p.read_bytes() for p in signed.iterdir() if p.is_file()}
    with pytest.raises(UsageError, match="changed while it was copied"):
        job.merge(str(signed), [str(shard)], sign_key_path=f"{pristine[1]}.key")
    assert {p: p.read_bytes() for p in signed.iterdir() if p.is_file()} == before
    assert not (signed / "data" / "zz").exists() or not any((signed / "data" / "zz").iterdir())


def _retimed(pristine, folder: Path, key: str, when: str, *, bytes_of: str | None = None, spelling: bool = False) -> Path:
    """A copy of the mirror as a shard whose acta `key` was fetched at `when`: with another
    acta's bytes (bytes_of), under a folder spelt in another case (spelling)."""
    shutil.copytree(pristine[0], folder, symlinks=True)
    objs = _lines(folder)
    for o in objs:
        if o["key"] != key:
            continue
        o["fetched_at"] = when
        if bytes_of:
            donor = next(d for d in objs if d["key"] == bytes_of)
            shutil.copyfile(folder / donor["path"], folder / o["path"])
            o["sha256"], o["size"], o["cid"] = donor["sha256"], donor["size"], donor["cid"]
        if spelling:
            old = folder / o["path"]
            o["path"] = o["path"].replace("data/", "data/x", 1)  # another folder for the same table
            (folder / o["path"]).parent.mkdir(parents=True)
            old.rename(folder / o["path"])
    (folder / "provenance.jsonl").write_text("".join(json.dumps(o) + "\n" for o in objs))
    return folder


@pytest.mark.parametrize("spelling", [False, True])
def test_merge_orders_two_copies_of_a_table_by_when_they_were_fetched_not_by_the_shards_order(pristine, tmp_path,
                                                                                              spelling):
    """Two shards holding one table (or the index) with other bytes: the copy of the shard named
    last became the latest version, so 'merge OUT A B' and 'merge OUT B A' tallied different
    votes, exit 0; and under another folder the table got two version-1 records. Now the later
    fetch is the later version, under the table's one file name, whatever the order."""
    from mirror import job
    from mirror.state import read_state

    key, donor = _an_acta(pristine[0], 0)["key"], _an_acta(pristine[0], 1)["key"]
    early = _retimed(pristine, tmp_path / "early", key, "2024-07-29T01:00:00.000000Z")
    late = _retimed(pristine, tmp_path / "late", key, "2024-07-30T01:00:00.000000Z", bytes_of=donor, spelling=spelling)
    merged = {}
    for name, order in (("ab", [early, late]), ("ba", [late, early])):
        job.merge(str(tmp_path / name), [str(shard) for shard in order])
        state = read_state(tmp_path / name)
        versions = sorted((e.version, e.path, e.sha256, e.fetched_at) for e in state.entries if e.key == key)
        merged[name] = versions
        assert [(v, at) for v, _p, _s, at in versions] == [(1, "2024-07-29T01:00:00.000000Z"),
                                                             (2, "2024-07-30T01:00:00.000000Z")]
        assert versions[1][1] == versions[0][1].replace(".jpg", ".v2.jpg")  # one file name, two versions
        assert state.latest_actas()[key].sha256 == _an_acta(pristine[0], 1)["sha256"]
    assert merged["ab"] == merged["ba"]


def _giant_index(mirror: Path, size: int = 3 << 30) -> int:
    """The latest index replaced by `size` bytes of zeros (sparse), its record and manifest line
    rewritten to match, as anyone can: a mirror whose records agree, and whose index is huge."""
    import hashlib

    objs = _lines(mirror)
    index = [o for o in objs if o["kind"] == "index"][-1]
    _sparse(mirror / index["path"], size)
    digest, zeros = hashlib.sha256(), bytes(1 << 20)
    for _ in range(size >> 20):
        digest.update(zeros)
    manifest = (mirror / "manifest-sha256.txt").read_text().replace(index["sha256"], digest.hexdigest())
    index.update(sha256=digest.hexdigest(), size=size)
    (mirror / "provenance.jsonl").write_text("".join(json.dumps(o) + "\n" for o in objs))
    (mirror / "manifest-sha256.txt").write_text(manifest)
    return size


@pytest.mark.parametrize("command", ["tally", "site"])
def test_an_index_recorded_as_gigabytes_is_refused_not_read_into_memory(signed, command):
    """The archived index was read into memory up to the size its record gives: a copy whose
    index is gigabytes of zeros, recorded (sha256 and size) as such, stopped tally and site with
    a MemoryError traceback, or the machine without a limit. An index over 256 MiB is refused."""
    from tests.test_hostile_copies import _cli_in_memory

    size = _giant_index(signed)
    proc = _cli_in_memory(2 << 30, command, str(signed))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"gives the index {size:,} bytes, larger than any index" in proc.stderr


def test_compare_never_reads_a_giant_index_of_the_mirror_into_memory(signed, tmp_path):
    """compare read each archived index of DIR whole for its file names (DIR may be a copy too)."""
    from tests.test_hostile_copies import _cli_in_memory

    theirs = tmp_path / "theirs"
    files = _images(signed, theirs)
    _giant_index(signed)
    proc = _cli_in_memory(2 << 30, "compare", str(signed), str(theirs))
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert f"{len(files)} of {len(files)} actas" in proc.stdout and "not used for names" in proc.stdout


# -- the records: a sparse terabyte in place of one ------------------------------------------------
@pytest.mark.parametrize("name", ["provenance.jsonl", "changes.jsonl", "failures.jsonl"])
def test_a_record_file_that_is_a_sparse_terabyte_is_named_not_read(signed, name):
    """The records were read line by line, a giant line skipped by reading through it, then hashed
    for the tag manifest and again for the signed statement: a sparse terabyte in place of one held
    verify for hours. A record file over 4 GiB is now named unsafe, unread, by every reader."""
    _sparse(signed / name, TERABYTE)
    code, problems, _report = _verify(signed)
    assert code == 1 and ("unsafe", name) in problems, problems
    proc = run_cli("tally", str(signed), timeout=LIMIT)
    assert proc.returncode == 2 and f"{TERABYTE:,} bytes, larger than" in proc.stderr, proc.stderr


# -- car: what a copy left in site/ ------------------------------------------------------------------
def test_car_never_carries_a_sparse_terabyte_planted_in_site(signed, tmp_path):
    """car (and every publisher) carries site/ beside data/: a sparse terabyte planted there as
    site/acta.js was hashed and then written into the CAR file (a 2 GB one took 22 s and made a
    2 GB CAR). A site file over 64 MiB is refused, unread, and no CAR file is left."""
    (signed / "site").mkdir()
    _sparse(signed / "site" / "acta.js", TERABYTE)
    out = tmp_path / "m.car"
    proc = run_cli("car", str(signed), "--out", str(out), timeout=LIMIT)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"site/acta.js: {TERABYTE:,} bytes, larger than" in proc.stderr and not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".m.car")] == []


# -- the offline recipe: a sparse terabyte in place of an acta -----------------------------------------
def test_the_recipe_stops_at_step_1_on_a_sparse_terabyte(made, copy, tmp_path):  # noqa: F811
    """Step 4 (sha256sum -c) hashed a listed acta replaced by a sparse terabyte: the stranger's
    check ran for about an hour. Step 1 now refuses any file over 1 GiB, before anything is read;
    in a shard's clone too; and acta-mirror's verify names the file at once."""
    from tests.test_stranger import BAG, SHARD, actas, first_failure, verify

    key = made / "signer.pub"
    _sparse(copy / actas(copy)[0], TERABYTE)
    assert first_failure(BAG, copy, key) == 1
    code, out = verify(copy, key)
    assert code == 1 and f"changed: {actas(copy)[0]}" in out, out
    clone = tmp_path / "clone"
    shutil.copytree(made / "clone", clone, symlinks=True)
    _sparse(clone / actas(clone)[0], TERABYTE)
    assert first_failure(SHARD, clone, key) == 1


def test_export_never_copies_a_giant_evidence_file_into_the_wacz(signed, tmp_path):
    """The WACZ's evidence/ files were copied whole into the work folder, then zipped: a copy's
    signed-root.json.tsr as a sparse file was written out as zeros (a terabyte would fill the
    disk, after hours). Each evidence file is now read only within what such a file can be
    (a timestamp token: 1 MiB), else left out and named."""
    _sparse(signed / "signed-root.json.tsr", 2 << 30)
    out = tmp_path / "m.wacz"
    proc = run_cli("export", str(signed), "--wacz", str(out), timeout=LIMIT)
    assert proc.returncode == 1, proc.stderr
    said = proc.stdout + proc.stderr
    assert f"unsafe: signed-root.json.tsr ({2 << 30:,} bytes, larger than 1,048,576; not read)" in said, said
    assert "1 evidence file(s) left out" in said and out.stat().st_size < 64 << 20


# -- keys: digits that are not ASCII ---------------------------------------------------------------
def test_a_key_of_fullwidth_digits_is_a_bad_record_not_another_table(signed):
    """A record's key was checked with \\d, which takes any Unicode digit: a copy could add a
    record under ０１０１１３０４２.０１ (fullwidth digits), a look-alike of a real table, its file
    named to match, and verify took it as a record of another table (an unsigned copy: intact).
    Keys are ASCII digits, as the crawl makes them."""
    objs = _lines(signed)
    real = _an_acta(signed)
    twin = dict(real, key=real["key"].translate(str.maketrans("0123456789", "０１２３４５６７８９")))
    twin["path"] = real["path"].rsplit("/", 1)[0] + f"/{twin['key']}.jpg"
    shutil.copyfile(signed / real["path"], signed / twin["path"])
    (signed / "provenance.jsonl").write_text("".join(json.dumps(o) + "\n" for o in objs + [twin]))
    with open(signed / "manifest-sha256.txt", "a") as fh:
        fh.write(f"{real['sha256']}  {twin['path']}\n")
    code, problems, report = _verify(signed)
    assert code == 1 and ("provenance", "provenance.jsonl") in problems, problems
    assert any(twin["key"] in p["detail"] and "neither an acta key" in p["detail"] for p in report["problems"])


@pytest.mark.parametrize("name", ["０１０１０１００１.01", "٠١٠١٠١٠٠١.01"])
def test_no_reader_takes_look_alike_digits_for_a_key_or_a_shard(name):
    """The records' ACTA_KEY was made ASCII (5e8b9762); the site's page names, compare's and
    evidence's file names and the shard names still took any Unicode digit."""
    from mirror import compare, evidence, state
    from mirror.audit import site

    assert site.KEY.fullmatch(name) is None
    assert compare._KEY_IN_NAME.search(name) is None
    assert evidence._ACTA_FILE.fullmatch(name + ".jpg") is None
    assert not state.is_shard_name(name[:2])


def test_a_sparse_giant_manifest_is_refused_unread_not_read_up_to_its_limit(signed, tmp_path):
    """A payload manifest larger than any mirror's was refused only after 512 MiB of it had been
    read into memory: a verify on a small runner, or under a memory limit, died instead."""
    from mirror.state import MAX_MANIFEST_BYTES

    manifest = signed / "manifest-sha256.txt"
    os.truncate(manifest, MAX_MANIFEST_BYTES + 1)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.run(["prlimit", f"--as={400 << 20}", sys.executable, "-m", "mirror", "verify", str(signed)],
                          capture_output=True, text=True, timeout=LIMIT, env=env)
    assert "Traceback" not in proc.stderr and "MemoryError" not in proc.stderr, proc.stderr
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"unsafe: manifest-sha256.txt ({MAX_MANIFEST_BYTES + 1:,} bytes, larger than {MAX_MANIFEST_BYTES:,}; not read)" in proc.stdout, \
        proc.stdout + proc.stderr
