"""A scheduled job without a local mirror keeps its check times (checked.txt in the manifests
folder): fetch.recheck_after counts from the last check, not from the fetch."""
from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path

from mirror import fetch
from mirror.config import load_job
from mirror.job import run_job
from mirror.jobstate import CHECKS
from mirror.manifest import read_provenance
from tests.conftest import run_cli

LONG_AGO = "2020-01-01T00:00:00.000000Z"


def _job(tmp_path: Path, url: str) -> Path:
    job = tmp_path / "job.toml"
    job.write_text(f"""
[source]
site = "resultados2024"
root = "{url}"

[publish]
manifests = "manifests"
allow_none = true

[fetch]
recheck_after = 3600
processes = 1

[sign]
required = false
""")
    return job


def _run_long_ago(job: Path, monkeypatch) -> int:
    """Run the job in this process as if its files were fetched years ago; the number of
    provenance lines its manifests folder then holds."""
    with monkeypatch.context() as m:
        m.setattr(fetch, "utc_now", lambda: LONG_AGO)
        report = run_job(load_job(job))
    assert report.ok, report.problems
    return len(read_provenance(job.parent / "manifests" / "provenance.jsonl"))


def _requests(proc) -> int:
    found = re.search(r"retries in (\d+) requests", proc.stdout)
    assert found, proc.stdout + proc.stderr
    return int(found.group(1))


def _checks(folder: Path) -> list[tuple[int, int]]:
    return [tuple(map(int, line.split())) for line in (folder / CHECKS).read_text().splitlines()
            if not line.startswith(("#", "sha256 "))]


def test_a_url_checked_recently_is_not_asked_again_though_fetched_long_ago(replay, tmp_path, monkeypatch):
    job = _job(tmp_path, replay.url)
    folder = tmp_path / "manifests"
    lines = _run_long_ago(job, monkeypatch)  # the files were fetched years ago...
    actas = lines - 1  # one line is the index
    assert all(e.fetched_at == LONG_AGO for e in read_provenance(folder / "provenance.jsonl"))
    checks = _checks(folder)  # ...and found unchanged (here: fetched) just now
    assert sum(count for _when, count in checks) == lines
    assert all(when > time.time() - 2 * 3600 for when, _count in checks)

    second = run_cli("run", str(job), "--quiet")
    assert second.returncode == 0, second.stdout + second.stderr
    assert _requests(second) == 1, second.stdout  # the index only: every acta was checked within the hour
    assert f"0 unchanged, {actas} not asked (checked within recheck_after)" in second.stdout  # none said unchanged

    (folder / CHECKS).write_text("not a check time\n")  # unreadable: every URL counts from its fetch
    third = run_cli("run", str(job), "--quiet")
    assert third.returncode == 0, third.stdout + third.stderr
    assert _requests(third) == 1 + actas, third.stdout
    assert "but for checked.txt, the check times" in third.stdout  # nothing new, the check times written
    assert sum(count for _when, count in _checks(folder)) == lines


def test_check_times_that_claim_too_much_are_not_believed(replay, tmp_path, monkeypatch):
    job = _job(tmp_path, replay.url)
    folder = tmp_path / "manifests"
    lines = _run_long_ago(job, monkeypatch)
    (folder / CHECKS).write_text(f"{int(time.time())} {lines + 1}\n")  # more lines than the provenance has
    proc = run_cli("run", str(job), "--quiet")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _requests(proc) == lines, proc.stdout  # the index and every acta: the file was ignored
    old = int(time.time()) - 3 * 3600
    covered = hashlib.sha256((folder / "provenance.jsonl").read_bytes()).hexdigest()  # of the lines it covers
    (folder / CHECKS).write_text(f"sha256 {covered}\n{old} {lines}\n")  # checked three hours ago: due again
    proc = run_cli("run", str(job), "--quiet")
    assert _requests(proc) == lines, proc.stdout
    assert _checks(folder)[0][0] > old  # and now checked again


def test_a_job_that_drops_its_local_mirror_keeps_its_check_times(replay, tmp_path, monkeypatch):
    job = _job(tmp_path, replay.url)
    job.write_text(job.read_text().replace("[publish]", '[output]\ndir = "mirror"\n\n[publish]'))
    lines = _run_long_ago(job, monkeypatch)  # a full local mirror, which also writes the manifests folder
    assert sum(count for _when, count in _checks(tmp_path / "manifests")) == lines
    job.write_text(job.read_text().replace('[output]\ndir = "mirror"\n\n', ""))
    proc = run_cli("run", str(job), "--quiet")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _requests(proc) == 1, proc.stdout


def test_a_local_job_never_replaces_the_state_another_mirror_saved(replay_factory, tmp_path):
    """A job with output.dir copies its mirror's state into the manifests folder at the end:
    pointed at a folder a scheduled job had filled (another site, or another mirror), it
    replaced that folder's records with its own, exit 0, where the scheduled job itself refuses
    a provenance that does not grow. Refused now, before anything is crawled, and the folder
    keeps every record."""
    scheduled, other = replay_factory(limit=6), replay_factory(limit=3)
    assert run_cli("run", str(_job(tmp_path, scheduled.url)), "--quiet").returncode == 0
    folder = tmp_path / "manifests"
    saved = (folder / "provenance.jsonl").read_bytes()
    local = tmp_path / "local.toml"
    local.write_text(_job(tmp_path, other.url).read_text().replace("[publish]", '[output]\ndir = "mirror"\n\n[publish]'))
    proc = run_cli("run", str(local), "--quiet")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stdout + proc.stderr
    records = len(saved.splitlines())
    assert f"{folder / 'provenance.jsonl'}: its {records} records are not where" in proc.stderr
    assert (folder / "provenance.jsonl").read_bytes() == saved and not (tmp_path / "mirror").exists()
    fresh = tmp_path / "fresh.toml"  # a folder of its own: the local job saves into it, and again on a re-run
    fresh.write_text(local.read_text().replace('manifests = "manifests"', 'manifests = "own"'))
    for _ in range(2):
        assert run_cli("run", str(fresh), "--quiet").returncode == 0
    assert (tmp_path / "own" / "provenance.jsonl").read_bytes() == (tmp_path / "mirror" / "provenance.jsonl").read_bytes()
