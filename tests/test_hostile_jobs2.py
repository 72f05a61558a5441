"""Job files, settings and targets, a second time: found by an adversarial review of `run`,
`publish`, `merge` and the user's settings with broken and hostile input. Each test failed
before its fix.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from mirror import progress
from mirror.config import ConfigError, load_job, load_user_config
from mirror.publish import env_secret, redact
from tests.conftest import run_cli
from tests.test_publish_git import make_mirror


@pytest.fixture
def mirror(replay, tmp_path) -> Path:
    return make_mirror(replay.url, tmp_path / "mirror")


@pytest.mark.parametrize("target", ["git+file:relrepo/r.git", "git+file://tmp/acta-mirror-typo.git",
                                    "git+file:./r.git"])
def test_a_file_url_without_a_whole_path_is_refused_not_made_at_the_root(mirror, tmp_path, target):
    """git+file:relrepo/r.git (meant relative to the job) and git+file://tmp/x.git (a slash
    short) became file:///relrepo/r.git and file:///x.git: publish made a repository at the
    top of the file system, pushed the mirror there and exited 0."""
    proc = run_cli("publish", str(mirror), "--to", target, "--quiet", cwd=str(tmp_path),
                   env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert proc.returncode == 2 and "a file URL names a folder by its whole path" in proc.stderr, proc.stderr
    assert not os.path.exists("/relrepo") and not os.path.exists("/acta-mirror-typo.git") and not os.path.exists("/r.git")
    assert not (tmp_path / "relrepo").exists()


def test_the_environments_git_token_is_hidden_wherever_text_is_redacted(monkeypatch):
    """ACTA_MIRROR_GIT_PASSWORD went to a server that quoted it in its refusal, and the one-line
    error printed it ('remote: denied for acta-mirror:supersecret123'): only a password in the
    target's URL was hidden. A token read from the environment is hidden from then on."""
    token = "env-t0ken-never-shown"
    monkeypatch.setenv("ACTA_MIRROR_GIT_PASSWORD", token)
    assert env_secret("ACTA_MIRROR_GIT_PASSWORD", "127.0.0.1", 80) == token
    assert redact(f"remote: denied for acta-mirror:{token}") == "remote: denied for acta-mirror:***"


def test_a_merge_into_a_folder_inside_a_shard_is_refused(mirror, tmp_path):
    """merge OUT SHARD with OUT in SHARD/data/ said 'merged ... verified', exit 0; SHARD then held
    64 files its manifest does not list, and the next run moved the merged mirror away."""
    for out, shard in ((mirror / "data" / "merged", mirror), (tmp_path / "out", tmp_path / "out" / "data" / "shard")):
        if not shard.exists():
            shutil.copytree(mirror, shard)
        proc = run_cli("merge", str(out), str(shard))
        assert proc.returncode == 2 and " is inside " in proc.stderr, proc.stderr
    assert not (mirror / "data" / "merged").exists()
    assert run_cli("verify", str(mirror)).returncode == 0


@pytest.mark.parametrize("value, every", [("inf", progress.PLAIN_EVERY), ("1e300", progress.PLAIN_EVERY),
                                          ("1e-9", progress.PLAIN_EVERY), ("nan", progress.PLAIN_EVERY),
                                          ("0.5", 0.5), ("86400", 86400.0)])
def test_progress_every_outside_a_tenth_of_a_second_to_a_day_is_the_default(monkeypatch, value, every):
    """ACTA_MIRROR_PROGRESS_EVERY=inf ended a run's progress thread in an OverflowError traceback
    (no clock waits for ever), and 1e-9 printed 400 lines in a 0.2 s crawl."""
    monkeypatch.setenv("ACTA_MIRROR_PROGRESS_EVERY", value)
    assert progress.Progress("crawl", quiet=True).every == every


def test_a_user_config_that_is_a_link_to_nothing_is_an_error_not_no_config(tmp_path):
    """A config.toml that is a dangling link, or a loop, was taken as no config at all: a
    proxy it was meant to set (Tor) was silently not used."""
    config = tmp_path / "config.toml"
    config.symlink_to(tmp_path / "moved.toml")
    with pytest.raises(ConfigError, match="a symbolic link that leads to no file"):
        load_user_config(config)
    config.unlink()
    config.symlink_to(config)
    with pytest.raises(ConfigError, match="a symbolic link that leads to no file"):
        load_user_config(config)
    assert load_user_config(tmp_path / "none.toml") == {}


def test_publish_never_keeps_its_working_state_inside_the_mirror(mirror, tmp_path):
    """XDG_CACHE_HOME set to a folder in the mirror put publish's staging repositories in data/:
    the next verify found a thousand files no manifest lists, and the next run would not publish."""
    target = f"git+file://{tmp_path}/git/actas.git"
    proc = run_cli("publish", str(mirror), "--to", target, "--quiet", env={"XDG_CACHE_HOME": str(mirror / "data")})
    assert proc.returncode == 2 and "is inside the mirror" in proc.stderr, proc.stderr
    assert not (mirror / "data" / "acta-mirror").exists()
    assert run_cli("verify", str(mirror)).returncode == 0


def test_a_failed_publish_leaves_the_manifests_folder_as_it_was(replay, tmp_path):
    """A job with output.dir and publish.manifests copied the manifests after a target refused
    the mirror: the folder then said the target held it, and a run from the folder alone found
    nothing to publish (exit 0) while the target held nothing. A run from the folder already
    wrote it only once every target took the mirror; a run with a local mirror now does too."""
    from tests.test_jobs import write_job

    job = write_job(tmp_path, replay.url)
    (tmp_path / "remotes").mkdir()
    (tmp_path / "remotes" / "actas.git").write_text("not a repository")
    proc = run_cli("run", str(job), "--quiet")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "left as it was: 1 of 1 target(s) did not take the mirror" in proc.stdout, proc.stdout
    assert not (tmp_path / "manifests").exists()
    (tmp_path / "remotes" / "actas.git").unlink()  # the target mended: the next run publishes and saves
    again = run_cli("run", str(job), "--quiet")
    assert again.returncode == 0 and (tmp_path / "manifests" / "manifest-sha256.txt").exists(), again.stdout + again.stderr


def test_only_credentials_are_hidden_never_the_evidence_around_them():
    """Found reviewing the fixes above: registering every user:password of 3 characters or more
    hid Tor's stream-isolation proxy '1:1' inside dates (Last-Modified '1***1:00 GMT') and
    paths, a user name (an ssh target's 'electoral') inside the site's URLs, and a search for
    URLs ran past a quote into an e-mail address ("'http://a.com','b@c.com'" became
    "'http://***@c.com'"). Only what redact() cannot find in a URL is registered: a password
    holding a quote, < > or a space, a token from a header or the environment."""
    from mirror.publish import publisher_for, register_secrets

    register_secrets("https://site.example/actas/", None, "socks5h://1:1@127.0.0.1:9050",
                     "https://user:actas2024@site.example/actas2024/", headers={"Cookie": "consent=accepted"})
    publisher_for("git+ssh://electoral@backup.example.org/srv/actas.git")
    shown = publisher_for("git+https://jdoe1984@github.com/jdoe1984/actas.git").shown
    assert shown == "git+https://***@github.com/jdoe1984/actas.git"
    for text in ("Wed, 21 Oct 2015 11:11:00 GMT", "https://site.example/actas2024/electoral/0101011:1.jpg",
                 "'http://a.com','b@c.com'", '["http://a.com","x@y.org"]', '<a href="http://host">me@x.org</a>',
                 'W/"accepted-1234"', "http://h/a@2x.jpg", "http://h/x?mail=a@b.c"):
        assert redact(text) == text
    assert redact("https://user:actas2024@site.example/actas2024/") == "https://***@site.example/actas2024/"


@pytest.mark.parametrize("host", ["", "localhost"])
def test_a_file_url_with_a_whole_path_is_taken_with_or_without_localhost(mirror, tmp_path, host):
    """git accepts file://localhost/path as file:///path: refusing it was a regression."""
    proc = run_cli("publish", str(mirror), "--to", f"git+file://{host}{tmp_path}/git/actas.git", "--quiet",
                   env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert proc.returncode == 0 and (tmp_path / "git" / "actas.git").is_dir(), proc.stderr


def test_a_car_file_that_fails_does_not_hold_back_the_manifests_folder(tmp_path, monkeypatch):
    """Found reviewing the fix above: the manifests folder was kept back on any failure of the
    publish step, a CAR file's or a timestamp's too, and the note blamed a target."""
    from mirror import job as jobs
    from mirror.job import RunReport
    from mirror.publish import PublishError
    from tests.test_jobs import write_job

    saved = []
    monkeypatch.setattr(jobs, "publish_each", lambda job, report, shown, send: report.receipts.append("took it"))
    monkeypatch.setattr("mirror.publish.ipfs.write_car", lambda out, car: (_ for _ in ()).throw(PublishError("disk full")))
    monkeypatch.setattr("mirror.jobstate.save_from_mirror", lambda out, dest, key, targets: saved.append(dest))
    job = load_job(str(write_job(tmp_path, "http://127.0.0.1:9")))
    report = RunReport(tmp_path / "mirror")
    jobs.publish(job, tmp_path / "mirror", report)
    assert report.publish_failures == ["disk full"] and saved == [tmp_path / "manifests"], report.notes
