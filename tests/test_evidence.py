"""Tamper evidence: signed Merkle roots (checked by Debian's minisign too), proofs, changes, diff."""
from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from mirror.crawl import CrawlOptions, crawl
from mirror.manifest import read_provenance
from tests.conftest import ROOT, run_cli

DATA = ROOT / "mirror/replay/data/resultados2024"


@pytest.fixture
def keys(tmp_path) -> Path:
    base = tmp_path / "signer"
    assert run_cli("keygen", "--out", str(base)).returncode == 0
    return base


@pytest.fixture
def signed(replay, tmp_path, keys) -> Path:
    out = tmp_path / "m"
    proc = run_cli("crawl", "resultados2024", "--root", replay.url, "--out", str(out), "--quiet",
                   "--sign-key", f"{keys}.key")
    assert proc.returncode == 0, proc.stderr
    return out


def _flip(path: Path, at: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if at is None else at
    data[i] ^= 0x01
    path.write_bytes(bytes(data))


def _problems(mirror: Path, keys: Path) -> tuple[int, set]:
    proc = run_cli("verify", str(mirror), "--pubkey", f"{keys}.pub", "--json")
    return proc.returncode, {(p["kind"], p["path"]) for p in json.loads(proc.stdout)["problems"]}


def test_signed_mirror_verifies_with_ours_and_with_minisign(signed, keys):
    assert run_cli("verify", str(signed), "--pubkey", f"{keys}.pub").returncode == 0
    info = (signed / "bag-info.txt").read_text()
    statement = json.loads((signed / "signed-root.json").read_text())
    assert f"Acta-Mirror-Merkle-Root: {statement['merkle_root']}" in info
    assert statement["counts"]["actas"] > 0 and statement["tool"].startswith("acta-mirror")
    check = subprocess.run(["minisign", "-Vm", str(signed / "signed-root.json"), "-p", f"{keys}.pub"],
                           capture_output=True, text=True)
    assert check.returncode == 0 and statement["merkle_root"] in check.stdout


def test_one_flipped_byte_in_a_file_is_named(signed, keys):
    victim = next(e for e in read_provenance(signed / "provenance.jsonl") if e.kind == "acta")
    _flip(signed / victim.path)
    code, problems = _problems(signed, keys)
    assert code == 1 and ("changed", victim.path) in problems


def test_one_flipped_byte_in_the_manifest_is_caught(signed, keys):
    _flip(signed / "manifest-sha256.txt", at=3)
    code, problems = _problems(signed, keys)
    kinds = {k for k, _ in problems}
    assert code == 1 and ("tag-changed", "manifest-sha256.txt") in problems and "root" in kinds


def test_a_regenerated_manifest_does_not_fool_the_signature(signed, keys):
    """An attacker edits an image and rewrites every hash: only the signature stops them."""
    from mirror.archive import write_bag_files, write_tag_manifest

    victim = next(e for e in read_provenance(signed / "provenance.jsonl") if e.kind == "acta")
    _flip(signed / victim.path)
    import hashlib
    lines = (signed / "provenance.jsonl").read_text().splitlines()
    fixed = []
    for line in lines:
        obj = json.loads(line)
        if obj["path"] == victim.path:
            obj["sha256"] = hashlib.sha256((signed / victim.path).read_bytes()).hexdigest()
        fixed.append(json.dumps(obj))
    (signed / "provenance.jsonl").write_text("\n".join(fixed) + "\n")
    write_bag_files(signed, {})
    write_tag_manifest(signed)
    plain = run_cli("verify", str(signed))  # the hashes alone now agree; the signed statement does not
    assert plain.returncode == 1 and "signed root" in plain.stdout and "not checked against a key you trust" in plain.stdout
    code, problems = _problems(signed, keys)
    assert code == 1 and ("root", "signed-root.json") in problems


def test_rebuilt_bag_files_count_what_their_manifest_lists_whatever_they_are_given(signed):
    """A bag rebuilt from provenance (restore from older shards, a job's copy) with another
    bag's labels (a shard's own Payload-Oxum and Merkle size) states its own."""
    from mirror.archive import write_bag_files
    from mirror.manifest import parse_bag_info

    entries = list(read_provenance(signed / "provenance.jsonl"))
    oxum = f"{sum(e.size for e in entries)}.{len(entries)}"
    write_bag_files(signed, {"Payload-Oxum": "13.1", "Acta-Mirror-Merkle-Size": "13",
                             "Acta-Mirror-Merkle-Root": "0" * 64, "Source-Organization": "kept"})
    info = parse_bag_info((signed / "bag-info.txt").read_text())
    assert (info["Payload-Oxum"], info["Acta-Mirror-Merkle-Size"]) == (oxum, str(len(entries)))
    assert info["Acta-Mirror-Merkle-Root"] != "0" * 64 and info["Source-Organization"] == "kept"


def test_one_flipped_byte_in_the_signature_is_caught(signed, keys):
    sig = signed / "signed-root.json.minisig"
    lines = sig.read_text().splitlines()
    raw = bytearray(lines[1].encode())
    raw[20] = ord("A") if raw[20] != ord("A") else ord("B")
    lines[1] = raw.decode()
    sig.write_text("\n".join(lines) + "\n")
    code, problems = _problems(signed, keys)
    assert code == 1 and ("signature", "signed-root.json.minisig") in problems
    other = signed.parent / "other"
    assert run_cli("keygen", "--out", str(other)).returncode == 0
    code, problems = _problems(signed, other)  # the right signature, the wrong key
    assert code == 1 and any(k == "signature" for k, _ in problems)


def test_proofs(signed, tmp_path):
    entries = [e for e in read_provenance(signed / "provenance.jsonl") if e.kind == "acta"]
    root = json.loads((signed / "signed-root.json").read_text())["merkle_root"]
    a, b = entries[0], entries[1]
    proof = tmp_path / "a.json"
    made = run_cli("prove", str(signed), a.path)
    assert made.returncode == 0 and len(made.stdout) < 4000
    proof.write_text(made.stdout)
    ok = run_cli("verify-file", str(signed / a.path), "--proof", str(proof), "--root", root)
    assert ok.returncode == 0 and "VERIFIED" in ok.stdout
    other = run_cli("verify-file", str(signed / b.path), "--proof", str(proof), "--root", root)
    assert other.returncode == 1 and "NOT VERIFIED" in other.stdout
    obj = json.loads(made.stdout)
    for field in ("audit_path", "leaf_index"):
        bent = dict(obj)
        if field == "audit_path":
            h = bytearray.fromhex(obj["audit_path"][0])
            h[0] ^= 0x01
            bent["audit_path"] = [h.hex()] + obj["audit_path"][1:]
        else:
            bent["leaf_index"] = obj["leaf_index"] ^ 1
        (tmp_path / "bent.json").write_text(json.dumps(bent))
        bad = run_cli("verify-file", str(signed / a.path), "--proof", str(tmp_path / "bent.json"), "--root", root)
        assert bad.returncode == 1, field
    wrong_root = ("0" if root[0] != "0" else "1") + root[1:]
    assert run_cli("verify-file", str(signed / a.path), "--proof", str(proof), "--root", wrong_root).returncode == 1
    (tmp_path / "junk.json").write_text("{not json")
    junk = run_cli("verify-file", str(signed / a.path), "--proof", str(tmp_path / "junk.json"), "--root", root)
    assert junk.returncode == 2 and len(junk.stderr.strip().splitlines()) == 1


def test_changes_record_changed_vanished_and_reappeared(replay_factory, tmp_path):
    r = replay_factory(faults="change=0.15")
    out = tmp_path / "m"

    def run(**kw):
        return asyncio.run(crawl(CrawlOptions(site="resultados2024", root=r.url, out=str(out), **kw)))

    run()
    changes = [json.loads(x) for x in (out / "changes.jsonl").read_text().splitlines()]
    assert {c["change"] for c in changes} == {"added"}
    r.replay.epoch = 2
    run()
    changed = [json.loads(x) for x in (out / "changes.jsonl").read_text().splitlines() if '"changed"' in x]
    assert changed and all(c["old_sha256"] != c["sha256"] for c in changed)
    entries = read_provenance(out / "provenance.jsonl")
    for c in changed:
        versions = [e for e in entries if e.key == c["key"]]
        assert [v.sha256 for v in versions] == [c["old_sha256"], c["sha256"]]
        assert all((out / v.path).exists() for v in versions)
    # The site stops listing some tables: they are marked, never removed.
    index = tmp_path / "fewer.csv"
    lines = r.replay.index_bytes(1).splitlines(keepends=True)
    index.write_bytes(b"".join(lines[:-5]))
    files_before = sorted(p for p in (out / "data").rglob("*") if p.is_file())
    run(index=str(index))
    log = [json.loads(x) for x in (out / "changes.jsonl").read_text().splitlines()]
    vanished = {c["key"] for c in log if c["change"] == "vanished"}
    assert len(vanished) == 5
    assert files_before == sorted(p for p in (out / "data").rglob("*") if p.is_file())
    run()
    log = [json.loads(x) for x in (out / "changes.jsonl").read_text().splitlines()]
    assert {c["key"] for c in log if c["change"] == "reappeared"} == vanished
    assert run_cli("verify", str(out)).returncode == 0



def test_the_crawl_says_how_many_archived_actas_the_site_no_longer_lists(replay, tmp_path):
    out = tmp_path / "m"
    args = ("crawl", "resultados2024", "--root", replay.url, "--out", str(out), "--concurrency", "4")
    assert run_cli(*args).returncode == 0
    lines = replay.replay.index_bytes(1).splitlines(keepends=True)
    fewer = tmp_path / "fewer.csv"
    fewer.write_bytes(b"".join(lines[:-7]))
    proc = run_cli(*args, "--index", str(fewer), env={"GITHUB_ACTIONS": "true"})
    assert proc.returncode == 0, proc.stderr
    assert "; 7 archived before and no longer listed by the site (kept; changes.jsonl marks them vanished)" \
        in proc.stdout
    assert "::warning::7 actas archived before are no longer listed by the site (kept)" in proc.stderr
    again = run_cli(*args, "--index", str(fewer))  # said once: the next run has nothing new to say
    assert again.returncode == 0 and "no longer listed" not in again.stdout + again.stderr

def test_a_last_record_line_that_is_damage_is_set_aside_and_named_not_dropped(replay, tmp_path):
    """The crawl cuts a last line that is no record (a killed run's torn write). One that ends in
    a newline may be damage instead: its bytes are kept in .acta-mirror/quarantine, and the run
    says so, where they were dropped without a word."""
    out = tmp_path / "m"
    args = ("crawl", "resultados2024", "--root", replay.url, "--out", str(out), "--concurrency", "4")
    assert run_cli(*args).returncode == 0
    damage = b'{"change": "changed", "note": "\xff not UTF-8"}\n'
    with open(out / "changes.jsonl", "ab") as fh:
        fh.write(damage)
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    (kept,) = (out / ".acta-mirror" / "quarantine").rglob("changes.jsonl.tail")
    assert kept.read_bytes() == damage and damage not in (out / "changes.jsonl").read_bytes()
    assert f"cut {len(damage)} bytes from the end of changes.jsonl: not a whole record" in proc.stderr
    assert kept.relative_to(out).as_posix() in proc.stderr
    assert run_cli("verify", str(out)).returncode == 0


def test_change_records_lost_by_a_killed_run_are_recovered_once(replay_factory, tmp_path):
    r = replay_factory(faults="change=0.15")
    out = tmp_path / "m"

    def run():
        asyncio.run(crawl(CrawlOptions(site="resultados2024", root=r.url, out=str(out))))

    run()
    r.replay.epoch = 2
    run()
    path = out / "changes.jsonl"
    whole = path.read_text().splitlines()
    # A run killed after recording its last files but before their change records, in the
    # middle of writing one: the last records are gone and one is torn.
    path.write_text("\n".join(whole[:-4]) + "\n" + whole[-4][:30])
    run()
    run()  # once recovered, a record is never written again
    log = [json.loads(x) for x in path.read_text().splitlines()]
    acta_versions = {(e.key, e.sha256) for e in read_provenance(out / "provenance.jsonl") if e.kind == "acta"}
    recorded = [(c["key"], c["sha256"]) for c in log if c["change"] in ("added", "changed")]
    assert sorted(recorded) == sorted(acta_versions)  # every version exactly once
    recovered = [c for c in log if c.get("recovered")]
    assert len(recovered) == 4
    assert all(c["change"] == ("changed" if "old_sha256" in c else "added") for c in recovered)
    assert run_cli("verify", str(out)).returncode == 0


def test_diff_of_the_two_real_index_versions():
    proc = run_cli("diff", str(DATA / "RESULTADOS_2024_CSV_V1.csv"), str(DATA / "RESULTADOS_2024_CSV_V2.csv"), "--json")
    result = json.loads(proc.stdout)
    assert (len(result["added"]), len(result["removed"]), len(result["changed"])) == (543, 2, 301)
    assert proc.returncode == 1  # like diff(1): they differ


def test_diff_refuses_a_table_listed_twice_with_other_images_and_sources_of_two_kinds(tmp_path):
    """An index listing a table twice was read by its last row: with the changed image first
    and the original last, 'diff' said every table unchanged, exit 0. And an index against a
    manifest compared image names with hashes: every table 'changed'."""
    lines = (DATA / "RESULTADOS_2024_CSV_V1.csv").read_bytes().splitlines(keepends=True)[:31]
    a, twice, same = tmp_path / "a.csv", tmp_path / "twice.csv", tmp_path / "same.csv"
    a.write_bytes(b"".join(lines))
    changed = lines[1].replace(b".jpg", b"x.jpg")
    assert changed != lines[1]
    twice.write_bytes(b"".join([lines[0], changed] + lines[1:]))
    same.write_bytes(b"".join(lines + [lines[1]]))  # the very same row again: one table
    proc = run_cli("diff", str(a), str(twice))
    assert proc.returncode == 2 and "is listed twice with other images" in proc.stderr, proc.stdout + proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert run_cli("diff", str(a), str(same)).returncode == 0
    manifest = tmp_path / "manifest-sha256.txt"
    manifest.write_text(f"{'0' * 64}  data/x/010113042.01.jpg\n")
    proc = run_cli("diff", str(a), str(manifest))
    assert proc.returncode == 2 and "not of a kind" in proc.stderr, proc.stdout + proc.stderr


def test_diff_of_two_mirrors(replay_factory, tmp_path):
    r = replay_factory(faults="change=0.15")
    a, b = tmp_path / "a", tmp_path / "b"
    asyncio.run(crawl(CrawlOptions(site="resultados2024", root=r.url, out=str(a))))
    r.replay.epoch = 2
    asyncio.run(crawl(CrawlOptions(site="resultados2024", root=r.url, out=str(b))))
    proc = run_cli("diff", str(a), str(b), "--json")
    result = json.loads(proc.stdout)
    counts = result.pop("counts")
    expected = sorted({e.key for e in read_provenance(b / "provenance.jsonl")
                       if e.kind == "acta" and r.replay.variant(e.url.rsplit("/", 1)[1])})
    assert result == {"added": [], "removed": [], "changed": expected, "failed_in_a": [], "failed_in_b": []} \
        and expected
    actas = len({e.key for e in read_provenance(a / "provenance.jsonl") if e.kind == "acta"})
    assert counts == {"a": actas, "b": actas, "both": actas, "unchanged": actas - len(expected)}
    same = json.loads(run_cli("diff", str(a / "manifest-sha256.txt"), str(a), "--json").stdout)
    assert same.pop("counts")["unchanged"] == actas
    assert same == {"added": [], "removed": [], "changed": [], "failed_in_a": [], "failed_in_b": []}


def test_keygen_never_overwrites(tmp_path):
    base = tmp_path / "k"
    assert run_cli("keygen", "--out", str(base)).returncode == 0
    before = (tmp_path / "k.key").read_bytes()
    again = run_cli("keygen", "--out", str(base))
    assert again.returncode == 2 and (tmp_path / "k.key").read_bytes() == before
    assert oct((tmp_path / "k.key").stat().st_mode & 0o777) == "0o600"


def test_keygen_force_never_leaves_the_secret_readable_nor_writes_through_a_link(tmp_path):
    base = tmp_path / "k"
    (tmp_path / "k.key").write_text("an old key, shared by mistake")
    (tmp_path / "k.key").chmod(0o644)
    assert run_cli("keygen", "--out", str(base), "--force").returncode == 0
    assert oct((tmp_path / "k.key").stat().st_mode & 0o777) == "0o600"
    assert (tmp_path / "k.key").read_text().startswith("untrusted comment:")
    # a link there, even one to nowhere, is refused without --force and replaced (never followed) with it
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    other = tmp_path / "o"
    (tmp_path / "o.key").symlink_to(elsewhere / "stolen.key")
    refused = run_cli("keygen", "--out", str(other))
    assert refused.returncode == 2 and not (elsewhere / "stolen.key").exists()
    assert run_cli("keygen", "--out", str(other), "--force").returncode == 0
    assert not (elsewhere / "stolen.key").exists() and not (tmp_path / "o.key").is_symlink()
    assert oct((tmp_path / "o.key").stat().st_mode & 0o777) == "0o600"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "k.key", "k.pub", "o.key", "o.pub"]
