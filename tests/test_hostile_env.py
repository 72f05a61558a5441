"""A hostile or unusual machine: a disk that fills or turns read-only, an odd umask, locale,
temp folder or clock, a race for the same folder. Each test failed on the code before its fix.

Tests that mount a small tmpfs need root (CI and this project's machines run as root); they
skip, saying so, elsewhere.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from mirror import crawl as crawl_module
from mirror import fetch
from mirror.archive import Archive
from mirror.config import load_job
from mirror.crawl import CrawlOptions, crawl
from mirror.job import run_job
from mirror.manifest import read_provenance
from mirror.models import MirrorLocked
from mirror.replay import Replay, ReplayThread
from mirror.verify import verify
from tests.conftest import ROOT, run_cli, tmpfs
from tests.test_jobstate_checks import _job, _requests, _run_long_ago
from tests.test_scheduled import keygen

HANG = 240  # seconds: a crawl of 52 small actas that has not ended by then never will


@pytest.fixture(scope="module")
def site():
    with ReplayThread(Replay(small=True, limit=40)) as r:
        yield r


@pytest.fixture
def disk(tmp_path):
    """A 12 MiB tmpfs of this test's own: filled, remounted read-only, and gone after it."""
    with tmpfs(tmp_path, "12m") as where:
        yield where


def _leave_free(disk: Path, kib: int) -> Path:
    """Fill disk so that only about kib KiB stay free; returns the filler (remove it to free them)."""
    st = os.statvfs(disk)
    filler = disk / "filler"
    with open(filler, "wb") as fh:
        fh.truncate(0)
        fh.write(b"\0" * max(0, st.f_bavail * st.f_frsize - kib * 1024))
    return filler


def _crawl(site, out: Path, *extra: str, **kwargs):
    return run_cli("crawl", "resultados2024", "--root", site.url, "--out", str(out), "--quiet",
                   "--concurrency", "4", *extra, timeout=HANG, **kwargs)


def _records(out: Path) -> dict[str, str]:
    path = out / "provenance.jsonl"
    return {e.path: e.sha256 for e in read_provenance(path)} if path.exists() else {}


def _cli_umask(umask: int, *args: str) -> subprocess.CompletedProcess:
    """run_cli, under this umask."""
    proc = subprocess.run([sys.executable, "-m", "mirror", *args], capture_output=True, text=True, timeout=HANG,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, umask=umask)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def _one_line_exit_3(proc) -> None:
    assert proc.returncode == 3, (proc.returncode, proc.stdout, proc.stderr)
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


# -- a full disk, at each step of a crawl --------------------------------------------------------------
@pytest.mark.parametrize("free_kib", [0, 1024])
def test_a_crawl_onto_a_nearly_full_disk_stops_with_exit_3_and_the_next_run_completes(site, disk, free_kib):
    """0 KiB: the lock file's first byte (a traceback). 1 MiB: a download the disk refuses
    while the index is read (the crawl waited for ever on a queue no worker emptied)."""
    out = disk / "m"
    filler = _leave_free(disk, free_kib)
    _one_line_exit_3(_crawl(site, out))
    kept = _records(out)
    filler.unlink()
    again = _crawl(site, out)
    assert again.returncode == 0, again.stderr
    assert verify(out) == []
    after = _records(out)
    assert all(after.get(path) == sha for path, sha in kept.items())
    assert sum(1 for p in after if "/index/" not in p) == 52


def test_a_crawl_whose_disk_fills_as_it_writes_a_batch_resumes_without_loss(site, disk, tmp_path):
    """A mirror holding a first crawl; the second finds the disk full at every few KiB of
    free space in turn (a download, the move into data/, provenance, the index, the bag files):
    each stop is exit 3 and one line, and nothing the first run archived is lost."""
    seed = tmp_path / "seed"
    first = run_cli("crawl", "resultados2024", "--root", site.url, "--out", str(seed), "--quiet",
                    "--index", _first_rows(site, tmp_path, 6))
    assert first.returncode == 0, first.stderr
    before = _records(seed)
    for free_kib in (0, 8, 64, 300, 600, 1200, 2400):
        out = disk / "m"
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(seed, out, symlinks=True)
        filler = _leave_free(disk, free_kib)
        proc = _crawl(site, out)
        assert proc.returncode in (0, 3), (free_kib, proc.stderr)
        if proc.returncode == 3:
            _one_line_exit_3(proc)
        kept = {**before, **_records(out)}
        filler.unlink()
        again = _crawl(site, out)
        assert again.returncode == 0, (free_kib, again.stderr)
        assert verify(out) == [], free_kib
        after = _records(out)
        assert all(after.get(path) == sha for path, sha in kept.items()), free_kib
        for path, sha in after.items():
            assert hashlib.sha256((out / path).read_bytes()).hexdigest() == sha


def test_a_mirror_on_a_read_only_disk_is_read_and_a_crawl_into_it_is_exit_3(site, disk):
    """The crawl ended in a traceback opening its lock file; reading commands write nothing."""
    out = disk / "m"
    assert _crawl(site, out).returncode == 0
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    _one_line_exit_3(_crawl(site, out))
    _one_line_exit_3(_crawl(site, disk / "new"))
    for args in (["verify", str(out)], ["tally", str(out)], ["crawl", "resultados2024", "--root", site.url,
                                                             "--out", str(out), "--dry-run"]):
        proc = run_cli(*args)
        assert proc.returncode == 0, (args, proc.stderr)


def _first_rows(site, tmp_path: Path, n: int) -> str:
    lines = site.replay.index_bytes(1).splitlines(keepends=True)
    path = tmp_path / "first.csv"
    path.write_bytes(b"".join(lines[: n + 1]))
    return str(path)


# -- the umask --------------------------------------------------------------------------------------------
def _as_nobody(*cmd: str, cwd: Path) -> subprocess.CompletedProcess:
    """cmd as user nobody, in cwd (a folder nobody may read). Where this Python's own packages
    are not nobody's to read (a prefix under /root), its interpreter runs with the system's
    packages, which lack msgspec (mirror.models is built on it): a copy of it is put beside
    the checkout on nobody's path, as an install for that user would provide it."""
    import msgspec

    deps = cwd / "deps-for-nobody"
    if not deps.exists():
        shutil.copytree(Path(msgspec.__file__).parent, deps / "msgspec")
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd],
                          capture_output=True, text=True, cwd=cwd, env={**os.environ, "PYTHONPATH": f"{ROOT}:{deps}"})


@pytest.fixture
def shared():
    """A folder other users may enter (tmp_path's parents are not), removed after the test."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("reading as another user needs root and setpriv")
    folder = Path(tempfile.mkdtemp(prefix="acta-shared-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


def _crawl_under(umask: int, site, out: Path, tmp_path: Path) -> None:
    proc = _cli_umask(umask, "crawl", "resultados2024", "--root", site.url, "--out", str(out), "--quiet",
                      "--index", _first_rows(site, tmp_path, 4))
    assert proc.returncode == 0, proc.stderr


def test_a_mirror_is_as_readable_as_the_umask_says(site, shared, tmp_path):
    """Under umask 022 another user (a web server's, anyone the folder is shared with) can check
    the copy: the bag's manifests were written 0600 (mkstemp) while its images were 0644, so
    they read the images and could not check them. Under 077 nothing shows to anyone else."""
    out = shared / "m"
    _crawl_under(0o022, site, out, tmp_path)
    for manifest in ("manifest-sha256.txt", "tagmanifest-sha256.txt"):
        check = _as_nobody("sha256sum", "--strict", "-c", manifest, cwd=out)
        assert check.returncode == 0, check.stderr
    for path in out.rglob("*"):
        if ".acta-mirror" not in path.parts:
            assert stat.S_IMODE(path.stat().st_mode) & 0o044 == 0o044, path
    private = shared / "private"
    _crawl_under(0o077, site, private, tmp_path)
    for path in [private, *private.rglob("*")]:
        assert stat.S_IMODE(path.lstat().st_mode) & 0o077 == 0, path


def test_verify_of_a_copy_this_user_cannot_read_names_what_it_cannot_read(site, shared, tmp_path):
    """A copy made under umask 077 by another user (or unpacked keeping its modes): verify
    ended in a PermissionError traceback on provenance.jsonl."""
    out = shared / "private"
    _crawl_under(0o077, site, out, tmp_path)
    out.chmod(0o755)  # the folder can be listed, its files cannot be read
    if _as_nobody(sys.executable, "-c", "import mirror.verify", cwd=shared).returncode != 0:
        pytest.skip("another user cannot run this checkout's Python")
    for flags in ([], ["--fast"], ["--json"]):
        proc = _as_nobody(sys.executable, "-m", "mirror", "verify", str(out), *flags, cwd=shared)
        assert "Traceback" not in proc.stderr, proc.stderr
        assert proc.returncode == 1, (flags, proc.stdout, proc.stderr)
        assert "provenance.jsonl" in proc.stdout and "Permission denied" in proc.stdout, proc.stdout


# -- the locale -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def latin1(tmp_path_factory):
    """The environment of a machine whose locale names files in ISO-8859-1 (built with localedef)."""
    where = tmp_path_factory.mktemp("locale")
    if not shutil.which("localedef") or not Path("/usr/share/i18n/locales/es_ES").exists():
        pytest.skip("building an ISO-8859-1 locale needs localedef and the es_ES locale source (Debian: locales)")
    subprocess.run(["localedef", "-i", "es_ES", "-f", "ISO-8859-1", str(where / "es_ES.ISO-8859-1")],
                   check=True, capture_output=True)
    return {"LOCPATH": str(where), "LC_ALL": "es_ES.ISO-8859-1", "LANG": "es_ES.ISO-8859-1"}


def _accented_index(site, tmp_path: Path) -> str:
    """The first rows of the index, their parish renamed with Spanish letters."""
    text = site.replay.index_bytes(1).decode("utf-8-sig")
    path = tmp_path / "acentos.csv"
    path.write_text("".join(text.splitlines(keepends=True)[:5]).replace("PQ. EL RECREO", "PQ. MÉRIDA ÑAÑA"),
                    encoding="utf-8")
    return str(path)


def _locale_cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "mirror", *args], capture_output=True, timeout=HANG,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env})
    assert b"Traceback" not in proc.stderr, proc.stderr
    return proc


def test_a_latin1_locale_writes_and_reads_a_bags_accented_paths_in_utf8(site, latin1, tmp_path):
    """In an ISO-8859-1 locale a crawl wrote `MÉRIDA` as ISO-8859-1 bytes: sha256sum (and any
    other machine) could not find the files the UTF-8 manifest lists; and verify called an
    intact copy made elsewhere damaged (its accented files missing, and unlisted)."""
    index = _accented_index(site, tmp_path)
    made_here = tmp_path / "latin"
    proc = _locale_cli(latin1, "crawl", "resultados2024", "--root", site.url, "--out", str(made_here),
                       "--quiet", "--index", index)
    assert proc.returncode == 0, proc.stderr
    assert any("MÉRIDA" in p.name for p in (made_here / "data").rglob("*"))
    check = subprocess.run(["sha256sum", "--strict", "-c", "manifest-sha256.txt"], cwd=made_here,
                           capture_output=True, text=True, env={**os.environ, "LC_ALL": "C.UTF-8"})
    assert check.returncode == 0, check.stdout + check.stderr
    made_elsewhere = tmp_path / "utf8"
    proc = run_cli("crawl", "resultados2024", "--root", site.url, "--out", str(made_elsewhere), "--quiet",
                   "--index", index)
    assert proc.returncode == 0, proc.stderr
    for args in (["verify", str(made_elsewhere)], ["tally", str(made_elsewhere)]):
        proc = _locale_cli(latin1, *args)
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)


# -- a clock set back ---------------------------------------------------------------------------------------
YEAR = 365 * 86400


def _a_year_ahead(monkeypatch):
    """This process's clock a year ahead (what the records of a run look like to a machine whose
    clock was set back since: a board without a real-time clock, a runner's bad NTP)."""
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + YEAR)
    ahead = datetime.now(timezone.utc) + timedelta(seconds=YEAR)
    monkeypatch.setattr(fetch, "utc_now", lambda: ahead.isoformat(timespec="microseconds").replace("+00:00", "Z"))


def test_a_clock_set_back_does_not_spare_every_url_until_it_catches_up(site, tmp_path, monkeypatch):
    """Check times later than now counted as recent: with --recheck-after a day, a mirror
    whose clock went back a year asked the site nothing for a year."""
    out = tmp_path / "m"
    with monkeypatch.context() as m:
        _a_year_ahead(m)
        first = asyncio.run(crawl(CrawlOptions(site="resultados2024", root=site.url, out=str(out),
                                               recheck_after=86400)))
    assert first.counters.archived == 52
    again = asyncio.run(crawl(CrawlOptions(site="resultados2024", root=site.url, out=str(out), recheck_after=86400)))
    assert again.counters.not_asked == 0 and again.counters.unchanged == 52, again.counters
    assert again.requests == 53  # the index and every acta
    assert verify(out) == []


def test_a_job_whose_check_times_are_ahead_of_the_clock_asks_again(site, tmp_path, monkeypatch):
    """The manifests folder's checked.txt: a check time in the future (a run whose clock was a
    year ahead found every file unchanged) counted as now, so every run spared every URL
    again until the clock caught up."""
    job = _job(tmp_path, site.url)
    _run_long_ago(job, monkeypatch)  # fetched years ago
    with monkeypatch.context() as m:
        _a_year_ahead(m)
        assert run_job(load_job(job)).ok
    lines = len(read_provenance(tmp_path / "manifests" / "provenance.jsonl"))
    proc = run_cli("run", str(job), "--quiet")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _requests(proc) == lines, proc.stdout  # the index and every acta


# -- two runs at the same moment ----------------------------------------------------------------------------
def test_a_crawl_that_loses_the_race_for_a_new_folder_leaves_it_to_the_winner(site, tmp_path, monkeypatch):
    """Two crawls started at the same moment into a folder that does not exist: both see no
    folder; the one that then finds the other's lock removed the folder the other was
    writing into, lock and index too, because it had 'created' it and archived nothing."""
    out = tmp_path / "m"
    other = Archive(out)
    started = crawl_module._crawl

    async def after_the_other_took_it(opts, *args):
        other.open()  # the other run, a moment ahead: it makes the folder and takes the lock
        return await started(opts, *args)

    monkeypatch.setattr(crawl_module, "_crawl", after_the_other_took_it)
    try:
        with pytest.raises(MirrorLocked):
            asyncio.run(crawl(CrawlOptions(site="resultados2024", root=site.url, out=str(out))))
        assert (out / ".acta-mirror" / "lock").exists()
        assert (out / ".acta-mirror" / "tmp").is_dir()
    finally:
        other.close()
    monkeypatch.setattr(crawl_module, "_crawl", started)
    result = asyncio.run(crawl(CrawlOptions(site="resultados2024", root=site.url, out=str(out))))
    assert result.counters.archived == 52 and verify(out) == []


# -- killed while the bag's files are rewritten ------------------------------------------------------------
# Loaded by the crawl's interpreter (sitecustomize): send itself KILL_SIGNAL (SIGKILL unless
# named) just before the KILL_AT-th rename into the mirror's top folder (failures, the manifest,
# bag-info, the tag manifest).
KILLER = """
import os, signal

_folder, _at, _seen = os.path.realpath(os.environ["KILL_FOLDER"]), int(os.environ["KILL_AT"]), [0]
_signal = getattr(signal, os.environ.get("KILL_SIGNAL", "SIGKILL"))


def _replace(src, dst, *args, _real=os.replace, **kwargs):
    if os.path.realpath(os.path.dirname(os.path.abspath(dst))) == _folder:
        _seen[0] += 1
        if _seen[0] == _at:
            os.kill(os.getpid(), _signal)
    return _real(src, dst, *args, **kwargs)


os.replace = _replace
"""


def test_a_crawl_killed_while_it_rewrites_the_bag_is_made_whole_by_a_run_with_nothing_new(site, tmp_path):
    """Killed after its files were recorded and before the manifest and bag-info were rewritten,
    the next run had nothing new to archive, so it left them as they were: a bag that failed
    verify (files unlisted, a wrong Payload-Oxum and Merkle root) for good, after exit 0."""
    seed = tmp_path / "seed"
    first = run_cli("crawl", "resultados2024", "--root", site.url, "--out", str(seed), "--quiet",
                    "--index", _first_rows(site, tmp_path, 6))
    assert first.returncode == 0, first.stderr
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(KILLER)
    out = tmp_path / "m"
    killed_at = []
    for at in range(1, 10):
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(seed, out)
        env = {**os.environ, "PYTHONPATH": f"{hook}{os.pathsep}{ROOT}", "KILL_FOLDER": str(out), "KILL_AT": str(at)}
        proc = subprocess.run([sys.executable, "-m", "mirror", "crawl", "resultados2024", "--root", site.url,
                               "--out", str(out), "--quiet"], capture_output=True, text=True, env=env, timeout=HANG)
        if proc.returncode == 0:
            break
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        killed_at.append(at)
        again = _crawl(site, out)
        assert again.returncode == 0 and "0 archived" in again.stdout, again.stdout + again.stderr
        assert verify(out) == [], f"killed before rename {at}"
    assert len(killed_at) >= 3, killed_at


def test_verify_of_a_mirror_a_crawl_is_writing_says_so_and_calls_nothing_damaged(site, tmp_path):
    """Between a crawl's recording its files and rewriting its manifest the mirror is no whole
    bag: verify, run meanwhile (a cron job, a user), called the intact copy damaged (its new
    files unlisted; exit 1)."""
    out = tmp_path / "m"
    first = run_cli("crawl", "resultados2024", "--root", site.url, "--out", str(out), "--quiet",
                    "--index", _first_rows(site, tmp_path, 6))
    assert first.returncode == 0, first.stderr
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(KILLER)
    env = {**os.environ, "PYTHONPATH": f"{hook}{os.pathsep}{ROOT}", "KILL_FOLDER": str(out), "KILL_AT": "1",
           "KILL_SIGNAL": "SIGSTOP"}  # the crawl stops itself with its files recorded, its manifest not yet rewritten
    proc = subprocess.Popen([sys.executable, "-m", "mirror", "crawl", "resultados2024", "--root", site.url,
                             "--out", str(out), "--quiet"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        while Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "T":
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        during = run_cli("verify", str(out))
        assert during.returncode == 2, during.stdout + during.stderr
        assert "being written by another run" in during.stderr and len(during.stderr.strip().splitlines()) == 1
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.communicate(timeout=HANG)
    assert proc.returncode == 0
    assert run_cli("verify", str(out)).returncode == 0


# -- the scheduled job's temp folder ---------------------------------------------------------------------
def test_a_job_whose_temp_folder_fills_stops_with_exit_3_and_the_next_run_completes(replay_factory, disk, tmp_path):
    """A job without output.dir works in a bag in the temp folder, often a small disk of its
    own: a full one ended in an OSError traceback while the state was copied there."""
    r = replay_factory(faults="change=0.5")
    job = _job(tmp_path, r.url)
    job.write_text(job.read_text().replace("recheck_after = 3600", "recheck_after = 0"))
    first = run_cli("run", str(job), "--quiet")
    assert first.returncode == 0, first.stdout + first.stderr
    folder = tmp_path / "manifests"
    before = (folder / "provenance.jsonl").read_bytes()
    r.replay.epoch = 2  # half the actas change: the next run downloads them into the temp folder
    for free_kib in (64, 600, 1500):
        filler = _leave_free(disk, free_kib)
        for command in ([sys.executable, "-m", "mirror", "run", str(job), "--quiet"],
                        [sys.executable, str(ROOT / "scripts" / "mirror_job.py"), "run", str(job)]):
            proc = subprocess.run(command, capture_output=True, text=True,
                                  timeout=HANG, env={**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(disk)})
            assert "Traceback" not in proc.stderr, proc.stderr
            _one_line_exit_3(proc)
            assert (folder / "provenance.jsonl").read_bytes() == before  # the state is as it was
        filler.unlink()
    again = run_cli("run", str(job), "--quiet", env={"TMPDIR": str(disk)})
    assert again.returncode == 0, again.stdout + again.stderr
    assert (folder / "provenance.jsonl").read_bytes().startswith(before)
    assert len((folder / "provenance.jsonl").read_bytes()) > len(before)


# -- a sandbox without /proc ------------------------------------------------------------------------------
def test_the_workflow_script_signs_where_proc_is_not_mounted(site, tmp_path):
    """The key given as text lived in a memfd read through /proc/self/fd: in a sandbox or
    chroot without /proc the run refused it ('sign.key: /proc/self/fd/3: no such file', exit 2)."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("unmounting /proc in a mount namespace of its own needs root and unshare")
    keygen(tmp_path)
    job = _job(tmp_path, site.url)
    job.write_text(job.read_text().replace("required = false", "required = true"))
    temp = tmp_path / "tmp"
    temp.mkdir()
    script = ROOT / "scripts" / "mirror_job.py"
    proc = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                           f'umount -l /proc && exec "{sys.executable}" "{script}" run "{job}"'],
                          capture_output=True, text=True, timeout=HANG,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(temp),
                               "ACTA_MIRROR_SIGN_KEY": (tmp_path / "k.key").read_text()})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    signed = subprocess.run(["minisign", "-Vm", "signed-root.json", "-p", str(tmp_path / "k.pub")],
                            cwd=tmp_path / "manifests", capture_output=True, text=True)
    assert signed.returncode == 0, signed.stdout + signed.stderr
    assert list(temp.iterdir()) == []  # and no copy of the key is left


# -- no home folder ------------------------------------------------------------------------------------------
def test_a_user_without_a_home_crawls_and_is_told_what_publishing_needs(site, tmp_path):
    """HOME unset and a user ID with no entry in the password database (a container run under
    an arbitrary user ID): every crawl and run ended in a RuntimeError traceback, looking for a
    user config file that could not exist."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("a user ID without a password entry needs a user namespace (root, unshare)")
    env = {k: v for k, v in os.environ.items() if k not in ("HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME")}
    env["PYTHONPATH"] = str(ROOT)

    def nobody_known(*args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run(["unshare", "--user", "--map-user=54321", sys.executable, "-m", "mirror", *args],
                              capture_output=True, text=True, env=env, cwd=tmp_path, timeout=HANG)
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    probe = subprocess.run(["unshare", "--user", "--map-user=54321", sys.executable, "-c", "import pycurl"],
                           capture_output=True, env=env)
    if probe.returncode != 0:
        pytest.skip("this machine allows no user namespace, or its Python cannot be read from one")
    out = tmp_path / "m"
    proc = nobody_known("crawl", "resultados2024", "--root", site.url, "--out", str(out), "--quiet",
                        "--index", _first_rows(site, tmp_path, 4))  # 4 actas: each costs the OCR below a second
    assert proc.returncode == 0, proc.stderr
    assert verify(out) == []
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    proc = nobody_known("publish", str(out), "--to", f"git+file://{remote}")
    assert proc.returncode == 2 and "XDG_CACHE_HOME" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    proc = nobody_known("tally", str(out), "--ocr")  # readings of the prints: kept nowhere, not in ./~
    assert proc.returncode in (0, 1) and "tables" in proc.stdout, proc.stdout + proc.stderr
    assert not (tmp_path / "~").exists() and not (tmp_path / ".cache").exists()


def test_a_quarantine_the_disk_refuses_is_exit_3_and_the_orphan_stays_where_it_was(site, tmp_path):
    """A file a killed run renamed into data/ and never recorded is set aside in
    .acta-mirror/quarantine by the next run; a quarantine folder the disk refused (read-only,
    full) ended that run in a traceback."""
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root")
    out = tmp_path / "m"
    assert _crawl(site, out, "--index", _first_rows(site, tmp_path, 6)).returncode == 0
    (out / ".acta-mirror" / "index.sqlite").unlink()  # as a killed run leaves it: rebuilt, data/ walked
    folder = next(p for p in (out / "data").rglob("*") if p.is_file() and "index" not in p.parts).parent
    orphan = folder / "999999999.01.jpg"
    orphan.write_bytes(b"renamed into data/ by a run killed before it was recorded")
    quarantine = out / ".acta-mirror" / "quarantine"
    quarantine.mkdir()
    subprocess.run(["mount", "--bind", str(quarantine), str(quarantine)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(quarantine)], check=True)
        refused = _crawl(site, out)
        _one_line_exit_3(refused)
        assert "Read-only file system" in refused.stderr and orphan.exists()
    finally:
        subprocess.run(["umount", "-l", str(quarantine)], check=False)
    again = _crawl(site, out)
    assert again.returncode == 0, again.stderr
    assert not orphan.exists() and "quarantined" in again.stderr
    assert verify(out) == []


def test_a_run_that_waited_for_the_lock_keeps_the_folder_the_first_run_made_and_gave_up(site, tmp_path):
    """A first crawl into a new folder finds its root unreachable; a second, started meanwhile
    with --wait-lock, gets the lock when the first ends, and the first then removed the folder
    it had made, lock and index included, under the second: exit 3 ('cannot write the index')."""
    out = tmp_path / "m"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen([sys.executable, "-m", "mirror", "crawl", "resultados2024", "--root",
                              "http://127.0.0.1:9", "--out", str(out), "--quiet"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while not (out / ".acta-mirror" / "lock").exists():
            assert first.poll() is None, first.communicate()
            time.sleep(0.01)
        second = _crawl(site, out, "--wait-lock")  # waits for the first, which retries for seconds
    finally:
        first.communicate(timeout=HANG)
    assert first.returncode == 2  # the root is unreachable
    assert second.returncode == 0, second.stdout + second.stderr
    assert _records(out) and verify(out) == []


def test_a_full_disk_under_publish_staging_is_exit_3_and_one_line(site, disk, tmp_path):
    """Git's staging copy lives in the user's cache folder; a full disk there was a four-line
    git message, exit 1 and advice about the URL and credentials, as if the remote were at fault."""
    out = tmp_path / "m"
    assert _crawl(site, out).returncode == 0
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    _leave_free(disk, 64)
    proc = run_cli("publish", str(out), "--to", f"git+file://{remote}", env={"XDG_CACHE_HOME": str(disk)})
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 3 and len(lines) == 1, proc.stderr
    assert "No space left on device" in lines[0] and "credentials" not in lines[0], lines
    assert verify(out) == []
