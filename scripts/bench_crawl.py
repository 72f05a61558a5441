#!/usr/bin/env python3
"""Benchmark the crawl against wget2 and nginx and print one table of ratios (never a pass/fail test).

    python3 scripts/bench_crawl.py [--rounds 3] [--work bench-out] [--profile] [--fresh-fs GB]
        [--skip-real] [--skip-small] [--skip-memory] [--skip-rerun]
        [--skip-verify] [--skip-git] [--skip-ipfs]

nginx from Debian (installed with apt-get if missing) serves each workload on 127.0.0.1 with its
own config (scripts/benchsite.py). Workloads, each against the site's index at its root:

- real: 2,000 actas of 265,000 bytes under their real V1 names (valid JPEGs padded inside COM
  segments). wget2 on the index's URL list, `acta-mirror crawl`, and wget2 followed by
  `sha256sum` of what it fetched (the pipeline a user would otherwise run), in alternating rounds
  (wget2, crawl, pipeline, wget2, ...), each into a fresh folder; medians of --rounds.
- small: the full V1 index (24,532 tables, each with an image URL), 8,000-byte bodies; wget2 and
  the crawl alternating. The crawl's peak RSS here is the full-index memory figure.
- memory: a synthetic 100,000-table index (V1's CSV format, synthetic keys), every URL served
  from one file; the crawl's peak RSS against the full-index run's.
- rerun: a second crawl into the full-index mirror with nothing changed, with --recheck-after
  86400 (as jobs/resultados2024.toml) and asking every URL again; each / the full crawl's time.
- verify, git, ipfs: rows from scripts/bench_verify.py, bench_publish.py and bench_ipfs.py, run
  as subprocesses (their last line is `BENCH-JSON {"rows": [...]}`), given what their --help
  offers of --mirror and --small-mirror (the full-index mirror made here), --real and
  --real-mirror (the real-size one), --work (WORK/NAME) and --rounds.

The page cache is not dropped (that needs root): every file is read once before the rounds, so
both clients read warm files from nginx. Peak RSS is the crawl's process tree: the larger of the
summed resident sizes sampled every 0.1 s and the largest single process's peak (wait4). Timed
rounds are never profiled; --profile adds one crawl per workload under py-spy (flame graph SVG)
or, without py-spy, cProfile (top functions as text), and prints where the files are.

--fresh-fs GB (root only): both clients write onto a new ext4 file system of that size, in an
image file under WORK mounted through a loop device, as a hosted runner's fresh disk would be.
On a long-used disk, making a file can cost far more than anything else: on this project's
development machine, 20 microseconds in a folder at the top of the disk and 400-700 deeper down,
where ext4 looks through full block groups for a free inode. Both clients make one file per
table (the crawl also one folder per center), and where their folders landed decided the figures
run to run (wget2 took 1.3-4.6 s on the full index).

The last column is the CPU time the whole machine spent busy while each client ran (from
/proc/stat: user, system, interrupts; nginx's and the kernel's share included), medians. Where it
is near twice the wall time, both cores were busy: a client then gets faster only by needing less
CPU, not by spreading its work. The rounds' lines also give each client's own CPU time (wait4's:
its process tree).

Generated sites are kept in WORK/site-*, so a second run starts at once. Prints a Markdown
table and writes it with the machine's details to WORK/bench.json. The machine may be shared:
figures are ratios measured side by side, in one run, and indicative.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import shlex
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mirror.replay.data import index_file  # noqa: E402
from scripts.benchsite import JPEG_FORMAT, Site, jpeg, nginx_version, synthetic_lines  # noqa: E402

PY = sys.executable
REAL_BYTES = 265_000
SMALL_BYTES = 8_000
SYNTHETIC_TABLES = 100_000
RECHECK_AFTER = 86400  # jobs/resultados2024.toml's fetch.recheck_after
MIRRORS = {"real": "mirror-real-size", "small": "mirror-small-full-index"}  # the names bench_ipfs.py looks for


def quiesce() -> None:
    """Before each timed command: write out what earlier rounds left dirty, so no client pays for
    another's writeback (the crawl syncs its own files; wget2 never syncs) and each starts alike."""
    os.sync()
    time.sleep(0.5)


@dataclass(frozen=True)
class Run:
    seconds: float
    rss_mb: float  # peak resident size of the process tree
    rc: int
    out: str  # stdout
    cpu_s: float = 0.0  # CPU time (user + system) of the command and the processes it waited for
    machine_cpu_s: float = 0.0  # CPU time the whole machine spent meanwhile: the server's and the kernel's too


@dataclass(frozen=True)
class Row:
    measure: str
    peer: str
    peer_s: float | None
    ours_s: float | None
    ratio: float | None
    target: str
    met: bool | None
    rss_mb: float | None
    note: str = ""  # instead of the figures: why the row was not measured
    unit: str = ""  # "MB": the ratio column is a difference in MB, not a ratio
    peer_cpu_s: float | None = None  # medians of Run.machine_cpu_s
    ours_cpu_s: float | None = None


def _ppid(pid: str) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return int(fh.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


# Runs the command and writes its peak RSS (wait4's, in KB) and its CPU seconds (user + system,
# its own and those of the processes it waited for) to argv[1]. A child's ru_maxrss starts at its
# parent's size at fork, so the command is started from this small process, not the bench.
WRAPPER = """import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
open(sys.argv[1], "w").write(f"{usage.ru_maxrss} {usage.ru_utime + usage.ru_stime}")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def machine_cpu_seconds() -> float:
    """CPU seconds all cores have spent busy since boot (user, nice, system, irq, softirq, steal:
    not idle, not waiting for the disk), from /proc/stat; 0 where there is none."""
    try:
        with open("/proc/stat") as fh:
            fields = fh.readline().split()
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def measure(cmd: list[str], log: Path, tree: Path = ROOT) -> Run:
    """Run cmd (its stderr into log); its wall time and its process tree's peak RSS (see the
    module's docstring). tree: the checkout whose mirror/ it imports (another, for a baseline)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    maxrss = log.with_suffix(".maxrss")
    out_file = io.BytesIO()
    with open(log, "wb") as stderr:
        start, machine_start = time.perf_counter(), machine_cpu_seconds()
        proc = subprocess.Popen([PY, "-S", "-c", WRAPPER, str(maxrss), *cmd], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=stderr)
        reader = threading.Thread(target=lambda: shutil.copyfileobj(proc.stdout, out_file), daemon=True)
        reader.start()
        peak = [0]
        done = threading.Event()

        def sample() -> None:
            tree = {proc.pid}
            ticks = 0
            while not done.wait(0.1):
                if ticks % 5 == 0:  # find new descendants twice a second: a /proc scan costs more than a read
                    parents = {int(p): _ppid(p) for p in os.listdir("/proc") if p.isdigit()}
                    grew = True
                    while grew:
                        found = {p for p, pp in parents.items() if pp in tree} - tree
                        tree |= found
                        grew = bool(found)
                ticks += 1
                peak[0] = max(peak[0], sum(_rss_kb(p) for p in tree - {proc.pid}))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        rc = proc.wait()
        seconds, machine = time.perf_counter() - start, machine_cpu_seconds() - machine_start
        done.set()
        sampler.join()
        reader.join()
    single, cpu = (maxrss.read_text() or "0 0").split()
    maxrss.unlink()
    return Run(seconds, max(peak[0], int(single)) / 1024, rc, out_file.getvalue().decode(), float(cpu), machine)


def files_in(folder: Path) -> tuple[int, int]:
    """(files, bytes) under folder."""
    n = size = 0
    for dirpath, _dirs, names in os.walk(folder):
        for name in names:
            n += 1
            size += os.stat(os.path.join(dirpath, name)).st_size
    return n, size


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.work = Path(args.work).resolve()
        self.work.mkdir(parents=True, exist_ok=True)
        self.logs = self.work / "logs"
        self.logs.mkdir(exist_ok=True)
        self.rows: list[Row] = []
        self.rounds: dict[str, dict[str, list[float]]] = {}
        self.cpu: dict[str, dict[str, dict[str, list[float]]]] = {}  # workload -> client -> own/machine CPU s per round
        self.profiles: list[str] = []
        self.mirrors: dict[str, Path] = {}
        self.full_crawl: tuple[float, float] | None = None  # (median seconds, peak RSS MB) of the full index
        self.out = self.work  # where both clients write: WORK, or the fresh file system
        self.mounted: Path | None = None

    def fresh_fs(self, gigabytes: int) -> None:
        """Mount a new ext4 file system of this size at WORK/fresh-fs, for both clients' output."""
        if os.geteuid() != 0:
            raise SystemExit("--fresh-fs needs root (it mounts a loop device)")
        image, mount = self.work / "fresh-fs.img", self.work / "fresh-fs"
        subprocess.run(["umount", str(mount)], capture_output=True, check=False)  # a run stopped midway
        image.unlink(missing_ok=True)
        with open(image, "wb") as fh:
            fh.truncate(gigabytes << 30)  # sparse: only what is written takes room
        subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(image)], check=True)
        mount.mkdir(exist_ok=True)
        subprocess.run(["mount", "-o", "loop", str(image), str(mount)], check=True)
        self.out = self.mounted = mount
        print(f"output on a fresh ext4 file system of {gigabytes} GB: {mount}", flush=True)

    def unmount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", str(self.mounted)], check=False)
            (self.work / "fresh-fs.img").unlink(missing_ok=True)

    # --- sites -------------------------------------------------------------------------

    def site(self, name: str, rows, lines, size: int) -> Site:
        """A site of these V1 rows with `size`-byte images, written once and kept in WORK/site-NAME."""
        site = Site(self.work / f"site-{name}", log=False)
        stamp = site.dir / "images-made-by"
        fresh = stamp.exists() and stamp.read_text() == JPEG_FORMAT
        t = time.perf_counter()
        made = 0
        for row in rows:
            path = site.www / row.filename
            if not (fresh and path.exists() and path.stat().st_size == size):
                path.write_bytes(jpeg(row.filename, size, random.Random(row.filename)))
                made += 1
        site.write_index(lines, index_file(1).header)
        stamp.write_text(JPEG_FORMAT)
        if made:
            print(f"  made {made} images of {size:,} bytes in {time.perf_counter() - t:.0f} s", flush=True)
        return site

    def synthetic_site(self) -> tuple[Site, int]:
        """SYNTHETIC_TABLES rows in V1's CSV format with synthetic keys, every image one file."""
        site = Site(self.work / "site-synthetic", log=False, fallback="one.jpg")
        (site.www / "one.jpg").write_bytes(jpeg("synthetic", SMALL_BYTES, random.Random(0)))
        lines = synthetic_lines(SYNTHETIC_TABLES)
        site.write_index(lines, index_file(1).header)
        return site, len(lines)

    @staticmethod
    def warm(site: Site) -> None:
        """Read every served file once, so nginx serves both clients from the page cache."""
        for path in site.www.iterdir():
            with open(path, "rb") as fh:
                while fh.read(1 << 20):
                    pass

    # --- commands ----------------------------------------------------------------------

    def wget2(self, urls: Path, out: Path) -> list[str]:
        # --no-xattr: wget2 otherwise writes extended attributes on every file, which costs it time
        return ["wget2", "--no-config", f"--max-threads={self.args.concurrency}", "-q", "-i", str(urls),
                "-P", str(out), "--no-robots", "--no-xattr", "--no-cookies", "--tries=3"]

    def crawl(self, site: Site, out: Path, *extra: str) -> list[str]:
        return [PY, "-m", "mirror", "crawl", "resultados2024", "--root", site.url, "--out", str(out),
                "--quiet", "--json", "--concurrency", str(self.args.concurrency), *extra]

    def run_crawl(self, site: Site, out: Path, expect: int, label: str, *extra: str) -> Run:
        run = measure(self.crawl(site, out, *extra), log=self.logs / f"{label}.err")
        try:
            summary = json.loads(run.out)
        except ValueError:
            raise SystemExit(f"{label}: the crawl printed no JSON summary (exit {run.rc}); see {self.logs}")
        short = not extra and summary["archived"] + summary["unchanged"] + summary.get("not_asked", 0) < expect  # a re-run may skip
        if run.rc != 0 or summary["failed"] or short:
            raise SystemExit(f"{label}: the crawl exited {run.rc}, archived {summary['archived']} and failed "
                             f"{summary['failed']} of {expect} tables; see {self.logs}")
        return run

    def run_wget2(self, urls: Path, out: Path, expect: int, size: int, label: str, then_hash: bool = False) -> Run:
        cmd = self.wget2(urls, out)
        if then_hash:
            sums = out.parent / f"{out.name}.sha256"
            cmd = ["sh", "-c", f"{shlex.join(cmd)} && cd {shlex.quote(str(out))} && "
                               f"find . -type f -print0 | xargs -0 sha256sum > {shlex.quote(str(sums))}"]
        run = measure(cmd, log=self.logs / f"{label}.err")
        got, nbytes = files_in(out)
        if run.rc != 0 or got != expect or nbytes != expect * size:
            raise SystemExit(f"{label}: wget2 exited {run.rc} with {got} of {expect} files ({nbytes:,} of "
                             f"{expect * size:,} bytes); see {self.logs}")
        if then_hash:
            hashed = len(sums.read_text().splitlines())
            sums.unlink()
            if hashed != expect:
                raise SystemExit(f"{label}: sha256sum listed {hashed} of {expect} files")
        return run

    def profile(self, site: Site, name: str) -> None:
        out = self.out / f"profile-{name}-mirror"
        shutil.rmtree(out, ignore_errors=True)
        crawl = self.crawl(site, out)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        if shutil.which("py-spy"):
            svg = self.work / f"profile-{name}.svg"
            proc = subprocess.run(["py-spy", "record", "--subprocesses", "--rate", "200", "-o", str(svg), "--",
                                   *crawl], cwd=ROOT, env=env, capture_output=True, text=True, check=False)
            if proc.returncode == 0 and svg.exists():
                self.profiles.append(str(svg))
                shutil.rmtree(out, ignore_errors=True)
                return
            print(f"  py-spy failed ({proc.stderr.strip().splitlines()[-1:]}); using cProfile", flush=True)
            shutil.rmtree(out, ignore_errors=True)
        prof = self.work / f"profile-{name}.prof"
        subprocess.run([PY, "-m", "cProfile", "-o", str(prof), *crawl[1:]], cwd=ROOT, env=env,
                       stdout=subprocess.DEVNULL, check=False)
        import pstats

        text = io.StringIO()
        pstats.Stats(str(prof), stream=text).sort_stats("tottime").print_stats(30)
        txt = prof.with_suffix(".txt")
        txt.write_text(text.getvalue())
        self.profiles += [str(prof), str(txt)]
        shutil.rmtree(out, ignore_errors=True)

    # --- workloads ---------------------------------------------------------------------

    def rounds_of(self, name: str, site: Site, n: int, size: int, pipeline: bool) -> dict[str, list[Run]]:
        """Alternating rounds of wget2, the crawl (and the pipeline), each into a fresh folder.
        The last crawl's mirror is kept in WORK/MIRRORS[name]."""
        urls = self.work / f"urls-{name}.txt"
        urls.write_bytes(b"".join(line.rsplit(b",", 1)[1].strip() + b"\n"
                                  for line in site.www.joinpath("RESULTADOS_2024_CSV_V1.csv").read_bytes()
                                  .splitlines()[1:]))
        self.warm(site)
        runs: dict[str, list[Run]] = {"wget2": [], "crawl": [], "pipeline": []}
        mirror = self.out / MIRRORS[name]
        scratch = self.out / "scratch"
        for r in range(1, self.args.rounds + 1):
            shutil.rmtree(scratch, ignore_errors=True)
            quiesce()
            runs["wget2"].append(self.run_wget2(urls, scratch, n, size, f"{name}-wget2-{r}"))
            shutil.rmtree(scratch, ignore_errors=True)
            shutil.rmtree(mirror, ignore_errors=True)
            quiesce()
            runs["crawl"].append(self.run_crawl(site, mirror, n, f"{name}-crawl-{r}"))
            if pipeline:
                quiesce()
                runs["pipeline"].append(self.run_wget2(urls, scratch, n, size, f"{name}-pipeline-{r}",
                                                       then_hash=True))
                shutil.rmtree(scratch, ignore_errors=True)
            print(f"  round {r}: " + ", ".join(f"{k} {v[-1].seconds:.2f} s" for k, v in runs.items() if v)
                  + f"; crawl peak RSS {runs['crawl'][-1].rss_mb:.0f} MB; CPU seconds (its own / the machine's): "
                  + ", ".join(f"{k} {v[-1].cpu_s:.2f} / {v[-1].machine_cpu_s:.2f}" for k, v in runs.items() if v),
                  flush=True)
        self.rounds[name] = {k: [x.seconds for x in v] for k, v in runs.items() if v}
        self.cpu[name] = {k: {"own": [round(x.cpu_s, 3) for x in v], "machine": [round(x.machine_cpu_s, 3) for x in v]}
                          for k, v in runs.items() if v}
        self.mirrors[name] = mirror
        return runs

    def real(self) -> None:
        v1 = index_file(1)
        n = self.args.real_count
        print(f"\n== real size: {n:,} actas of {REAL_BYTES:,} bytes", flush=True)
        site = self.site("real", v1.rows[:n], v1.lines[:n], REAL_BYTES)
        site.start()
        try:
            runs = self.rounds_of("real", site, n, REAL_BYTES, pipeline=True)
            if self.args.profile:
                self.profile(site, "real")
        finally:
            site.stop()
        w, c, p = (median([x.seconds for x in runs[k]]) for k in ("wget2", "crawl", "pipeline"))
        wm, cm, pm = (machine_cpu(runs[k]) for k in ("wget2", "crawl", "pipeline"))
        rss = max(x.rss_mb for x in runs["crawl"])
        what = f"crawl, {n:,} actas of {REAL_BYTES // 1000} KB"
        self.rows.append(Row(what, "wget2", w, c, w / c, ">= 0.7 (peer/ours)", w / c >= 0.7, rss,
                             peer_cpu_s=wm, ours_cpu_s=cm))
        self.rows.append(Row(what, "wget2 + sha256sum", p, c, p / c, ">= 1.0 (peer/ours)", p / c >= 1.0, rss,
                             peer_cpu_s=pm, ours_cpu_s=cm))

    def small(self) -> None:
        v1 = index_file(1)
        n = sum(1 for r in v1.rows if r.filename)
        print(f"\n== full index: {n:,} tables (rows with an image URL) of {SMALL_BYTES:,} bytes", flush=True)
        site = self.site("small", v1.rows, v1.lines, SMALL_BYTES)
        site.start()
        try:
            runs = self.rounds_of("small", site, n, SMALL_BYTES, pipeline=False)
            if self.args.profile:
                self.profile(site, "small")
            w, c = (median([x.seconds for x in runs[k]]) for k in ("wget2", "crawl"))
            rss = max(x.rss_mb for x in runs["crawl"])
            self.full_crawl = (c, rss)
            self.rows.append(Row(f"crawl, full index ({n:,} tables of {SMALL_BYTES // 1000} KB)", "wget2", w, c,
                                 w / c, ">= 0.5 (peer/ours)", w / c >= 0.5, rss,
                                 peer_cpu_s=machine_cpu(runs["wget2"]), ours_cpu_s=machine_cpu(runs["crawl"])))
            if not self.args.skip_memory:
                self.rows.append(Row(f"peak RSS, full index ({n:,} tables)", "-", None, c, None,
                                     "<= 100 MB", rss <= 100, rss))
            if not self.args.skip_rerun:
                self.rerun(site, n, c)
        finally:
            site.stop()

    def rerun(self, site: Site, n: int, full_s: float) -> None:
        """Re-runs into the full-index mirror with nothing changed, alternating the two kinds."""
        print("\n== re-run with nothing changed (full index)", flush=True)
        mirror = self.mirrors["small"]
        kinds = {f"--recheck-after {RECHECK_AFTER} (as the shipped job)": ("--recheck-after", str(RECHECK_AFTER)),
                 "every URL asked again": ()}
        times: dict[str, list[Run]] = {k: [] for k in kinds}
        for r in range(1, self.args.rounds + 1):
            for k, extra in kinds.items():
                run = self.run_crawl(site, mirror, n, f"rerun-{len(extra)}-{r}", *extra)
                summary = json.loads(run.out)
                if summary["archived"]:
                    raise SystemExit(f"re-run archived {summary['archived']} files with nothing changed")
                times[k].append(run)
            print(f"  round {r}: " + ", ".join(f"{k}: {v[-1].seconds:.2f} s" for k, v in times.items()), flush=True)
        self.rounds["rerun"] = {k: [x.seconds for x in v] for k, v in times.items()}
        for k, runs in times.items():
            t = median([x.seconds for x in runs])
            self.rows.append(Row(f"re-run, nothing changed, {k}", "full crawl", full_s, t, t / full_s,
                                 "<= 0.05 (ours/peer)", t / full_s <= 0.05, max(x.rss_mb for x in runs)))

    def memory(self) -> None:
        site, n = self.synthetic_site()
        print(f"\n== memory: synthetic index of {n:,} tables, one {SMALL_BYTES:,}-byte image", flush=True)
        self.warm(site)
        mirror = self.out / "mirror-synthetic"
        site.start()
        try:
            run = self.run_crawl(site, mirror, n, "synthetic-crawl")
        finally:
            site.stop()
            shutil.rmtree(mirror, ignore_errors=True)
        print(f"  crawl {run.seconds:.2f} s, peak RSS {run.rss_mb:.0f} MB", flush=True)
        t, rss = run.seconds, run.rss_mb
        self.rounds["synthetic"] = {"crawl": [t]}
        if self.full_crawl:
            full_s, full_rss = self.full_crawl
            grew = rss - full_rss
            self.rows.append(Row(f"peak RSS, {n:,} synthetic tables, more than the full index's", "full-index crawl",
                                 full_s, t, grew, "<= +10 MB", grew <= 10, rss, unit="MB"))
        else:
            self.rows.append(Row(f"peak RSS, {n:,} synthetic tables (not compared: --skip-small)", "-", None, t,
                                 None, "<= +10 MB", None, rss))

    def others(self) -> None:
        scripts = [("verify", "bench_verify.py", self.args.skip_verify),
                   ("git", "bench_publish.py", self.args.skip_git),
                   ("ipfs", "bench_ipfs.py", self.args.skip_ipfs)]
        for name, script, skip in scripts:
            if skip:
                continue
            print(f"\n== {script}", flush=True)
            rows, reason = self.other(name, ROOT / "scripts" / script)
            if reason:
                print(f"  not measured: {reason}", flush=True)
                self.rows.append(Row(f"{name} ({script})", "-", None, None, None, "-", None, None,
                                     f"not measured: {reason}"))
            self.rows += rows

    def other(self, name: str, script: Path) -> tuple[list[Row], str]:
        """The rows a benchmark script printed as BENCH-JSON, or why there are none."""
        if not script.exists():
            return [], f"scripts/{script.name} is missing"
        if "BENCH-JSON" not in script.read_text():
            return [], f"scripts/{script.name} has no BENCH-JSON line to print (not yet on the shared contract)"
        helptext = subprocess.run([PY, str(script), "--help"], cwd=ROOT, capture_output=True, text=True,
                                  check=False).stdout
        cmd = [PY, str(script)]
        flags = helptext.split()
        offered = {"--mirror": "small", "--small-mirror": "small", "--real": "real", "--real-mirror": "real"}
        for flag, which in offered.items():
            if flag in flags and which in self.mirrors and self.mirrors[which].exists():
                cmd += [flag, str(self.mirrors[which])]
        if "--work" in flags:
            cmd += ["--work", str(self.out / name)]
        if "--rounds" in flags:
            cmd += ["--rounds", str(self.args.rounds)]
        print("  " + shlex.join(cmd), flush=True)
        quiesce()  # the crawls' writes reach the disk first: no write-back competes with the script's rounds
        log = self.logs / f"{name}.out"
        try:
            with open(log, "w") as fh:
                proc = subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, text=True,
                                      timeout=self.args.timeout, check=False)
        except subprocess.TimeoutExpired:
            return [], f"still running after {self.args.timeout} s (--timeout)"
        lines = [ln for ln in log.read_text().splitlines() if ln.strip()]
        last = lines[-1] if lines else ""
        if not last.startswith("BENCH-JSON "):
            return [], f"exit {proc.returncode}, no BENCH-JSON last line (log: {log})"
        try:
            rows = json.loads(last[len("BENCH-JSON "):])["rows"]
            return [Row(str(r["measure"]), str(r["peer"]), r.get("peer_s"), r.get("ours_s"), r.get("ratio"),
                        str(r["target"]), r.get("met"), r.get("rss_mb")) for r in rows], ""
        except (ValueError, KeyError, TypeError) as e:
            return [], f"BENCH-JSON line not as agreed ({e})"


def machine_cpu(runs: list[Run]) -> float:
    return median([x.machine_cpu_s for x in runs])


def cell(x, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def table(rows: list[Row]) -> str:
    out = ["| measure | peer | peer time | ours | ratio | target | met | peak RSS | machine CPU s, peer / ours |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        met = "-" if r.met is None else ("yes" if r.met else "no")
        if r.note:
            out.append(f"| {r.measure} | {r.note} | | | | | | | |")
            continue
        ratio = f"{r.ratio:+.0f} MB" if r.unit == "MB" and r.ratio is not None else cell(r.ratio, ".2f")
        cpu = "-" if r.ours_cpu_s is None else f"{cell(r.peer_cpu_s, '.2f')} / {r.ours_cpu_s:.2f}"
        out.append(f"| {r.measure} | {r.peer} | {cell(r.peer_s, '.2f')} s | {cell(r.ours_s, '.2f')} s | "
                   f"{ratio} | {r.target} | {met} | {cell(r.rss_mb, '.0f')} MB | {cpu} |")
    return "\n".join(out).replace("| - s |", "| - |").replace("| - MB |", "| - |")


def machine() -> dict:
    def version(cmd: list[str]) -> str:
        try:
            first = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.splitlines()[0]
            return first.split(" - ")[0]  # wget2's first line goes on with a description
        except (OSError, IndexError):
            return "missing"

    return {"cores": os.cpu_count(), "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "nginx": nginx_version(), "wget2": version(["wget2", "--version"]),
            "python": platform.python_version(),
            "commit": version(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per comparison; medians (default 3)")
    ap.add_argument("--work", default=str(ROOT / "bench-out"), help="work folder (default bench-out/)")
    ap.add_argument("--concurrency", type=int, default=16, help="requests in flight for both clients (default 16)")
    ap.add_argument("--real-count", type=int, default=2000, help="actas in the real-size workload (default 2000)")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds allowed to each other benchmark script")
    ap.add_argument("--profile", action="store_true", help="one more crawl per workload under py-spy or cProfile")
    ap.add_argument("--fresh-fs", type=int, metavar="GB", help="write onto a new ext4 file system of GB gigabytes "
                                                                  "(root; see the module's text)")
    for part in ("real", "small", "memory", "rerun", "verify", "git", "ipfs"):
        ap.add_argument(f"--skip-{part}", action="store_true", help=f"skip the {part} comparison")
    args = ap.parse_args()
    bench = Bench(args)
    if not shutil.which("wget2"):
        subprocess.run(["apt-get", "install", "-y", "wget2"], check=True)
    # An installed package carries its bytecode, and a checkout writes it on first import; where
    # PYTHONDONTWRITEBYTECODE is set (as on the development machine) every run of both processes
    # would compile the package again (about 45 ms each). compileall writes it once.
    subprocess.run([PY, "-m", "compileall", "-q", str(ROOT / "mirror")], check=True)
    info = machine()
    print(f"machine: {info['cores']} cores, load average at start {info['load_average_at_start']}, "
          f"nginx {info['nginx']}, {info['wget2']}, Python {info['python']}, commit {info['commit']}", flush=True)
    if args.fresh_fs:
        bench.fresh_fs(args.fresh_fs)
    try:
        if not args.skip_real:
            bench.real()
        if not args.skip_small:
            bench.small()
        if not args.skip_memory:
            bench.memory()
        bench.others()
        shutil.rmtree(bench.out / "scratch", ignore_errors=True)
    finally:
        bench.unmount()
    info["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    text = table(bench.rows)
    print(f"\nmachine: {info['cores']} cores, load average at start {info['load_average_at_start']}, "
          f"at end {info['load_average_at_end']}, nginx {info['nginx']}, {info['wget2']}; "
          f"medians of {args.rounds} alternating rounds, concurrency {args.concurrency}, warm page cache\n")
    print(text)
    info["output_fs"] = f"fresh ext4, {args.fresh_fs} GB" if args.fresh_fs else "WORK's own"
    report = {"machine": info, "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
              "rounds": args.rounds, "concurrency": args.concurrency, "rows": [asdict(r) for r in bench.rows],
              "round_seconds": bench.rounds, "round_cpu_seconds": bench.cpu, "profiles": bench.profiles}
    (bench.work / "bench.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"\nwritten: {bench.work / 'bench.json'}")
    for p in bench.profiles:
        print(f"profile: {p}")


if __name__ == "__main__":
    main()
