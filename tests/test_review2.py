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
from tests.test_jobstate_checks import LONG_AGO, _checks, _job, _requests


@pytest.mark.parametrize("kind", ["directory", "symlink", "fifo"])
def test_a_checked_txt_that_is_not_a_regular_file_is_ignored_and_replaced(replay, tmp_path, monkeypatch, kind):
    job = _job(tmp_path, replay.url)
    folder = tmp_path / "manifests"
    monkeypatch.setattr(fetch, "utc_now", lambda: LONG_AGO)
    assert run_job(load_job(job)).ok
    monkeypatch.undo()
    lines = len(read_provenance(folder / "provenance.jsonl"))
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
