"""Adversarial review of the day's features: each test failed on the code before its fix."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from mirror import fetch
from mirror.config import load_job
from mirror.job import run_job
from mirror.jobstate import CHECKS
from mirror.manifest import read_provenance
from tests.conftest import run_cli
from tests.test_jobstate_checks import LONG_AGO, _checks, _job, _requests, _run_long_ago



@pytest.mark.parametrize("kind", ["directory", "symlink", "fifo"])
def test_a_checked_txt_that_is_not_a_regular_file_is_ignored_and_replaced(replay, tmp_path, monkeypatch, kind):
    job = _job(tmp_path, replay.url)
    folder = tmp_path / "manifests"
    lines = _run_long_ago(job, monkeypatch)
    outside = tmp_path / "outside.txt"
    outside.write_text(f"{int(time.time())} {lines}\n")  # would spare every URL if it were read
    (folder / CHECKS).unlink()
    if kind == "directory":
        (folder / CHECKS).mkdir()
    elif kind == "symlink":
        (folder / CHECKS).symlink_to(outside)
    else:
        os.mkfifo(folder / CHECKS)
    proc = run_cli("run", str(job), "--quiet")
    assert "Traceback" not in proc.stderr
    if kind == "directory":  # cannot be replaced: one line that says what to do, every run alike
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert f"{folder / CHECKS}: a folder where the job's check times belong; remove it" in proc.stderr
        return
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _requests(proc) == lines, proc.stdout  # the index and every acta: the file was not believed
    assert outside.read_text() == f"{outside.read_text().split()[0]} {lines}\n"  # untouched
    assert (folder / CHECKS).is_file() and not (folder / CHECKS).is_symlink()
    assert sum(count for _when, count in _checks(folder)) == lines



@pytest.fixture
def site():
    from tests.hostile_site import HostileSite

    with HostileSite() as s:
        yield s


def test_sigterm_stops_a_crawl_started_with_ctrl_c_ignored(site, tmp_path):
    """A command started in the background by a shell (`acta-mirror run job.toml &`, nohup, some
    schedulers) inherits SIGINT ignored: SIGTERM, passed on as SIGINT, was ignored too, and the
    crawl ran on until killed."""
    import signal
    import subprocess
    import sys

    from tests.conftest import ROOT
    from tests.hostile_site import key_of
    from tests.test_hostile_site import assert_sound, serve_with_slow_tail, stop_after_six

    serve_with_slow_tail(site, 6, 10)
    out = tmp_path / "m"
    proc = subprocess.Popen([sys.executable, "-m", "mirror", "crawl", "resultados2024", "--root", site.url,
                             "--out", str(out), "--quiet", "--timeout", "600"],
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    err = stop_after_six(proc, out / "provenance.jsonl", signal.SIGTERM)  # the slow tail takes minutes
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted; re-run to resume" in err
    assert_sound(out, [key_of(i) for i in range(6)])



def test_the_workflow_merge_of_too_few_shards_is_not_a_success(replay, tmp_path):
    """`merge JOB shards/*` when a shard's artifact never came: the glob does not name it, so
    only the tables it would hold can tell (acta-mirror merge already exits 1 on them)."""
    import subprocess
    import sys

    from tests.conftest import ROOT
    from tests.test_jobs import write_job

    job = write_job(tmp_path, replay.url)
    script = [sys.executable, str(ROOT / "scripts" / "mirror_job.py")]
    env = {k: v for k, v in os.environ.items() if k != "ACTA_MIRROR_SIGN_KEY"}
    step = subprocess.run([*script, "crawl", str(job), "--shard", "1/2"], env=env, capture_output=True, text=True)
    assert step.returncode == 0, step.stderr
    step = subprocess.run([*script, "merge", str(job), str(tmp_path / "mirror.shard-1-of-2")], env=env,
                          capture_output=True, text=True)
    assert "Traceback" not in step.stderr, step.stderr
    assert step.returncode == 1, step.stdout + step.stderr
    assert "tables the index lists are not in the merged mirror" in step.stderr


def test_a_token_in_a_mistyped_job_file_url_is_not_printed(tmp_path):
    """The job file is read before any URL of it is registered as holding a secret: its error
    quoted the value whole (a string given where a list belongs, a common slip)."""
    secret = "SeCrEt-SiGnAtUrE-123"
    job = tmp_path / "job.toml"
    job.write_text(f'[source]\nsite = "resultados2024"\nroot = "http://127.0.0.1:9/"\n'
                   f'alternates = "http://127.0.0.1:9/b/?X-Amz-Signature={secret}&x=1"\n'
                   '[publish]\nallow_none = true\n')
    proc = run_cli("run", str(job), env={"GITHUB_ACTIONS": "true"})  # the ::error:: line quotes it too
    assert proc.returncode == 2, proc.stderr
    assert "source.alternates: must be list" in proc.stderr and "X-Amz-Signature=***&x=1" in proc.stderr
    assert secret not in proc.stdout + proc.stderr


def test_an_alternate_with_a_token_gets_the_path_before_its_query(site, tmp_path):
    """README: a signed link to a bucket (a container-wide token) as --alternate. The acta's path
    was appended after the query ('/?token=...' + '/img/0.jpg'): every alternate request asked
    for the bucket's root with a token that ended in the path."""
    import json

    from aiohttp import web

    from tests.hostile_site import HostileSite, index_row, jpeg
    from tests.test_hostile_more import crawl

    secret = "BuCkEt-ToKeN-42"
    site.serve_index([index_row(0, f"{site.url}/img/0.jpg")])  # the primary has lost the image: 404
    with HostileSite() as bucket:
        async def signed(request):
            if request.query.get("token") != secret:
                return web.Response(status=403)
            return web.Response(body=jpeg(0), headers={"Content-Type": "image/jpeg"})

        bucket.routes["/b/img/0.jpg"] = signed
        out = tmp_path / "m"
        proc = crawl(site.url, out, "--alternate", f"{bucket.url}/b/?token={secret}", "--json")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert json.loads(proc.stdout)["archived"] == 1
        assert secret not in proc.stdout + proc.stderr + (out / "provenance.jsonl").read_text()


def test_urls_over_the_limit_of_one_acta_are_counted_among_the_discovered(site, tmp_path):
    """Each URL listed ends as one of archived, unchanged, not asked, failed or deferred: a URL
    refused as one too many for its acta was counted failed but never discovered."""
    import json

    from tests.hostile_site import body, index_row, jpeg
    from tests.test_hostile_more import crawl

    rows = site.good_actas(2)
    for j in range(6):
        site.routes[f"/dup/{j}.jpg"] = body(jpeg(500 + j))
        rows.append(index_row(77, f"{site.url}/dup/{j}.jpg"))
    site.serve_index(rows)
    proc = crawl(site.url, tmp_path / "m", "--json")
    c = json.loads(proc.stdout)
    assert c["discovered"] == c["archived"] + c["unchanged"] + c["not_asked"] + c["failed"] + c["deferred"], c
    assert c["discovered"] == 8 and c["rows"] == 8


def test_the_dry_run_of_a_job_without_a_local_mirror_plans_from_its_manifests(replay, tmp_path, monkeypatch):
    """It planned against the local mirror the job does not keep: every acta 'new', though the
    run itself downloads none and, with its check times, asks about none."""
    job = _job(tmp_path, replay.url)
    actas = _run_long_ago(job, monkeypatch) - 1
    proc = run_cli("run", str(job), "--dry-run")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"new: 0 of {actas} would be downloaded" in proc.stdout, proc.stdout
    assert f"recent: {actas} of {actas} were checked within --recheck-after" in proc.stdout
    assert not (tmp_path / "mirror").exists()
    run = run_cli("run", str(job), "--quiet")
    assert _requests(run) == 1, run.stdout  # what the plan said: the index only


def test_check_times_of_another_provenance_are_not_believed(replay, site, tmp_path, monkeypatch):
    """checked.txt counts provenance lines, not URLs: one written for another folder's lines
    (copied, or left when the records were replaced) named this folder's actas as checked."""
    job = _job(tmp_path, replay.url)
    folder = tmp_path / "manifests"
    monkeypatch.setattr(fetch, "utc_now", lambda: LONG_AGO)
    assert run_job(load_job(job)).ok
    site.serve_index(site.good_actas(5))
    other = tmp_path / "other"
    other.mkdir()
    assert run_job(load_job(_job(other, site.url))).ok
    monkeypatch.undo()
    lines = len(read_provenance(folder / "provenance.jsonl"))
    assert sum(count for _when, count in _checks(other / "manifests")) == 6 < lines
    (folder / CHECKS).write_bytes((other / "manifests" / CHECKS).read_bytes())  # checked just now, elsewhere
    proc = run_cli("run", str(job), "--quiet")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _requests(proc) == lines, proc.stdout  # the index and every acta: none of them was checked


def test_check_times_written_by_hand_for_these_lines_are_believed(replay, tmp_path, monkeypatch):
    """The other side of the sha256: times for exactly these lines still spare their URLs."""
    import hashlib

    job = _job(tmp_path, replay.url)
    folder = tmp_path / "manifests"
    lines = _run_long_ago(job, monkeypatch)
    covered = hashlib.sha256((folder / "provenance.jsonl").read_bytes()).hexdigest()
    (folder / CHECKS).write_text(f"sha256 {covered}\r\n{int(time.time())} {lines}\r\n")  # CRLF too
    proc = run_cli("run", str(job), "--quiet")
    assert _requests(proc) == 1, proc.stdout


def test_a_manifests_folder_that_refuses_writes_is_one_line(replay, tmp_path, monkeypatch):
    """The run must write the check times into a folder the disk refuses (chattr +i: refused
    even to root): exit 3 with one line, not a traceback."""
    import shutil
    import subprocess

    job = _job(tmp_path, replay.url)
    folder = tmp_path / "manifests"
    _run_long_ago(job, monkeypatch)
    (folder / CHECKS).unlink()  # this run has check times to write
    if not shutil.which("chattr") or subprocess.run(["chattr", "+i", str(folder)]).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        proc = run_cli("run", str(job), "--quiet", check_traceback=False)
    finally:
        subprocess.run(["chattr", "-i", str(folder)])
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and f"writing {CHECKS} into {folder}" in proc.stderr, proc.stderr


def test_the_workflow_script_leaves_no_copy_of_the_signing_key(replay, tmp_path):
    """ACTA_MIRROR_SIGN_KEY (a CI secret) was written to a temp file that was never removed: on a
    self-hosted runner or a laptop, every run left the secret key in the temp folder."""
    import subprocess
    import sys

    from tests.conftest import ROOT
    from tests.test_jobs import write_job

    assert run_cli("keygen", "--out", str(tmp_path / "k")).returncode == 0
    temp = tmp_path / "temp"
    temp.mkdir()
    job = write_job(tmp_path, replay.url)
    env = {**os.environ, "ACTA_MIRROR_SIGN_KEY": (tmp_path / "k.key").read_text(), "TMPDIR": str(temp)}
    env.pop("ACTA_MIRROR_SIGN_KEY_FILE", None)
    step = subprocess.run([sys.executable, str(ROOT / "scripts" / "mirror_job.py"), "crawl", str(job), "--shard", "1/2"],
                          env=env, capture_output=True, text=True)
    assert step.returncode == 0, step.stdout + step.stderr
    secret = (tmp_path / "k.key").read_bytes().strip()
    left = [p.name for p in temp.rglob("*") if p.is_file() and secret in p.read_bytes()]
    assert left == []


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM", "SIGKILL"])
def test_the_workflow_script_stopped_leaves_no_key_and_no_traceback(site, tmp_path, sig):
    """A cancelled workflow sends SIGINT, then SIGTERM: the script (which does not go through
    acta-mirror's main) printed a traceback, or died with the key file left behind. A run killed
    with -9 (out of memory or time) runs no exit handler at all: the key given as text must never
    have been a file that outlives the process."""
    import signal
    import subprocess
    import sys

    from tests.conftest import ROOT
    from tests.test_hostile_site import serve_with_slow_tail, stop_after_six
    from tests.test_jobs import write_job

    serve_with_slow_tail(site, 6, 10)
    assert run_cli("keygen", "--out", str(tmp_path / "k")).returncode == 0
    temp = tmp_path / "temp"
    temp.mkdir()
    job = write_job(tmp_path, site.url)
    env = {**os.environ, "ACTA_MIRROR_SIGN_KEY": (tmp_path / "k.key").read_text(), "TMPDIR": str(temp),
           "PYTHONPATH": str(ROOT)}
    env.pop("ACTA_MIRROR_SIGN_KEY_FILE", None)
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "mirror_job.py"), "crawl", str(job)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err = stop_after_six(proc, tmp_path / "mirror" / "provenance.jsonl", getattr(signal, sig))
    if sig == "SIGKILL":
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode == 130, err
        assert "Traceback" not in err and "interrupted; re-run to resume" in err
    secret = (tmp_path / "k.key").read_bytes().strip()
    left = [p.name for p in temp.rglob("*") if p.is_file() and secret in p.read_bytes()]
    assert left == []


def test_the_password_of_an_alternate_is_not_in_the_reason_it_failed(site, tmp_path):
    """An acta that failed on the root and on an alternate is recorded with each host's reason,
    the alternate named by its netloc: 'user:password@host' has no scheme, so the redaction of
    URLs did not see it and failures.jsonl and the output kept the password."""
    from tests.hostile_site import HostileSite, index_row
    from tests.test_hostile_more import crawl

    site.serve_index([index_row(0, f"{site.url}/img/0.jpg")])  # 404 on the root...
    with HostileSite() as bucket:  # ...and on the alternate
        out = tmp_path / "m"
        host = bucket.url.split("://", 1)[1]
        proc = crawl(site.url, out, "--alternate", f"http://reader:pa55w0rd-XYZ@{host}/", "-v")
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "HTTP 404" in (out / "failures.jsonl").read_text()
        assert _leaks(out, proc.stdout + proc.stderr, "pa55w0rd-XYZ") == []


def _leaks(out: Path, text: str, needle: str) -> list[str]:
    found = [p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]
    return found + (["the output"] if needle in text else [])
