"""A scheduled run killed while it writes its manifests folder: the next run finds the whole old
state or the whole new one, completes, and loses nothing; a damaged save journal is never followed."""
from __future__ import annotations

import hashlib
import io
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from mirror import jobstate
from mirror.cid import CHUNK_SIZE, file_cid
from mirror.jobstate import CHECKS, CIDS, SAVED_FILES, STATE_FILES, check_signed, read_job_state
from mirror.models import UsageError
from mirror.state import iter_records
from tests.conftest import ROOT, run_cli
from tests.test_scheduled import changing, keygen, write_job

# Loaded by the killed run's interpreter (sitecustomize): SIGKILL itself just before the KILL_AT-th
# rename or removal of a file in the manifests folder, as a power cut or a cancelled runner would.
KILLER = """
import os, signal

_folder, _at, _seen = os.path.realpath(os.environ["KILL_FOLDER"]), int(os.environ["KILL_AT"]), [0]


def _wrap(real):
    def call(path, *args, **kwargs):  # src and dst of a rename are in the same folder
        if os.path.lexists(path) and os.path.realpath(os.path.dirname(os.path.abspath(path))) == _folder:
            _seen[0] += 1
            if _seen[0] == _at:
                os.kill(os.getpid(), signal.SIGKILL)
        return real(path, *args, **kwargs)
    return call


os.replace, os.rename, os.unlink = _wrap(os.replace), _wrap(os.rename), _wrap(os.unlink)
"""


def _files(folder: Path) -> dict[str, bytes]:
    """Each file's bytes; a symlink's target, a FIFO's name (never opened)."""
    return {p.name: os.readlink(p).encode() if p.is_symlink() else p.read_bytes() if p.is_file() else b"fifo"
            for p in sorted(folder.iterdir())}


def _published(remote: Path, name: str) -> bytes:
    return subprocess.run(["git", "--git-dir", str(remote), "show", f"main:{name}"], capture_output=True,
                          check=True).stdout


def test_a_run_killed_at_any_point_of_its_save_is_completed_by_the_next(replay_factory, tmp_path):
    r = replay_factory(faults="change=0.1")
    keygen(tmp_path)
    key = str(tmp_path / "k.key")
    remote = tmp_path / "remotes" / "actas.git"
    job = write_job(tmp_path, r.url, f'git = ["git+file://{remote}"]')
    folder = tmp_path / "manifests"
    first = run_cli("run", str(job), "--quiet")
    assert first.returncode == 0, first.stdout + first.stderr
    old = _files(folder)
    r.replay.epoch = 2  # from now on every run from the old state downloads the changed actas
    changed = changing(r)
    assert changed
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(KILLER)
    env = {**os.environ, "PYTHONPATH": f"{hook}{os.pathsep}{ROOT}", "KILL_FOLDER": str(folder)}
    outcomes = []
    for at in range(1, 40):
        shutil.rmtree(folder)
        folder.mkdir()
        for name, data in old.items():
            (folder / name).write_bytes(data)
        killed = subprocess.run([sys.executable, "-m", "mirror", "run", str(job), "--quiet"], capture_output=True,
                                text=True, env={**env, "KILL_AT": str(at)})
        if killed.returncode == 0:
            break  # the whole save took fewer renames: every point before each was tried
        assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
        published = _published(remote, "provenance.jsonl")  # the run published before it saved

        # What the next run reads: the whole old state or the whole new one, signed as it is.
        scratch = tmp_path / f"read-{at}"
        shutil.copytree(folder, scratch)
        try:
            check_signed(read_job_state(scratch), key)
        except UsageError as exc:
            pytest.fail(f"killed before rename/removal {at}: {exc}")
        assert set(_files(scratch)) <= set(SAVED_FILES), (at, sorted(_files(scratch)))  # nothing staged
        new = (scratch / "provenance.jsonl").read_bytes() == published
        assert new or _files(scratch) == old, f"killed before rename/removal {at}: the old state, half written"
        outcomes.append(new)

        # The next run is killed too, at its first rename or removal there (while it completes
        # or clears what the first left, or else at its own save): what is left is resolved alike.
        twice = subprocess.run([sys.executable, "-m", "mirror", "run", str(job), "--quiet"], capture_output=True,
                               text=True, env={**env, "KILL_AT": "1"})
        assert twice.returncode == -signal.SIGKILL, twice.stdout + twice.stderr
        again = run_cli("run", str(job), "--quiet")
        assert again.returncode == 0, again.stdout + again.stderr
        # Nothing is lost or fetched twice: the old lines stay the first, each changed acta has
        # one new version and one change record, and a save that was in is not redone.
        final = (folder / "provenance.jsonl").read_bytes()
        assert final.startswith(old["provenance.jsonl"])
        assert (folder / "changes.jsonl").read_bytes().startswith(old["changes.jsonl"])
        versions = [rec.entry.key for rec in iter_records(folder / "provenance.jsonl") if rec.entry.version > 1]
        assert sorted(versions) == sorted(r.replay.rows[name].key for name in changed), versions
        added = (folder / "changes.jsonl").read_bytes()[len(old["changes.jsonl"]):].decode().splitlines()
        assert len([line for line in added if '"changed"' in line]) == len(changed), added
        assert final == _published(remote, "provenance.jsonl")  # the folder is what the target holds
        if new:
            assert final == published and "0 archived" in again.stdout, again.stdout
        else:
            assert f"{len(changed)} archived" in again.stdout, again.stdout
    else:
        pytest.fail("every run was killed: the save never finished")
    assert True in outcomes and False in outcomes and len(outcomes) > 5, outcomes  # both sides of the journal

    out = tmp_path / "restored"
    restore = run_cli("restore", "--from", f"git+file://{remote}", "--out", str(out))
    assert restore.returncode == 0, restore.stdout + restore.stderr
    assert run_cli("verify", str(out), "--pubkey", str(tmp_path / "k.pub")).returncode == 0
    for name in ("provenance.jsonl", "changes.jsonl", "signed-root.json", "signed-root.json.minisig"):
        assert (out / name).read_bytes() == (folder / name).read_bytes(), name


# -- a journal that was damaged or planted -------------------------------------------------------------

def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _journal(*lines: str) -> bytes:
    return f"{jobstate.JOURNAL_HEAD}\n{''.join(line + chr(10) for line in lines)}{jobstate.JOURNAL_END}\n".encode()


@pytest.fixture
def folder(tmp_path) -> Path:
    folder = tmp_path / "manifests"
    folder.mkdir()
    (folder / "provenance.jsonl").write_bytes(b"old\n")
    (folder / "bag-info.txt").write_bytes(b"old info\n")
    return folder


NEW, INFO, CID_LINE = b"old\nnew\n", b"new info\n", b"bafy 2000000 data/big.jpg\n"


def test_an_interrupted_save_is_completed_from_where_it_stopped(folder):
    (folder / (jobstate.STAGED + "provenance.jsonl")).write_bytes(NEW)
    (folder / (jobstate.STAGED + CIDS)).write_bytes(CID_LINE)  # cids.txt goes with the provenance
    (folder / "bag-info.txt").write_bytes(INFO)  # renamed in before the kill
    (folder / jobstate.JOURNAL).write_bytes(_journal(f"{_sha(INFO)} bag-info.txt", f"{_sha(NEW)} provenance.jsonl",
                                                     f"{_sha(CID_LINE)} {CIDS}"))
    jobstate.recover(folder)
    assert _files(folder) == {"bag-info.txt": INFO, "provenance.jsonl": NEW, CIDS: CID_LINE}
    jobstate.recover(folder)  # nothing left to do
    assert _files(folder) == {"bag-info.txt": INFO, "provenance.jsonl": NEW, CIDS: CID_LINE}


def test_what_a_save_staged_without_its_journal_is_removed(folder, tmp_path):
    old = _files(folder)
    outside = tmp_path / "outside.txt"
    outside.write_bytes(NEW)
    (folder / (jobstate.STAGED + "provenance.jsonl")).write_bytes(NEW)
    (folder / (jobstate.STAGED + "bag-info.txt")).symlink_to(outside)  # planted: the link goes, not its target
    (folder / (jobstate.JOURNAL + ".new")).write_bytes(b"acta-mirror save jou")  # killed while writing it
    jobstate.recover(folder)
    assert _files(folder) == old and outside.read_bytes() == NEW


@pytest.mark.parametrize("case", ["symlink", "fifo", "outside", "absolute", "unknown", "twice", "garbage", "cut",
                                  "mismatch", "staged-symlink", "missing"])
def test_a_journal_that_cannot_be_followed_stops_with_one_line(folder, tmp_path, case):
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"old\nforged\n")
    staged = folder / (jobstate.STAGED + "provenance.jsonl")
    staged.write_bytes(NEW)
    good = f"{_sha(NEW)} provenance.jsonl"
    journal = {
        "outside": _journal(f"{_sha(outside.read_bytes())} ../outside.txt"),
        "absolute": _journal(f"{_sha(outside.read_bytes())} {outside}"),
        "unknown": _journal(f"{_sha(b'x')} data/x.jpg"),
        "twice": _journal(good, good),
        "garbage": b"\x00\xff not a journal\n",
        "cut": _journal(good)[:-4],
        "mismatch": _journal(f"{_sha(b'other')} provenance.jsonl"),
        "staged-symlink": _journal(f"{_sha(outside.read_bytes())} provenance.jsonl"),
        "missing": _journal(good, f"{_sha(b'gone')} changes.jsonl"),
    }.get(case, _journal(good))
    if case == "symlink":
        outside.write_bytes(journal)
        (folder / jobstate.JOURNAL).symlink_to(outside)
    elif case == "fifo":
        os.mkfifo(folder / jobstate.JOURNAL)
    else:
        (folder / jobstate.JOURNAL).write_bytes(journal)
    if case == "staged-symlink":
        staged.unlink()
        staged.symlink_to(outside)
    before = {**_files(folder), "outside": outside.read_bytes()}
    with pytest.raises(UsageError) as caught:
        jobstate.recover(folder)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{folder / jobstate.JOURNAL}: an interrupted save cannot be completed")
    assert {**_files(folder), "outside": outside.read_bytes()} == before  # nothing renamed, nothing followed


def test_a_run_on_a_folder_with_a_broken_journal_exits_2_with_one_line(replay, tmp_path):
    job = tmp_path / "job.toml"
    job.write_text(f'[source]\nsite = "resultados2024"\nroot = "{replay.url}"\n\n'
                   '[publish]\nmanifests = "manifests"\nallow_none = true\n\n[sign]\nrequired = false\n')
    folder = tmp_path / "manifests"
    folder.mkdir()
    (folder / jobstate.JOURNAL).write_bytes(_journal(f"{_sha(b'x')} ../../etc/passwd"))
    proc = run_cli("run", str(job), "--quiet")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "an interrupted save cannot be completed" in lines[0], proc.stderr
    assert "restore the folder from its last commit" in lines[0]


def test_a_dry_run_leaves_an_interrupted_save_as_it_is_and_the_run_completes_it(replay, tmp_path):
    job = tmp_path / "job.toml"
    job.write_text(f'[source]\nsite = "resultados2024"\nroot = "{replay.url}"\n\n'
                   '[publish]\nmanifests = "manifests"\nallow_none = true\n\n[sign]\nrequired = false\n')
    assert run_cli("run", str(job), "--quiet").returncode == 0
    folder = tmp_path / "manifests"
    info = (folder / "bag-info.txt").read_bytes() + b"Comment: the save a killed run left\n"
    (folder / (jobstate.STAGED + "bag-info.txt")).write_bytes(info)
    (folder / jobstate.JOURNAL).write_bytes(_journal(f"{_sha(info)} bag-info.txt"))
    before = _files(folder)
    proc = run_cli("run", str(job), "--dry-run")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _files(folder) == before  # a dry run writes nothing, not even the completion
    assert run_cli("run", str(job), "--quiet").returncode == 0
    after = _files(folder)
    assert after["bag-info.txt"].startswith(info) and jobstate.JOURNAL not in after

# -- cids.txt lines a save of the old loop left -------------------------------------------------------

def _big_jpeg() -> bytes:
    """A real JPEG over one IPFS chunk (its CID is a DAG's, kept in cids.txt), other bytes each call."""
    out = io.BytesIO()
    Image.effect_noise((1200, 1200), 80).save(out, "JPEG", quality=95)
    assert len(out.getvalue()) > CHUNK_SIZE
    return out.getvalue()


def test_a_cid_line_a_killed_save_left_for_a_file_never_recorded_is_not_believed(tmp_path):
    """The old loop appended cids.txt before it renamed the provenance: a run killed between them
    left a line for a version the provenance never got. When the next run archives that path with
    other bytes (the site changed again), its CID must be computed, not taken from that line."""
    from tests.hostile_site import HostileSite, body, index_row

    job = tmp_path / "job.toml"
    folder = tmp_path / "manifests"
    with HostileSite() as site:
        rows = site.good_actas(2)
        site.routes["/img/big.jpg"] = body(_big_jpeg())
        site.serve_index(rows + [index_row(50, f"{site.url}/img/big.jpg")])
        job.write_text(f'[source]\nsite = "resultados2024"\nroot = "{site.url}"\n\n'
                       '[publish]\nmanifests = "manifests"\nallow_none = true\n\n[sign]\nrequired = false\n')
        first = run_cli("run", str(job), "--quiet")
        assert first.returncode == 0, first.stdout + first.stderr
        (path, _), = read_job_state(folder).big_cids.items()
        stem, ext = os.path.splitext(path)
        killed = tmp_path / "killed.jpg"  # what the killed run downloaded
        killed.write_bytes(_big_jpeg())
        with open(folder / CIDS, "a") as fh:
            fh.write(f"{file_cid(killed, killed.stat().st_size)} {killed.stat().st_size} {stem}.v2{ext}\n")
        now = _big_jpeg()  # what the site serves by the next run
        site.routes["/img/big.jpg"] = body(now)
        second = run_cli("run", str(job), "--quiet")
        assert second.returncode == 0, second.stdout + second.stderr
    recorded = {rec.path: rec for rec in iter_records(folder / "provenance.jsonl")}[f"{stem}.v2{ext}"]
    assert recorded.sha256 == hashlib.sha256(now).hexdigest()
    served = tmp_path / "now.jpg"
    served.write_bytes(now)
    assert read_job_state(folder).big_cids[f"{stem}.v2{ext}"][0] == file_cid(served, len(now))  # the last line counts


def test_a_cid_written_into_a_signed_state_by_anyone_else_is_refused(tmp_path):
    """cids.txt (the CIDs of files over one chunk, which a run without a local mirror builds the
    published tree from) was not signed: a CID replaced there by anyone who can write the
    folder (it is committed where others can) went into the tree the next run pinned, exit 0,
    and the root served other bytes under that file's name. It is signed with the job's key
    for the provenance it goes with; a cids.txt edited, unsigned or signed for another
    provenance is refused before anything is asked."""
    from mirror.cid import raw_cid
    from mirror.jobstate import CIDS_SIGNATURE
    from tests.hostile_site import HostileSite, body, index_row

    assert run_cli("keygen", "--out", str(tmp_path / "k")).returncode == 0
    job, folder = tmp_path / "job.toml", tmp_path / "manifests"
    with HostileSite() as site:
        rows = site.good_actas(2)
        site.routes["/img/big.jpg"] = body(_big_jpeg())
        site.serve_index(rows + [index_row(50, f"{site.url}/img/big.jpg")])
        job.write_text(f'[source]\nsite = "resultados2024"\nroot = "{site.url}"\n\n'
                       f'[publish]\nmanifests = "manifests"\nallow_none = true\n\n[sign]\nkey = "{tmp_path / "k.key"}"\n')
        first = run_cli("run", str(job), "--quiet")
        assert first.returncode == 0, first.stdout + first.stderr
        assert (folder / CIDS_SIGNATURE).is_file()
        good, sig = (folder / CIDS).read_bytes(), (folder / CIDS_SIGNATURE).read_bytes()
        other = next(r for r in iter_records(folder / "provenance.jsonl") if r.path.endswith(".jpg") and r.size < CHUNK_SIZE)
        path = good.decode().split(" ", 2)[2]
        forged = f"{raw_cid(other.sha256)} {other.size} {path}".encode()
        for name, edit, said in [
                (CIDS, lambda: (folder / CIDS).write_bytes(forged), f"{CIDS}: the signature does not match the file"),
                (CIDS_SIGNATURE, lambda: (folder / CIDS_SIGNATURE).unlink(), f"{CIDS} is not signed"),
                (CIDS_SIGNATURE, lambda: (folder / CIDS_SIGNATURE).write_bytes(sig.replace(b"sha256 ", b"sha256 0")),
                 "the trusted comment was altered")]:
            edit()
            hits = sum(site.hits.values())
            proc = run_cli("run", str(job), "--quiet")
            assert proc.returncode == 2 and said in proc.stderr, (name, proc.stdout + proc.stderr)
            assert "does not match its signature" in proc.stderr and sum(site.hits.values()) == hits
            (folder / CIDS).write_bytes(good)
            (folder / CIDS_SIGNATURE).write_bytes(sig)
        site.routes["/img/big.jpg"] = body(_big_jpeg())  # the site changes: the state grows, signed again
        again = run_cli("run", str(job), "--quiet")
        assert again.returncode == 0, again.stdout + again.stderr
        assert (folder / CIDS_SIGNATURE).read_bytes() != sig and len((folder / CIDS).read_bytes()) > len(good)
        (folder / CIDS).write_bytes(good)  # the first run's cids.txt and signature, under the grown provenance
        (folder / CIDS_SIGNATURE).write_bytes(sig)
        proc = run_cli("run", str(job), "--quiet")
        assert proc.returncode == 2 and "signed for another provenance.jsonl" in proc.stderr, proc.stdout + proc.stderr
