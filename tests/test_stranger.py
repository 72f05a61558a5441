"""A stranger checks a downloaded copy with the README's recipe: standard tools, no acta-mirror.

The recipe's steps are read from README.md ("checking a copy without acta-mirror") and run as
written, with bash, find, minisign, python3, sha256sum, diff, grep and bagit-python, on real
copies (a signed mirror, its restore, a clone of its Git shard, its WACZ) and on hostile copies
an attacker makes from them without the secret key. Each hostile copy must be refused by the
recipe at the step that is there to refuse it, and by `acta-mirror verify --pubkey`.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import unicodedata
import zipfile
from pathlib import Path

import pytest

from mirror.cid import raw_cid
from mirror.merkle import merkle_root
from tests.conftest import ROOT, crawl_into, run_cli, small_replay

CHECK = ROOT / "scripts" / "check_signed.py"
CHECK_WARC = ROOT / "scripts" / "check_warc.py"
LIMIT = 60  # seconds for any one step; a hang (a FIFO read) fails the test instead of stopping it
MANIFEST = "manifest-sha256.txt"


def recipe(heading: str) -> list[tuple[int, str]]:
    """The numbered steps (number, shell command) of the README's sh block starting with heading."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"```sh\n(.*?)```", text, re.S) if b.startswith(heading)]
    assert len(blocks) == 1, f"README has {len(blocks)} sh blocks starting with {heading!r}"
    steps: list[list] = []
    for line in blocks[0].splitlines():
        number = re.match(r"# (\d+)\. ", line)
        if number:
            steps.append([int(number[1]), ""])
        elif not line.startswith("#") and line.strip():
            steps[-1][1] += line + "\n"
    assert [n for n, _ in steps] == list(range(1, len(steps) + 1)) and all(c for _, c in steps)
    return [(n, c) for n, c in steps]


BAG = "# A mirror's folder or a restored copy."
SHARD = "# A clone of a Git shard."
WACZ = "# A WACZ, unzipped"


def run_steps(heading: str, copy: Path, key: Path, every: bool = False, wacz: Path | None = None,
              tools: Path | None = None, full: str = "full-bag") -> dict[int, str]:
    """Run the steps in order in copy, as a stranger does, stopping at the first that fails
    unless every; {step that failed: its output}. wacz: the file copy was unzipped from.
    tools: a folder searched first for commands (another machine's tools). full: FULL, the
    signed files of a shard clone (another shard's: shard 01's full-bag/)."""
    path = os.environ["PATH"] if tools is None else f"{tools}:{os.environ['PATH']}"
    env = {"PATH": path, "HOME": os.environ.get("HOME", "/tmp"), "LC_ALL": "C.UTF-8",
           "KEY": str(key), "CHECK": str(CHECK), "CHECK_WARC": str(CHECK_WARC), "FULL": full,
           "WACZ_FILE": str(wacz)}
    failed = {}
    for number, command in recipe(heading):
        proc = subprocess.run(["bash", "-c", command], cwd=copy, env=env, capture_output=True, text=True,
                              timeout=LIMIT)
        if proc.returncode:
            failed[number] = proc.stdout + proc.stderr
            if not every:
                break
    return failed


def first_failure(heading: str, copy: Path, key: Path, **kwargs) -> int | None:
    """The step at which a stranger following the recipe stops, or None: the copy is accepted."""
    return min(run_steps(heading, copy, key, **kwargs), default=None)


def verify(copy: Path, key: Path) -> tuple[int, str]:
    proc = run_cli("verify", str(copy), "--pubkey", str(key), timeout=LIMIT)
    return proc.returncode, proc.stdout + proc.stderr


def git(*args: str, cwd: Path | None = None) -> None:
    subprocess.run(["git", "-c", "user.name=x", "-c", "user.email=x@x", "-c", "core.hooksPath=/dev/null",
                    *args], cwd=cwd, check=True, capture_output=True, timeout=LIMIT)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A signed mirror and every form a stranger may download: restored copy, shard clone, WACZ."""
    base = tmp_path_factory.mktemp("stranger")
    env = {"env": {"XDG_CACHE_HOME": str(base / "cache")}}
    with small_replay("") as replay:
        crawl_into(replay.url, base / "m")
    for who in ("signer", "attacker"):
        assert run_cli("keygen", "--out", str(base / who)).returncode == 0
    steps = [("sign", str(base / "m"), "--key", str(base / "signer.key")),
             ("publish", str(base / "m"), "--to", f"git+file://{base}/git/actas.git", "--quiet"),
             ("restore", "--from", f"git+file://{base}/git/actas.git", "--out", str(base / "r"), "--quiet",
              "--pubkey", str(base / "signer.pub")),
             ("export", str(base / "m"), "--wacz", str(base / "m.wacz"))]
    for args in steps:
        proc = run_cli(*args, **env)
        assert proc.returncode == 0, (args, proc.stderr)
        assert args[0] != "restore" or "signed with the key you gave" in proc.stdout, proc.stdout
    git("clone", "-q", "-c", "core.autocrlf=false", str(base / "git" / "actas.git"), str(base / "clone"))
    unzip(base / "m.wacz", base / "wacz")
    return base


def unzip(wacz: Path, out: Path) -> None:
    subprocess.run(["unzip", "-q", str(wacz), "-d", str(out)], check=True, timeout=LIMIT)


@pytest.fixture
def copy(made, tmp_path) -> Path:
    """A fresh restored copy, as a stranger downloads it, for an attacker to edit."""
    shutil.copytree(made / "r", tmp_path / "copy", symlinks=True)
    return tmp_path / "copy"


# --- what an attacker does without the secret key -------------------------------------------

def listed(copy: Path) -> list[str]:
    return [line[66:] for line in (copy / MANIFEST).read_text().splitlines()]


def actas(copy: Path) -> list[str]:
    return [p for p in listed(copy) if p.endswith(".jpg")]


def retag(copy: Path) -> None:
    """Rewrite bag-info.txt's Payload-Oxum and Merkle root and size, then tagmanifest-sha256.txt,
    for the files as they now are: every unsigned hash and count in the copy agrees with them."""
    files = [Path(folder, name) for folder, _, names in os.walk(copy / "data") for name in names]
    items = [(line[66:], line[:64]) for line in (copy / MANIFEST).read_text().splitlines()]
    info = (copy / "bag-info.txt").read_text()
    info = re.sub(r"Payload-Oxum: .*", f"Payload-Oxum: {sum(f.stat().st_size for f in files)}.{len(files)}", info)
    info = re.sub(r"Acta-Mirror-Merkle-Root: .*", f"Acta-Mirror-Merkle-Root: {merkle_root(items)}", info)
    info = re.sub(r"Acta-Mirror-Merkle-Size: .*", f"Acta-Mirror-Merkle-Size: {len(items)}", info)
    (copy / "bag-info.txt").write_text(info)
    lines = []
    for line in (copy / "tagmanifest-sha256.txt").read_text().splitlines():
        name = line[66:]
        lines.append(f"{hashlib.sha256((copy / name).read_bytes()).hexdigest()}  {name}\n")
    (copy / "tagmanifest-sha256.txt").write_text("".join(lines))


def swap_image(copy: Path, victim: str, donor: bytes) -> None:
    """Put other bytes under victim's name and rewrite its manifest line and provenance record,
    so that every unsigned hash in the copy agrees with the forgery."""
    old = hashlib.sha256((copy / victim).read_bytes()).hexdigest()
    new = hashlib.sha256(donor).hexdigest()
    (copy / victim).write_bytes(donor)
    manifest = (copy / MANIFEST).read_text().replace(f"{old}  {victim}\n", f"{new}  {victim}\n")
    (copy / MANIFEST).write_text(manifest)
    records = []
    for line in (copy / "provenance.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["path"] == victim:
            record.update(sha256=new, size=len(donor), cid=raw_cid(new))
        records.append(json.dumps(record, sort_keys=True) + "\n")
    (copy / "provenance.jsonl").write_text("".join(records))
    retag(copy)


def forged(copy: Path) -> bytes:
    """Another real acta's bytes: the forgery a viewer cannot tell from the real thing."""
    return (copy / actas(copy)[1]).read_bytes()


def changed_image(copy: Path, made: Path) -> None:
    """A listed acta's bytes replaced, nothing else touched."""
    (copy / actas(copy)[0]).write_bytes(forged(copy))


def extra_file(copy: Path, made: Path) -> None:
    victim = actas(copy)[0]
    shutil.copyfile(copy / actas(copy)[1], copy / victim.replace(".jpg", ".99.jpg"))


def look_alike_folder(copy: Path, made: Path) -> None:
    """A forged acta under a look-alike of a listed folder's name (Cyrillic A for Latin A)."""
    victim = Path(actas(copy)[0])
    twin = copy / str(victim.parent).replace("_ALTAGRACIA", "_\u0410LTAGRACIA") / victim.name
    twin.parent.mkdir(parents=True)
    twin.write_bytes(forged(copy))


def decomposed_name(copy: Path, made: Path) -> None:
    """Two files whose names differ only in Unicode normalisation (NFC, NFD), one of them forged:
    they look the same in any listing, and neither is listed."""
    victim = copy / actas(copy)[0]
    name = victim.name.replace(".jpg", "\u00e9.jpg")
    (victim.parent / unicodedata.normalize("NFC", name)).write_bytes(victim.read_bytes())
    (victim.parent / unicodedata.normalize("NFD", name)).write_bytes(forged(copy))


def symlink_in_data(copy: Path, made: Path) -> None:
    """A listed acta replaced by a link to the same bytes outside the copy: the copy does not
    hold it, and the link's target may change after the check."""
    victim = copy / actas(copy)[0]
    outside = copy.parent / "elsewhere.jpg"
    shutil.copyfile(victim, outside)
    victim.unlink()
    victim.symlink_to(outside)


def fifo_in_data(copy: Path, made: Path) -> None:
    victim = copy / actas(copy)[0]
    victim.unlink()
    os.mkfifo(victim)


def symlinked_manifest(copy: Path, made: Path) -> None:
    """The manifest a link to a file outside the copy (its bytes the signed ones, for now)."""
    outside = copy.parent / "manifest.txt"
    shutil.copyfile(copy / MANIFEST, outside)
    (copy / MANIFEST).unlink()
    (copy / MANIFEST).symlink_to(outside)


def _outside_line(copy: Path, listed_as) -> None:
    """The first acta's manifest line replaced by one naming a forged file beside the copy
    (listed_as(path of the forged file) is how the line names it); the acta removed."""
    victim = actas(copy)[0]
    (copy.parent / "forged.jpg").write_bytes(forged(copy))
    sha = hashlib.sha256(forged(copy)).hexdigest()
    lines = [f"{sha}  {listed_as(copy.parent / 'forged.jpg')}" if line.endswith(victim) else line
             for line in (copy / MANIFEST).read_text().splitlines()]
    (copy / MANIFEST).write_text("\n".join(lines) + "\n")
    (copy / victim).unlink()
    retag(copy)


def dotdot_line(copy: Path, made: Path) -> None:
    """A manifest line that sends sha256sum -c out of the copy, to a forged file beside it."""
    _outside_line(copy, lambda forged_file: "data/../../forged.jpg")


def absolute_line(copy: Path, made: Path) -> None:
    _outside_line(copy, str)


def md5_manifest_extra(copy: Path, made: Path) -> None:
    """A second manifest (md5) that lists a forged file the sha256 manifest does not."""
    extra = actas(copy)[0].replace(".jpg", ".99.jpg")
    (copy / extra).write_bytes(forged(copy))
    lines = [f"{hashlib.md5((copy / p).read_bytes()).hexdigest()}  {p}\n" for p in [*listed(copy), extra]]
    (copy / "manifest-md5.txt").write_text("".join(lines))
    with open(copy / "tagmanifest-sha256.txt", "a") as fh:
        fh.write(f"{hashlib.sha256((copy / 'manifest-md5.txt').read_bytes()).hexdigest()}  manifest-md5.txt\n")


def signed_other_manifest(copy: Path, made: Path) -> None:
    """The genuine signed statement beside a manifest (and provenance) rewritten for a forgery."""
    swap_image(copy, actas(copy)[0], forged(copy))


def alter_comment(minisig: Path) -> None:
    """The signature untouched, its trusted comment naming another root."""
    lines = minisig.read_text().splitlines(keepends=True)
    other = hashlib.sha256(b"another manifest").hexdigest()
    lines[2] = re.sub(r"root [0-9a-f]{64}", f"root {other}", lines[2])
    minisig.write_text("".join(lines))


def altered_comment(copy: Path, made: Path) -> None:
    alter_comment(copy / "signed-root.json.minisig")
    retag(copy)


def crlf_manifest(copy: Path, made: Path) -> None:
    (copy / MANIFEST).write_bytes((copy / MANIFEST).read_bytes().replace(b"\n", b"\r\n"))
    retag(copy)


def bom_hides_first_line(copy: Path, made: Path) -> None:
    """A byte-order mark makes sha256sum skip the manifest's first line with only a warning;
    the file that line lists is forged."""
    first = listed(copy)[0]
    assert first.endswith(".jpg")
    (copy / first).write_bytes(forged(copy))
    (copy / MANIFEST).write_bytes(b"\xef\xbb\xbf" + (copy / MANIFEST).read_bytes())
    retag(copy)


def duplicate_line(copy: Path, made: Path) -> None:
    lines = (copy / MANIFEST).read_text().splitlines(keepends=True)
    (copy / MANIFEST).write_text("".join(sorted(lines + lines[:1], key=lambda line: line[66:])))
    retag(copy)


def key_in_copy(copy: Path, made: Path) -> None:
    """A forgery re-signed with the attacker's own key, which ships in the copy as signer.pub
    (and, as always, inside signed-root.json)."""
    swap_image(copy, actas(copy)[0], forged(copy))
    attacker = made / "attacker"
    proc = run_cli("sign", str(copy), "--key", f"{attacker}.key", timeout=LIMIT)
    assert proc.returncode == 0, proc.stderr
    shutil.copyfile(f"{attacker}.pub", copy / "signer.pub")
    retag(copy)


def unsigned_forgery(copy: Path, made: Path) -> None:
    """A forgery with the signature files removed, every other hash recomputed."""
    swap_image(copy, actas(copy)[0], forged(copy))
    for name in ("signed-root.json", "signed-root.json.minisig"):
        (copy / name).unlink()
    tags = (copy / "tagmanifest-sha256.txt").read_text().splitlines(keepends=True)
    (copy / "tagmanifest-sha256.txt").write_text("".join(t for t in tags if "signed-root" not in t))


# name: (make it, the README step that refuses it, the kind of problem verify names)
HOSTILE = {
    "changed-image": (changed_image, 4, "changed"),
    "extra-file": (extra_file, 5, "unlisted"),
    "look-alike-folder": (look_alike_folder, 5, "unlisted"),
    "decomposed-name": (decomposed_name, 5, "unlisted"),
    "symlink-in-data": (symlink_in_data, 1, "unsafe"),
    "fifo-in-data": (fifo_in_data, 1, "unsafe"),
    "symlinked-manifest": (symlinked_manifest, 1, "unsafe"),
    "dotdot-line": (dotdot_line, 3, "unsafe"),
    "absolute-line": (absolute_line, 3, "unsafe"),
    "md5-manifest-extra": (md5_manifest_extra, 5, "unlisted"),
    "signed-other-manifest": (signed_other_manifest, 3, "signed"),
    "altered-comment": (altered_comment, 2, "signature"),
    "crlf-manifest": (crlf_manifest, 3, "signed"),
    "bom-hides-first-line": (bom_hides_first_line, 3, "format"),
    "duplicate-line": (duplicate_line, 3, "duplicate"),
    "key-in-copy": (key_in_copy, 2, "signature"),
    "unsigned-forgery": (unsigned_forgery, 2, "signature"),
}


# --- the tests -------------------------------------------------------------------------------

def test_recipe_accepts_every_real_copy(made):
    """The signed mirror, its restore, a clone of its shard and its WACZ's evidence pass as written."""
    key = made / "signer.pub"
    assert run_steps(BAG, made / "m", key) == {}
    assert run_steps(BAG, made / "r", key) == {}
    assert run_steps(SHARD, made / "clone", key) == {}
    assert run_steps(WACZ, made / "wacz", key, wacz=made / "m.wacz") == {}
    proc = subprocess.run([sys.executable, "-m", "bagit", "--validate", "."], cwd=made / "r", capture_output=True, text=True,
                          timeout=LIMIT)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_copy_refused_by_recipe_and_verify(made, copy, name):
    build, step, kind = HOSTILE[name]
    build(copy, made)
    failed = run_steps(BAG, copy, made / "signer.pub")
    assert min(failed, default=None) == step, (failed, f"expected the recipe to stop at step {step}")
    code, out = verify(copy, made / "signer.pub")
    assert code == 1, out
    assert any(line.startswith(f"{kind}: ") for line in out.splitlines()), out


# The step that is there for each of these: without it, the copy passes every other step.
NEEDED = {"symlinked-manifest": 1, "key-in-copy": 2, "altered-comment": 2, "signed-other-manifest": 3,
          "extra-file": 5, "look-alike-folder": 5, "decomposed-name": 5}


@pytest.mark.parametrize("name", NEEDED)
def test_each_step_is_needed(made, copy, name):
    HOSTILE[name][0](copy, made)
    assert set(run_steps(BAG, copy, made / "signer.pub", every=True)) == {NEEDED[name]}


@pytest.mark.parametrize("oxum", [False, True], ids=["as-signed", "oxum-rewritten"])
def test_bagit_validates_what_steps_4_and_5_do(made, copy, oxum):
    """bagit-python refuses an unlisted file whether or not Payload-Oxum was rewritten for it."""
    extra_file(copy, made)
    if oxum:
        retag(copy)
    proc = subprocess.run([sys.executable, "-m", "bagit", "--validate", "."], cwd=copy, capture_output=True, text=True,
                          timeout=LIMIT)
    assert proc.returncode == 1 and " is invalid" in proc.stderr, proc.stderr


def test_second_manifest_disagreeing(made, copy):
    """A manifest-md5.txt that contradicts the files: bagit-python and verify refuse the bag. The
    recipe passes it, rightly: every file is the signed one; the md5 lines are an unsigned claim."""
    lines = [f"{'0' * 32}  {path}\n" for path in listed(copy)]
    (copy / "manifest-md5.txt").write_text("".join(lines))
    proc = subprocess.run([sys.executable, "-m", "bagit", "--validate", "."], cwd=copy, capture_output=True, text=True,
                          timeout=LIMIT)
    assert proc.returncode == 1 and "md5 validation failed" in proc.stderr, proc.stderr
    code, out = verify(copy, made / "signer.pub")
    assert code == 1 and "format: manifest-md5.txt" in out, out
    assert first_failure(BAG, copy, made / "signer.pub") is None


def test_verify_refuses_a_key_inside_the_copy(made, copy):
    key_in_copy(copy, made)
    proc = run_cli("verify", str(copy), "--pubkey", str(copy / "signer.pub"), timeout=LIMIT)
    assert proc.returncode == 2 and "inside the copy" in proc.stderr, proc.stderr
    assert run_cli("verify", str(copy), timeout=LIMIT).returncode == 0  # the statement's own key: says so
    assert verify(copy, made / "signer.pub")[0] == 1


def shard_clone(made: Path, tmp: Path, edit) -> Path:
    """A hostile shard: a clone of the published repository, edited, committed and pushed to
    another bare repository, which the stranger then clones as the README says."""
    work = tmp / "work"
    git("clone", "-q", str(made / "git" / "actas.git"), str(work))
    edit(work)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "update", cwd=work)
    git("init", "-q", "--bare", str(tmp / "hostile.git"))
    git("push", "-q", str(tmp / "hostile.git"), "HEAD:main", cwd=work)
    git("clone", "-q", "-c", "core.autocrlf=false", "-b", "main", str(tmp / "hostile.git"), str(tmp / "clone"))
    return tmp / "clone"


def shard_forgery(work: Path) -> None:
    """The shard's own manifest and provenance rewritten for a forged acta; full-bag/ untouched."""
    swap_image(work, actas(work)[0], forged(work))


def shard_symlink(work: Path) -> None:
    victim = work / actas(work)[0]
    victim.unlink()
    victim.symlink_to("../" * 6 + "elsewhere.jpg")


def shard_stripped(work: Path) -> None:
    """A forgery with full-bag/ (the signed files) removed and every record the shard carries
    rewritten to agree with it: restore rebuilds unsigned bag files around it."""
    victim = actas(work)[0]
    old, new = (hashlib.sha256(b).hexdigest() for b in ((work / victim).read_bytes(), forged(work)))
    swap_image(work, victim, forged(work))
    shutil.rmtree(work / "full-bag")
    full = work / "full-manifest-sha256.txt"
    full.write_text(full.read_text().replace(f"{old}  {victim}", f"{new}  {victim}"))
    for chunk in (work / "full-provenance").glob("*.jsonl"):
        records = [json.loads(line) for line in chunk.read_text().splitlines()]
        for record in records:
            if record["path"] == victim:
                record.update(sha256=new, size=len(forged(work)), cid=raw_cid(new))
        chunk.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


def shard_signed_files(work: Path) -> None:
    """A record added to the signed records, which the shards carry as full-provenance/."""
    last = sorted((work / "full-provenance").glob("*.jsonl"))[-1]
    with open(last, "a") as fh:
        fh.write(last.read_text().splitlines()[0] + "\n")


def shard_signed_records(work: Path) -> None:
    """The chunks left alone and other records planted in full-bag/, where a shard carries them
    only when the chunks are not its records: what is there is what is checked."""
    chunks = sorted((work / "full-provenance").glob("*.jsonl"))
    joined = b"".join(c.read_bytes() for c in chunks)
    (work / "full-bag" / "provenance.jsonl").write_bytes(joined + joined.splitlines(keepends=True)[0])


def shard_changed(work: Path) -> None:
    changed_image(work, work)


def shard_extra(work: Path) -> None:
    extra_file(work, work)


# edit, the step that refuses it, what restore --pubkey does with it (it reads listed files only)
HOSTILE_SHARD = {"symlink": (shard_symlink, 1, 1), "stripped": (shard_stripped, 2, 1),
                 "signed-files": (shard_signed_files, 3, 1), "signed-records": (shard_signed_records, 3, 1),
                 "forgery": (shard_forgery, 4, 1),
                 "changed": (shard_changed, 5, 1), "extra": (shard_extra, 6, 0)}


@pytest.mark.parametrize("name", HOSTILE_SHARD)
def test_hostile_shard_refused_by_recipe_and_restore(made, tmp_path, name):
    edit, step, restored = HOSTILE_SHARD[name]
    clone = shard_clone(made, tmp_path, edit)
    assert first_failure(SHARD, clone, made / "signer.pub") == step
    restore = ["restore", "--from", f"git+file://{tmp_path}/hostile.git", "--quiet"]
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    proc = run_cli(*restore, "--out", str(tmp_path / "r"), "--pubkey", str(made / "signer.pub"), timeout=LIMIT, env=env)
    assert proc.returncode == restored, proc.stdout + proc.stderr
    if edit is shard_stripped:  # without the key, restore can only say the copy is unsigned
        proc = run_cli(*restore, "--out", str(tmp_path / "r2"), timeout=LIMIT, env=env)
        assert proc.returncode == 0 and "; not signed; coverage" in proc.stdout, proc.stdout + proc.stderr


def test_recipe_on_another_shard_checks_it_against_shard_01s_signed_files(made, tmp_path):
    """The README tells a stranger checking a shard other than 01 to clone shard 01 too and set
    FULL to its full-bag/. Only shard 01's form was run: a second shard, as published, passes
    with FULL so set, and is refused at the step there for it when one of its files or one of
    its manifest's lines is not what the signer signed."""
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    proc = run_cli("publish", str(made / "m"), "--to", f"git+file://{tmp_path}/git/actas.git", "--shard-by", "state",
                   "--quiet", timeout=LIMIT, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "git" / "actas-02.git").is_dir(), sorted(p.name for p in (tmp_path / "git").iterdir())
    for name, repo in (("one", "actas.git"), ("two", "actas-02.git")):
        git("clone", "-q", "-c", "core.autocrlf=false", str(tmp_path / "git" / repo), str(tmp_path / name))
    key, full = made / "signer.pub", str(tmp_path / "one" / "full-bag")
    two = tmp_path / "two"
    assert not (two / "full-bag").exists()  # the signed files live in shard 01 alone
    assert run_steps(SHARD, two, key, full=full) == {}
    assert first_failure(SHARD, two, key) == 2  # without shard 01's: nothing signed to check against
    victim = two / listed(two)[0]
    original = victim.read_bytes()
    victim.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    assert first_failure(SHARD, two, key, full=full) == 5
    victim.write_bytes(original)
    manifest = two / MANIFEST
    lines = manifest.read_text().splitlines(keepends=True)
    manifest.write_text("".join([("0" * 64) + lines[0][64:]] + lines[1:]))  # a sha256 the signer never signed
    assert first_failure(SHARD, two, key, full=full) == 4


# --- hostile WACZs: what a replay tool would serve ----------------------------------------

def warc_member(kind: str, url: str, block: bytes, **extra: str) -> bytes:
    """One WARC record, gzipped on its own as in the export."""
    headers = {"WARC-Type": kind, "WARC-Target-URI": url, "WARC-Date": "2030-01-01T00:00:00Z",
               "WARC-Record-ID": "<urn:uuid:00000000-0000-0000-0000-000000000000>", **extra,
               "Content-Length": str(len(block))}
    head = "WARC/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    return gzip.compress(head.encode() + block + b"\r\n\r\n")


def index_lines(wacz: Path) -> list[dict]:
    return [json.loads(line.split(" ", 2)[2]) for line in (wacz / "indexes/index.cdx").read_text().splitlines()]


def append_record(wacz: Path, member: bytes, url: str) -> None:
    """Add a record at the WARC's end, and an index line for it so a replay finds it first."""
    warc = wacz / "archive/data.warc.gz"
    offset = warc.stat().st_size
    with open(warc, "ab") as fh:
        fh.write(member)
    where = {"url": url, "mime": "image/jpeg", "status": "200", "offset": str(offset),
             "length": str(len(member)), "filename": "data.warc.gz"}
    with open(wacz / "indexes/index.cdx", "a") as fh:
        fh.write(f"x 20300101000000 {json.dumps(where)}\n")


def image_urls(wacz: Path) -> list[str]:
    return [w["url"] for w in index_lines(wacz) if w["mime"] == "image/jpeg"]


def http_of(wacz: Path, url: str) -> bytes:
    """The HTTP head and payload of url's response record, as the WARC holds it."""
    where = next(w for w in index_lines(wacz) if w["url"] == url)
    with open(wacz / "archive/data.warc.gz", "rb") as fh:
        fh.seek(int(where["offset"]))
        record = gzip.decompress(fh.read(int(where["length"])))
    http = record.split(b"\r\n\r\n", 1)[1]
    return http[:http.rindex(b"\r\n\r\n")]


def add_response(wacz: Path, url: str, http: bytes) -> None:
    append_record(wacz, warc_member("response", url, http, **{"Content-Type": "application/http; msgtype=response"}),
                  url)


def forged_response(wacz: Path) -> None:
    """A later capture of a table's URL with another acta's image."""
    victim, donor = image_urls(wacz)[:2]
    add_response(wacz, victim, http_of(wacz, donor))


def truncating_head(wacz: Path) -> None:
    """A later capture of a table's own bytes whose Content-Length makes a replay serve the top
    half of the acta only (the totals and signatures are at the bottom)."""
    victim = image_urls(wacz)[0]
    head, payload = http_of(wacz, victim).split(b"\r\n\r\n", 1)
    head = re.sub(rb"Content-Length: \d+", f"Content-Length: {len(payload) // 2}".encode(), head)
    add_response(wacz, victim, head + b"\r\n\r\n" + payload)


def index_points_elsewhere(wacz: Path) -> None:
    """The WARC untouched; the index sends one table's URL to another table's record."""
    lines = (wacz / "indexes/index.cdx").read_text().splitlines()
    a, b = (json.loads(line.split(" ", 2)[2]) for line in lines[:2])
    head = lines[0].split(" ", 2)
    lines[0] = f"{head[0]} {head[1]} {json.dumps({**a, 'offset': b['offset'], 'length': b['length']})}"
    (wacz / "indexes/index.cdx").write_text("\n".join(lines) + "\n")


def resource_record(wacz: Path) -> None:
    url = image_urls(wacz)[0]
    append_record(wacz, warc_member("resource", url, b"\xff\xd8 not the acta", **{"Content-Type": "image/jpeg"}), url)


def revisit_elsewhere(wacz: Path) -> None:
    """A revisit of one table's URL declaring another table's payload digest."""
    victim, donor = image_urls(wacz)[:2]
    digest = next(w["digest"] for w in index_lines(wacz) if w["url"] == donor)
    append_record(wacz, warc_member("revisit", victim, b"", **{"WARC-Payload-Digest": digest}), victim)


def evidence_comment(wacz: Path) -> None:
    alter_comment(wacz / "evidence" / "signed-root.json.minisig")


def evidence_manifest(wacz: Path) -> None:
    with open(wacz / "evidence" / MANIFEST, "a") as fh:
        fh.write(f"{'0' * 64}  data/extra.jpg\n")


def symlink_entry(wacz: Path) -> None:
    """A zip entry that unzip makes a symbolic link: the statement read from outside the copy."""
    (wacz.parent / "elsewhere.json").write_bytes((wacz / "evidence/signed-root.json").read_bytes())
    (wacz / "evidence/signed-root.json").unlink()
    (wacz / "evidence/signed-root.json").symlink_to(wacz.parent / "elsewhere.json")


# name: (make it, the README step that refuses it, what that step says)
HOSTILE_WACZ = {"forged-response": (forged_response, 4, "a response of a file the signed records do not list"),
                "truncating-head": (truncating_head, 4, "would make a replay serve other bytes"),
                "index-points-elsewhere": (index_points_elsewhere, 4, "points at another URL's record"),
                "resource-record": (resource_record, 4, "a resource record"),
                "revisit-elsewhere": (revisit_elsewhere, 4, "a revisit of a file the signed records do not list"),
                "evidence-comment": (evidence_comment, 2, "Comment signature verification failed"),
                "evidence-manifest": (evidence_manifest, 3, "manifest-sha256.txt: not the file the statement signs"),
                "symlink": (symlink_entry, 1, "./evidence/signed-root.json")}


@pytest.mark.parametrize("name", HOSTILE_WACZ)
def test_hostile_wacz_refused_by_recipe(made, tmp_path, name):
    """Each hostile WACZ is zipped again and unzipped with unzip, as a stranger receives it."""
    edit, step, says = HOSTILE_WACZ[name]
    work = tmp_path / "work"
    shutil.copytree(made / "wacz", work)
    edit(work)
    with zipfile.ZipFile(tmp_path / "hostile.wacz", "w") as zf:
        for path in sorted(work.rglob("*")):
            if path.is_symlink():
                entry = zipfile.ZipInfo(str(path.relative_to(work)))
                entry.external_attr = 0o120777 << 16  # what zip -y writes for a link
                zf.writestr(entry, os.readlink(path))
            elif path.is_file():
                zf.write(path, str(path.relative_to(work)))
    unzip(tmp_path / "hostile.wacz", tmp_path / "copy")
    failed = run_steps(WACZ, tmp_path / "copy", made / "signer.pub", wacz=tmp_path / "hostile.wacz")
    assert list(failed) == [step] and says in failed[step], failed


@pytest.mark.parametrize("size", [0, 1, 2, 3, 5, 7, 8, 13, 45])
def test_check_signed_computes_rfc9162_roots(tmp_path, size):
    """check_signed.py's short tree hash agrees with mirror.merkle at sizes around powers of two,
    and any other line, order or count is refused."""
    items = sorted((f"data/{i:02d}/{i:09d}.01.jpg", hashlib.sha256(bytes([i])).hexdigest()) for i in range(size))
    manifest = "".join(f"{sha}  {path}\n" for path, sha in items).encode()

    def check(data: bytes) -> int:
        (tmp_path / MANIFEST).write_bytes(data)
        statement = {"merkle_root": merkle_root(items), "tree_size": size,
                     "tag_files": {MANIFEST: hashlib.sha256(data).hexdigest()}}
        (tmp_path / "signed-root.json").write_text(json.dumps(statement))
        return subprocess.run([sys.executable, str(CHECK)], cwd=tmp_path, capture_output=True,
                              timeout=LIMIT).returncode

    assert check(manifest) == 0
    lines = manifest.splitlines(keepends=True)
    for other in (b"".join(lines[::-1]), b"".join(lines + lines[:1]), b"".join(lines[1:])):
        if other != manifest:
            assert check(other) == 1


@pytest.mark.parametrize("statement", ["not json", "[]", '{"tag_files": []}', '{"tag_files": {}, "merkle_root": "x"}'])
def test_the_checkers_say_one_line_about_a_statement_or_records_they_cannot_read(tmp_path, statement):
    (tmp_path / "signed-root.json").write_text(statement)
    proc = subprocess.run([sys.executable, str(CHECK)], cwd=tmp_path, capture_output=True, text=True, timeout=LIMIT)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout.startswith("NOT SIGNED: signed-root.json cannot be read"), proc.stdout
    (tmp_path / "evidence").mkdir()
    (tmp_path / "evidence" / "manifest-sha256.txt").write_text("")
    (tmp_path / "evidence" / "provenance.jsonl").write_text(statement + "\n")
    proc = subprocess.run([sys.executable, str(CHECK_WARC)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=LIMIT)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "cannot be read" in proc.stdout, proc.stderr


# --- a Mac: shasum -a 256 where the recipe says sha256sum ---------------------------------------
@pytest.fixture(scope="module")
def mac_tools(tmp_path_factory) -> Path:
    """A folder whose `sha256sum` is `shasum -a 256` (Perl's, which macOS ships), as the README
    tells a Mac user to type instead; GNU's is never reached."""
    shasum = shutil.which("shasum")
    if shasum is None:
        pytest.fail("shasum (Perl's Digest::SHA, in Debian's perl package) is missing")
    tools = tmp_path_factory.mktemp("mac-tools")
    shim = tools / "sha256sum"
    shim.write_text(f'#!/bin/sh\nexec {shasum} -a 256 "$@"\n')
    shim.chmod(0o755)
    return tools


def test_the_mac_recipe_accepts_real_copies(made, mac_tools):
    """shasum -a 256 -c --strict --quiet reads acta-mirror's manifests as sha256sum does."""
    key = made / "signer.pub"
    assert run_steps(BAG, made / "m", key, tools=mac_tools) == {}
    assert run_steps(SHARD, made / "clone", key, tools=mac_tools) == {}
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "`shasum -a 256`" in readme  # what a Mac user is told to type


@pytest.mark.parametrize("name", HOSTILE)
def test_the_mac_recipe_refuses_what_the_recipe_refuses(made, copy, mac_tools, name):
    build, step, _kind = HOSTILE[name]
    build(copy, made)
    failed = run_steps(BAG, copy, made / "signer.pub", tools=mac_tools)
    assert min(failed, default=None) == step, (failed, f"expected the recipe to stop at step {step}")
