"""Publishing to real Git servers on loopback: file://, git daemon, smart HTTP with basic auth."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import bagit
import pytest

from mirror.crawl import CrawlOptions, crawl
from mirror.manifest import read_manifest
from mirror.publish import redact
from mirror.publish.git import assign_shards, shard_url
from mirror.verify import verify
from tests.conftest import ROOT, run_cli
from tests.gitservers import GitDaemon, GitHttp, bare_repo


def make_mirror(url: str, out: Path, **kw) -> Path:
    asyncio.run(crawl(CrawlOptions(site="resultados2024", root=url, out=str(out), **kw)))
    return out


@pytest.fixture
def mirror(replay, tmp_path) -> Path:
    return make_mirror(replay.url, tmp_path / "mirror")


def git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def commits(repo: Path) -> int:
    return int(git("-C", str(repo), "rev-list", "--count", "main").strip())


def test_shards_verify_alone_and_restore_is_identical(mirror, tmp_path):
    target = f"git+file://{tmp_path}/remote/actas.git"
    proc = run_cli("publish", str(mirror), "--to", target, "--max-repo-bytes", "1500000")
    assert proc.returncode == 0, proc.stderr
    repos = sorted((tmp_path / "remote").glob("*.git"))
    assert len(repos) >= 2, "a small budget should make several shards"
    full = read_manifest(mirror / "manifest-sha256.txt")
    held = {}
    for repo in repos:
        clone = tmp_path / "clones" / repo.name
        git("clone", "-q", str(repo), str(clone))
        assert verify(clone) == []
        proc = run_cli("verify", str(clone))  # the whole check a stranger runs, Merkle root included
        assert proc.returncode == 0, proc.stdout + proc.stderr
        bagit.Bag(str(clone)).validate()
        assert subprocess.run(["sha256sum", "-c", "--quiet", "manifest-sha256.txt"], cwd=clone).returncode == 0
        assert read_manifest(clone / "full-manifest-sha256.txt") == full  # each shard knows the whole
        part = read_manifest(clone / "manifest-sha256.txt")
        assert not set(part) & set(held)
        held.update(part)
        layout = json.loads((clone / "shards.json").read_text())
        assert len(layout["shards"]) == len(repos) and set(layout["groups"].values()) == set(layout["shards"])
    assert held == full
    out = tmp_path / "restored"
    proc = run_cli("restore", "--from", target, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert (out / "manifest-sha256.txt").read_bytes() == (mirror / "manifest-sha256.txt").read_bytes()
    assert verify(out) == []


def test_publish_again_makes_no_commit_and_new_versions_add_one(replay_factory, tmp_path):
    r = replay_factory(faults="change=0.15")
    mirror = make_mirror(r.url, tmp_path / "mirror")
    remote = tmp_path / "remote" / "a.git"
    target = f"git+file://{remote}"
    assert run_cli("publish", str(mirror), "--to", target).returncode == 0
    first = commits(remote)
    head = git("-C", str(remote), "rev-parse", "main").strip()
    proc = run_cli("publish", str(mirror), "--to", target)
    files = len((mirror / "manifest-sha256.txt").read_text().splitlines())
    assert proc.returncode == 0 and f"shard 01 unchanged ({files} files there)" in proc.stdout, proc.stdout
    assert commits(remote) == first
    r.replay.epoch = 2
    make_mirror(r.url, mirror)
    proc = run_cli("publish", str(mirror), "--to", target)
    assert proc.returncode == 0, proc.stderr
    now = len((mirror / "manifest-sha256.txt").read_text().splitlines())
    assert f"shard 01: +{now - files} files, {now} there now, in 1 push(es)" in proc.stdout, proc.stdout
    assert commits(remote) == first + 1
    message = git("-C", str(remote), "log", "-1", "--format=%B", "main")
    assert "+" in message and "Manifest root (RFC 9162" in message
    assert git("-C", str(remote), "merge-base", "--is-ancestor", head, "main") == ""  # history kept
    tree = git("-C", str(remote), "ls-tree", "-r", "--name-only", "main").split("\n")
    v2 = [p for p in tree if p.endswith(".v2.jpg")]
    assert v2 and all(p.replace(".v2.jpg", ".jpg") in tree for p in v2)  # the old version stays


def test_large_first_publish_is_split_into_several_pushes(mirror, tmp_path):
    remote = tmp_path / "remote" / "a.git"
    proc = run_cli("publish", str(mirror), "--to", f"git+file://{remote}", "--max-push-bytes", "700000")
    assert proc.returncode == 0, proc.stderr
    assert commits(remote) >= 3
    first = git("-C", str(remote), "rev-list", "--reverse", "main").split()[0]
    clone = tmp_path / "early"
    git("clone", "-q", str(remote), str(clone))
    git("-C", str(clone), "checkout", "-q", first)
    assert verify(clone) == []  # even an intermediate commit is a valid bag of what it holds


def test_git_daemon_push_clone_and_restore(mirror, tmp_path):
    base = tmp_path / "srv"
    base.mkdir()
    for name in ("actas.git", "actas-02.git", "actas-03.git", "actas-04.git"):
        bare_repo(base / name, daemon=True)
    with GitDaemon(base) as daemon:
        proc = run_cli("publish", str(mirror), "--to", daemon.url("actas.git"), "--max-repo-bytes", "2000000")
        assert proc.returncode == 0, proc.stderr
        out = tmp_path / "restored"
        proc = run_cli("restore", "--from", daemon.url("actas.git"), "--out", str(out))
        assert proc.returncode == 0, proc.stderr
        assert read_manifest(out / "manifest-sha256.txt") == read_manifest(mirror / "manifest-sha256.txt")


def test_smart_http_basic_auth_and_no_password_leaks(mirror, tmp_path):
    root = tmp_path / "http"
    root.mkdir()
    bare_repo(root / "actas.git", http=True)
    secret = "s3cret-Pa55-word"
    with GitHttp(root, "archivist", secret) as server:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "ACTA_MIRROR_GIT_USERNAME": "archivist"}
        cmd = [sys.executable, "-m", "mirror", "publish", str(mirror), "--to", "git+" + server.url("actas.git")]
        wrong = subprocess.run(cmd, env={**env, "ACTA_MIRROR_GIT_PASSWORD": "not-it"}, capture_output=True, text=True)
        assert wrong.returncode == 1
        assert "Authentication failed" in wrong.stderr or "401" in wrong.stderr, wrong.stderr
        assert "not-it" not in wrong.stdout + wrong.stderr and "Traceback" not in wrong.stderr
        right = subprocess.run(cmd, env={**env, "ACTA_MIRROR_GIT_PASSWORD": secret}, capture_output=True, text=True)
        assert right.returncode == 0, right.stderr
        assert secret not in right.stdout + right.stderr
        in_url = f"git+http://archivist:{secret}@127.0.0.1:{server.port}/actas.git"
        again = subprocess.run([*cmd[:-1], in_url], env=env, capture_output=True, text=True)
        assert again.returncode == 0, again.stderr
        assert secret not in again.stdout + again.stderr and "***@" in again.stdout
        wrong_url = subprocess.run([*cmd[:-1], in_url.replace(secret, "bad-guess")], env=env,
                                   capture_output=True, text=True)
        assert wrong_url.returncode == 1 and "bad-guess" not in wrong_url.stdout + wrong_url.stderr
    state = [mirror / ".acta-mirror", Path(os.environ["XDG_CACHE_HOME"])]  # the mirror's and the staging repos'
    leaked = [p for d in state for p in d.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert leaked == []
    log = git("-C", str(root / "actas.git"), "log", "--format=%an %ae %cn %ce %B", "main")
    assert secret not in log and "archivist" not in log


def test_two_publishers_at_once_both_land(replay, tmp_path):
    a = make_mirror(replay.url, tmp_path / "a", shard=(1, 2))
    b = make_mirror(replay.url, tmp_path / "b", shard=(2, 2))
    remote = tmp_path / "remote" / "shared.git"
    bare_repo(remote)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-m", "mirror", "publish", str(m), "--to", f"git+file://{remote}"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for m in (a, b)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    tree = set(git("-C", str(remote), "ls-tree", "-r", "--name-only", "main").split())
    for m in (a, b):
        assert set(read_manifest(m / "manifest-sha256.txt")) <= tree
    clone = tmp_path / "clone"
    git("clone", "-q", str(remote), str(clone))
    assert verify(clone) == []
    assert commits(remote) >= 2


def test_a_second_writers_records_go_whole_into_full_bag_when_the_chunks_hold_both(replay, tmp_path):
    """After another writer's files, the chunks every shard carries hold both writers' records,
    so they are not this mirror's provenance.jsonl: shard 01's full-bag/ then carries that file
    whole, as its tag manifest lists it (a stranger's check of full-bag/ passes), while each
    writer alone carries it only as the chunks."""
    a = make_mirror(replay.url, tmp_path / "a", shard=(1, 2))
    b = make_mirror(replay.url, tmp_path / "b", shard=(2, 2))
    remote = tmp_path / "remote" / "shared.git"
    for m in (a, b):
        proc = run_cli("publish", str(m), "--to", f"git+file://{remote}")
        assert proc.returncode == 0, proc.stderr
        carried = git("-C", str(remote), "ls-tree", "-r", "--name-only", "main", "full-bag/").split()
        assert ("full-bag/provenance.jsonl" in carried) == (m is b)
    records = (b / "provenance.jsonl").read_bytes()
    shown = subprocess.run(["git", "-C", str(remote), "show", "main:full-bag/provenance.jsonl"], check=True,
                           capture_output=True).stdout
    assert shown == records
    joined = chunks_of(remote, "main")
    paths = [{json.loads(line)["path"] for line in text.splitlines()} for text in (records, joined)]
    assert paths[0] < paths[1]  # both writers' files, the index once


def test_shard_policy_is_stable_and_urls_are_derived():
    groups = {"data/01_A": 500, "data/02_B": 400, "data/03_C": 300, "data/index": 10}
    first = assign_shards(groups, {}, "size", 1000)
    assert first == {"data/01_A": "01", "data/02_B": "01", "data/03_C": "02", "data/index": "02"}
    grown = {**groups, "data/01_A": 5000, "data/00_NEW": 50}
    again = assign_shards(grown, first, "size", 1000)
    assert all(again[g] == first[g] for g in first)  # nothing already placed moves
    by_state = assign_shards(groups, {}, "state", 1)
    assert len(set(by_state.values())) == len(groups)
    assert shard_url("file:///x/a.git", "01") == "file:///x/a.git"
    assert shard_url("file:///x/a.git", "02") == "file:///x/a-02.git"
    assert shard_url("https://h/o/a-{shard}.git", "03") == "https://h/o/a-03.git"
    assert redact("https://u:pw@h/x and pw", "pw") == "https://***@h/x and ***"


def test_bad_targets_exit_clearly(mirror, tmp_path):
    proc = run_cli("publish", str(mirror), "--to", "ftp://example.invalid/x")
    assert proc.returncode == 2 and "unknown scheme" in proc.stderr
    proc = run_cli("publish", str(tmp_path / "nothing"), "--to", f"git+file://{tmp_path}/r.git")
    assert proc.returncode == 2 and "not" in proc.stderr


def chunks_of(repo: Path, commit: str) -> bytes:
    """A shard's full-provenance/ chunks at commit, one after the other, as `cat` joins them."""
    names = git("-C", str(repo), "ls-tree", "--name-only", commit, "full-provenance/").split()
    return b"".join(subprocess.run(["git", "-C", str(repo), "show", f"{commit}:{name}"], check=True,
                                   capture_output=True).stdout for name in sorted(names))


def test_an_appended_provenance_rewrites_only_its_last_chunk(replay_factory, tmp_path, monkeypatch):
    """A publish writes what changed: a shard that gets no new file gets new tag files and the
    last chunk of the full provenance, never the whole provenance again; unchanged files keep
    their blobs. The chunks, read in order, are the mirror's provenance byte for byte."""
    from mirror.publish import git as gitpub

    monkeypatch.setattr(gitpub, "FULL_CHUNK_LINES", 7)
    r = replay_factory(faults="change=0.15")
    mirror = make_mirror(r.url, tmp_path / "mirror")
    target = f"git+file://{tmp_path}/remote/actas.git"
    gitpub.GitPublisher(target, max_repo_bytes=1_500_000).publish(mirror)
    repos = sorted((tmp_path / "remote").glob("*.git"))
    assert len(repos) >= 2
    before = {repo: git("-C", str(repo), "rev-parse", "main").strip() for repo in repos}
    r.replay.epoch = 2
    make_mirror(r.url, mirror)  # new versions: lines appended to the provenance
    gitpub.GitPublisher(target, max_repo_bytes=1_500_000).publish(mirror)
    provenance = (mirror / "provenance.jsonl").read_bytes()
    lines = provenance.count(b"\n")
    first = tmp_path / "remote" / "actas.git"
    old_lines = chunks_of(first, before[first]).count(b"\n")
    assert lines > old_lines
    untouched = 0
    for repo in repos:
        changed = git("-C", str(repo), "diff-tree", "-r", "--name-only", before[repo], "main").split()
        chunks = sorted(p for p in changed if p.startswith("full-provenance/"))
        # only the chunk the old lines ended in, and the ones after it
        assert chunks == [f"full-provenance/{i:06d}.jsonl" for i in range(old_lines // 7, (lines + 6) // 7)]
        if not any(p.startswith("data/") for p in changed):
            untouched += 1
            assert set(changed) - set(chunks) <= {"bag-info.txt", "tagmanifest-sha256.txt",
                                                  "full-manifest-sha256.txt"}, changed
        assert chunks_of(repo, "main") == provenance
    assert untouched, "some shard should have had no new file"
    # the chunks are the records: shard 01 does not carry them a second time in full-bag/
    assert "full-bag/provenance.jsonl" not in git("-C", str(first), "ls-tree", "-r", "--name-only", "main").split()
    out = tmp_path / "restored"
    assert run_cli("restore", "--from", target, "--out", str(out)).returncode == 0
    assert (out / "provenance.jsonl").read_bytes() == provenance


def test_records_the_chunks_are_not_byte_for_byte_are_carried_whole_and_restored_as_they_were(mirror, tmp_path):
    """A provenance file with a blank line (valid: the reader skips it) is not its chunks joined:
    shard 01 then carries it in full-bag/ too, and restore gives back those bytes, not the
    chunks'. Without the blank line the next publish leaves it out again."""
    from mirror.archive import write_tag_manifest

    records = mirror / "provenance.jsonl"
    lines = records.read_bytes().splitlines(keepends=True)
    odd = b"".join(lines[:2]) + b"\n" + b"".join(lines[2:])
    records.write_bytes(odd)
    write_tag_manifest(mirror)
    remote = tmp_path / "remote" / "actas.git"
    target = f"git+file://{remote}"
    proc = run_cli("publish", str(mirror), "--to", target)
    assert proc.returncode == 0, proc.stderr
    assert git("-C", str(remote), "show", "main:full-bag/provenance.jsonl").encode() == odd
    assert chunks_of(remote, "main") == odd.replace(b"\n\n", b"\n", 1)
    out = tmp_path / "restored"
    proc = run_cli("restore", "--from", target, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert (out / "provenance.jsonl").read_bytes() == odd
    records.write_bytes(b"".join(lines))
    write_tag_manifest(mirror)
    proc = run_cli("publish", str(mirror), "--to", target)
    assert proc.returncode == 0, proc.stderr
    assert "full-bag/provenance.jsonl" not in git("-C", str(remote), "ls-tree", "-r", "--name-only", "main").split()
    again = tmp_path / "restored-again"
    proc = run_cli("restore", "--from", target, "--out", str(again))
    assert proc.returncode == 0, proc.stderr
    assert (again / "provenance.jsonl").read_bytes() == b"".join(lines)


def test_shards_that_carry_the_provenance_in_one_file_restore_and_are_converted(replay_factory, tmp_path):
    """Shards written by earlier versions carry full-provenance.jsonl whole, and the records in
    full-bag/ too: restore reads them, and the next publish replaces the file by the chunks and
    leaves the records in full-bag/ out."""
    r = replay_factory(faults="change=0.15")
    mirror = make_mirror(r.url, tmp_path / "mirror")
    remote = tmp_path / "remote" / "a.git"
    target = f"git+file://{remote}"
    assert run_cli("publish", str(mirror), "--to", target).returncode == 0
    clone = tmp_path / "earlier"
    git("clone", "-q", str(remote), str(clone))
    chunks = sorted((clone / "full-provenance").iterdir())
    (clone / "full-provenance.jsonl").write_bytes(b"".join(c.read_bytes() for c in chunks))
    (clone / "full-bag" / "provenance.jsonl").write_bytes((mirror / "provenance.jsonl").read_bytes())
    git("-C", str(clone), "rm", "-q", "-r", "full-provenance")
    git("-C", str(clone), "add", "full-provenance.jsonl", "full-bag/provenance.jsonl")
    git("-C", str(clone), "-c", "user.name=earlier", "-c", "user.email=e@localhost", "commit", "-qm", "earlier layout")
    git("-C", str(clone), "push", "-q", "origin", "main")
    out = tmp_path / "restored"
    assert run_cli("restore", "--from", target, "--out", str(out)).returncode == 0
    assert (out / "provenance.jsonl").read_bytes() == (mirror / "provenance.jsonl").read_bytes()
    r.replay.epoch = 2
    make_mirror(r.url, mirror)
    proc = run_cli("publish", str(mirror), "--to", target)
    assert proc.returncode == 0, proc.stderr
    tree = git("-C", str(remote), "ls-tree", "--name-only", "main").split()
    assert "full-provenance.jsonl" not in tree and "full-provenance" in tree
    assert "full-bag/provenance.jsonl" not in git("-C", str(remote), "ls-tree", "--name-only", "main", "full-bag/").split()
    again = tmp_path / "restored-again"
    assert run_cli("restore", "--from", target, "--out", str(again)).returncode == 0
    assert (again / "provenance.jsonl").read_bytes() == (mirror / "provenance.jsonl").read_bytes()
