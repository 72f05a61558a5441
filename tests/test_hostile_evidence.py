"""A stranger's copy must not be able to lie to verify (issue 13, items 1-4 and 12).

Each attack is made the way an attacker would make it: by editing the files of a real signed
mirror (crawled from the replay), recomputing whatever hashes they can without the secret key.
Every command runs under a timeout, so a hang fails the test instead of stopping the suite.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from mirror.replay import Replay, ReplayThread
from tests.conftest import run_cli

LIMIT = 120  # seconds for any one command; verify of this mirror takes about one


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("pristine")
    thread = ReplayThread(Replay(small=True, limit=40))
    thread.start()
    try:
        assert run_cli("keygen", "--out", str(folder / "signer")).returncode == 0
        crawl = run_cli("crawl", "resultados2024", "--root", thread.url, "--out", str(folder / "m"), "--quiet",
                        "--sign-key", str(folder / "signer.key"))
        assert crawl.returncode == 0, crawl.stderr
    finally:
        thread.stop()
    return folder / "m", folder / "signer"


@pytest.fixture
def signed(pristine, tmp_path) -> Path:
    mirror = tmp_path / "m"
    shutil.copytree(pristine[0], mirror, symlinks=True)
    return mirror


@pytest.fixture
def pub(pristine) -> str:
    return f"{pristine[1]}.pub"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _lines(mirror: Path) -> list[dict]:
    return [json.loads(x) for x in (mirror / "provenance.jsonl").read_text().splitlines()]


def _write_lines(mirror: Path, objs: list[dict]) -> None:
    (mirror / "provenance.jsonl").write_text("".join(json.dumps(o) + "\n" for o in objs))


def _retag(mirror: Path) -> None:
    """What `sha256sum` gives anyone: a tag manifest that agrees with the edited tag files."""
    lines = []
    for line in (mirror / "tagmanifest-sha256.txt").read_text().splitlines():
        name = line.split("  ", 1)[1]
        lines.append(f"{_sha(mirror / name)}  {name}\n" if (mirror / name).is_file() else line + "\n")
    (mirror / "tagmanifest-sha256.txt").write_text("".join(lines))


def _rehash(mirror: Path, rel: str) -> None:
    """Make provenance, manifest and Payload-Oxum agree with a file's new bytes (or its link's target)."""
    objs = _lines(mirror)
    for o in objs:
        if o["path"] == rel:
            delta = (mirror / rel).stat().st_size - o["size"]
            o["sha256"], o["size"] = _sha(mirror / rel), o["size"] + delta
    _write_lines(mirror, objs)
    manifest = mirror / "manifest-sha256.txt"
    manifest.write_text("".join(f"{_sha(mirror / rel)}  {rel}\n" if line.endswith(f"  {rel}") else line + "\n"
                                for line in manifest.read_text().splitlines()))
    info = (mirror / "bag-info.txt").read_text().splitlines()
    total = sum(o["size"] for o in objs)
    (mirror / "bag-info.txt").write_text("".join(
        (f"Payload-Oxum: {total}.{len(objs)}" if x.startswith("Payload-Oxum:") else x) + "\n" for x in info))
    _retag(mirror)


def _verify(mirror: Path, *extra: str) -> tuple[int, set, dict]:
    proc = run_cli("verify", str(mirror), "--json", *extra, timeout=LIMIT)
    report = json.loads(proc.stdout)
    return proc.returncode, {(p["kind"], p["path"]) for p in report["problems"]}, report


def _an_acta(mirror: Path, n: int = 0) -> dict:
    return [o for o in _lines(mirror) if o["kind"] == "acta"][n]


# -- item 1: relabelled actas, forged provenance, an emptied change record ----------------------
def test_actas_relabelled_as_index_files_are_caught_and_not_dropped_from_the_tally(signed, pub):
    objs = _lines(signed)
    actas = [o for o in objs if o["kind"] == "acta"]
    victims = actas[: min(20, len(actas) // 2)]
    assert len(victims) >= 10
    for o in victims:
        o["kind"] = "index"
        o["url"] = o["final_url"] = "http://127.0.0.1:9/forged/" + o["key"] + ".jpg"
        o["fetched_at"] = "2024-07-28T06:00:00Z"
    _write_lines(signed, objs)
    (signed / "changes.jsonl").write_text("")
    _retag(signed)
    statement = signed / "signed-root.json"
    still = subprocess.run(["minisign", "-Vm", str(statement), "-p", pub], capture_output=True, text=True)
    assert still.returncode == 0  # the signature itself is intact; what it signs no longer matches
    for extra in ((), ("--pubkey", pub)):
        code, problems, _ = _verify(signed, *extra)
        assert code == 1
        assert ("signed", "provenance.jsonl") in problems and ("signed", "changes.jsonl") in problems
        assert ("provenance", "provenance.jsonl") in problems  # kind 'index' on an acta key
    tally = run_cli("tally", str(signed), timeout=LIMIT)
    assert tally.returncode == 2 and "is an acta key" in tally.stderr
    assert len(tally.stderr.strip().splitlines()) == 1


# -- item 2: plain verify checks the signature and names the key -------------------------------
def test_plain_verify_names_the_key_and_fails_when_the_signed_root_does_not_match(signed, pub):
    key_id = json.loads((signed / "signed-root.json").read_text())["key_id"]
    intact = run_cli("verify", str(signed), timeout=LIMIT)
    assert intact.returncode == 0
    assert f"signed by key {key_id}; signature not checked against a key you trust" in intact.stdout
    trusted = run_cli("verify", str(signed), "--pubkey", pub, timeout=LIMIT)
    assert trusted.returncode == 0 and "checked against the key you gave" in trusted.stdout
    victim = _an_acta(signed)["path"]
    data = bytearray((signed / victim).read_bytes())
    data[len(data) // 2] ^= 1
    (signed / victim).write_bytes(bytes(data))
    _rehash(signed, victim)  # every unsigned hash now agrees with the altered image
    plain = run_cli("verify", str(signed), timeout=LIMIT)
    assert plain.returncode == 1 and "signed root" in plain.stdout and key_id in plain.stdout
    code, problems, report = _verify(signed)
    assert ("root", "signed-root.json") in problems and ("signed", "manifest-sha256.txt") in problems
    assert report["signature"] == {"signed": True, "key_id": key_id, "trusted": False, "records_signed": True}


def test_an_altered_statement_comment_or_key_each_fail_with_a_clear_message(signed, pub, tmp_path):
    assert run_cli("keygen", "--out", str(tmp_path / "other")).returncode == 0
    wrong = run_cli("verify", str(signed), "--pubkey", str(tmp_path / "other.pub"), timeout=LIMIT)
    assert wrong.returncode == 1 and "made by key" in wrong.stdout
    sig = signed / "signed-root.json.minisig"
    original = sig.read_text()
    lines = original.splitlines()
    sig.write_text("\n".join(lines[:2] + [lines[2] + " and more"] + lines[3:]) + "\n")
    for extra in ((), ("--pubkey", pub)):
        altered = run_cli("verify", str(signed), *extra, timeout=LIMIT)
        assert altered.returncode == 1 and "the trusted comment was altered" in altered.stdout
    sig.write_text(original)
    statement = signed / "signed-root.json"
    obj = json.loads(statement.read_text())
    obj["source"] = "https://somewhere-else.example/"
    statement.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")
    _retag(signed)
    for extra in ((), ("--pubkey", pub)):
        changed = run_cli("verify", str(signed), *extra, timeout=LIMIT)
        assert changed.returncode == 1 and "the signature does not match the file" in changed.stdout


# -- item 3: links in the payload ---------------------------------------------------------------
def test_a_payload_file_that_links_to_a_host_file(signed):
    victim = _an_acta(signed)["path"]
    (signed / victim).unlink()
    os.symlink("/etc/passwd", signed / victim)
    _rehash(signed, victim)
    code, problems, _ = _verify(signed)
    assert code == 1 and ("unsafe", victim) in problems


def test_a_payload_file_that_links_to_the_real_file_elsewhere(signed, pub, tmp_path):
    victim = _an_acta(signed)["path"]
    shutil.move(signed / victim, tmp_path / "elsewhere.jpg")
    os.symlink(tmp_path / "elsewhere.jpg", signed / victim)  # same bytes, same hashes, not in the copy
    code, problems, _ = _verify(signed, "--pubkey", pub)
    assert code == 1 and ("unsafe", victim) in problems


def test_a_symlinked_data_folder(signed, pub, tmp_path):
    shutil.move(signed / "data", tmp_path / "data")
    os.symlink(tmp_path / "data", signed / "data")
    code, problems, _ = _verify(signed, "--pubkey", pub)
    assert code == 1 and ("unsafe", "data") in problems


# -- item 4: repeated paths -------------------------------------------------------------------
def test_a_repeated_manifest_line_fails_like_sha256sum_and_bagit(signed, pub):
    import bagit

    victim = _an_acta(signed)["path"]
    manifest = signed / "manifest-sha256.txt"
    lines = manifest.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.endswith("  " + victim))
    lines.insert(at, "0" * 64 + "  " + victim)  # the last line wins where lines collapse into a dict
    manifest.write_text("\n".join(lines) + "\n")
    _retag(signed)
    assert subprocess.run(["sha256sum", "--quiet", "-c", "manifest-sha256.txt"], cwd=signed,
                          capture_output=True).returncode != 0
    with pytest.raises(bagit.BagError):
        bagit.Bag(str(signed)).validate(fast=False)
    code, problems, _ = _verify(signed, "--pubkey", pub)
    assert code == 1 and ("duplicate", victim) in problems


def test_a_repeated_provenance_path(signed):
    objs = _lines(signed)
    twin = dict(next(o for o in objs if o["kind"] == "acta"))
    twin["url"] = "http://127.0.0.1:9/forged.jpg"
    _write_lines(signed, objs + [twin])
    _retag(signed)
    code, problems, report = _verify(signed)
    assert code == 1 and ("provenance", "provenance.jsonl") in problems
    assert any("listed twice" in p["detail"] for p in report["problems"])


# -- item 12: verify never hangs and never reads outside the mirror -----------------------------
def test_a_fifo_in_data_is_named_without_hanging(signed):
    victim = _an_acta(signed)["path"]
    (signed / victim).unlink()
    os.mkfifo(signed / victim)
    code, problems, report = _verify(signed)
    assert code == 1 and ("unsafe", victim) in problems
    assert any("FIFO" in p["detail"] for p in report["problems"])


def test_a_link_to_dev_zero_is_named_without_hanging(signed):
    victim = _an_acta(signed)["path"]
    (signed / victim).unlink()
    os.symlink("/dev/zero", signed / victim)
    code, problems, _ = _verify(signed)
    assert code == 1 and ("unsafe", victim) in problems


@pytest.mark.parametrize("where", ["absolute", "dotdot"])
def test_the_tag_manifest_cannot_point_outside_the_mirror(signed, tmp_path, where):
    outside = tmp_path / "outside.txt"
    outside.write_text("a file of the host\n")
    name = str(outside) if where == "absolute" else "../outside.txt"
    with open(signed / "tagmanifest-sha256.txt", "a") as fh:
        fh.write(f"{_sha(outside)}  {name}\n")
    code, problems, report = _verify(signed)
    assert code == 1 and ("unsafe", "tagmanifest-sha256.txt") in problems
    assert any(name in p["detail"] for p in report["problems"])


# -- found by an adversarial review of the merged tree ------------------------------------------
@pytest.mark.parametrize("name", ["changes.jsonl", "failures.jsonl"])
@pytest.mark.parametrize("command", [["tally"], ["site"]])
def test_the_audit_never_reads_a_record_file_that_is_a_fifo_or_a_link(signed, tmp_path, name, command):
    """A FIFO made site and tally hang for ever; a link fed them a file from outside the mirror."""
    (signed / name).unlink(missing_ok=True)
    os.mkfifo(signed / name)
    proc = run_cli(*command, str(signed), timeout=120)
    assert proc.returncode == 2 and "FIFO" in proc.stderr, proc.stdout + proc.stderr
    outside = tmp_path / "outside.jsonl"
    outside.write_text('{"key": "010101002.03", "change": "vanished", "at": "LEAKED"}\n')
    (signed / name).unlink()
    (signed / name).symlink_to(outside)
    proc = run_cli(*command, str(signed), timeout=120)
    assert proc.returncode == 2 and "symbolic link" in proc.stderr, proc.stdout + proc.stderr
    assert not (signed / "site").exists() or "LEAKED" not in "".join(
        p.read_text(errors="replace") for p in (signed / "site").rglob("*.html"))


def test_a_gateway_with_a_credential_is_refused_not_published(signed):
    proc = run_cli("site", str(signed), "--gateway", "https://u:pSECRET@gw.example/")
    assert proc.returncode == 2 and "SECRET" not in proc.stderr
    assert not (signed / "site").exists()


@pytest.mark.parametrize("args", [
    ["publish", "{m}", "--to", "git+https://u:pSECRET@host:abc/x.git"],
    ["publish", "{m}", "--to", "git+https://[::1/x.git"],
    ["publish", "{m}", "--to", "ipfs+http://h:99999"],
    ["restore", "--from", "git+https://h:abc/x.git", "--out", "{t}/restored"],
    ["timestamp", "{m}", "--tsa", "https://h:abc/tsr"],
    ["sign", "{m}", "--key", "/dev/zero"],
    ["verify", "{m}", "--pubkey", "/dev/zero"],
    ["verify-file", "{m}/bagit.txt", "--proof", "/dev/zero", "--root", "aa"],
])
def test_bad_urls_and_special_files_are_one_line_and_exit_2(signed, tmp_path, args):
    proc = run_cli(*[a.format(m=signed, t=tmp_path) for a in args], timeout=120)  # a traceback fails run_cli
    assert proc.returncode == 2, proc.stdout + proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("acta-mirror:")]
    assert len(errors) == 1 and "SECRET" not in proc.stderr, proc.stderr
