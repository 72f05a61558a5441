"""The command line a volunteer expects: truthful progress, grouped failures, help with examples,
dry runs that change nothing, the user agent and headers on the wire, config precedence, completion."""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from mirror.cli import build_parser
from mirror.clihelp import HELP
from mirror.progress import FailureSummary, cause_of
from mirror.sites import all_sites
from tests.conftest import run_cli

PLAIN_EVERY = {"ACTA_MIRROR_PROGRESS_EVERY": "0.1"}


def subparsers() -> dict[str, argparse.ArgumentParser]:
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


def crawl(url: str, out: Path, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return run_cli("crawl", "resultados2024", "--root", url, "--out", str(out), *extra, env=env or {})


def tree_hash(*roots: Path) -> str:
    """Every file and directory under the roots: names, modes, sizes, bytes and mtimes."""
    h = hashlib.sha256()
    for root in roots:
        h.update(f"{root} exists={root.exists()}\n".encode())
        for p in sorted(root.rglob("*")) if root.exists() else []:
            st = p.lstat()
            h.update(f"{p.relative_to(root)} {st.st_mode} {st.st_size} {st.st_mtime_ns}\n".encode())
            if p.is_file():
                h.update(p.read_bytes())
    return h.hexdigest()


# -- progress ----------------------------------------------------------------------
def test_plain_progress_line_has_a_total_and_an_eta_never_none_or_nan(replay_factory, tmp_path):
    r = replay_factory(faults="404=0.1", limit=60)
    proc = crawl(r.url, tmp_path / "m", "--rate", "60", env=PLAIN_EVERY)  # a second or more: several lines
    assert proc.returncode == 1, proc.stderr  # the 404s
    lines = [ln for ln in proc.stderr.splitlines() if "] crawl: " in ln]
    assert len(lines) >= 2, proc.stderr
    running = [ln for ln in lines if "took" not in ln]
    assert any(not re.search(r" 0 of \d+ actas", ln) for ln in running), lines
    for line in running:
        found = re.search(r"(\d+) of (\d+) actas \(\d+%\)", line)
        assert found, line
        if found.group(1) == found.group(2):  # all counted: no eta, and the rate stops with the count
            assert "all counted, finishing" in line and "eta" not in line, line
        elif int(found.group(1)):  # with nothing done yet there is no rate, and the line says so in words
            assert re.search(r"eta \d+(s|m\d\ds)", line), line
        assert re.search(r"\d+ retr(y|ies)", line) and re.search(r"\d+ of \d+ failed", line), line
    totals = {re.search(r"of (\d+) actas", ln).group(1) for ln in lines}
    assert len(totals) == 1, totals  # the total is known from the index on, and never moves
    assert f"{totals.pop()} actas discovered" in proc.stdout
    for text in (proc.stderr, proc.stdout):
        assert not re.search(r"\bNone\b|\bnan\b", text, re.I), text


def test_failures_are_grouped_by_cause_with_what_to_try(replay_factory, tmp_path):
    r = replay_factory(faults="404=0.1,denied=0.1", limit=60)
    proc = crawl(r.url, tmp_path / "m", "--quiet")
    assert proc.returncode == 1
    records = [json.loads(ln) for ln in (tmp_path / "m" / "failures.jsonl").read_text().splitlines()]
    n404 = sum("HTTP 404" in f["reason"] for f in records)
    nhtml = sum("HTML page" in f["reason"] for f in records)
    assert n404 and nhtml and n404 + nhtml == len(records)
    order = sorted([("HTTP 404", n404), ("HTML instead of an image", nhtml)], key=lambda kv: (-kv[1], kv[0]))
    assert "; ".join(f"{c}: {n}" for c, n in order) in proc.stderr, proc.stderr
    assert "try --user-agent or --proxy" in proc.stderr  # every error line says what to do next
    assert "] crawl: " not in proc.stderr  # --quiet: no progress
    named = [ln for ln in proc.stderr.splitlines() if ln.strip().startswith("failed ")]
    assert len(named) < len(records)  # a few examples per cause, not every failure ...
    verbose = crawl(r.url, tmp_path / "m2", "--quiet", "-v")
    named = [ln for ln in verbose.stderr.splitlines() if ln.startswith("failed ")]
    assert len(named) == len(records)  # ... unless -v
    as_json = json.loads(crawl(r.url, tmp_path / "m3", "--json").stdout)
    assert as_json["failures_by_cause"] == {"HTTP 404": n404, "HTML instead of an image": nhtml}
    assert len(as_json["failures"]) == len(records)


def test_cause_comes_from_the_record_or_is_derived_from_the_reason():
    assert cause_of({"reason": "HTTP 404"}) == "HTTP 404"
    assert cause_of({"reason": "gave up after 6 attempts: HTTP 503"}) == "HTTP 503"
    assert cause_of({"reason": "gave up after 6 attempts: TimeoutError"}) == "timeout"
    assert cause_of({"reason": "an HTML page where an image belongs (Content-Type text/html)"}) \
        == "HTML instead of an image"
    assert cause_of({"reason": "HTTP 404", "cause": "deferred: host breaker"}) == "deferred: host breaker"
    summary = FailureSummary.of([{"reason": "HTTP 404"}] * 87 + [{"reason": "TimeoutError"}] * 6
                                + [{"reason": "an HTML page where an image belongs"}] * 12)
    assert summary.line() == "HTTP 404: 87; HTML instead of an image: 12; timeout: 6"


# -- help ----------------------------------------------------------------------------
def test_every_help_ends_with_real_examples_and_its_exit_codes():
    parser = build_parser()
    for name, sub in subparsers().items():
        assert name in HELP, f"{name}: no row in mirror/clihelp.py's HELP"
        text = sub.format_help()
        assert "examples:" in text and "exit codes:" in text, name
        tail = text[text.index("examples:"):]
        examples = [ln.strip() for ln in tail.splitlines() if ln.startswith("  ") and not ln.startswith("      ")
                    and not re.match(r"\s+\d+\s", ln)]
        assert 2 <= len(examples) or name == "verify-file", (name, examples)
        for code in HELP[name].exits:
            assert re.search(rf"^  {code}\s+\S", tail, re.M), (name, code)
        for example in examples:  # every example parses: it is a real command line
            for command in re.split(r"\s*(?:&&|>)\s*", example):
                words = shlex.split(command)
                if words and words[0] == "acta-mirror":
                    parser.parse_args(words[1:])


def test_the_parser_of_one_command_parses_as_the_whole_parser_does():
    # main() builds only the parser of the command argv names (named_command): each command's
    # help and every example of it must come out the same as from the whole parser.
    from mirror.cli import named_command

    whole, parsed = build_parser(), 0
    for name, sub in subparsers().items():
        alone = build_parser(name)
        assert alone.format_help() != whole.format_help()  # it really is another parser
        assert [a.choices for a in alone._actions if isinstance(a, argparse._SubParsersAction)][0].keys() == {name}
        assert alone._subparsers._group_actions[0].choices[name].format_help() == sub.format_help(), name
        for example in re.findall(r"^  acta-mirror (.+)$", sub.format_help(), re.M):
            for command in re.split(r"\s*(?:&&|>)\s*", example):
                words = shlex.split(command.removeprefix("acta-mirror "))
                if words and words[0] == name:
                    assert named_command(words) == name
                    assert alone.parse_args(words) == whole.parse_args(words), (name, words)
                    assert alone.parse_args(["-vv", "--quiet", *words]) == whole.parse_args(["-vv", "--quiet", *words])
                    parsed += 1
    assert parsed >= 2 * len(subparsers()) - 1  # every command's examples (verify-file has one)
    for argv in (["--help"], ["--version"], ["-h", "verify"], ["--verb", "verify"], ["verify_file"], ["nothing"], []):
        assert named_command(argv) is None, argv  # the whole parser answers these


def test_help_through_the_command_and_crawl_lists_the_sites():
    proc = run_cli("crawl", "--help")
    assert proc.returncode == 0 and "examples:" in proc.stdout and "exit codes:" in proc.stdout
    for name, cls in all_sites().items():
        assert name in proc.stdout and cls.description.split()[0] in proc.stdout


def test_version_names_the_parts_that_matter():
    proc = run_cli("--version")
    assert proc.returncode == 0
    for part in ("acta-mirror ", "Python 3.", "aiohttp ", "zxing-cpp ", "tesseract ", "git "):
        assert part in proc.stdout, proc.stdout
    assert "None" not in proc.stdout


# -- dry runs ------------------------------------------------------------------------
def test_dry_run_of_crawl_publish_and_run_changes_nothing_on_disk(replay_factory, tmp_path):
    r = replay_factory(faults="404=0.1", limit=30)
    fresh = tmp_path / "fresh"
    proc = crawl(r.url, fresh, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert not fresh.exists()
    new = int(re.search(r"new: (\d+) of (\d+)", proc.stdout).group(1))
    assert re.search(r"known: 0 of \d+", proc.stdout)

    mirror = tmp_path / "m"
    real = crawl(r.url, mirror, "--quiet")
    assert int(re.search(r"(\d+) actas discovered", real.stdout).group(1)) == new  # the dry run told the truth
    target = tmp_path / "remotes" / "actas.git"
    before = tree_hash(tmp_path)
    again = crawl(r.url, mirror, "--dry-run", "--recheck-after", "3600")
    assert again.returncode == 0, again.stderr
    assert re.search(rf"new: \d+ of {new}", again.stdout) and "recent: " in again.stdout
    plan = run_cli("publish", str(mirror), "--to", f"git+file://{target}", "--dry-run")
    assert plan.returncode == 0, plan.stderr
    files = len((mirror / "manifest-sha256.txt").read_text().splitlines())
    size = sum(p.stat().st_size for p in (mirror / "data").rglob("*") if p.is_file())
    assert f"{files} files" in plan.stdout and f"{size:,} bytes" in plan.stdout, plan.stdout
    job = tmp_path / "job.toml"
    job.write_text(f'[source]\nsite = "resultados2024"\nroot = "{r.url}"\n[output]\ndir = "m"\n'
                   f'[publish]\ngit = ["git+file://{target}"]\n')
    before = tree_hash(tmp_path)
    ran = run_cli("run", str(job), "--dry-run")
    assert ran.returncode == 0, ran.stderr
    assert "dry run" in ran.stdout and f"{files} files" in ran.stdout
    assert tree_hash(tmp_path) == before

    assert run_cli("publish", str(mirror), "--to", f"git+file://{target}", "--quiet").returncode == 0
    before = tree_hash(tmp_path)
    plan = run_cli("publish", str(mirror), "--to", f"git+file://{target}", "--dry-run")
    assert plan.returncode == 0 and "0 files" in plan.stdout and "nothing to send" in plan.stdout, plan.stdout
    assert tree_hash(tmp_path) == before
    # A copy without the staging repositories reads the remote's tip into a temporary repository.
    copy = tmp_path / "copy"
    shutil.copytree(mirror, copy, ignore=shutil.ignore_patterns(".acta-mirror"))
    before = tree_hash(tmp_path)
    plan = run_cli("publish", str(copy), "--to", f"git+file://{target}", "--dry-run")
    assert plan.returncode == 0 and "0 files" in plan.stdout and "nothing to send" in plan.stdout, plan.stdout
    assert tree_hash(tmp_path) == before


# -- the knobs of wget and gallery-dl ----------------------------------------------------
def test_user_agent_and_headers_reach_the_server_from_flags_job_and_config(replay_factory, tmp_path):
    r = replay_factory(limit=5)
    config = tmp_path / "xdg" / "acta-mirror" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('[fetch]\nuser_agent = "FromConfig/1"\nheaders = { X-Team = "config" }\n')
    env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}

    def sent(since: int) -> list[dict]:
        return [h for _path, h in list(r.replay.requests)[since:]]

    seen = len(r.replay.requests)
    assert crawl(r.url, tmp_path / "a", "--quiet", env=env).returncode == 0
    assert {h.get("User-Agent") for h in sent(seen)} == {"FromConfig/1"}
    assert {h.get("X-Team") for h in sent(seen)} == {"config"}

    seen = len(r.replay.requests)
    proc = crawl(r.url, tmp_path / "b", "--quiet", "--user-agent", "Flag/2", "--header", "X-Volunteer: yes",
                 "--header", "Referer: https://example.org/", env=env)
    assert proc.returncode == 0, proc.stderr
    headers = sent(seen)
    assert headers and all(h.get("User-Agent") == "Flag/2" and h.get("X-Volunteer") == "yes"
                           and h.get("Referer") == "https://example.org/" and h.get("X-Team") == "config"
                           for h in headers), headers[:2]

    job = tmp_path / "job.toml"
    job.write_text(f'[source]\nsite = "resultados2024"\nroot = "{r.url}"\n[output]\ndir = "c"\n'
                   '[fetch]\nuser_agent = "FromJob/3"\nheaders = { X-Team = "job" }\n')
    seen = len(r.replay.requests)
    assert run_cli("run", str(job), "--no-publish", "--quiet", env=env).returncode == 0
    assert {(h.get("User-Agent"), h.get("X-Team")) for h in sent(seen)} == {("FromJob/3", "job")}
    seen = len(r.replay.requests)
    proc = run_cli("run", str(job), "--no-publish", "-v", "--user-agent", "Flag/4", env=env)
    assert proc.returncode == 0 and "'user_agent': 'Flag/4'" in proc.stderr, proc.stderr  # -v shows the settings
    assert {(h.get("User-Agent"), h.get("X-Team")) for h in sent(seen)} == {("Flag/4", "job")}


def test_a_broken_config_file_is_one_line_naming_file_and_key(replay, tmp_path):
    config = tmp_path / "acta-mirror" / "config.toml"
    config.parent.mkdir(parents=True)
    for text, key in (('[fetch]\nconcurrency = "many"\n', "fetch.concurrency"),
                      ('[fetch]\nconcurency = 4\n', "fetch.concurency"),
                      ('[fetch]\nconcurrency = 0\n', "fetch.concurrency"),
                      ('[fetch]\nheaders = { "X-A" = "1\\r\\nX-Injected: 1" }\n', "fetch.headers")):
        config.write_text(text)
        proc = crawl(replay.url, tmp_path / "m", env={"XDG_CONFIG_HOME": str(tmp_path)})
        assert proc.returncode == 2
        assert proc.stderr.count("\n") == 1 and str(config) in proc.stderr and key in proc.stderr, proc.stderr
        assert not (tmp_path / "m").exists()
    bad = run_cli("crawl", "resultados2024", "--root", replay.url, "--out", str(tmp_path / "m"),
                  "--header", "no colon here")
    assert bad.returncode == 2 and "Name: value" in bad.stderr


def test_completion_scripts_are_generated_from_the_parser(tmp_path):
    bash = run_cli("completion", "bash")
    assert bash.returncode == 0 and "crawl" in bash.stdout and "--dry-run" in bash.stdout
    (tmp_path / "c.bash").write_text(bash.stdout)
    assert subprocess.run(["bash", "-n", str(tmp_path / "c.bash")], capture_output=True).returncode == 0
    zsh = run_cli("completion", "zsh")
    assert zsh.returncode == 0 and zsh.stdout.startswith("#compdef acta-mirror") and "--user-agent" in zsh.stdout
    fish = run_cli("completion", "fish")
    assert fish.returncode == 0
    for name in subparsers():
        assert f"-a {name} " in fish.stdout, name
    assert "__fish_seen_subcommand_from crawl' -l header -r -F" in fish.stdout
    assert "-l discover -x -a 'csv html both'" in fish.stdout
    assert run_cli("completion", "tcsh").returncode == 2


def test_dry_run_to_an_ipfs_node_names_what_it_lacks_and_adds_nothing(replay, tmp_path):
    from mirror.archive import published_files
    from mirror.ipfsnode import IpfsNode

    mirror = tmp_path / "m"
    assert crawl(replay.url, mirror, "--quiet").returncode == 0
    files = published_files(mirror)
    with IpfsNode(tmp_path / "ipfs") as node:
        before = tree_hash(mirror)
        plan = run_cli("publish", str(mirror), "--to", node.target, "--dry-run")
        assert plan.returncode == 0, plan.stderr
        assert f"{len(files)} of {len(files)} files to add, {sum(n for _p, n, _s in files):,} bytes" in plan.stdout
        assert tree_hash(mirror) == before
        again = run_cli("publish", str(mirror), "--to", node.target, "--dry-run")
        assert f"{len(files)} of {len(files)} files to add" in again.stdout  # the dry run added nothing
        root = re.search(r"root CID would be (\S+)", plan.stdout).group(1)
        published = run_cli("publish", str(mirror), "--to", node.target, "--quiet")
        assert published.returncode == 0 and published.stdout.strip().splitlines()[-1] == root
        after = run_cli("publish", str(mirror), "--to", node.target, "--dry-run")
        assert f"0 of {len(files)} files to add" in after.stdout, after.stdout


def test_an_error_line_says_what_to_do_next(tmp_path):
    import http.server
    import threading

    class Forbidden(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # a site that blocks this client outright
            self.send_response(403)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Forbidden)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        proc = crawl(f"http://127.0.0.1:{server.server_port}", tmp_path / "m")
    finally:
        server.shutdown()
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "HTTP 403" in proc.stderr and "try --user-agent" in proc.stderr and "--proxy" in proc.stderr, proc.stderr
    missing = run_cli("verify", str(tmp_path / "nothing"))
    assert missing.returncode == 2 and "give the directory that holds bagit.txt" in missing.stderr


def test_verify_tally_publish_and_restore_show_the_same_progress_line(replay, tmp_path):
    mirror = tmp_path / "m"
    assert crawl(replay.url, mirror, "--quiet").returncode == 0
    files = len((mirror / "manifest-sha256.txt").read_text().splitlines())
    actas = files - 1  # the index is archived too
    target = f"git+file://{tmp_path}/actas.git"
    runs = {"verify": run_cli("verify", str(mirror), env=PLAIN_EVERY),
            "tally": run_cli("tally", str(mirror), env=PLAIN_EVERY),
            "publish": run_cli("publish", str(mirror), "--to", target, env=PLAIN_EVERY),
            "restore": run_cli("restore", "--from", target, "--out", str(tmp_path / "r"), env=PLAIN_EVERY)}
    totals = {"verify": (files, "files"), "tally": (actas, "actas"), "publish": (files, "files"),
              "restore": (files, "files")}
    for name, proc in runs.items():
        assert proc.returncode == 0, (name, proc.stderr)
        n, unit = totals[name]
        last = [ln for ln in proc.stderr.splitlines() if re.match(r"\[\s*\d", ln)][-1]
        assert re.search(rf"\] {name}.*: {n} of {n} {unit} \(100%\) · .* · took \d+s$", last), (name, last)
        assert "failed" not in last and "retr" not in last, (name, last)  # not counted here: no '0 failed' claimed
        assert not re.search(r"\bNone\b|\bnan\b", proc.stderr, re.I)
    assert "] verify" not in run_cli("verify", str(mirror), "--quiet").stderr


# -- standard output and standard error that refuse writes ---------------------------
def _cli(args: list[str], **kwargs) -> subprocess.Popen:
    kwargs.setdefault("env", {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    return subprocess.Popen([sys.executable, "-m", "mirror", *args], **kwargs)


def test_a_full_standard_output_is_one_line_and_exit_3_not_a_traceback(replay, tmp_path):
    crawl(replay.url, tmp_path / "m", "--quiet")
    with open("/dev/full", "w") as full:
        proc = _cli(["verify", str(tmp_path / "m")], stdout=full, stderr=subprocess.PIPE, text=True)
        err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 3, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    refusals = [ln for ln in err.splitlines() if "cannot write to standard output" in ln]
    assert len(refusals) == 1 and "No space left on device" in refusals[0], err


def test_verify_as_the_command_ends_at_once_with_its_output_whole_and_its_exit_code(replay, tmp_path):
    # verify ends its process without freeing its records (cli.ENDS_AT_ONCE): what it printed
    # into a file (block-buffered) must all be there, and the exit code must be the command's
    crawl(replay.url, tmp_path / "m", "--quiet")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # buffered, as for most users
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    for damaged, code in ((False, 0), (True, 1)):
        if damaged:
            victim = next((tmp_path / "m" / "data").rglob("*.jpg"))
            victim.write_bytes(victim.read_bytes()[:-1] + b"X")
        with open(tmp_path / "out.txt", "w") as out:
            proc = _cli(["verify", str(tmp_path / "m")], stdout=out, stderr=subprocess.PIPE, text=True, env=env)
            err = proc.communicate(timeout=120)[1]
        lines = (tmp_path / "out.txt").read_text().splitlines()
        assert proc.returncode == code, err
        if damaged:
            assert [line for line in lines if line.startswith("changed")] == \
                [line for line in lines if line.startswith("changed") and victim.name in line], lines
            assert any(line.startswith("changed") for line in lines), lines
            assert lines[-1].startswith("signed by") or lines[-1].startswith("not signed"), lines
            assert "1 problem(s)" in err, err
        else:
            assert lines[-1].startswith("coverage: ") and any(line.startswith("OK: ") for line in lines), lines


def test_a_reader_that_goes_away_ends_the_output_with_exit_3_not_a_traceback():
    # far more than a pipe holds, so the writer meets the closed end
    proc = _cli(["completion", "bash"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 3, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert "cannot write to standard output (Broken pipe)" in err, err


def test_a_crawl_whose_standard_error_refuses_writes_still_archives_and_says_so_on_stdout(replay, tmp_path):
    out = tmp_path / "m"
    with open("/dev/full", "w") as full:  # progress and -v's log lines go to standard error
        proc = _cli(["crawl", "resultados2024", "--root", replay.url, "--out", str(out), "-v"],
                    stdout=subprocess.PIPE, stderr=full, text=True, env={**os.environ, **PLAIN_EVERY,
                                                                         "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
        said = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, said
    found = re.search(r"(\d+) actas discovered: (\d+) archived, 0 unchanged, 0 failed", said)
    assert found and found.group(1) == found.group(2) != "0", said
    assert run_cli("verify", str(out)).returncode == 0


def test_a_path_too_long_for_the_system_is_one_short_line_and_exit_2(replay, tmp_path):
    crawl(replay.url, tmp_path / "m", "--quiet")
    long = str(tmp_path / ("x" * 5000))
    for args in (["verify", long], ["diff", long, str(tmp_path / "m")], ["compare", long, str(tmp_path / "m")],
                 ["crawl", "resultados2024", "--root", replay.url, "--out", long]):
        proc = run_cli(*args)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, (args[0], proc.stderr[-500:])
        assert "File name too long" in lines[0] and len(lines[0]) < 300, (args[0], lines)


def test_a_failed_publish_names_the_credentials_of_its_own_kind_of_target(replay, tmp_path):
    crawl(replay.url, tmp_path / "m", "--quiet")
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: the node cannot be reached
    try:
        proc = run_cli("publish", str(tmp_path / "m"), "--to", f"ipfs://127.0.0.1:{closed.getsockname()[1]}")
    finally:
        closed.close()
    failed = [ln for ln in proc.stderr.splitlines() if "failed:" in ln]
    assert proc.returncode == 1 and len(failed) == 1, proc.stderr
    assert "ACTA_MIRROR_IPFS_TOKEN" in failed[0] and "GIT" not in failed[0], failed
