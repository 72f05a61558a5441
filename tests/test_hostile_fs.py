"""Hostile copies on the user's machine: no command writes, deletes or executes outside its folder.

Each attack is built the way an attacker would: by editing a real mirror crawled from the
replay (or the shard repositories published from it). Canary files and directories outside
the folders a command works in must come out unchanged; a hook that would run creates a marker.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import bagit
import pytest

from mirror.crawl import CrawlOptions, crawl
from mirror.manifest import read_manifest
from mirror.publish import redact
from mirror.replay import Replay, ReplayThread
from mirror.verify import verify
from tests.conftest import run_cli
from tests.gitservers import GitHttp, bare_repo

SECRET = b"host secret: not evidence, never published\n"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A real signed mirror, crawled once; each test edits its own copy."""
    root = tmp_path_factory.mktemp("base")
    assert run_cli("keygen", "--out", str(root / "signer")).returncode == 0
    with ReplayThread(Replay(small=True, limit=30)) as r:
        asyncio.run(crawl(CrawlOptions(site="resultados2024", root=r.url, out=str(root / "mirror"),
                                       sign_key=str(root / "signer.key"))))
    assert verify(root / "mirror") == []
    return root


@pytest.fixture
def mirror(base, tmp_path) -> Path:
    out = tmp_path / "work" / "mirror"
    shutil.copytree(base / "mirror", out, symlinks=True)
    return out


@pytest.fixture
def pubkey(base) -> str:
    return str(base / "signer.pub")


@pytest.fixture
def outside(tmp_path) -> Path:
    """Things of the user's that no command may touch: a folder of files and a secret file."""
    folder = tmp_path / "outside"
    folder.mkdir()
    for i in range(3):
        (folder / f"keep-{i}.txt").write_bytes(b"keep %d\n" % i)
    (folder / "secret.txt").write_bytes(SECRET)
    return folder


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def actas(mirror: Path) -> list[str]:
    return sorted(p for p in read_manifest(mirror / "manifest-sha256.txt") if not p.startswith("data/index/"))


def flip_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def git(*args: str) -> str:
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout


def one_line(proc) -> str:
    """The one line that says what went wrong (progress lines aside), never a traceback."""
    lines = [ln for ln in proc.stderr.strip().splitlines() if not ln.startswith("[")]
    assert len(lines) == 1 and lines[0].startswith("acta-mirror:"), proc.stderr
    return lines[0]


# -- 5: hash before publishing ------------------------------------------------------------
def test_git_publish_refuses_a_flipped_byte(mirror, tmp_path):
    bad = actas(mirror)[-1]  # in the last of several pushes: refused before the first
    flip_one_byte(mirror / bad)
    remote = tmp_path / "remote" / "a.git"
    proc = run_cli("publish", str(mirror), "--to", f"git+file://{remote}", "--max-push-bytes", "300000")
    assert proc.returncode == 1 and bad in one_line(proc), proc.stdout + proc.stderr
    pushed = subprocess.run(["git", "-C", str(remote), "rev-parse", "--verify", "-q", "main"], capture_output=True)
    assert pushed.returncode != 0, "a corrupted mirror was pushed"


def test_car_refuses_a_changed_file_and_leaves_nothing(mirror, tmp_path):
    bad = actas(mirror)[0]
    flip_one_byte(mirror / bad)
    car = tmp_path / "m.car"
    proc = run_cli("car", str(mirror), "-o", str(car))
    assert proc.returncode == 1 and bad in one_line(proc)
    assert not car.exists() and not (tmp_path / "m.car.part").exists()


# -- 6: state shipped inside a mirror is never followed -----------------------------------------
def test_crawl_and_merge_do_not_follow_symlinks_in_the_state_folder(base, mirror, outside, tmp_path):
    lock_target = outside / "keep-0.txt"
    state = mirror / ".acta-mirror"
    shutil.rmtree(state / "tmp")
    (state / "tmp").symlink_to(outside, target_is_directory=True)
    (state / "lock").unlink()
    (state / "lock").symlink_to(lock_target)
    before = snapshot(outside)
    with ReplayThread(Replay(small=True, limit=30)) as r:
        proc = run_cli("crawl", "resultados2024", "--root", r.url, "--out", str(mirror), "--quiet",
                       "--sign-key", str(base / "signer.key"))  # signed: what it signed changes
    assert proc.returncode == 0, proc.stderr
    assert snapshot(outside) == before
    assert verify(mirror) == [] and not (mirror / ".acta-mirror" / "tmp").is_symlink()
    # the same planted in the output of a merge
    out = tmp_path / "merged"
    shutil.copytree(base / "mirror", out, symlinks=True)
    shutil.rmtree(out / ".acta-mirror" / "tmp")
    (out / ".acta-mirror" / "tmp").symlink_to(outside, target_is_directory=True)
    (out / ".acta-mirror" / "lock").unlink()
    (out / ".acta-mirror" / "lock").symlink_to(lock_target)
    proc = run_cli("merge", str(out), str(mirror), "--sign-key", str(base / "signer.key"))
    assert proc.returncode == 0, proc.stderr
    assert snapshot(outside) == before


# -- 7: never run what a mirror ships ------------------------------------------------------------
def test_publish_never_runs_a_hook_shipped_in_the_mirror(mirror, tmp_path):
    target = f"git+file://{tmp_path}/remote/a.git"
    marker = tmp_path / "hook-ran"
    # Where the publisher used to keep its staging repositories: a shipped one, with a hook.
    shipped = mirror / ".acta-mirror" / "git" / hashlib.sha256(target.encode()).hexdigest()[:12] / "01.git"
    git("init", "-q", "--bare", "-b", "main", str(shipped))
    for hook in ("pre-push", "post-update", "reference-transaction", "pre-auto-gc"):
        path = shipped / "hooks" / hook
        path.write_text(f"#!/bin/sh\ntouch {marker}\n")
        path.chmod(0o755)
    with open(shipped / "config", "a") as fh:
        fh.write(f"[core]\n\tfsmonitor = touch {marker}\n")
    proc = run_cli("publish", str(mirror), "--to", target)
    assert proc.returncode == 0, proc.stderr
    assert not marker.exists(), "a hook shipped inside the mirror ran"


def test_publish_never_runs_the_hooks_of_a_local_target_repository(mirror, tmp_path):
    """A git+file:// target may be a repository someone handed over: its receive hooks never run."""
    bare = tmp_path / "given" / "a.git"  # a one-shard mirror goes to the target itself
    marker = tmp_path / "hook-ran"
    git("init", "-q", "--bare", "-b", "main", str(bare))
    for hook in ("pre-receive", "update", "post-receive", "post-update"):
        path = bare / "hooks" / hook
        path.write_text(f"#!/bin/sh\ntouch {marker}\n")
        path.chmod(0o755)
    proc = run_cli("publish", str(mirror), "--to", f"git+file://{tmp_path}/given/a.git")
    assert proc.returncode == 0, proc.stderr
    assert list(bare.glob("refs/heads/*")), "the push reached the given repository"
    assert not marker.exists(), "a hook of the target repository ran"


# -- 9: merge stays inside OUT -----------------------------------------------------------------
def test_merge_never_writes_outside_out_through_dot_dot_and_out_stays_usable(base, mirror, tmp_path):
    out = tmp_path / "work" / "deep" / "merged"
    escape = tmp_path / "work" / "escaped.jpg"  # where OUT/data/../../../escaped.jpg lands
    evil = b"\xff\xd8planted\xff\xd9"
    (tmp_path / "escaped.jpg").write_bytes(evil)  # where the shard's line points
    line = json.loads((mirror / "provenance.jsonl").read_text().splitlines()[1])
    line.update(path="data/../../../escaped.jpg", sha256=hashlib.sha256(evil).hexdigest(), size=len(evil),
                key="999999999.99")
    with open(mirror / "provenance.jsonl", "a") as fh:
        fh.write(json.dumps(line) + "\n")
    proc = run_cli("merge", str(out), str(mirror))
    assert proc.returncode == 2 and "escaped.jpg" in one_line(proc)
    assert not escape.exists(), "merge wrote outside OUT"
    # OUT is not left unusable: a sound shard merges into it afterwards
    again = run_cli("merge", str(out), str(base / "mirror"))
    assert again.returncode == 0, again.stderr
    assert verify(out) == []


def test_merge_does_not_link_a_payload_symlink_into_out(mirror, outside, tmp_path):
    victim = actas(mirror)[2]
    (mirror / victim).unlink()
    (mirror / victim).symlink_to(outside / "secret.txt")
    out = tmp_path / "merged"
    proc = run_cli("merge", str(out), str(mirror))
    assert proc.returncode == 2 and victim in one_line(proc)
    secret = os.stat(outside / "secret.txt")
    for path in out.rglob("*"):
        st = os.lstat(path)
        assert (st.st_dev, st.st_ino) != (secret.st_dev, secret.st_ino), f"{path} is the user's file"
        assert not path.is_symlink()


def test_merge_never_copies_a_host_file_named_by_a_shards_tag_file(mirror, outside, tmp_path):
    (mirror / "changes.jsonl").unlink()
    (mirror / "changes.jsonl").symlink_to(outside / "secret.txt")
    out = tmp_path / "merged"
    proc = run_cli("merge", str(out), str(mirror))
    assert not [p for p in out.rglob("*") if p.is_file() and SECRET in p.read_bytes()], "a host file was copied in"
    assert proc.returncode == 2 and "changes.jsonl" in one_line(proc)


def test_merge_does_not_write_through_a_symlinked_folder_in_out(base, mirror, outside, tmp_path):
    out = tmp_path / "merged"
    shards = []
    for i in (1, 2):
        shard = tmp_path / f"shard{i}"
        with ReplayThread(Replay(small=True, limit=30)) as r:
            asyncio.run(crawl(CrawlOptions(site="resultados2024", root=r.url, out=str(shard), shard=(i, 2))))
        shards.append(shard)
    first = run_cli("merge", str(out), str(shards[0]))  # half the tables: merged, and said to be half (exit 1)
    assert first.returncode == 1 and "not in the merged mirror" in first.stderr, first.stderr
    state_dirs = sorted(p for p in (out / "data").iterdir() if p.name != "index")
    moved = state_dirs[0]
    shutil.copytree(moved, outside / "planted", symlinks=True)
    shutil.rmtree(moved)
    moved.symlink_to(outside / "planted", target_is_directory=True)
    before = snapshot(outside)
    proc = run_cli("merge", str(out), str(shards[1]))
    assert snapshot(outside) == before, "merge wrote through a symlinked folder"
    assert proc.returncode == 2 and "a symbolic link" in one_line(proc)


# -- 10: restore removes only what it made -----------------------------------------------------
def test_restore_never_deletes_outside_out(mirror, tmp_path):
    remote = tmp_path / "remote" / "a.git"
    assert run_cli("publish", str(mirror), "--to", f"git+file://{remote}").returncode == 0
    work = tmp_path / "edit"
    git("clone", "-q", str(remote), str(work))
    layout = json.loads((work / "shards.json").read_text())
    layout["shards"].append("../../../victim")
    (work / "shards.json").write_text(json.dumps(layout))
    git("-C", str(work), "-c", "user.name=x", "-c", "user.email=x@x", "commit", "-qam", "hostile")
    git("-C", str(work), "push", "-q", "origin", "main")
    out = tmp_path / "deep" / "er" / "restored"
    out.parent.mkdir(parents=True)
    victims = [out.parent / "victim-0", tmp_path / "deep" / "victim-0", tmp_path / "victim-0"]
    for v in victims:
        v.mkdir(exist_ok=True)
        (v / "precious.txt").write_text("mine\n")
    proc = run_cli("restore", "--from", f"git+file://{remote}", "--out", str(out))
    for v in victims:
        assert (v / "precious.txt").exists(), f"restore deleted {v}"
    assert proc.returncode in (1, 2) and "shards.json" in one_line(proc)
    assert not out.exists()


def test_restore_refuses_a_symlink_from_a_shard(mirror, outside, tmp_path):
    remote = tmp_path / "remote" / "a.git"
    assert run_cli("publish", str(mirror), "--to", f"git+file://{remote}").returncode == 0
    work = tmp_path / "edit"
    git("clone", "-q", str(remote), str(work))
    victim = actas(mirror)[5]
    twin = outside / "twin.jpg"  # a file elsewhere with the very bytes the line names
    shutil.copyfile(work / victim, twin)
    (work / victim).unlink()
    (work / victim).symlink_to(twin)
    git("-C", str(work), "-c", "user.name=x", "-c", "user.email=x@x", "commit", "-qam", "hostile")
    git("-C", str(work), "push", "-q", "origin", "main")
    out = tmp_path / "restored"
    proc = run_cli("restore", "--from", f"git+file://{remote}", "--out", str(out))
    assert proc.returncode == 1 and victim in one_line(proc), proc.stdout + proc.stderr
    assert not out.exists() and twin.read_bytes() == (mirror / victim).read_bytes()


# -- 11: car and IPFS publish only checked files -------------------------------------------------
def test_car_never_carries_a_host_file(mirror, outside, tmp_path):
    (mirror / "notes.txt").symlink_to(outside / "secret.txt")  # an extra top-level file
    (mirror / "site").mkdir()
    (mirror / "site" / "index.html").write_text("<p>site</p>\n")
    car = tmp_path / "a.car"
    proc = run_cli("car", str(mirror), "-o", str(car))
    assert proc.returncode == 0, proc.stderr
    assert SECRET not in car.read_bytes() and b"<p>site</p>" in car.read_bytes()
    # a payload file that is a symlink to a file with the very same bytes still refuses
    victim = actas(mirror)[1]
    twin = outside / "twin.jpg"
    shutil.copyfile(mirror / victim, twin)
    (mirror / victim).unlink()
    (mirror / victim).symlink_to(twin)
    proc = run_cli("car", str(mirror), "-o", str(tmp_path / "b.car"))
    assert proc.returncode == 1 and victim in one_line(proc)
    (mirror / victim).unlink()
    shutil.copyfile(twin, mirror / victim)
    (mirror / "site" / "leak.html").symlink_to(outside / "secret.txt")
    proc = run_cli("car", str(mirror), "-o", str(tmp_path / "c.car"))
    assert proc.returncode == 1 and "site/leak.html" in one_line(proc)


# -- 13: credentials are redacted everywhere ----------------------------------------------------
def test_redact_hides_a_password_holding_an_at_sign():
    assert redact("fetch https://user:p@ss@host:8/x failed") == "fetch https://***@host:8/x failed"
    assert redact("git+http://a:b%40c@h/r.git") == "git+http://***@h/r.git"
    assert redact("https://h/x@y and https://u@h/") == "https://h/x@y and https://***@h/"


def test_a_local_index_is_named_by_its_file_alone_never_by_the_users_folders(tmp_path):
    """crawl --index /home/<user>/.../index.csv recorded 'file:///home/<user>/...' as every
    acta's page: published with the mirror, it named the user. The records name the file alone."""
    folder = tmp_path / "home" / "maria-perez" / "actas"
    folder.mkdir(parents=True)
    with ReplayThread(Replay(small=True, limit=5)) as r:
        (folder / "mi índice.csv").write_bytes(r.replay.index_bytes(1))
        out = tmp_path / "m"
        proc = run_cli("crawl", "resultados2024", "--root", r.url, "--out", str(out), "--quiet",
                       "--index", str(folder / "mi índice.csv"))
    assert proc.returncode == 0, proc.stderr
    pages = {json.loads(line)["page"] for line in (out / "provenance.jsonl").read_text().splitlines()}
    assert pages == {"file:mi%20%C3%ADndice.csv"}, pages
    assert [p for p in out.rglob("*") if p.is_file() and b"maria-perez" in p.read_bytes()] == []


def test_credentials_in_urls_are_never_written(tmp_path, base):
    token = "tok3n-s3cret"
    with ReplayThread(Replay(small=True, limit=10)) as r:
        root = r.url.replace("http://", f"http://archivist:{token}@")
        out = tmp_path / "m"
        proc = run_cli("crawl", "resultados2024", "--root", root, "--out", str(out), "--quiet",
                       "--alternate", root.replace("127.0.0.1", "127.0.0.2"),
                       "--sign-key", str(base / "signer.key"))
        assert proc.returncode == 0, proc.stderr
        assert token not in proc.stdout + proc.stderr
        leaked = [p for p in out.rglob("*") if p.is_file() and token.encode() in p.read_bytes()]
        assert leaked == []
        again = run_cli("crawl", "resultados2024", "--root", root, "--out", str(out), "--quiet")
        assert again.returncode == 0 and "0 archived" in again.stdout  # the validators still match
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = run_cli("crawl", "resultados2024", "--root", f"http://user:{token}@127.0.0.1:{port}",
                   "--out", str(tmp_path / "down"), "--quiet")
    assert down.returncode == 2 and token not in down.stdout + down.stderr
    assert not (tmp_path / "down").exists()  # an unreachable root leaves no half-made folder


# -- also in the issue -----------------------------------------------------------------------
def test_restore_with_a_user_in_the_url_and_a_signed_restored_mirror(mirror, pubkey, tmp_path):
    root = tmp_path / "http"
    root.mkdir()
    bare_repo(root / "actas.git", http=True)
    secret = "pa@ss-word"
    with GitHttp(root, "archivist", secret) as server:
        url = f"git+http://archivist:{secret.replace('@', '%40')}@127.0.0.1:{server.port}/actas.git"
        proc = run_cli("publish", str(mirror), "--to", url)
        assert proc.returncode == 0, proc.stderr
        out = tmp_path / "restored"
        proc = run_cli("restore", "--from", url, "--out", str(out))
        assert proc.returncode == 0, proc.stderr
        assert "pa@ss" not in proc.stdout + proc.stderr and "%40ss" not in proc.stdout + proc.stderr
    for name in ("bag-info.txt", "provenance.jsonl", "changes.jsonl", "failures.jsonl", "signed-root.json",
                 "signed-root.json.minisig", "manifest-sha256.txt", "tagmanifest-sha256.txt"):
        assert (out / name).read_bytes() == (mirror / name).read_bytes(), name
    check = run_cli("verify", str(out), "--pubkey", pubkey)
    assert check.returncode == 0, check.stdout + check.stderr
    receipts = [json.loads(x) for x in (mirror / "publish-receipts.jsonl").read_text().splitlines()]
    assert receipts[-1]["kind"] == "git" and "pa@ss" not in json.dumps(receipts)
    assert receipts[-1]["manifest_root"] == (mirror / "bag-info.txt").read_text().split(
        "Acta-Mirror-Merkle-Root: ")[1].split()[0]


def test_publish_a_relative_path_and_the_site_rides_in_shard_01(mirror, tmp_path):
    (mirror / "site").mkdir()
    (mirror / "site" / "index.html").write_text("<p>find your table</p>\n")
    remote = tmp_path / "remote" / "a.git"
    proc = run_cli("publish", "mirror", "--to", f"git+file://{remote}", cwd=mirror.parent)
    assert proc.returncode == 0, proc.stderr
    clone = tmp_path / "clone"
    git("clone", "-q", str(remote), str(clone))
    assert (clone / "site" / "index.html").read_text() == "<p>find your table</p>\n"
    assert verify(clone) == []
    bagit.Bag(str(clone)).validate()


@pytest.fixture
def small_disk(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounts = []

    def mount(size: str, *options: str) -> Path:
        where = tmp_path / f"disk{len(mounts)}"
        where.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join((f"size={size}", *options)), "tmpfs", str(where)],
                       check=True)
        mounts.append(where)
        return where

    yield mount
    for where in mounts:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_read_only_and_full_disks_are_one_line_and_exit_3(mirror, base, tmp_path, small_disk):
    read_only = small_disk("1m", "ro")
    full = small_disk("64k")
    with open(full / "filler", "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError:
            pass
    for disk in (read_only, full):
        for args in (["tally", str(mirror), "--out", str(disk / "t.txt")],
                     ["keygen", "--out", str(disk / "k")],
                     ["car", str(mirror), "-o", str(disk / "m.car")]):
            proc = run_cli(*args)
            assert proc.returncode == 3, (args, proc.stdout, proc.stderr)
            one_line(proc)
    ro_mirror = small_disk("8m")
    shutil.copytree(mirror, ro_mirror / "m", symlinks=True)
    subprocess.run(["mount", "-o", "remount,ro", str(ro_mirror)], check=True)
    for args in (["sign", str(ro_mirror / "m"), "--key", str(base / "signer.key")],
                 ["site", str(ro_mirror / "m")],
                 ["publish", str(ro_mirror / "m"), "--to", f"git+file://{tmp_path}/remote/a.git"]):
        proc = run_cli(*args)
        assert proc.returncode == 3, (args, proc.stdout, proc.stderr)
        one_line(proc)
