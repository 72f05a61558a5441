"""Scheduled runs from the manifests folder: no local mirror, only the delta downloaded and published."""
from __future__ import annotations

import json
import os
import shutil
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mirror.ipfsnode import IpfsNode
from mirror.state import iter_records
from tests.conftest import ROOT, run_cli


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    with IpfsNode(tmp_path_factory.mktemp("ipfs") / "repo") as n:
        yield n


def write_job(tmp_path: Path, url: str, targets: str, sign: str = 'key = "k.key"') -> Path:
    job = tmp_path / "mirror.toml"
    job.write_text(f'[source]\nsite = "resultados2024"\nroot = "{url}"\n\n'
                   f'[publish]\n{targets}\nmanifests = "manifests"\n\n[sign]\n{sign}\n')
    return job


def keygen(tmp_path: Path) -> None:
    assert run_cli("keygen", "--out", str(tmp_path / "k")).returncode == 0


def counting_git(tmp_path: Path, log: Path) -> dict[str, str]:
    """An environment whose git logs the bytes of every pack a (local) remote sends."""
    hook = tmp_path / "count-pack.sh"
    hook.write_text(f'#!/bin/sh\nout=$(mktemp)\n"$@" > "$out" || exit 1\n'
                    f'echo "$(wc -c < "$out") $*" >> {log}\ncat "$out"\nrm -f "$out"\n')
    hook.chmod(0o755)
    config = tmp_path / "gitconfig"
    config.write_text(f"[uploadpack]\n\tpackObjectsHook = {hook}\n")
    return {"GIT_CONFIG_GLOBAL": str(config)}


def commits(repo: Path) -> int:
    return int(subprocess.run(["git", "-C", str(repo), "rev-list", "--count", "main"], capture_output=True,
                              text=True, check=True).stdout)


def changing(replay) -> list[str]:
    return [n for n in replay.replay.rows if (k := replay.replay.faults.kind_for(n)) and k.kind == "change"]


def test_runs_from_the_manifests_folder_download_and_publish_only_the_delta(replay_factory, node, tmp_path):
    r = replay_factory(faults="change=0.1")
    keygen(tmp_path)
    remote = tmp_path / "remotes" / "actas.git"
    job = write_job(tmp_path, r.url, f'git = ["git+file://{remote}"]\nipfs = ["{node.target}"]')
    folder = tmp_path / "manifests"

    first = run_cli("run", str(job), "--quiet")
    assert first.returncode == 0, first.stdout + first.stderr
    assert not (tmp_path / "mirror").exists()  # no local mirror: the folder is the state
    records = list(iter_records(folder / "provenance.jsonl"))
    assert len(records) > 40 and all(rec.entry.etag or rec.entry.last_modified for rec in records)
    saved = {p.name: p.read_bytes() for p in folder.iterdir()}
    pushed = commits(remote)

    # A fresh runner: nothing but the job file and the folder. Nothing changed upstream.
    before = r.replay.stats.copy()
    second = run_cli("run", str(job), "--quiet")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "0 archived" in second.stdout and "nothing changed" in second.stdout
    asked = r.replay.stats - before
    assert asked["not_modified"] == len(records) - 1 and asked["bodies"] <= 1  # every image asked, the index read
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == saved  # nothing to commit
    assert commits(remote) == pushed

    r.replay.epoch = 2
    sent = tmp_path / "sent.log"
    before = r.replay.stats.copy()
    third = run_cli("run", str(job), "--quiet", env=counting_git(tmp_path, sent))
    assert third.returncode == 0, third.stdout + third.stderr
    # each changed acta's bytes come once (its confirmation is a conditional request), plus the index
    assert (r.replay.stats - before)["bodies"] == len(changing(r)) + 1
    # What the remote sent this run: tree and commit objects and a few tag files, never the
    # shard's payload (the archive holds more than 5 MB: the index alone).
    sizes = [int(line.split()[0]) for line in sent.read_text().splitlines()]
    archive = sum(rec.size for rec in records)
    assert sizes and archive > 5_000_000 and sum(sizes) < archive / 10, (sizes, archive)
    changed = changing(r)
    assert changed and f"{len(changed)} archived" in third.stdout
    assert f"state: {len(changed)} new file(s)" in third.stdout
    # append-only: the lines of the first run are the new file's first bytes, unchanged
    assert (folder / "provenance.jsonl").read_bytes().startswith(saved["provenance.jsonl"])
    assert (folder / "changes.jsonl").read_bytes().startswith(saved["changes.jsonl"])
    cid = re.search(r"root CID (\w+)", third.stdout).group(1)
    # The signed coverage counts against the index, which the working bag did not hold (it
    # came unchanged): it said 'discovered (the index ... could not be read: FileNotFoundError)'.
    coverage = json.loads((folder / "signed-root.json").read_text())["coverage"]
    assert coverage["source"] == "index data/index/RESULTADOS_2024_CSV_V1.csv", coverage
    assert coverage["tables"] == len({rec.entry.key for rec in records if rec.entry.kind == "acta"}), coverage

    out = tmp_path / "restored"
    restore = run_cli("restore", "--from", f"git+file://{remote}", "--out", str(out))
    assert restore.returncode == 0, restore.stdout + restore.stderr
    assert run_cli("verify", str(out), "--pubkey", str(tmp_path / "k.pub")).returncode == 0
    assert (out / "signed-root.json").read_bytes() == (folder / "signed-root.json").read_bytes()
    keys = {rec.entry.key for rec in iter_records(out / "provenance.jsonl") if rec.entry.version == 2}
    assert len(keys) == len(changed)
    car = run_cli("car", str(out), "--out", str(tmp_path / "restored.car"))
    assert car.returncode == 0 and cid in car.stdout, car.stdout + car.stderr  # the node holds the same copy


def test_a_run_killed_while_publishing_is_done_again_by_the_next(replay_factory, tmp_path):
    r = replay_factory(faults="change=0.1")
    keygen(tmp_path)
    remote = tmp_path / "remotes" / "actas.git"
    job = write_job(tmp_path, r.url, f'git = ["git+file://{remote}"]')
    assert run_cli("run", str(job), "--quiet").returncode == 0
    folder = tmp_path / "manifests"
    saved = {p.name: p.read_bytes() for p in folder.iterdir()}
    # The remote's receive-pack is held long enough to kill the run in the middle of the push (not
    # by a hook of the remote's: a publish runs none).
    started = tmp_path / "push-started"
    wrapper = tmp_path / "bin" / "git"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\ncase " $* " in *" receive-pack "*) touch {started}; sleep 30;; esac\n'
                       f'exec {shutil.which("git")} "$@"\n')
    wrapper.chmod(0o755)
    r.replay.epoch = 2
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PATH": f"{wrapper.parent}{os.pathsep}{os.environ['PATH']}"}
    run = subprocess.Popen([sys.executable, "-m", "mirror", "run", str(job), "--quiet"], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 120
    while not started.exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert started.exists(), "the run never pushed"
    os.killpg(run.pid, signal.SIGKILL)
    run.communicate()
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == saved  # the folder is as it was

    again = run_cli("run", str(job), "--quiet")
    assert again.returncode == 0, again.stdout + again.stderr
    out = tmp_path / "restored"
    assert run_cli("restore", "--from", f"git+file://{remote}", "--out", str(out)).returncode == 0
    assert run_cli("verify", str(out), "--pubkey", str(tmp_path / "k.pub")).returncode == 0
    assert (out / "signed-root.json").read_bytes() == (folder / "signed-root.json").read_bytes()
    assert len({rec.entry.key for rec in iter_records(out / "provenance.jsonl") if rec.entry.version == 2}) \
        == len(changing(r))


@pytest.mark.parametrize("targets,sign,needle", [
    ("", 'key = "k.key"', "no publish targets"),
    ('git = ["git+file://REMOTE"]', "", "no signing key"),
])
def test_a_job_that_would_back_up_nowhere_or_unsigned_fails(replay, tmp_path, targets, sign, needle):
    keygen(tmp_path)
    job = write_job(tmp_path, replay.url, targets.replace("REMOTE", str(tmp_path / "r.git")), sign)
    env = {"GITHUB_ACTIONS": "true", "ACTA_MIRROR_SIGN_KEY_FILE": ""}
    proc = run_cli("run", str(job), "--quiet", env=env)
    assert proc.returncode == 2 and needle in proc.stderr, proc.stdout + proc.stderr
    assert any(line.startswith("::error::") and needle in line for line in proc.stderr.splitlines())
    assert not (tmp_path / "manifests").exists()
    allowed = job.read_text().replace("[publish]\n", "[publish]\nallow_none = true\n") \
        .replace("[sign]\n", "[sign]\nrequired = false\n")
    job.write_text(allowed)
    proc = run_cli("run", str(job), "--quiet", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_tampered_state_is_not_built_on(replay, tmp_path):
    keygen(tmp_path)
    remote = tmp_path / "remotes" / "actas.git"
    job = write_job(tmp_path, replay.url, f'git = ["git+file://{remote}"]')
    assert run_cli("run", str(job), "--quiet").returncode == 0
    provenance = tmp_path / "manifests" / "provenance.jsonl"
    text = provenance.read_text()
    first, rest = text.split("\n", 1)
    line = json.loads(first)
    line["etag"] = '"forged"'  # a valid line, other validators
    provenance.write_text(json.dumps(line, ensure_ascii=False) + "\n" + rest)
    proc = run_cli("run", str(job), "--quiet")
    assert proc.returncode == 2 and "does not match its signature" in proc.stderr, proc.stdout + proc.stderr
    provenance.write_text(text)
    (tmp_path / "other").mkdir()
    keygen(tmp_path / "other")
    other = job.read_text().replace('key = "k.key"', 'key = "other/k.key"')
    job.write_text(other)
    proc = run_cli("run", str(job), "--quiet")
    assert proc.returncode == 2 and "not by this job's key" in proc.stderr, proc.stdout + proc.stderr



def test_a_run_keeps_on_disk_only_the_shards_it_is_pushing(replay, tmp_path):
    """A hosted runner has about twice the archive's size of disk: a scheduled run must not hold a
    second copy of every file in the shards' staging repositories until the last shard is pushed."""
    from mirror.publish.git import PARALLEL_SHARDS

    keygen(tmp_path)
    remote = tmp_path / "remotes" / "actas.git"
    job = write_job(tmp_path, replay.url, f'git = ["git+file://{remote}"]\nmax_repo_bytes = 1')  # a shard a state
    staging = Path(os.environ["XDG_CACHE_HOME"]) / "acta-mirror" / "git"
    log = tmp_path / "staged.log"
    wrapper = tmp_path / "bin" / "git"  # at each push, how many shard staging repositories exist
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\ncase " $* " in *" push "*) ls -d {staging}/*/*.git | wc -l >> {log};; esac\n'
                       f'exec {shutil.which("git")} "$@"\n')
    wrapper.chmod(0o755)
    proc = run_cli("run", str(job), "--quiet", env={"PATH": f"{wrapper.parent}{os.pathsep}{os.environ['PATH']}"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    shards = set(re.findall(r"shard (\d\d):", proc.stdout))
    held = [int(n) for n in log.read_text().split()]
    assert len(shards) > PARALLEL_SHARDS + 1 and len(held) >= len(shards), (shards, held)
    assert max(held) <= PARALLEL_SHARDS, held  # only the shards in hand


def test_a_runs_crawl_display_ends_with_the_crawl_and_the_publish_has_its_own(replay, tmp_path):
    """On a runner's log the crawl's line used to repeat '100%, eta 0s' with a falling rate for
    as long as the publish took (an hour at full size), and the publish said nothing."""
    keygen(tmp_path)
    remote = tmp_path / "remotes" / "actas.git"
    job = write_job(tmp_path, replay.url, f'git = ["git+file://{remote}"]')
    wrapper = tmp_path / "bin" / "git"  # a slow remote: each push takes a second
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\ncase " $* " in *" receive-pack "*) sleep 1;; esac\nexec {shutil.which("git")} "$@"\n')
    wrapper.chmod(0o755)
    env = {"PATH": f"{wrapper.parent}{os.pathsep}{os.environ['PATH']}", "ACTA_MIRROR_PROGRESS_EVERY": "0.1"}
    proc = run_cli("run", str(job), env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [ln.split("] ", 1)[-1] for ln in proc.stderr.splitlines() if ln.startswith("[")]
    crawl = [i for i, ln in enumerate(lines) if ln.startswith("crawl:")]
    publish = [i for i, ln in enumerate(lines) if ln.startswith("publish ")]
    assert crawl and publish, proc.stderr
    assert max(crawl) < min(publish), proc.stderr  # no crawl line while publishing
    assert "took" in lines[max(crawl)], proc.stderr  # the crawl's own last line ends it
    assert any(f"[{shard}]" in lines[i] for i in publish for shard in re.findall(r"shard (\d\d):", proc.stdout)), \
        proc.stderr  # the publish names the shard it pushes
    pushing = [lines[i] for i in publish if "100%" in lines[i] and "took" not in lines[i]]
    assert pushing and all("all counted, finishing" in ln and "eta" not in ln for ln in pushing), proc.stderr
    assert len({re.search(r"([\d.]+)/s", ln).group(1) for ln in pushing}) == 1, proc.stderr  # the rate stays put


def test_the_workflow_step_and_a_node_that_lacks_the_earlier_files(replay_factory, tmp_path):
    r = replay_factory(faults="change=0.1")
    keygen(tmp_path)
    remote = tmp_path / "remotes" / "actas.git"
    job = write_job(tmp_path, r.url, f'git = ["git+file://{remote}"]', sign="")
    script = [sys.executable, str(ROOT / "scripts" / "mirror_job.py"), "run", str(job)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GITHUB_ACTIONS": "true", "ACTA_MIRROR_SIGN_KEY": ""}
    env.pop("ACTA_MIRROR_SIGN_KEY_FILE", None)
    refused = subprocess.run(script, env=env, capture_output=True, text=True)
    assert refused.returncode == 2 and "::error::" in refused.stderr and "no signing key" in refused.stderr
    env["ACTA_MIRROR_SIGN_KEY"] = (tmp_path / "k.key").read_text()  # the secret's text, as in Actions
    step = subprocess.run(script, env=env, capture_output=True, text=True)
    assert step.returncode == 0, step.stdout + step.stderr
    assert (tmp_path / "manifests" / "signed-root.json.minisig").exists()
    # A node that never received the earlier files cannot take a delta: one clear line, exit 1,
    # and the folder stays as it was so the next run tries again.
    saved = (tmp_path / "manifests" / "provenance.jsonl").read_bytes()
    with IpfsNode(tmp_path / "fresh") as fresh:
        job.write_text(job.read_text().replace("[publish]\n", f'[publish]\nipfs = ["{fresh.target}"]\n'))
        r.replay.epoch = 2
        lacking = subprocess.run(script, env=env, capture_output=True, text=True)
    assert lacking.returncode == 1 and "the node lacks" in lacking.stderr, lacking.stdout + lacking.stderr
    assert "::error::" in lacking.stderr
    assert (tmp_path / "manifests" / "provenance.jsonl").read_bytes() == saved


def test_a_target_new_to_the_job_is_sent_the_state_even_when_nothing_changed(replay_factory, tmp_path):
    """A run from the manifests folder that found nothing new published nothing and exited 0,
    so a target added to the job (an empty repository) was passed over for ever. The folder now
    names who took its state (targets.txt); a target it does not name is sent the unchanged
    state: the empty one refuses (exit 1, with the way out), and once it holds the mirror the
    run records it and exits 0. A folder without targets.txt (saved before it) checks every
    target once."""
    r = replay_factory()
    keygen(tmp_path)
    first_remote, second_remote = tmp_path / "remotes" / "a.git", tmp_path / "remotes" / "b.git"
    job = write_job(tmp_path, r.url, f'git = ["git+file://{first_remote}"]')
    folder = tmp_path / "manifests"
    first = run_cli("run", str(job), "--quiet")
    assert first.returncode == 0, first.stdout + first.stderr
    assert (folder / "targets.txt").read_text() == f"git+file://{first_remote}\n"
    pushed = commits(first_remote)

    job = write_job(tmp_path, r.url, f'git = ["git+file://{first_remote}", "git+file://{second_remote}"]')
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(second_remote)], check=True)
    saved = {p.name: p.read_bytes() for p in folder.iterdir()}
    plan = run_cli("run", str(job), "--dry-run")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert f"publish: 1 target(s) not named in {folder / 'targets.txt'} as holding the state, sent it even if " \
           f"nothing changed: git+file://{second_remote}" in plan.stdout, plan.stdout
    refused = run_cli("run", str(job), "--quiet")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "1 of 2 target(s) not named" in refused.stdout and "0 of 1 target(s) took the mirror" in refused.stdout
    line = refused.stderr.strip()
    assert line.startswith(f"acta-mirror: failed: git+file://{second_remote}: shard 01: it holds none of the") and \
        line.endswith("(acta-mirror restore --from a target that holds it, then acta-mirror publish --to it)"), line
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == saved  # the record still names the first alone
    assert commits(first_remote) == pushed  # a target that holds the state is not asked again

    restored = tmp_path / "restored"
    assert run_cli("restore", "--from", f"git+file://{first_remote}", "--out", str(restored)).returncode == 0
    put = run_cli("publish", str(restored), "--to", f"git+file://{second_remote}")
    assert put.returncode == 0, put.stdout + put.stderr
    taken = run_cli("run", str(job), "--quiet")
    assert taken.returncode == 0, taken.stdout + taken.stderr
    assert "nothing changed" in taken.stdout
    assert (folder / "targets.txt").read_text().splitlines() == sorted(
        [f"git+file://{first_remote}", f"git+file://{second_remote}"])
    again = run_cli("run", str(job), "--quiet")
    assert again.returncode == 0 and "not named" not in again.stdout, again.stdout

    (folder / "targets.txt").unlink()  # a folder saved before the record: each target checked once
    legacy = run_cli("run", str(job), "--quiet")
    assert legacy.returncode == 0 and "2 of 2 target(s) not named" in legacy.stdout, legacy.stdout + legacy.stderr
    assert len((folder / "targets.txt").read_text().splitlines()) == 2
    assert commits(first_remote) == pushed and commits(second_remote) >= 1


def test_a_pinning_service_added_to_the_job_is_tried_even_when_nothing_changed(replay_factory, node, tmp_path):
    """targets.txt named a node by its address alone, so a pinning service added to the job
    later was never contacted while nothing changed (exit 0). A node is named with its pinning
    service and IPNS key: the next run sends it the state, and a service that cannot be
    reached is a failure (exit 1) that leaves the record as it was."""
    r = replay_factory()
    keygen(tmp_path)
    job = write_job(tmp_path, r.url, f'ipfs = ["{node.target}"]')
    first = run_cli("run", str(job), "--quiet")
    assert first.returncode == 0, first.stdout + first.stderr
    folder = tmp_path / "manifests"
    assert (folder / "targets.txt").read_text() == f"{node.target}\n"
    job = write_job(tmp_path, r.url, f'ipfs = ["{node.target}"]\npin_service = "http://127.0.0.1:9/api"')
    second = run_cli("run", str(job), "--quiet")
    assert second.returncode == 1, second.stdout + second.stderr
    assert "1 of 1 target(s) not named" in second.stdout and "pinning service" in second.stderr, second.stderr
    assert "re-run 'acta-mirror run (the next run from the folder sends it again)'" in second.stderr
    assert (folder / "targets.txt").read_text() == f"{node.target}\n"


@pytest.mark.parametrize("damage", ["not utf-8", "fifo", "link", "huge"])
def test_a_damaged_targets_file_sends_the_state_once_not_stops_the_job(replay_factory, tmp_path, damage):
    """targets.txt is bookkeeping: one that cannot be read stopped the whole scheduled job
    (exit 2, 'the job's state is unreadable'), new actas included. It now counts as no record:
    every target is sent the state once, and the file is written again (never followed)."""
    r = replay_factory()
    keygen(tmp_path)
    remote = tmp_path / "remotes" / "a.git"
    job = write_job(tmp_path, r.url, f'git = ["git+file://{remote}"]')
    assert run_cli("run", str(job), "--quiet").returncode == 0
    targets = tmp_path / "manifests" / "targets.txt"
    outside = tmp_path / "outside.txt"
    outside.write_text("elsewhere\n")
    targets.unlink()
    if damage == "not utf-8":
        targets.write_bytes(b"\xff\xfe\n")
    elif damage == "fifo":
        os.mkfifo(targets)
    elif damage == "link":
        targets.symlink_to(outside)
    else:
        targets.write_text("x" * 70_000 + "\n")
    proc = run_cli("run", str(job), "--quiet")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 of 1 target(s) not named" in proc.stdout and "targets.txt, who holds the state" in proc.stdout
    assert not targets.is_symlink() and targets.read_text() == f"git+file://{remote}\n"
    assert outside.read_text() == "elsewhere\n"


def test_a_crawl_puts_back_an_index_file_its_mirror_lost_from_the_same_bytes(replay, tmp_path):
    """An index the records name but the mirror no longer holds is put back from the very
    bytes the site sends (the same sha256), and nothing new is recorded; other bytes would be
    a new version, never written over the old path."""
    out = tmp_path / "m"
    assert run_cli("crawl", "resultados2024", "--root", replay.url, "--out", str(out), "--quiet").returncode == 0
    index = out / "data" / "index" / "RESULTADOS_2024_CSV_V1.csv"
    kept, records = index.read_bytes(), (out / "provenance.jsonl").read_bytes()
    index.unlink()
    assert run_cli("verify", str(out)).returncode == 1
    again = run_cli("crawl", "resultados2024", "--root", replay.url, "--out", str(out), "--quiet",
                    "--recheck-after", "0")
    assert again.returncode == 0, again.stdout + again.stderr
    assert index.read_bytes() == kept and (out / "provenance.jsonl").read_bytes() == records
    assert run_cli("verify", str(out)).returncode == 0
