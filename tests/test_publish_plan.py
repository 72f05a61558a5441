"""publish --dry-run says what a real publish would find: files a remote has lost are named and
counted among those to send, as publish then sends them again."""
from __future__ import annotations

from tests.test_hostile_evidence import pristine, signed  # noqa: F401
from tests.test_hostile_remotes import deleted_later, git, listed, publish


def test_the_dry_run_names_files_the_remote_lost(signed, tmp_path):
    """The dry run compared the remote's manifest only: a file deleted there was 'there already',
    and the run said 'nothing to send' where publish then sent it again and exited 1."""
    remote = tmp_path / "remote" / "actas.git"
    target = f"git+file://{remote}"
    assert publish(signed, target).returncode == 0
    work = tmp_path / "work"
    git("clone", "-q", str(remote), str(work))
    files = listed(work)
    victim = [p for p in files if not p.startswith("data/index/")][3]
    deleted_later(remote, work, victim)
    plan = publish(signed, target, "--dry-run")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert f"1 of {len(files)} files to send" in plan.stdout, plan.stdout
    assert f"1 file(s) it held are gone from it, e.g. {victim}: counted above, to be sent again" in plan.stdout
    assert victim not in git("-C", str(remote), "ls-tree", "-r", "--name-only", "main")  # the dry run sent nothing
    assert publish(signed, target).returncode == 1  # publish says so too, and sends it again
    again = publish(signed, target, "--dry-run")
    assert again.returncode == 0 and "nothing to send" in again.stdout and "gone" not in again.stdout, again.stdout
