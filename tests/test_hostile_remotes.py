"""Hostile or broken Git remotes: what a stranger's or a compromised mirror host serves.

Each test runs the real command line against real repositories (bare repositories on disk,
`git http-backend` behind tests/gitservers.py, a silent socket) edited the way whoever controls
the host would edit them, under a timeout; each failed on the code before its fix.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.gitservers import GitDaemon, GitHttp, SilentHost, bare_repo, free_port, pkt_line
from tests.test_hostile_evidence import LIMIT, pristine, signed  # noqa: F401
from tests.test_hostile_fs import one_line
from tests.test_stranger import retag


def git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(["git", "-c", "user.name=x", "-c", "user.email=x@x", *args], cwd=cwd, check=True,
                          capture_output=True, text=True, timeout=LIMIT).stdout


def publish(mirror: Path, target: str, *more: str) -> subprocess.CompletedProcess:
    return run_cli("publish", str(mirror), "--to", target, "--quiet", *more, timeout=LIMIT)


def tree_paths(repo: Path) -> set[str]:
    return set(git("-C", str(repo), "ls-tree", "-r", "--name-only", "main").splitlines())


def listed(work: Path) -> list[str]:
    return [line[66:] for line in (work / "manifest-sha256.txt").read_text().splitlines()]


def drop(work: Path, path: str, *, from_manifest: bool) -> None:
    """The file gone from a clone of a shard (and its manifest line, when from_manifest)."""
    git("rm", "-q", path, cwd=work)
    if from_manifest:
        manifest = work / "manifest-sha256.txt"
        manifest.write_text("".join(f"{line}\n" for line in manifest.read_text().splitlines()
                                    if line[66:] != path))
    git("commit", "-qam", "drop", cwd=work)


# -- restore: a shard that plants a working Git repository in the restored copy ---------------------
def test_restore_never_writes_a_git_folder_that_git_would_run(signed, tmp_path):
    """An index file's path may be any path under data/index/: a copy listing data/index/.git/HEAD,
    config, objects/k and refs/k (an unsigned, consistent bag) restored them as a working
    repository whose config runs a command: `git status` (a shell prompt runs it) in
    data/index/ ran it. Restore said 'restored and verified', exit 0."""
    for name in ("signed-root.json", "signed-root.json.minisig"):
        (signed / name).unlink()
    tags = signed / "tagmanifest-sha256.txt"
    tags.write_text("".join(f"{line}\n" for line in tags.read_text().splitlines() if "signed-root" not in line))
    lines = [json.loads(line) for line in (signed / "provenance.jsonl").read_text().splitlines()]
    index = next(o for o in lines if o["kind"] == "index")
    proof = tmp_path / "ran"
    planted = {"HEAD": b"ref: refs/heads/main\n", "config": f'[core]\n\tfsmonitor = "touch {proof}; false"\n'.encode(),
               "objects/k": b"", "refs/k": b""}
    for i, (name, data) in enumerate(planted.items()):
        rel = f"data/index/.git/{name}"
        (signed / rel).parent.mkdir(parents=True, exist_ok=True)
        (signed / rel).write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        lines.append({**index, "path": rel, "key": f"index/planted-{i}", "sha256": digest, "size": len(data)})
        with open(signed / "manifest-sha256.txt", "a") as fh:
            fh.write(f"{digest}  {rel}\n")
    (signed / "provenance.jsonl").write_text("".join(json.dumps(o, sort_keys=True) + "\n" for o in lines))
    retag(signed)
    assert run_cli("verify", str(signed), timeout=LIMIT).returncode == 0  # a consistent, unsigned bag
    target = f"git+file://{tmp_path}/remote/actas.git"
    assert publish(signed, target).returncode == 0
    out = tmp_path / "restored"
    proc = run_cli("restore", "--from", target, "--out", str(out), "--quiet", timeout=LIMIT)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "data/index/.git/" in one_line(proc) and "restored and verified" not in proc.stdout
    assert not any(p.name == ".git" for p in out.rglob("*")) if out.exists() else True
    if (out / "data" / "index").is_dir():
        subprocess.run(["git", "status"], cwd=out / "data" / "index", capture_output=True, timeout=LIMIT)
    assert not proof.exists(), "restore planted a repository whose config ran a command"


# -- restore: the push token is not the stranger's ----------------------------------------------------
def test_restore_never_hands_the_push_token_to_the_host_it_restores_from(signed, tmp_path):
    """ACTA_MIRROR_GIT_PASSWORD (the token publish pushes with, exported in a shell or a CI job)
    went to any host a --from URL named: a mirror host that answered 401 received it."""
    remote = tmp_path / "remote" / "actas.git"
    assert publish(signed, f"git+file://{remote}").returncode == 0
    root = tmp_path / "http"
    root.mkdir()
    bare_repo(root / "actas.git", http=True)
    git("-C", str(remote), "push", "-q", str(root / "actas.git"), "main:main")
    token = "ghp-push-token-of-mine"
    with GitHttp(root, "stranger", "theirs") as server:
        proc = run_cli("restore", "--from", "git+" + server.url("actas.git"), "--out", str(tmp_path / "r"), "--quiet",
                       timeout=LIMIT, env={"ACTA_MIRROR_GIT_PASSWORD": token, "ACTA_MIRROR_GIT_USERNAME": "me"})
        seen = [base64.b64decode(a.split()[1]).decode() for a in server.handler.seen_auth if a]
    assert not any(token in s for s in seen), f"the stranger's host received {seen}"
    assert proc.returncode == 1 and token not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert not (tmp_path / "r").exists()


# -- publish: evidence it pushed before, gone from the remote -------------------------------------------
def squashed(remote: Path, work: Path, victim: str) -> None:
    """History rewritten: one new root commit without the file, force-pushed."""
    drop(work, victim, from_manifest=True)
    git("checkout", "-q", "--orphan", "squashed", cwd=work)
    git("commit", "-qm", "squashed", cwd=work)
    git("push", "-qf", "origin", "squashed:main", cwd=work)


def deleted_later(remote: Path, work: Path, victim: str) -> None:
    """No rewrite: a later commit removes the file and leaves its manifest line."""
    drop(work, victim, from_manifest=False)
    git("push", "-q", "origin", "HEAD:main", cwd=work)


def branch_deleted(remote: Path, work: Path, victim: str) -> None:
    git("-C", str(remote), "update-ref", "-d", "refs/heads/main")


def replaced(remote: Path, work: Path, victim: str) -> None:
    """Other bytes at the file's path, its manifest line kept: a clone's check fails, nothing else."""
    (work / victim).write_bytes((work / victim).read_bytes() + b"\0")
    git("commit", "-qam", "replace", cwd=work)
    git("push", "-q", "origin", "HEAD:main", cwd=work)


@pytest.mark.parametrize("edit", [squashed, deleted_later, branch_deleted, replaced])
def test_publish_says_when_a_file_it_pushed_is_gone_from_the_remote(signed, tmp_path, edit):
    """A remote that lost a file publish had pushed (history rewritten and force-pushed, a later
    commit deleting it, the branch deleted): the next publish sent it again, or left it missing
    ('unchanged', its manifest still listing it), and said 'published', exit 0."""
    remote = tmp_path / "remote" / "actas.git"
    target = f"git+file://{remote}"
    assert publish(signed, target).returncode == 0
    work = tmp_path / "work"
    git("clone", "-q", str(remote), str(work))
    victim = [p for p in listed(work) if not p.startswith("data/index/")][3]
    edit(remote, work, victim)
    proc = publish(signed, target)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = one_line(proc)
    gone = len(listed(work)) if edit is branch_deleted else 1
    assert f": {gone} file(s) it held are gone from it or hold other bytes" in line and "sent again" in line, line
    assert victim in line or gone > 1, line
    assert ("rewritten" in line) == (edit in (squashed, branch_deleted)), line
    back = git("-C", str(remote), "rev-parse", f"main:{victim}")
    assert back == git("hash-object", str(signed / victim))  # this mirror holds it: its bytes are back
    again = publish(signed, target)  # said once; the remote now holds every file
    assert again.returncode == 0 and "unchanged" in again.stdout, again.stdout + again.stderr


def test_a_scheduled_run_says_when_a_file_it_published_is_gone_from_a_shard(replay_factory, tmp_path):
    """A run from the manifests folder holds only its new files. A shard that lost one published
    earlier (its manifest line kept) got a commit whose manifest listed it, '+0 files, 30 there
    now', exit 0; one whose manifest line went too failed on 'No such file or directory' as if
    the run's own copy were damaged."""
    assert run_cli("keygen", "--out", str(tmp_path / "k")).returncode == 0
    remote = tmp_path / "remotes" / "actas.git"
    job = tmp_path / "mirror.toml"

    def run(replay) -> subprocess.CompletedProcess:
        job.write_text(f'[source]\nsite = "resultados2024"\nroot = "{replay.url}"\n\n[publish]\n'
                       f'git = ["git+file://{remote}"]\nmanifests = "manifests"\n\n[sign]\nkey = "k.key"\n')
        return run_cli("run", str(job), "--quiet", timeout=LIMIT)

    first = replay_factory(limit=30)
    assert run(first).returncode == 0
    work = tmp_path / "work"
    git("clone", "-q", str(remote), str(work))
    victim = [p for p in listed(work) if not p.startswith("data/index/")][3]
    drop(work, victim, from_manifest=False)
    git("push", "-q", "origin", "HEAD:main", cwd=work)
    state = (tmp_path / "manifests" / "manifest-sha256.txt").read_bytes()
    head = git("-C", str(remote), "rev-parse", "main")
    quiet = run(first)  # nothing new: nothing published, so nothing checked on the target; never claimed
    assert quiet.returncode == 0 and "the targets hold them" not in quiet.stdout, quiet.stdout
    assert "only a run that publishes checks that the targets still hold them" in quiet.stdout, quiet.stdout
    proc = run(replay_factory(limit=34))  # new tables upstream: this run has files to publish
    assert proc.returncode == 1, proc.stdout + proc.stderr
    failure = [line for line in proc.stderr.splitlines() if line.startswith("acta-mirror: failed:")]
    assert len(failure) == 1 and victim in failure[0] and "gone" in failure[0], proc.stderr
    assert "from a full mirror" in failure[0] and "re-run 'acta-mirror run --publish-only'" not in failure[0]
    assert git("-C", str(remote), "rev-parse", "main") == head  # nothing built on the damaged shard
    assert (tmp_path / "manifests" / "manifest-sha256.txt").read_bytes() == state


# -- a remote that never answers ---------------------------------------------------------------------
@pytest.fixture
def silent():
    """A server that accepts every connection and never sends a byte (a host that hangs)."""
    with SilentHost() as host:
        yield f"git+http://127.0.0.1:{host.port}/actas.git"


# git's own variable wins over ours (set long here: the run still ends in 3 s)
BOUNDS = {"gits-own": {"GIT_HTTP_LOW_SPEED_TIME": "3", "ACTA_MIRROR_GIT_SILENCE_SECONDS": "100000"},
          "ours": {"ACTA_MIRROR_GIT_SILENCE_SECONDS": "3"}}


@pytest.mark.parametrize("bound", sorted(BOUNDS))
@pytest.mark.parametrize("command", ["publish", "restore"])
def test_an_http_remote_that_never_answers_ends_the_command(signed, tmp_path, silent, command, bound):
    """Git over HTTP waits forever by default: publish and restore against a host that accepted
    the connection and sent nothing never ended (a cron job's every later run then finds the
    mirror locked). ACTA_MIRROR_GIT_SILENCE_SECONDS, or git's own GIT_HTTP_LOW_SPEED_TIME, sets
    the seconds without a byte (ours was not read before: the run held for 300 s)."""
    args = ["publish", str(signed), "--to", silent] if command == "publish" else \
        ["restore", "--from", silent, "--out", str(tmp_path / "r")]
    proc = run_cli(*args, "--quiet", timeout=HANG, env=BOUNDS[bound])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "too slow" in one_line(proc) and "127.0.0.1" in one_line(proc)
    assert not (tmp_path / "r").exists()


# The first line of a real git daemon's answer to a push (receive-pack) or a fetch (upload-pack):
# git takes it and waits for the next one.
ADVERTISEMENT = pkt_line("e83c5163316f89bfbde7d9ab23ca2e25604af290 refs/heads/main\0report-status delete-refs "
                         "side-band-64k quiet atomic ofs-delta symref=HEAD:refs/heads/main agent=git/2.39.5\n")
SSH_BANNER = b"SSH-2.0-OpenSSH_9.2p1\r\n"  # an SSH server's first line: then ssh waits for its key exchange
SILENCE = {"ACTA_MIRROR_GIT_SILENCE_SECONDS": "2"}
HANG = 60  # seconds: a guard against a run that hangs (it ends in seconds), not a measure of it


def silent_host_run(signed: Path, out: Path, url: str, command: str, env: dict | None = None):
    args = ["publish", str(signed), "--to", url] if command == "publish" else \
        ["restore", "--from", url, "--out", str(out)]
    return run_cli(*args, "--quiet", timeout=HANG, env={**SILENCE, **(env or {})})


@pytest.mark.parametrize("greeting", [b"", ADVERTISEMENT], ids=["says-nothing", "one-line-then-nothing"])
@pytest.mark.parametrize("command", ["publish", "restore"])
def test_a_git_daemon_that_goes_silent_ends_the_command(signed, tmp_path, greeting, command):
    """Over git:// git has no bound on silence: publish and restore against a host that accepted the
    connection and said nothing (or began its answer and stopped) never ended, and a scheduled
    job's every later run found the mirror locked. Now git's traffic goes through a relay that
    gives up after ACTA_MIRROR_GIT_SILENCE_SECONDS without a byte: one line, exit 1."""
    out = tmp_path / "r"
    with SilentHost(greeting) as host:
        proc = silent_host_run(signed, out, f"git://127.0.0.1:{host.port}/actas.git", command)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = one_line(proc)
    assert f"no data to or from 127.0.0.1:{host.port} for 2 s" in line, line
    assert "ACTA_MIRROR_GIT_SILENCE_SECONDS" in line and not out.exists()


@pytest.mark.skipif(shutil.which("ssh") is None, reason="needs an ssh client")
@pytest.mark.parametrize("greeting", [b"", SSH_BANNER], ids=["says-nothing", "banner-then-nothing"])
@pytest.mark.parametrize("command", ["publish", "restore"])
def test_an_ssh_host_that_goes_silent_ends_the_command(signed, tmp_path, greeting, command):
    """Over SSH git runs ssh, which waits forever for a host that accepted the connection and sent
    no banner (or a banner, and then nothing): publish and restore never ended. Now ssh gets a
    connect timeout and keepalives from ACTA_MIRROR_GIT_SILENCE_SECONDS; the line says what ssh
    said, not git's 'Could not read from remote repository'. (A real ssh client; no SSH server is
    needed for a host that stays silent.)"""
    out = tmp_path / "r"
    with SilentHost(greeting) as host:
        proc = silent_host_run(signed, out, f"git+ssh://127.0.0.1:{host.port}/actas.git", command)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = one_line(proc)
    assert "ssh: " in line and "timed out" in line and "no answer for 2 s" in line, line
    assert "ACTA_MIRROR_GIT_SILENCE_SECONDS" in line and not out.exists()


def test_the_relay_carries_a_real_git_daemon_publish_and_restore(signed, tmp_path):
    """The bound on silence must not cost git:// its use: a publish of several shards to a real git
    daemon and a restore from it go through the relay (git's trace names it) and give the mirror
    back byte for byte."""
    base = tmp_path / "srv"
    base.mkdir()
    for name in ("actas.git", "actas-02.git", "actas-03.git"):
        bare_repo(base / name, daemon=True)
    trace = tmp_path / "trace"
    env = {"GIT_TRACE": str(trace), "ACTA_MIRROR_GIT_SILENCE_SECONDS": "60"}
    out = tmp_path / "restored"
    with GitDaemon(base) as daemon:
        proc = run_cli("publish", str(signed), "--to", daemon.url("actas.git"), "--max-repo-bytes", "300000",
                       "--quiet", timeout=LIMIT, env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        shards = sorted(p.name for p in base.iterdir() if tree_paths_or_none(p))
        assert len(shards) >= 2, shards
        proc = run_cli("restore", "--from", daemon.url("actas.git"), "--out", str(out), "--quiet", timeout=LIMIT,
                       env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    relayed = [ln for ln in trace.read_text().splitlines() if "run_command:" in ln and "git-proxy" in ln]
    assert relayed and all(f"127.0.0.1 {daemon.port}" in ln for ln in relayed), trace.read_text()[-2000:]
    for name in ("manifest-sha256.txt", "tagmanifest-sha256.txt", "bag-info.txt", "provenance.jsonl"):
        assert (out / name).read_bytes() == (signed / name).read_bytes(), name


def test_the_relay_carries_both_ways_and_ends_when_both_sides_have(tmp_path):
    """mirror/gitrelay.py alone, between a pipe and a real socket: 3 MB from its input reach a
    host that answers only once it read them all (to the end git marks by closing its side),
    and the host's 3 MB answer comes back whole; the relay then ends, exit 0."""
    sent = os.urandom(3 << 20)
    answer = hashlib.sha256(sent).digest() * (3 << 15)  # 3 MiB, made of what the host read
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def host() -> None:
        conn = server.accept()[0]
        got = bytearray()
        while chunk := conn.recv(1 << 16):  # until the relay shuts its sending side
            got += chunk
        conn.sendall(hashlib.sha256(bytes(got)).digest() * (3 << 15))
        conn.close()

    threading.Thread(target=host, daemon=True).start()
    relay = Path(__file__).resolve().parent.parent / "mirror" / "gitrelay.py"
    proc = subprocess.run([sys.executable, "-I", str(relay), "127.0.0.1", str(server.getsockname()[1])], input=sent,
                          capture_output=True, timeout=LIMIT, cwd=tmp_path, env={**os.environ, **SILENCE})
    server.close()
    assert proc.returncode == 0 and proc.stderr == b"", proc.stderr
    assert proc.stdout == answer


def tree_paths_or_none(repo: Path) -> set[str]:
    proc = subprocess.run(["git", "-C", str(repo), "ls-tree", "-r", "--name-only", "main"], capture_output=True,
                          text=True)
    return set(proc.stdout.splitlines()) if proc.returncode == 0 else set()


def recorder(path: Path, log: Path) -> Path:
    """A program that writes its arguments to log, a line a run, and fails: a user's own proxy or ssh."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\necho "$*" >> {shlex.quote(str(log))}\nexit 1\n')
    path.chmod(0o755)
    return path


@pytest.mark.parametrize("own", ["GIT_PROXY_COMMAND", "core.gitProxy", "GIT_SSH_COMMAND", "GIT_SSH", "core.sshCommand",
                                 "GIT_SSH_VARIANT"])
def test_a_proxy_or_ssh_command_of_the_users_own_is_left_alone(tmp_path, own):
    """Without a proxy or an ssh command of the user's own, git:// goes through the relay and ssh
    gets the timeouts (the ssh first on PATH records its arguments); with one (git's variable, or
    git's config), git runs the user's, unchanged: the bound on silence is then theirs to set. A
    variant of ssh named (GIT_SSH_VARIANT) may take other options than OpenSSH's: none is added."""
    port = free_port()  # nothing listens there: every run ends at once
    proxy = "proxy" in own.lower()
    url = f"git://127.0.0.1:{port}/actas.git" if proxy else f"git+ssh://127.0.0.1:{port}/actas.git"
    path_ssh = tmp_path / "bin" / "ssh"
    recorder(path_ssh, tmp_path / "path-ssh.log")
    trace = tmp_path / "trace"
    env = {**SILENCE, "PATH": f"{path_ssh.parent}{os.pathsep}{os.environ['PATH']}", "GIT_TRACE": str(trace)}

    def run(out: str, more: dict) -> str:
        trace.unlink(missing_ok=True)
        proc = run_cli("restore", "--from", url, "--out", str(tmp_path / out), "--quiet", timeout=LIMIT,
                       env={**env, **more})
        assert proc.returncode == 1 and not (tmp_path / out).exists(), proc.stdout + proc.stderr
        one_line(proc)
        return trace.read_text()

    traced = run("r1", {})
    if proxy:
        assert any("run_command:" in ln and "git-proxy" in ln for ln in traced.splitlines()), traced
    else:
        said = (tmp_path / "path-ssh.log").read_text()
        assert "-o ConnectTimeout=2 -o ServerAliveInterval=1 -o ServerAliveCountMax=2" in said, said
        (tmp_path / "path-ssh.log").unlink()
    log = tmp_path / "own.log"
    mine = recorder(tmp_path / "own" / ("proxy" if proxy else "ssh"), log)
    if own == "GIT_SSH_VARIANT":  # no command of theirs: the ssh on PATH runs, given nothing of ours
        more, log = {own: "ssh"}, tmp_path / "path-ssh.log"
    elif own.startswith("core."):
        config = tmp_path / "gitconfig"
        config.write_text(f"[core]\n\t{own[5:]} = {mine}\n")
        more = {"GIT_CONFIG_GLOBAL": str(config)}
    else:
        more = {own: str(mine)}
    traced = run("r2", more)
    said = log.read_text()
    assert "127.0.0.1" in said and "ServerAlive" not in said and "ConnectTimeout" not in said, said
    assert "git-proxy" not in traced, traced
    assert own == "GIT_SSH_VARIANT" or not (tmp_path / "path-ssh.log").exists()


@pytest.mark.parametrize("value", ["0", "-5", "ten", "1.5", "99999999"])
def test_a_bad_silence_bound_is_a_usage_error(tmp_path, value):
    """ACTA_MIRROR_GIT_SILENCE_SECONDS is a whole number of seconds: anything else is one line, exit 2,
    before git runs (it was not read before: any value went unnoticed)."""
    proc = run_cli("restore", "--from", f"git://127.0.0.1:{free_port()}/actas.git", "--out", str(tmp_path / "r"),
                   timeout=LIMIT, env={"ACTA_MIRROR_GIT_SILENCE_SECONDS": value})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "ACTA_MIRROR_GIT_SILENCE_SECONDS" in one_line(proc) and not (tmp_path / "r").exists()


# -- a tree too deep for git ---------------------------------------------------------------------------
def store(repo: Path, kind: bytes, data: bytes) -> str:
    """A loose object written straight into a bare repository, as a hostile host may hold any."""
    import zlib

    raw = b"%s %d\0%s" % (kind, len(data), data)
    sha = hashlib.sha1(raw).hexdigest()
    path = repo / "objects" / sha[:2] / sha[2:]
    path.parent.mkdir(exist_ok=True)
    if not path.exists():
        path.write_bytes(zlib.compress(raw, 1))
    return sha


# git's stack for the tests below. `git ls-tree -r` recurses once per folder level: on 1 MiB it dies
# of a stack overflow (signal 11, git 2.39) past about 3,650 levels, where a clone, which recurses
# less deeply, still takes 4,600. On git's usual 8 MiB the first needs about 30,000 levels, and a
# clone of those takes git 20 s.
SMALL_STACK = 1024 * 1024


def small_stack() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_STACK, (SMALL_STACK, resource.getrlimit(resource.RLIMIT_STACK)[1]))


def with_deep_folder(remote: Path, depth: int = 4100) -> None:
    """A commit on the shard adding a folder `junk` nested `depth` deep: a clone takes it, and
    `git ls-tree -r` on a SMALL_STACK dies on it of a stack overflow."""
    tree = store(remote, b"tree", b"100644 f\0" + bytes.fromhex(store(remote, b"blob", b"x")))
    for _ in range(depth):
        tree = store(remote, b"tree", b"40000 d\0" + bytes.fromhex(tree))
    listing = git("-C", str(remote), "ls-tree", "main") + f"040000 tree {tree}\tjunk\n"
    top = subprocess.run(["git", "-C", str(remote), "mktree"], input=listing, capture_output=True, text=True,
                         check=True).stdout.strip()
    commit = git("-C", str(remote), "commit-tree", top, "-p", "main", "-m", "deep").strip()
    git("-C", str(remote), "update-ref", "refs/heads/main", commit)


@pytest.mark.parametrize("command", ["publish", "restore"])
def test_a_tree_that_crashes_git_is_one_line_not_a_traceback(signed, tmp_path, command):
    """restore read a shard's tree with `git ls-tree -r`: a folder nested 30,000 deep made git die
    of signal 11 and restore end in a GitCommandError traceback."""
    remote = tmp_path / "remote" / "actas.git"
    target = f"git+file://{remote}"
    assert publish(signed, target).returncode == 0
    with_deep_folder(remote)
    clone = tmp_path / "clone.git"
    subprocess.run(["git", "clone", "-q", "--bare", "--depth=1", "--branch=main", f"file://{remote}", str(clone)],
                   check=True, preexec_fn=small_stack)  # git takes it
    assert subprocess.run(["git", "-C", str(clone), "ls-tree", "-r", "main"], capture_output=True,
                          preexec_fn=small_stack).returncode == -11
    out = tmp_path / "r"
    args = ["publish", str(signed), "--to", target] if command == "publish" else ["restore", "--from", target,
                                                                                 "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.run([sys.executable, "-m", "mirror", *args, "--quiet"], capture_output=True, text=True,
                          timeout=LIMIT, env=env, preexec_fn=small_stack)  # git, its child, inherits the stack
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "git ls-tree" in one_line(proc) and not out.exists()


def test_publish_says_when_the_history_it_pushed_was_rewritten_though_no_file_is_gone(signed, tmp_path):
    """Commits are evidence of when each file was published: a remote squashed into one
    force-pushed commit, every file kept, was built on with 'unchanged', exit 0."""
    remote = tmp_path / "remote" / "actas.git"
    target = f"git+file://{remote}"
    assert publish(signed, target).returncode == 0
    work = tmp_path / "work"
    git("clone", "-q", str(remote), str(work))
    before = git("-C", str(remote), "rev-parse", "main").strip()
    git("checkout", "-q", "--orphan", "squashed", cwd=work)
    git("commit", "-qm", "squashed", cwd=work)
    git("push", "-qf", "origin", "squashed:main", cwd=work)
    proc = publish(signed, target)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = one_line(proc)
    assert f"({before[:12]} is no longer in it)" in line and "every file it held is still there" in line, line
    assert publish(signed, target).returncode == 0


# -- shard URLs with {shard} -----------------------------------------------------------------------
def test_a_shard_placeholder_url_reads_the_layout_from_shard_01(signed, tmp_path):
    """With `{shard}` in the URL, publish fetched the URL as written: a local target got a stray
    repository named 'actas-{shard}.git' (a hosting service answers 'not found' and every publish
    failed), and shards.json was never read, so a later publish moved states already published
    in other shards into shard 01."""
    target = f"git+file://{tmp_path}/remote/actas-{{shard}}.git"
    assert publish(signed, target, "--max-repo-bytes", "300000").returncode == 0
    repos = sorted(p.name for p in (tmp_path / "remote").iterdir())
    assert repos[:2] == ["actas-01.git", "actas-02.git"] and "actas-{shard}.git" not in repos, repos
    def payload() -> set[str]:
        return {p for p in tree_paths(tmp_path / "remote" / "actas-01.git") if p.startswith("data/")}

    first = payload()
    proc = publish(signed, target)  # the default budget would fit everything in shard 01
    assert proc.returncode == 0 and "shard 01: +0 files" in proc.stdout, proc.stdout + proc.stderr
    assert payload() == first  # every state stays in the shard it was published to


# -- what a remote says is shown, never obeyed by the terminal ------------------------------------------
def test_a_remotes_error_text_cannot_draw_on_the_terminal(signed, tmp_path, monkeypatch):
    """A remote's 'remote:' lines (here from its upload-pack, as any host can send them) became
    publish's failure line byte for byte: escape sequences moved the cursor up and erased the
    line above, drawing a forged 'published' line in its place."""
    from tests.gitservers import GitDaemon

    base = tmp_path / "srv"
    assert publish(signed, f"git+file://{base}/actas.git").returncode == 0
    hook = tmp_path / "say.sh"
    hook.write_text('#!/bin/sh\nprintf "\\033[1A\\033[2Kpublished git://elsewhere (git): manifest root 0\\n" >&2\n'
                    "sleep 1\nexit 1\n")  # its words reach the client before git's own 'bad pack header'
    hook.chmod(0o755)
    (tmp_path / "server.gitconfig").write_text(f"[uploadpack]\n\tpackObjectsHook = {hook}\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "server.gitconfig"))  # the server's, not ours
    with GitDaemon(base) as daemon:
        monkeypatch.delenv("GIT_CONFIG_GLOBAL")
        proc = publish(signed, daemon.url("actas.git"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "\x1b" not in proc.stdout + proc.stderr and "\\x1b[1A" in one_line(proc), proc.stderr


# -- a damaged manifest on a remote ------------------------------------------------------------------
@pytest.mark.parametrize("command", ["publish", "dry-run", "restore"])
def test_a_damaged_manifest_on_a_remote_fails_that_target_only(signed, tmp_path, command):
    """A remote's manifest with a line that is no '<sha256>  <path>' line raised NotAMirror from
    the remote's text: publish stopped there, without publishing to the next target, exit 2,
    naming neither the target nor the file ('manifest:54: ...; give the directory that holds
    bagit.txt'); restore likewise on full-bag/'s manifest."""
    damaged = tmp_path / "remote" / "a.git"
    assert publish(signed, f"git+file://{damaged}").returncode == 0
    work = tmp_path / "work"
    git("clone", "-q", str(damaged), str(work))
    name = "full-bag/manifest-sha256.txt" if command == "restore" else "manifest-sha256.txt"
    with open(work / name, "a") as fh:
        fh.write("not a manifest line\n")
    git("commit", "-qam", "damage", cwd=work)
    git("push", "-q", "origin", "HEAD:main", cwd=work)
    other = tmp_path / "remote" / "b.git"
    targets = ["--to", f"git+file://{damaged}", "--to", f"git+file://{other}"]
    if command == "restore":
        proc = run_cli("restore", "--from", f"git+file://{damaged}", "--out", str(tmp_path / "r"), "--quiet",
                       timeout=LIMIT)
    else:
        proc = run_cli("publish", str(signed), *targets, "--quiet", *(["--dry-run"] if command == "dry-run" else []),
                       timeout=LIMIT)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    said = [line for line in proc.stderr.splitlines() if "not a '<sha256>  <path>' line" in line]
    assert len(said) == 1 and name in said[0] and "give the directory" not in said[0], proc.stderr
    assert command == "restore" or "a.git" in said[0]
    if command == "publish":
        assert len([p for p in tree_paths(other) if p.startswith("data/")]) == len(listed(work)) - 1


# -- a branch that is no commit ----------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["tree", "blob"])
@pytest.mark.parametrize("command", ["publish", "dry-run", "restore"])
def test_a_branch_that_points_at_no_commit_is_one_line(signed, tmp_path, kind, command):
    """A host's refs/heads/main may name a tree or a blob (git refuses to write that, a host's
    files need not): restore ended in a TypeError traceback, publish in a ValueError one."""
    remote = tmp_path / "remote" / "actas.git"
    target = f"git+file://{remote}"
    assert publish(signed, target).returncode == 0
    where = "main^{tree}" if kind == "tree" else "main:bagit.txt"
    (remote / "refs" / "heads" / "main").write_text(git("-C", str(remote), "rev-parse", where))
    out = tmp_path / "r"
    args = ["restore", "--from", target, "--out", str(out)] if command == "restore" else \
        ["publish", str(signed), "--to", target, *(["--dry-run"] if command == "dry-run" else [])]
    proc = run_cli(*args, "--quiet", timeout=LIMIT)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "points at no commit" in one_line(proc) and not out.exists()


# -- files that change what a clone checks out ----------------------------------------------------------
@pytest.mark.parametrize("where", [".gitattributes", "data/index/.gitattributes"])
def test_publish_removes_a_planted_gitattributes_and_says_so(signed, tmp_path, where):
    """A .gitattributes added to a shard by its host ('* text eol=crlf') makes every clone check
    out other bytes than the ones published (line ends of the manifests and the records, and of
    every image: `text` is forced): each stranger's check of a clone fails. Publish built on it
    and said 'unchanged', exit 0, leaving it there."""
    remote = tmp_path / "remote" / "actas.git"
    target = f"git+file://{remote}"
    assert publish(signed, target).returncode == 0
    work = tmp_path / "work"
    git("clone", "-q", str(remote), str(work))
    (work / where).write_text("* text eol=crlf\n")
    git("add", where, cwd=work)
    git("commit", "-qm", "attributes", cwd=work)
    git("push", "-q", "origin", "HEAD:main", cwd=work)
    proc = publish(signed, target)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert where in one_line(proc) and "removed" in one_line(proc)
    assert where not in tree_paths(remote)
    clone = tmp_path / "clone"
    git("clone", "-q", str(remote), str(clone))
    assert run_cli("verify", str(clone), timeout=LIMIT).returncode == 0
    assert publish(signed, target).returncode == 0  # said once


# -- a host that says it took a push and did not keep it ----------------------------------------------
def test_publish_checks_that_the_remote_kept_what_it_said_it_took(signed, tmp_path):
    """A host whose post-receive hook puts the branch back (a compromised or broken host) answers
    'ok' to the push: publish said 'published ..., head X', exit 0, while the remote held none of it."""
    from tests.gitservers import GitDaemon

    base = tmp_path / "srv"
    base.mkdir()
    repo = bare_repo(base / "actas.git", daemon=True)
    hook = repo / "hooks" / "post-receive"
    hook.write_text('#!/bin/sh\nread old new ref\nif [ "$old" = 0000000000000000000000000000000000000000 ]; then '
                    'git update-ref -d "$ref"; else git update-ref "$ref" "$old"; fi\n')
    hook.chmod(0o755)
    with GitDaemon(base) as daemon:
        proc = publish(signed, daemon.url("actas.git"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "did not keep it" in one_line(proc) and "published" not in proc.stdout


# -- a local target repository's own config --------------------------------------------------------------
def alternate_refs_command(repo: Path, marker: Path) -> None:
    """receive-pack asks an alternate for its refs through a command the repository's config names."""
    other = repo.parent / "other.git"
    git("init", "-q", "--bare", "-b", "main", str(other))
    (repo / "objects" / "info" / "alternates").write_text(f"{other}/objects\n")
    git("-C", str(repo), "config", "core.alternateRefsCommand", f"touch {marker}; true")


def checkout_filter(repo: Path, marker: Path) -> None:
    """A repository with a work tree that checks out what is pushed to it, through a smudge filter."""
    git("-C", str(repo), "config", "core.bare", "false")
    git("-C", str(repo), "config", "receive.denyCurrentBranch", "updateInstead")
    git("-C", str(repo), "config", "filter.given.smudge", f"touch {marker}; cat")
    (repo / "info" / "attributes").write_text("* filter=given\n")


@pytest.mark.parametrize("given", [alternate_refs_command, checkout_filter])
def test_publish_never_runs_a_command_a_local_target_repositorys_config_names(signed, tmp_path, given):
    """A git+file:// target may be a repository someone handed over (a shared drive, a USB stick):
    its hooks were already off, but receive-pack still ran commands its config named."""
    marker = tmp_path / "ran"
    if given is checkout_filter:
        work = tmp_path / "given" / "a"
        git("init", "-q", "-b", "main", str(work))
        git("commit", "-q", "--allow-empty", "-m", "start", cwd=work)
        repo, target = work / ".git", f"git+file://{work}"
    else:
        repo = tmp_path / "given" / "a.git"
        git("init", "-q", "--bare", "-b", "main", str(repo))
        target = f"git+file://{repo}"
    given(repo, marker)
    proc = publish(signed, target)
    assert not marker.exists(), "a command the target repository's config names ran"
    if given is checkout_filter:  # git refuses to update the branch checked out there: one line
        assert proc.returncode == 1 and "checked out" in one_line(proc), proc.stdout + proc.stderr
    else:
        assert proc.returncode == 0, proc.stdout + proc.stderr


# -- a redirect to another host ----------------------------------------------------------------------
@pytest.mark.parametrize("command", ["publish", "restore"])
def test_a_password_never_follows_a_redirect_to_another_host(signed, tmp_path, command):
    """Git follows a host's redirect of its first request; the credential helper answered whoever
    asked next, so the password for 127.0.0.1 (in the URL, or ACTA_MIRROR_GIT_PASSWORD) went to
    the host the redirect named (127.0.0.2 here)."""
    import http.server

    root = tmp_path / "http"
    root.mkdir()
    bare_repo(root / "actas.git", http=True)
    with GitHttp(root, "elsewhere", "theirs") as other:
        other.server.server_close()  # the same server, on another loopback address
        other.server = http.server.ThreadingHTTPServer(("127.0.0.2", 0), other.handler)
        threading.Thread(target=other.server.serve_forever, daemon=True).start()
        port = other.server.server_address[1]

        class Redirect(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(302)
                self.send_header("Location", f"http://127.0.0.2:{port}{self.path}")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        first = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
        threading.Thread(target=first.serve_forever, daemon=True).start()
        secret = "s3cret-for-127.0.0.1"
        url = f"127.0.0.1:{first.server_address[1]}/actas.git"
        if command == "restore":
            proc = run_cli("restore", "--from", f"git+http://me:{secret}@{url}", "--out", str(tmp_path / "r"),
                           "--quiet", timeout=LIMIT)
        else:
            proc = run_cli("publish", str(signed), "--to", f"git+http://{url}", "--quiet", timeout=LIMIT,
                           env={"ACTA_MIRROR_GIT_PASSWORD": secret})
        first.shutdown()
        first.server_close()
        seen = [base64.b64decode(a.split()[1]).decode() for a in other.handler.seen_auth if a]
    assert not any(secret in s for s in seen), f"127.0.0.2 received {seen}"
    assert proc.returncode == 1 and secret not in proc.stdout + proc.stderr, proc.stdout + proc.stderr


# -- one push token, targets on two hosts ------------------------------------------------------------
def _second_host(server: GitHttp, address: str = "127.0.0.2") -> str:
    """Move a GitHttp server to another loopback address; its URL's host part."""
    import http.server

    server.server.server_close()
    server.server = http.server.ThreadingHTTPServer((address, 0), server.handler)
    threading.Thread(target=server.server.serve_forever, daemon=True).start()
    return f"{address}:{server.server.server_address[1]}"


@pytest.mark.parametrize("scope", [None, "127.0.0.1", "127.0.0.1,example.org"])
def test_the_push_token_never_goes_to_a_second_host(signed, tmp_path, scope):
    """ACTA_MIRROR_GIT_PASSWORD went to every target's host: a job publishing to two hosts (or one
    whose target list a stranger extended) handed the token for one to the other. Without
    ACTA_MIRROR_GIT_PASSWORD_FOR the command now refuses before sending anything; with it, only
    the hosts it names get the token."""
    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    for root in (mine, theirs):
        root.mkdir()
        bare_repo(root / "actas.git", http=True)
    token = "ghp-token-for-127.0.0.1-only"
    env = {"ACTA_MIRROR_GIT_PASSWORD": token, "ACTA_MIRROR_GIT_USERNAME": "me"}
    if scope is not None:
        env["ACTA_MIRROR_GIT_PASSWORD_FOR"] = scope
    with GitHttp(mine, "me", token) as own, GitHttp(theirs, "stranger", "theirs") as other:
        elsewhere = _second_host(other)
        proc = run_cli("publish", str(signed), "--to", "git+" + own.url("actas.git"),
                       "--to", f"git+http://{elsewhere}/actas.git", "--quiet", timeout=LIMIT, env=env)
        seen = [base64.b64decode(a.split()[1]).decode() for a in other.handler.seen_auth if a]
        asked_own = list(own.handler.seen_auth)
    assert not any(token in s for s in seen), f"the second host received {seen}"
    assert token not in proc.stdout + proc.stderr
    published = git("-C", str(mine / "actas.git"), "branch", "--list", "main").strip()
    if scope is None:
        assert proc.returncode == 2, proc.stdout + proc.stderr
        line = one_line(proc)
        assert "ACTA_MIRROR_GIT_PASSWORD_FOR" in line and "127.0.0.1, 127.0.0.2" in line, line
        assert not asked_own and not published, "it refused after sending"
    else:
        assert proc.returncode == 1, proc.stdout + proc.stderr  # the second host wants its own credentials
        assert published, proc.stdout + proc.stderr  # the first got its token and the mirror


def test_a_job_whose_token_would_go_to_two_hosts_fails_before_the_crawl(tmp_path):
    """The same refusal for a job file, at its start: nothing is fetched, exit 2, one line."""
    job = tmp_path / "job.toml"
    job.write_text('[source]\nsite = "resultados2024"\nroot = "http://127.0.0.1:9/"\n'
                   f'[output]\ndir = "{tmp_path / "out"}"\n[publish]\n'
                   'git = ["git+https://github.com/me/actas.git", "git+https://codeberg.org/me/actas.git"]\n'
                   '[sign]\nrequired = false\n')
    proc = run_cli("run", str(job), "--quiet", timeout=LIMIT, env={"ACTA_MIRROR_GIT_PASSWORD": "tok-of-mine"})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = one_line(proc)
    assert "codeberg.org, github.com" in line and "ACTA_MIRROR_GIT_PASSWORD_FOR" in line, line
    assert not (tmp_path / "out").exists()
