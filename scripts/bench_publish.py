#!/usr/bin/env python3
"""Benchmark Git publishing to local bare repositories and print figures.

    python3 scripts/bench_publish.py [--work bench-out/publish] [--tables N] [--rounds 3]
                                     [--max-repo-bytes 60000000] [--baseline DIR]

Two mirrors are crawled once from the replay (small images; rendered images, and the
mirrors, are kept in WORK and reused by the next run): `before` lacks the last 100 tables
of the index, `after` has them all (the same crawl, continued). Each round, in a fresh
remote and a fresh Git cache, it publishes `before` (the first publish), puts `after` in
its place (same path, so the staging repositories are reused, as a scheduled re-run
reuses them), publishes it (100 new actas) and publishes it again (nothing new). Each
publish is a `python -m mirror publish` process, timed from start to exit.

--baseline DIR also times the code in DIR (a checkout holding the `mirror` package) in
alternating rounds, for a side-by-side ratio on a shared machine. The table shows medians;
the last line is the BENCH-JSON line that scripts/bench_crawl.py folds into its table.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
NEW = 100  # tables the second publish adds
TARGET_S = 5.0  # issue 17: 100 new actas onto a published 25,000-acta mirror


def mirror_cli(code: Path, *args: str, env: dict | None = None) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one `python -m mirror` run of the code in `code`."""
    t = time.perf_counter()
    proc = subprocess.Popen([PY, "-m", "mirror", *args], cwd=code, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(code), **(env or {})})
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if proc.returncode != 0:
        raise SystemExit(f"mirror {' '.join(args)} failed ({proc.returncode}): {err}")
    return seconds, usage.ru_maxrss / 1024


# A scheduled run's publish (mirror/jobstate.py, GitPublisher.publish_delta): a manifests
# folder holding `before`'s state, a working bag seeded from it that holds `after`'s tag files
# and only the new files, the delta checked, then published; the time is publish_delta's.
DELTA = """
import shutil, sys, time
from pathlib import Path
from mirror.jobstate import STATE_FILES, read_job_state, seed, take_delta
from mirror.publish import publisher_for
from mirror.state import iter_records
folder, after, bag, target, budget = sys.argv[1:]
state = read_job_state(folder)
seed(state, Path(bag))
old = {r.path for r in state.records}
for name in STATE_FILES:
    if (Path(after) / name).exists():
        shutil.copy(Path(after) / name, Path(bag) / name)
for r in iter_records(Path(after) / "provenance.jsonl"):
    if r.path not in old:
        (Path(bag) / r.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(after) / r.path, Path(bag) / r.path)
delta = take_delta(state, Path(bag))
t = time.perf_counter()
publisher_for(target, max_repo_bytes=int(budget)).publish_delta(delta)
print(time.perf_counter() - t)
"""


def link_copy(src: Path, dst: Path) -> None:
    """dst as a copy of src whose payload is hard-linked (publish only reads it); the tag
    files and the working state are real copies, since publish appends its receipt."""
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst, symlinks=True, ignore=shutil.ignore_patterns("data"))
    shutil.copytree(src / "data", dst / "data", symlinks=True, copy_function=os.link)


def prepare(work: Path, port: int, tables: int | None) -> tuple[Path, Path]:
    """The `before` and `after` mirrors, crawled from the replay, or reused from WORK."""
    before, after = work / "before", work / "after"
    done = work / "mirrors.json"
    if done.exists() and json.loads(done.read_text()) == {"tables": tables} and after.is_dir():
        return before, after
    cmd = [PY, "-m", "mirror", "replay", "--port", str(port), "--small", "--cache", str(work / "cache"), "--warm"]
    if tables:
        cmd += ["--limit", str(tables)]
    replay = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    base = None
    for line in replay.stdout:
        if line.startswith("replay listening on"):
            base = line.split()[-1]
            break
    try:
        if base is None:
            raise SystemExit("the replay did not start")
        lines = urllib.request.urlopen(f"{base}/RESULTADOS_2024_CSV_V1.csv").read().splitlines(keepends=True)
        (work / "index-before.csv").write_bytes(b"".join(lines[:-NEW]))
        shutil.rmtree(before, ignore_errors=True)
        shutil.rmtree(after, ignore_errors=True)
        crawl = ["crawl", "resultados2024", "--root", base, "--quiet"]
        mirror_cli(ROOT, *crawl, "--out", str(before), "--index", str(work / "index-before.csv"))
        shutil.copytree(before, after, symlinks=True)
        mirror_cli(ROOT, *crawl, "--out", str(after))
    finally:
        replay.terminate()
        replay.wait()
    done.write_text(json.dumps({"tables": tables}))
    return before, after


def delta_publish(code: Path, before: Path, after: Path, run: Path, target: str, max_repo_bytes: int) -> float:
    folder = run / "manifests"
    folder.mkdir()
    for name in ("bagit.txt", "bag-info.txt", "manifest-sha256.txt", "provenance.jsonl", "changes.jsonl",
                 "failures.jsonl", "tagmanifest-sha256.txt"):
        if (before / name).exists():
            shutil.copy(before / name, folder / name)
    proc = subprocess.run([PY, "-c", DELTA, str(folder), str(after), str(run / "bag"), target, str(max_repo_bytes)],
                          cwd=code, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(code), "XDG_CACHE_HOME": str(run / "cache-delta")})
    if proc.returncode != 0:
        raise SystemExit(f"the delta publish failed: {proc.stderr}")
    return float(proc.stdout.split()[-1])


def one_round(code: Path, before: Path, after: Path, run: Path, max_repo_bytes: int) -> dict[str, float]:
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    mirror, env = run / "mirror", {"XDG_CACHE_HOME": str(run / "cache")}
    publish = ["publish", str(mirror), "--to", f"git+file://{run}/remotes/actas.git",
               "--max-repo-bytes", str(max_repo_bytes), "--quiet"]
    link_copy(before, mirror)
    first, rss_first = mirror_cli(code, *publish, env=env)
    # the same remotes for the scheduled run's delta (git never changes an object file in place)
    subprocess.run(["cp", "-al", str(run / "remotes"), str(run / "remotes-delta")], check=True)
    delta = delta_publish(code, before, after, run, f"git+file://{run}/remotes-delta/actas.git", max_repo_bytes)
    link_copy(after, mirror)
    new, rss_new = mirror_cli(code, *publish, env=env)
    none, _ = mirror_cli(code, *publish, env=env)
    shards = len(list((run / "remotes").glob("*.git")))
    return {"first": first, "new": new, "none": none, "delta": delta, "rss_first": rss_first, "rss_new": rss_new,
            "shards": shards}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default=str(ROOT / "bench-out" / "publish"))
    ap.add_argument("--port", type=int, default=18030)
    ap.add_argument("--tables", type=int, help="replay only the first N tables (default: the whole index)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-repo-bytes", type=int, default=60_000_000)
    ap.add_argument("--baseline", help="a checkout of other code to time side by side (alternating rounds)")
    args = ap.parse_args()
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    before, after = prepare(work, args.port, args.tables)
    files = (after / "manifest-sha256.txt").read_bytes().count(b"\n")
    codes = {"ours": ROOT}
    if args.baseline:
        codes["baseline"] = Path(args.baseline).resolve()
    results: dict[str, list[dict]] = {name: [] for name in codes}
    for i in range(args.rounds):
        for name, code in (codes.items() if i % 2 == 0 else reversed(codes.items())):
            r = one_round(code, before, after, work / "run", args.max_repo_bytes)
            results[name].append(r)
            print(f"round {i + 1} {name:8s}: first {r['first']:6.2f} s, {NEW} new {r['new']:5.2f} s, "
                  f"nothing new {r['none']:5.2f} s, {NEW} new as a scheduled run's delta {r['delta']:5.2f} s "
                  f"({r['shards']} shards)", flush=True)
    shutil.rmtree(work / "run", ignore_errors=True)

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name])

    print(f"\nmirror: {files} files, {results['ours'][0]['shards']} shards of at most {args.max_repo_bytes:,} bytes; "
          f"medians of {args.rounds} round(s); the machine may be shared")
    print(f"{'measure':46s} {'ours':>9s}" + (f" {'baseline':>9s} {'base/ours':>9s}" if args.baseline else ""))
    labels = {"first": f"Git publish, first ({files - NEW} files)", "new": f"Git publish, {NEW} new onto {files - NEW}",
              "none": "Git publish, nothing new", "delta": f"Git publish, {NEW} new, a scheduled run's delta"}
    for key, label in labels.items():
        line = f"{label:46s} {median('ours', key):7.2f} s"
        if args.baseline:
            line += f" {median('baseline', key):7.2f} s {median('baseline', key) / median('ours', key):9.2f}"
        print(line)
    rows = []
    onto = "25,000" if args.tables is None else f"{files - NEW:,}"
    for key, measure, target in (("new", f"Git publish, {NEW} new onto {onto}", f"<= {TARGET_S:g} s"),
                                 ("first", "Git publish, first", "-"), ("none", "Git publish, nothing new", "-"),
                                 ("delta", f"Git publish, {NEW} new, a scheduled run's delta", "-")):
        ours = round(median("ours", key), 2)
        rss = {"first": round(median("ours", "rss_first"), 1), "new": round(median("ours", "rss_new"), 1)}.get(key)
        rows.append({"measure": measure, "peer": None, "peer_s": None, "ours_s": ours, "ratio": None,
                     "target": target, "met": ours <= TARGET_S if target != "-" else None, "rss_mb": rss})
    print("BENCH-JSON " + json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
