"""restore --pubkey checks shard 01's signed statement against the key before fetching the other
shards: a copy that nobody, or somebody else, signed is refused before its bulk is downloaded.
Each test removes every shard but 01 from the remote, so a restore that fetched them would fail
on those instead, with another message."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.test_hostile_evidence import LIMIT, pristine, pub, signed  # noqa: F401


def _git(*args: str) -> None:
    subprocess.run(["git", "-c", "user.name=attacker", "-c", "user.email=a@localhost", *args], check=True,
                   capture_output=True, stdin=subprocess.DEVNULL)


@pytest.fixture
def published(signed, tmp_path) -> tuple[str, list[Path]]:
    target = f"git+file://{tmp_path}/remote/actas.git"
    proc = run_cli("publish", str(signed), "--to", target, "--max-repo-bytes", "60000", timeout=LIMIT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    first = tmp_path / "remote" / "actas.git"
    others = sorted(set((tmp_path / "remote").glob("*.git")) - {first})
    assert first.is_dir() and others, "a small budget should make several shards"
    return target, [first, *others]


def _only_shard_01(repos: list[Path]) -> None:
    for repo in repos[1:]:
        shutil.rmtree(repo)


def _rewrite_shard_01(repo: Path, tmp_path: Path, edit) -> None:
    """What the host of a mirror can do: commit anything on top of what was published."""
    work = tmp_path / "attacker"
    _git("clone", "-q", str(repo), str(work))
    edit(work)
    _git("-C", str(work), "commit", "-q", "-a", "-m", "edit")
    _git("-C", str(work), "push", "-q", "origin", "HEAD:main")


def _restore(target: str, out: Path, key: str) -> subprocess.CompletedProcess:
    return run_cli("restore", "--from", target, "--out", str(out), "--pubkey", key, timeout=LIMIT)


def test_the_signer_key_restores_the_copy(published, pub, tmp_path):
    out = tmp_path / "restored"
    proc = _restore(published[0], out, pub)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "signed with the key you gave" in proc.stdout
    assert run_cli("verify", str(out), "--pubkey", pub, timeout=LIMIT).returncode == 0


def test_a_copy_signed_with_another_key_is_refused_before_the_other_shards(published, tmp_path):
    assert run_cli("keygen", "--out", str(tmp_path / "other")).returncode == 0
    _only_shard_01(published[1])
    out = tmp_path / "restored"
    proc = _restore(published[0], out, str(tmp_path / "other.pub"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "shard 01: full-bag/signed-root.json.minisig: made by key" in proc.stderr, proc.stderr
    assert "nothing restored" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_a_copy_without_its_statement_is_refused_before_the_other_shards(published, pub, tmp_path):
    _rewrite_shard_01(published[1][0], tmp_path, lambda work: _git("-C", str(work), "rm", "-q",
                                                                   "full-bag/signed-root.json"))
    _only_shard_01(published[1])
    proc = _restore(published[0], tmp_path / "restored", pub)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "shard 01 has no full-bag/signed-root.json" in proc.stderr, proc.stderr


def test_a_real_signature_beside_another_manifest_is_refused_before_the_other_shards(published, pub, tmp_path):
    def drop_a_line(work: Path) -> None:
        manifest = work / "full-bag" / "manifest-sha256.txt"
        manifest.write_text("".join(manifest.read_text().splitlines(keepends=True)[1:]))

    _rewrite_shard_01(published[1][0], tmp_path, drop_a_line)
    _only_shard_01(published[1])
    proc = _restore(published[0], tmp_path / "restored", pub)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "shard 01: the signed root is not the root of full-bag/manifest-sha256.txt" in proc.stderr, proc.stderr


def test_an_unreadable_key_is_a_usage_error_before_any_fetch(tmp_path):
    """The key was read after the whole copy had been fetched: a typo in its path cost a full clone."""
    proc = _restore(f"git+file://{tmp_path}/nowhere/actas.git", tmp_path / "restored", str(tmp_path / "typo.pub"))
    assert proc.returncode == 2 and "cannot read the public key" in proc.stderr, proc.stdout + proc.stderr
    assert not (tmp_path / "restored").exists()
