"""The acta-mirror command: subcommands, progress, and the one place that prints for people.

Exit codes (every command):
    0    done, nothing wrong
    1    finished, but something failed or a check found problems (each one is named)
    2    bad usage or bad input: one line says what, nothing archived was touched
    3    the disk refused a write (full, read-only): nothing archived before is damaged
    130  interrupted
"""
from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import sys
import time

from . import __version__
from .models import MirrorError, UsageError

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, EXIT_DISK, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
FAILURES_SHOWN = 100


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, never a usage dump
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _number(kind: type, minimum: float, what: str):
    """An argparse type: a number of `kind`, at least `minimum`, with a one-line complaint."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum:g} or more: {text!r}")
        return value
    return parse


_positive_int = _number(int, 1, "a whole number")
_nonneg_float = _number(float, 0, "a number")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="acta-mirror", description="Mirror published election tally sheets (actas) into verifiable bags.")
    p.add_argument("--version", action="version", version=f"acta-mirror {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    c = sub.add_parser("crawl", help="crawl a results site into a BagIt mirror")
    c.add_argument("site", help="site adapter name, e.g. resultados2024")
    c.add_argument("--root", required=True, help="the site's root URL")
    c.add_argument("--out", required=True, help="the mirror directory (a BagIt bag)")
    c.add_argument("--discover", choices=("csv", "html", "both"),
                   help="how actas are found (default: the site's first way; csv for resultados2024)")
    c.add_argument("--index", help="an index file or URL to read instead of the site's default index")
    c.add_argument("--concurrency", type=_positive_int, default=16, help="requests in flight (default 16)")
    c.add_argument("--rate", type=_nonneg_float, default=0.0, help="requests per second per host, 0 for no pacing (default 0)")
    c.add_argument("--proxy", help="http://, https://, socks5:// or socks5h:// proxy URL")
    c.add_argument("--alternate", action="append", default=[], metavar="URL",
                   help="another host serving the same paths (a mirror, an S3 bucket), tried when the root's host fails; repeatable")
    c.add_argument("--timeout", type=_nonneg_float, default=60.0, help="seconds for a whole request (default 60)")
    c.add_argument("--max-bytes", type=_positive_int, default=25 * 1024 * 1024, help="size cap per file (default 25 MiB)")
    c.add_argument("--shard", default="1/1", help="I/N: take only part I of N of the acta keys (default 1/1)")
    c.add_argument("--recheck-after", type=_nonneg_float, default=0.0,
                   help="seconds: known URLs checked more recently are not asked again (default 0: ask all)")
    c.add_argument("--sign-key", metavar="BASE.key", help="sign the manifest's Merkle root with this key")
    c.add_argument("--wait-lock", action="store_true", help="wait for another run on the same --out instead of exiting")
    c.add_argument("--quiet", action="store_true", help="no progress display")

    v = sub.add_parser("verify", help="check a mirror offline")
    v.add_argument("dir", help="the mirror directory")
    v.add_argument("--fast", action="store_true", help="check Payload-Oxum and file counts only")
    v.add_argument("--json", action="store_true", help="print the problems as JSON")
    v.add_argument("--cids", action="store_true", help="also check every file's IPFS CID in provenance.jsonl")
    v.add_argument("--pubkey", metavar="BASE.pub", help="also check the signed Merkle root with this public key")

    kg = sub.add_parser("keygen", help="write an Ed25519 key pair in minisign format")
    kg.add_argument("--out", required=True, metavar="BASE", help="writes BASE.key and BASE.pub")
    kg.add_argument("--force", action="store_true", help="overwrite existing key files")

    sg = sub.add_parser("sign", help="sign a mirror's Merkle root")
    sg.add_argument("dir", help="the mirror directory")
    sg.add_argument("--key", required=True, metavar="BASE.key", help="the secret key")

    pr = sub.add_parser("prove", help="print an inclusion proof for one file, as JSON")
    pr.add_argument("dir", help="the mirror directory")
    pr.add_argument("path", help="the file, as data/... or a path inside the mirror")

    vf = sub.add_parser("verify-file", help="check one downloaded file against a proof and a root")
    vf.add_argument("file", help="the downloaded file")
    vf.add_argument("--proof", required=True, help="the proof JSON from 'acta-mirror prove'")
    vf.add_argument("--root", required=True, help="the Merkle root you trust (hex), e.g. from a signed statement")

    df = sub.add_parser("diff", help="compare two mirrors, manifests or index CSVs by acta key")
    df.add_argument("a", help="the older mirror directory, manifest-sha256.txt or index CSV")
    df.add_argument("b", help="the newer one")
    df.add_argument("--json", action="store_true", help='print {"added": [...], "removed": [...], "changed": [...]}')

    r = sub.add_parser("replay", help="serve the local replay of the 2024 results site")
    r.add_argument("--site", default="resultados2024", help="which site to replay (default resultados2024)")
    r.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    r.add_argument("--port", type=int, default=8024, help="port (default 8024; 0 picks a free one)")
    r.add_argument("--small", action="store_true", help="small synthesized images (a few KB) for fast runs")
    r.add_argument("--faults", help="fault plan, e.g. 429=0.02,503=0.05:3,404=0.001 (see mirror/replay/faults.py)")
    r.add_argument("--seed", type=int, default=0, help="seed for synthesized images and faults (default 0)")
    r.add_argument("--limit", type=_positive_int, help="serve only the first N tables (plus the 20 real scans)")
    r.add_argument("--cache", help="directory to keep rendered images in between runs")
    r.add_argument("--warm", action="store_true", help="render every image into --cache before serving")
    r.add_argument("--epoch", type=_positive_int, default=1, help="2 or more: images with the 'change' fault are re-scanned")
    r.add_argument("--html-version", type=int, choices=(1, 2), default=1, help="which index version the HTML pages follow")
    pub = sub.add_parser("publish", help="push a mirror to Git remotes (and IPFS)")
    pub.add_argument("dir", help="the mirror directory")
    pub.add_argument("--to", action="append", required=True, metavar="URL",
                     help="target, repeatable: git+file://, git+https://, git+http://, git+ssh://, git://")
    pub.add_argument("--max-repo-bytes", type=_positive_int, default=900_000_000,
                     help="size budget of one shard repository (default 900 MB)")
    pub.add_argument("--max-push-bytes", type=_positive_int, default=1_000_000_000,
                     help="most new file bytes in one push (default 1 GB; GitHub refuses 2 GB)")
    pub.add_argument("--shard-by", choices=("size", "state"), default="size",
                     help="pack states into shards by size (default), or one shard per state")
    pub.add_argument("--ipns", metavar="KEY", help="also publish the IPFS root under this IPNS key (best effort)")
    pub.add_argument("--pin-service", metavar="URL",
                     help="ask this IPFS Pinning Services API endpoint to pin the root (token: ACTA_MIRROR_PIN_TOKEN)")
    pub.add_argument("--quiet", action="store_true", help="no progress display")

    car = sub.add_parser("car", help="write the mirror as a CARv1 file (its IPFS DAG, no node needed)")
    car.add_argument("dir", help="the mirror directory")
    car.add_argument("-o", "--output", required=True, help="the CAR file to write")

    rs = sub.add_parser("restore", help="clone a mirror's shards and reassemble it, verified")
    rs.add_argument("--from", dest="sources", action="append", required=True, metavar="URL",
                    help="a target the mirror was published to, repeatable: each shard comes from the first that has it")
    rs.add_argument("--out", required=True, help="a new directory for the restored mirror")

    rn = sub.add_parser("run", help="run a job file: crawl, verify, publish")
    rn.add_argument("job", help="the job file (mirror.toml)")
    rn.add_argument("--shard", default="1/1", help="I/N: crawl only part I of N (publish after merge)")
    rn.add_argument("--no-publish", action="store_true", help="crawl and verify only")
    rn.add_argument("--publish-only", action="store_true", help="verify and publish the mirror as it is")
    rn.add_argument("--quiet", action="store_true", help="no progress display")

    mg = sub.add_parser("merge", help="combine shard mirrors into one valid bag")
    mg.add_argument("out", help="the merged mirror (may hold an earlier merge)")
    mg.add_argument("shards", nargs="+", metavar="SHARD_DIR", help="shard mirrors")
    mg.add_argument("--sign-key", metavar="BASE.key", help="sign the merged mirror's root")

    ta = sub.add_parser("tally", help="decode every acta's QR code and tally the votes")
    ta.add_argument("dir", help="the mirror directory")
    ta.add_argument("--format", choices=("csv", "json", "summary"), default="summary",
                    help="csv: one row per table; json: tables and every level; summary (default)")
    ta.add_argument("--out", help="write to this file instead of standard output")

    cc = sub.add_parser("crosscheck", help="compare the QR tally with the published index and official results")
    cc.add_argument("dir", help="the mirror directory")
    cc.add_argument("--against", action="append", required=True, metavar="FILE",
                    help="an index CSV or an official results file (level,code,EG,...), repeatable")
    cc.add_argument("--json", action="store_true", help="print the full report as JSON")

    st = sub.add_parser("site", help="write a static, browsable 'find your table' site into the mirror")
    st.add_argument("dir", help="the mirror directory")

    d = sub.add_parser("demo", help="replay the 2024 site locally, mirror it and verify the mirror")
    d.add_argument("--out", default="demo-out", help="where the demo writes (default ./demo-out)")
    d.add_argument("--limit", type=_positive_int, default=1000, help="tables to replay (default 1000)")
    d.add_argument("--full", action="store_true", help="replay all 25,073 tables (minutes)")
    d.add_argument("--real-size", action="store_true", help="real-size synthesized images (~250 KB) instead of small ones")
    d.add_argument("--no-ipfs", action="store_true", help="write a CAR file instead of starting the IPFS node")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not args.command:
            parser.print_help()
            return EXIT_USAGE
        return COMMANDS[args.command](args)
    except MirrorError as exc:
        from .publish import redact

        print(f"acta-mirror: {redact(str(exc))}", file=sys.stderr)  # no credential in any message
        if os.environ.get("GITHUB_ACTIONS") == "true":  # shown on the run's summary page
            print(f"::error::{redact(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("acta-mirror: interrupted; re-run to resume", file=sys.stderr)
        return EXIT_INTERRUPTED


def _writes(what: str):
    """For a command that writes outside the archive (a report, a key, a CAR, the site): a write
    the disk refuses (full, read-only) is one line and exit 3, never a traceback."""
    def wrap(command):
        @functools.wraps(command)
        def run(args) -> int:
            try:
                return command(args)
            except OSError as exc:
                from .archive import disk_error

                raise disk_error(exc, what) from None
        return run
    return wrap


# -- crawl ------------------------------------------------------------------------
def cmd_crawl(args) -> int:
    from .crawl import Counters, CrawlOptions, crawl, parse_shard

    opts = CrawlOptions(site=args.site, root=args.root, out=args.out, discover=args.discover,
                        index=args.index, concurrency=args.concurrency, rate=args.rate,
                        proxy=args.proxy, timeout=args.timeout, max_bytes=args.max_bytes,
                        shard=parse_shard(args.shard), wait_lock=args.wait_lock,
                        recheck_after=args.recheck_after, sign_key=args.sign_key,
                        alternates=tuple(args.alternate))
    counters = Counters()

    async def run():
        show = None if args.quiet else asyncio.create_task(_progress(counters))
        try:
            return await crawl(opts, counters)
        finally:
            if show:
                show.cancel()

    result = asyncio.run(run())
    c = result.counters
    for rel in result.quarantined:
        print(f"quarantined {rel}: on disk but never recorded (a killed run); kept in .acta-mirror/quarantine",
              file=sys.stderr)
    for f in result.failures[:FAILURES_SHOWN]:
        print(f"failed {f['key']} {f['url']}: {f['reason']}", file=sys.stderr)
    if len(result.failures) > FAILURES_SHOWN:
        print(f"... and {len(result.failures) - FAILURES_SHOWN} more in {os.path.join(args.out, 'failures.jsonl')}",
              file=sys.stderr)
    rate = c.done / result.seconds if result.seconds else 0.0
    print(f"{c.discovered} actas discovered: {c.archived} archived, {c.unchanged} unchanged, "
          f"{c.failed} failed; {c.bytes / 1e6:.1f} MB in {result.seconds:.1f} s ({rate:.0f}/s); mirror {args.out}")
    return EXIT_PROBLEMS if result.failures else EXIT_OK


async def _progress(c, stop=None) -> None:
    """A rich bar on a terminal; otherwise a plain line every few seconds (until stop is set)."""
    if sys.stderr.isatty():
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        with Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                      TextColumn("{task.completed}/{task.total}"), TextColumn("{task.fields[detail]}"),
                      TimeRemainingColumn(), transient=True) as bar:
            task = bar.add_task("crawl", total=None, detail="")
            while not (stop and stop.is_set()):
                rate = c.done / max(1e-6, time.monotonic() - c.started)
                bar.update(task, completed=c.done, total=c.discovered if c.discovery_done else None,
                           detail=f"found {c.discovered} new {c.archived} same {c.unchanged} "
                                  f"failed {c.failed} {rate:.0f}/s")
                await asyncio.sleep(0.2)
    while not (stop and stop.is_set()):
        for _ in range(50):
            await asyncio.sleep(0.1)
            if stop and stop.is_set():
                return
        elapsed = time.monotonic() - c.started
        rate = c.done / max(1e-6, elapsed)
        eta = (c.discovered - c.done) / rate if rate and c.discovery_done else float("nan")
        print(f"[{elapsed:6.0f}s] discovered {c.discovered} archived {c.archived} unchanged {c.unchanged} "
              f"failed {c.failed} {rate:.0f}/s eta {eta:.0f}s", file=sys.stderr, flush=True)


# -- verify -------------------------------------------------------------------------
def cmd_verify(args) -> int:
    from .state import read_state
    from .verify import verify

    state = read_state(args.dir, records=not args.fast)
    problems = verify(args.dir, fast=args.fast, cids=args.cids, state=state)
    seal = None
    if not args.fast:
        from .evidence import check_seal
        seal = check_seal(args.dir, args.pubkey, state=state)
        problems += seal.problems
    if args.json:
        report = {"ok": not problems, "problems": [p.__dict__ for p in problems]}
        if seal:
            report["signature"] = {"signed": seal.signed, "key_id": seal.key_id, "trusted": seal.trusted}
        print(json.dumps(report, indent=1))
    else:
        for p in problems:
            print(p)
        if seal:
            print(seal.summary)
        if not problems:
            print(f"OK: {args.dir} is intact{' (fast check: counts and sizes only)' if args.fast else ''}")
        else:
            print(f"{len(problems)} problem(s) in {args.dir}", file=sys.stderr)
    return EXIT_PROBLEMS if problems else EXIT_OK


# -- replay -------------------------------------------------------------------------
def cmd_replay(args) -> int:
    from .replay import FaultPlan, replay_for, serve_forever

    options = dict(seed=args.seed, small=args.small, faults=FaultPlan.parse(args.faults, args.seed),
                   limit=args.limit, cache_dir=args.cache, epoch=args.epoch)
    if args.site == "resultados2024":
        options["html_version"] = args.html_version
    replay = replay_for(args.site, **options)
    if args.warm:
        if not args.cache:
            raise UsageError("--warm needs --cache DIR")
        t = time.monotonic()
        n = replay.warm(os.cpu_count() or 1)
        print(f"rendered {n} images into {args.cache} in {time.monotonic() - t:.1f} s", flush=True)
    try:
        serve_forever(replay, args.host, args.port,
                      on_ready=lambda url: print(f"replay listening on {url}", flush=True))
    except OSError as exc:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    return EXIT_OK


# -- publish and restore ---------------------------------------------------------------
class _Bars:
    """One progress bar per target (rich on a terminal, nothing otherwise)."""

    def __init__(self, quiet: bool):
        self.bar = None
        self.tasks: dict = {}
        if not quiet and sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), transient=True)

    def __enter__(self):
        if self.bar:
            self.bar.start()
        return self

    def __exit__(self, *exc):
        if self.bar:
            self.bar.stop()

    def __call__(self, target: str, part: str, done: int, total: int) -> None:
        if self.bar is None:
            return
        key = (target, part)
        if key not in self.tasks:
            self.tasks[key] = self.bar.add_task(f"{target} [{part}]", total=total)
        self.bar.update(self.tasks[key], completed=done, total=total)


@_writes("publishing")
def cmd_publish(args) -> int:
    from .publish import PublishError, publisher_for

    options = dict(max_repo_bytes=args.max_repo_bytes, max_push_bytes=args.max_push_bytes, shard_by=args.shard_by,
                   ipns=args.ipns, pin_service=args.pin_service)
    publishers = [publisher_for(t, **options) for t in args.to]  # bad usage fails before any push
    failed = []
    with _Bars(args.quiet) as bars:
        for pub in publishers:
            pub.progress = bars
            try:
                receipt = pub.publish(args.dir)
            except PublishError as exc:
                failed.append(str(exc))
                continue
            for line in receipt.details:
                print(line)
            print(f"published {receipt.target} ({receipt.kind}): manifest root {receipt.root}"
                  + (f" root CID {receipt.cid}" if receipt.cid else ""))
            if receipt.cid:
                print(receipt.cid)
    for line in failed:
        print(f"acta-mirror: failed: {line}", file=sys.stderr)
    return EXIT_PROBLEMS if failed else EXIT_OK


@_writes("restoring")
def cmd_restore(args) -> int:
    from .publish.git import restore

    for line in restore(args.sources, args.out):
        print(line)
    print(f"restored and verified: {args.out}")
    return EXIT_OK


@_writes("writing the CAR file")
def cmd_car(args) -> int:
    from .publish.ipfs import write_car

    if not os.path.isdir(args.dir) or not os.path.exists(os.path.join(args.dir, "provenance.jsonl")):
        raise UsageError(f"{args.dir}: not a mirror")
    root = write_car(args.dir, args.output)
    print(f"wrote {args.output}: the mirror's UnixFS DAG, root CID")
    print(root)
    return EXIT_OK


# -- evidence ------------------------------------------------------------------------
@_writes("writing the key files")
def cmd_keygen(args) -> int:
    from .sign import generate

    key, pub = f"{args.out}.key", f"{args.out}.pub"
    for path in (key, pub):
        if os.path.exists(path) and not args.force:
            raise UsageError(f"{path} exists; refusing to overwrite a key (use --force)")
    secret, public = generate()
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret.text())
    with open(pub, "w") as fh:
        fh.write(public.text())
    print(f"wrote {key} (secret: keep it safe) and {pub} (publish it)")
    return EXIT_OK


@_writes("signing")
def cmd_sign(args) -> int:
    from .evidence import sign_bag

    root = sign_bag(args.dir, args.key)
    print(f"signed Merkle root {root} of {args.dir}")
    return EXIT_OK


def cmd_prove(args) -> int:
    from .evidence import prove

    print(json.dumps(prove(args.dir, args.path), separators=(",", ":")))
    return EXIT_OK


def cmd_verify_file(args) -> int:
    from .evidence import check_proof
    from .sign import SignatureError

    try:
        with open(args.proof, encoding="utf-8") as fh:
            proof = json.load(fh)
    except (OSError, ValueError) as exc:
        raise UsageError(f"--proof {args.proof}: not readable JSON ({exc.__class__.__name__})") from None
    if not isinstance(proof, dict):
        raise UsageError(f"--proof {args.proof}: not a proof")
    try:
        check_proof(args.file, proof, args.root)
    except SignatureError as exc:
        print(f"NOT VERIFIED: {exc}")
        return EXIT_PROBLEMS
    print(f"VERIFIED: {args.file} is {proof['path']} under Merkle root {args.root}")
    return EXIT_OK


def cmd_diff(args) -> int:
    from .evidence import diff

    result = diff(args.a, args.b)
    if args.json:
        print(json.dumps(result))
    else:
        for kind in ("added", "removed", "changed"):
            print(f"{kind}: {len(result[kind])}")
            for key in result[kind][:20]:
                print(f"  {key}")
            if len(result[kind]) > 20:
                print(f"  ... and {len(result[kind]) - 20} more (--json lists all)")
    return EXIT_PROBLEMS if any(result.values()) else EXIT_OK


# -- jobs -----------------------------------------------------------------------------
def cmd_run(args) -> int:
    from .config import load_job
    from .crawl import Counters, parse_shard
    from .job import run_job

    job = load_job(args.job)
    shard = parse_shard(args.shard)
    if args.no_publish and args.publish_only:
        raise UsageError("--no-publish and --publish-only exclude each other")
    counters = Counters()

    if args.publish_only:
        return _print_run(run_job(job, shard=shard, crawl_step=False))
    import threading

    stop = threading.Event()
    shower = threading.Thread(target=lambda: asyncio.run(_progress(counters, stop)), daemon=True)
    if not args.quiet:
        shower.start()
    try:
        report = run_job(job, shard=shard, publish_step=not args.no_publish, counters=counters)
    finally:
        stop.set()
        if shower.is_alive():
            shower.join(2)
    return _print_run(report)


def _print_run(report) -> int:
    if report.crawl:
        c = report.crawl.counters
        for f in report.crawl.failures[:FAILURES_SHOWN]:
            print(f"failed {f['key']} {f['url']}: {f['reason']}", file=sys.stderr)
        print(f"crawl: {c.discovered} discovered, {c.archived} archived, {c.unchanged} unchanged, "
              f"{c.failed} failed, {c.vanished} vanished ({report.crawl.seconds:.1f} s)")
    print("verify: " + ("intact" if not report.problems else f"{len(report.problems)} problem(s)"))
    for p in report.problems[:FAILURES_SHOWN]:
        print(f"  {p}")
    for r in report.receipts:
        for line in r.details:
            print(f"publish: {line}")
        print(f"publish: {r.target}: {'updated' if r.changed else 'nothing new'}"
              + (f", root CID {r.cid}" if r.cid else "") + f", Merkle root {r.root}")
    for line in report.publish_failures:
        print(f"acta-mirror: failed: {line}", file=sys.stderr)
    for note in report.notes:
        print(note)
    print(f"mirror: {report.mirror}")
    return EXIT_OK if report.ok else EXIT_PROBLEMS


def cmd_merge(args) -> int:
    from .job import merge

    stats = merge(args.out, args.shards, args.sign_key)
    print(f"merged {len(args.shards)} shard(s) into {args.out}: {stats['added']} files added, "
          f"{stats['renamed']} kept as new versions; verified")
    return EXIT_OK


# -- audit ----------------------------------------------------------------------------
@_writes("writing the tally")
def cmd_tally(args) -> int:
    from .audit.tally import tally, to_csv, to_json

    result = tally(args.dir)
    if args.format == "csv":
        text = to_csv(result)
    elif args.format == "json":
        text = json.dumps(to_json(result), ensure_ascii=False, indent=1) + "\n"
    else:
        nation = result.level("nation")
        lines = []
        for unit in nation:
            lines.append(f"{unit.name}: {unit.decoded} of {unit.tables} tables decoded")
            lines += [f"  {c:5s} {v:>12,}" for c, v in sorted(unit.votes.items(), key=lambda kv: -kv[1])]
            lines.append(f"  nulos {unit.nulos:>12,}")
            lines += [f"  unreadable {k}: {r}" for k, r in unit.unreadable[:FAILURES_SHOWN]]
        text = "\n".join(lines) + "\n"
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def cmd_crosscheck(args) -> int:
    from .audit.crosscheck import crosscheck
    from .audit.tally import tally

    report = crosscheck(tally(args.dir), args.against)
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=1))
    else:
        for d in report["disagreements"][:500]:
            print(f"{d['source']}: {d['level']} {d['code']} {d['column']}: QR {d['qr']}, file {d['other']}")
        for r in report["races"]:
            flag = "COULD FLIP" if r["could_flip"] else "holds"
            print(f"race {r['level']} {r['code']} {r['name']}: {r['leader']} leads {r['runner_up']} by "
                  f"{r['margin']:,}; {r['votes_in_dispute']:,} votes in dispute: {flag}")
        print(f"{len(report['tables_in_disagreement'])} table(s) disagree; "
              f"{len(report['unverifiable'])} figure(s) could not be checked")
    return EXIT_PROBLEMS if report["disagreements"] else EXIT_OK


@_writes("writing the site")
def cmd_site(args) -> int:
    from .audit.site import build_site

    index = build_site(args.dir)
    print(f"wrote the site: open {index}")
    return EXIT_OK


# -- demo ---------------------------------------------------------------------------
def cmd_demo(args) -> int:
    from pathlib import Path

    from .demo import run_demo
    from .verify import verify

    report = run_demo(Path(args.out), limit=None if args.full else args.limit, small=not args.real_size,
                      use_ipfs=not args.no_ipfs)
    for i, step in enumerate(report.steps, 1):
        print(f"{i}. {step}")
    problems = verify(report.mirror)
    print(f"{len(report.steps) + 1}. verified {report.mirror}: " + ("intact" if not problems else f"{len(problems)} problem(s)"))
    print("Check it yourself:")
    for line in report.checks:
        print(f"   {line}")
    print("Stopped the replay and the IPFS node.")
    return EXIT_OK if report.ok and not problems else EXIT_PROBLEMS


COMMANDS = {
    "tally": cmd_tally,
    "crosscheck": cmd_crosscheck,
    "site": cmd_site,
    "demo": cmd_demo,
    "run": cmd_run,
    "merge": cmd_merge,
    "crawl": cmd_crawl,
    "publish": cmd_publish,
    "restore": cmd_restore,
    "car": cmd_car,
    "keygen": cmd_keygen,
    "sign": cmd_sign,
    "prove": cmd_prove,
    "verify-file": cmd_verify_file,
    "diff": cmd_diff,
    "verify": cmd_verify,
    "replay": cmd_replay,
}
