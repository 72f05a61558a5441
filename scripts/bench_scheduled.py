#!/usr/bin/env python3
"""Benchmark scheduled runs from the manifests folder at real size and print figures.

    python3 scripts/bench_scheduled.py [--count 3000] [--work bench-out/scheduled] [--no-ipfs]
    python3 scripts/bench_scheduled.py --count 24532 --no-ipfs --first-run-only --shard-bytes 900000000
        (the first run at full size with the shipped shards, then a restore: about 30 GB of disk)

nginx (Debian; `nginx -p DIR -c DIR/nginx.conf`, ETags on, an access log counting
$body_bytes_sent) serves COUNT actas of about 290 KB under their real names from the V1
index (valid JPEGs padded with random bytes inside a COM segment after SOI) and an index CSV
of those rows. The job (no output.dir; a Git target of bare repositories on this machine and,
unless --no-ipfs, the local js-ipfs node) runs three times, each from a fresh working
directory holding only the job file and the manifests folder, with TMPDIR and the Git cache
inside it, as a new hosted runner would:

1. the first run (everything is new);
2. nothing changed upstream, every URL asked again (the job's once-a-day run);
3. nothing changed and nothing due (`fetch.recheck_after = 86400`, as the shipped job has it: the
   job's other runs of the day, which ask only the index);
4. 1% of the images changed and 1% new actas added.

For each run it prints: bytes downloaded (from nginx's log), peak disk of the working
directory (sampled every 0.2 s), bytes the Git remotes and the IPFS node grew by (what was
pushed), wall time; then the run with changes against its targets, a restore from the remotes
checked with the signing key (both versions of every changed acta, the committed signed
root), the manifests repository's growth, and a linear extrapolation to 25,000 actas.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mirror.replay.data import index_file  # noqa: E402
from mirror.state import iter_records  # noqa: E402
from scripts.benchsite import Site, jpeg  # noqa: E402

PY = sys.executable
ACTA_BYTES = 290 * 1000
REAL_ACTAS = 25_000


def du(path: Path) -> int:
    total = 0
    stack = [str(path)]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for e in it:
                    try:
                        if e.is_dir(follow_symlinks=False):
                            stack.append(e.path)
                        else:
                            total += e.stat(follow_symlinks=False).st_blocks * 512
                    except FileNotFoundError:
                        continue
        except (FileNotFoundError, NotADirectoryError):
            continue
    return total


def run_job(job: Path, cwd: Path, env: dict) -> tuple[float, int, str]:
    """Run the job; (seconds, peak disk of cwd, stdout)."""
    peak = [0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], du(cwd))
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t = time.perf_counter()
    proc = subprocess.run([PY, "-m", "mirror", "run", str(job), "--quiet"], cwd=cwd, env=env,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)
    seconds = time.perf_counter() - t
    done.set()
    sampler.join()
    peak[0] = max(peak[0], du(cwd))
    if proc.returncode != 0:
        print(proc.stdout, proc.stderr, file=sys.stderr)
        raise SystemExit(f"the run failed with exit {proc.returncode}")
    return seconds, peak[0], proc.stdout


def fresh_workdir(base: Path, name: str, job_text: str, manifests: Path | None) -> Path:
    """A new runner: the job file and (after the first run) the manifests folder, nothing else."""
    cwd = base / name
    shutil.rmtree(cwd, ignore_errors=True)
    (cwd / "jobs").mkdir(parents=True)
    (cwd / "jobs" / "job.toml").write_text(job_text)
    if manifests is not None:
        shutil.copytree(manifests, cwd / "manifests")
    for sub in ("tmp", "cache"):
        (cwd / sub).mkdir()
    return cwd


def restore_check(work: Path, remotes: Path, key: Path, manifests: Path, env: dict, changed_names: list[str]) -> str:
    """Restore the remotes into a new folder, verify it with the key; one line saying how it went."""
    restored = work / "restored"
    t = time.perf_counter()
    proc = subprocess.run([PY, "-m", "mirror", "restore", "--from", f"git+file://{remotes}/actas.git",
                           "--out", str(restored)], env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    took = time.perf_counter() - t
    ok = proc.returncode == 0
    t = time.perf_counter()
    check = subprocess.run([PY, "-m", "mirror", "verify", str(restored), "--pubkey", f"{key}.pub"], env=env,
                           capture_output=True, text=True, stdin=subprocess.DEVNULL) if ok else None
    checked = time.perf_counter() - t
    ok = ok and check.returncode == 0
    same_root = ok and (restored / "signed-root.json").read_bytes() == (manifests / "signed-root.json").read_bytes()
    versions: dict[str, set] = {}
    if ok:
        for rec in iter_records(restored / "provenance.jsonl"):
            versions.setdefault(rec.entry.url.rsplit("/", 1)[-1], set()).add(rec.entry.version)
    both = sum(1 for name in changed_names if versions.get(name) == {1, 2})
    return (f"restore from the remotes ({took:.0f} s, then verify {checked:.0f} s): "
            f"{'verified with the key' if ok else 'FAILED: ' + (proc.stderr or check.stderr).strip()[-300:]}; "
            f"{len(versions):,} files by name; both versions of {both} of {len(changed_names)} changed actas; "
            f"signed root {'matches' if same_root else 'DIFFERS from'} the committed one")


def mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=3000, help="actas served at first (real size)")
    ap.add_argument("--work", default=str(ROOT / "bench-out" / "scheduled"))
    ap.add_argument("--port", type=int, default=18040)
    ap.add_argument("--no-ipfs", action="store_true", help="publish to Git only")
    ap.add_argument("--first-run-only", action="store_true",
                    help="only the first run: its peak disk measured, not extrapolated; then a restore, verified")
    ap.add_argument("--shard-bytes", type=int, default=0,
                    help="publish.max_repo_bytes (default: a quarter of the archive)")
    args = ap.parse_args()
    work = Path(args.work).resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rng = random.Random(2024)
    v1 = index_file(1)
    extra = max(1, args.count // 100)
    total = min(args.count + extra, len(v1.rows))
    rows, lines = v1.rows[:total], v1.lines[:total]

    site = Site(work / "site", args.port)
    t = time.perf_counter()
    for row in rows[:args.count]:
        (site.www / row.filename).write_bytes(jpeg(row.filename, ACTA_BYTES, rng))
    index_bytes = site.write_index(lines[:args.count], v1.header)
    print(f"site: {args.count} actas of {ACTA_BYTES // 1000} KB and an index of {mb(index_bytes)} "
          f"written in {time.perf_counter() - t:.0f} s")
    site.start()
    node = None
    stack = []
    try:
        remotes = work / "remotes"
        key = work / "signer"
        subprocess.run([PY, "-m", "mirror", "keygen", "--out", str(key)], check=True, capture_output=True)
        targets = f'git = ["git+file://{remotes}/actas.git"]\n'
        if not args.no_ipfs:
            from mirror.ipfsnode import IpfsNode

            node = IpfsNode(work / "ipfs-repo")
            node.start()
            stack.append(node)
            targets += f'ipfs = ["{node.target}"]\n'
        archive_bytes = args.count * ACTA_BYTES
        job_text = (f'[source]\nsite = "resultados2024"\nroot = "{site.url}"\ndiscover = "csv"\n\n'
                    f'[fetch]\nconcurrency = 16\n\n[publish]\n{targets}manifests = "../manifests"\n'
                    f"max_repo_bytes = {args.shard_bytes or max(archive_bytes // 4, 50_000_000)}\n")
        env = {**os.environ, "PYTHONPATH": str(ROOT), "ACTA_MIRROR_SIGN_KEY_FILE": f"{key}.key"}
        manifests_repo = work / "manifests-repo"
        subprocess.run(["git", "init", "-q", "-b", "main", str(manifests_repo)], check=True)

        def commit_manifests(folder: Path, message: str) -> int:
            """Commit the folder into a repository as the workflow does; its packed size after."""
            dest = manifests_repo / "manifests"
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(folder, dest)
            git = ["git", "-C", str(manifests_repo), "-c", "user.name=b", "-c", "user.email=b@localhost"]
            # stdin closed: git's pack-objects reads revisions from it when it is not
            for step in (["add", "-A"], ["commit", "-qm", message, "--allow-empty"], ["gc", "-q", "--aggressive"]):
                subprocess.run([*git, *step], check=True, stdin=subprocess.DEVNULL)
            return du(manifests_repo / ".git" / "objects")

        results = []
        manifests = None
        changed_names: list[str] = []
        runs = ((1, "first run"), (2, "nothing changed"), (3, "nothing due"), (4, "1% changed, 1% new"))
        for n, what in runs[:1] if args.first_run_only else runs:
            if n == 4:
                changed_names = [r.filename for r in rng.sample(list(rows[:args.count]), extra)]
                for name in changed_names:
                    (site.www / name).write_bytes(jpeg(name + " v2", ACTA_BYTES, rng))
                for row in rows[args.count:]:
                    (site.www / row.filename).write_bytes(jpeg(row.filename, ACTA_BYTES, rng))
                index_bytes = site.write_index(lines, v1.header)
            # Run 3 is a run of the shipped job between its daily re-checks: every URL was checked by run 2.
            text = job_text.replace("[fetch]\n", "[fetch]\nrecheck_after = 86400\n") if n == 3 else job_text
            cwd = fresh_workdir(work, f"run{n}", text, manifests)
            env_n = {**env, "TMPDIR": str(cwd / "tmp"), "XDG_CACHE_HOME": str(cwd / "cache")}
            offset = site.log_offset()
            git_before = du(remotes)
            ipfs_before = du(work / "ipfs-repo") if node else 0
            seconds, peak, out = run_job(cwd / "jobs" / "job.toml", cwd, env_n)
            got, requests, not_modified = site.downloaded(offset)
            pushed_git = du(remotes) - git_before
            pushed_ipfs = (du(work / "ipfs-repo") - ipfs_before) if node else 0
            manifests = cwd / "manifests"
            repo_size = commit_manifests(manifests, f"run {n}")
            results.append((n, what, got, requests, not_modified, peak, pushed_git, pushed_ipfs, seconds, repo_size,
                            du(manifests)))
            crawl_line = next((ln for ln in out.splitlines() if ln.startswith("crawl:")), "")
            print(f"run {n} ({what}): {crawl_line}")

        print()
        print(f"{'run':<24}{'downloaded':>14}{'requests':>10}{'304':>7}{'peak disk':>12}{'git grew':>12}"
              f"{'ipfs grew':>12}{'wall':>8}{'manifests':>12}{'state repo':>12}")
        for n, what, got, req, nm, peak, pg, pi, sec, repo, folder in results:
            print(f"{n} {what:<22}{mb(got):>14}{req:>10}{nm:>7}{mb(peak):>12}{mb(pg):>12}{mb(pi):>12}"
                  f"{sec:>7.1f}s{mb(folder):>12}{mb(repo):>12}")

        if args.first_run_only:
            n, what, got, _req, _nm, peak, pg, _pi, sec, _repo, _folder = results[0]
            print(f"\nfirst run, measured: {args.count:,} actas, archive {mb(archive_bytes)}, peak disk of the working "
                  f"directory {mb(peak)} ({peak / archive_bytes:.2f}x the archive), Git remotes grew {mb(pg)}, "
                  f"{sec / 60:.1f} min")
            print(restore_check(work, remotes, key, manifests, env, []))
            return
        third, before = results[-1], results[-2]  # the run with changes, and the one before it
        delta_bytes = 2 * extra * ACTA_BYTES
        limit = index_bytes + 1.2 * delta_bytes
        print()
        due = results[2]
        print(f"nothing due: {due[3]} request(s) of the {results[1][3]} the daily re-check made, {due[8]:.1f} s "
              f"against its {results[1][8]:.1f} s")
        print(f"run 4 (changes), downloaded: {mb(third[2])} of at most {mb(limit)} (index {mb(index_bytes)} + 1.2 x "
              f"{2 * extra} changed and new actas of {mb(delta_bytes)}): {'OK' if third[2] <= limit else 'OVER'}")
        print(f"run 4 (changes), peak disk: {mb(third[5])} = {100 * third[5] / archive_bytes:.1f}% of the archive "
              f"({mb(archive_bytes)}; target 5%): {'OK' if third[5] <= 0.05 * archive_bytes else 'OVER'}")
        print(f"manifests repository (packed, after git gc): {third[9] / 1e3:,.0f} KB after four runs; run 4 "
              f"added {(third[9] - before[9]) / 1e3:,.0f} KB for {2 * extra} new provenance lines, the second "
              f"{(results[1][9] - results[0][9]) / 1e3:,.0f} KB")

        print(restore_check(work, remotes, key, manifests, env, changed_names))

        scale = REAL_ACTAS / args.count
        print()
        print(f"extrapolated to {REAL_ACTAS:,} actas (x{scale:.2f}, linear in the count; the index scales with its rows):")
        for n, what, got, _req, _nm, peak, pg, pi, sec, repo, folder in results:
            print(f"  run {n} ({what}): downloaded {mb(got * scale)}, peak disk {mb(peak * scale)}, "
                  f"pushed {mb((pg + pi) * scale)}, {sec * scale / 60:.1f} min, manifests folder {mb(folder * scale)}")
    finally:
        for item in reversed(stack):
            item.stop()
        site.stop()


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
    main()
