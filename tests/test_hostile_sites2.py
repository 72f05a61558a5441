"""A second round against hostile sites and broken job files: bytes outside ASCII in headers both
ways, Retry-After in odd digits, job-file values no path or URL can hold.

Each test found a defect (fixed since) and runs the real command line against
tests/hostile_site.py on loopback; a traceback always fails it (run_cli).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from mirror.verify import verify
from tests.conftest import run_cli
from tests.hostile_site import HostileSite, body, index_row, jpeg, key_of, raw, sequence
from tests.test_hostile_site import archived

SECRET = "tok3n-S3CRET"


@pytest.fixture
def site():
    with HostileSite() as s:
        yield s


def crawl(root: str, out: Path, *flags: str):
    return run_cli("crawl", "resultados2024", "--root", root, "--out", str(out), "--quiet", "--timeout", "5",
                   *flags, timeout=120)


def failures(out: Path) -> list[dict]:
    path = out / "failures.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def one_line(proc) -> bool:
    return len(proc.stderr.strip().splitlines()) == 1


def write_job(tmp_path: Path, root: str, extra: str) -> Path:
    job = tmp_path / "job.toml"
    job.write_text(f"[source]\nsite = 'resultados2024'\nroot = '{root}'\n{extra}")
    return job


# -- a header value outside ASCII in a flag or a job file ---------------------------------------
@pytest.mark.parametrize("flags,needle", [(["--header", "Referer: https://example.org/año"], "--header"),
                                          (["--user-agent", "añejo/1.0"], "user_agent")], ids=["header", "user-agent"])
def test_a_header_outside_ascii_in_the_flags_is_refused_before_any_request(site, tmp_path, flags, needle):
    """Was: every request failed as 'unexpected UnicodeEncodeError', and the run ended with
    'cannot read the index ... check --root and the network': the user's typo blamed on the site."""
    site.serve_index(site.good_actas(1))
    proc = crawl(site.url, tmp_path / "m", *flags)
    assert proc.returncode == 2 and one_line(proc) and needle in proc.stderr, proc.stderr
    assert "network" not in proc.stderr and not site.hits and not (tmp_path / "m").exists()


@pytest.mark.parametrize("extra,key", [
    (f"[fetch]\nheaders = {{ Authorization = 'Bearer {SECRET}ñ' }}\n", "fetch.headers"),
    ("[fetch]\nuser_agent = 'añejo/1.0'\n", "fetch.user_agent"),
], ids=["header", "user-agent"])
def test_a_header_outside_ascii_in_a_job_file_is_one_line_naming_the_key(site, tmp_path, extra, key):
    site.serve_index(site.good_actas(1))
    job = write_job(tmp_path, site.url, extra + "[publish]\nallow_none = true\n[sign]\nrequired = false\n")
    proc = run_cli("run", str(job), "--no-publish", timeout=120)
    assert proc.returncode == 2 and one_line(proc) and key in proc.stderr and str(job) in proc.stderr, proc.stderr
    assert SECRET not in proc.stdout + proc.stderr and not site.hits
