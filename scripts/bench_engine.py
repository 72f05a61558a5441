#!/usr/bin/env python3
"""Benchmark the download engine alone against a bare libcurl loop and wget2 (figures, never a test).

    python3 scripts/bench_engine.py [--rounds 3] [--work bench-out] [--count N] [--concurrency 16]
        [--baseline CHECKOUT] [--fresh-fs GB]

nginx serves the full-index workload of scripts/bench_crawl.py (24,532 images of 8,000 bytes,
kept in WORK/site-small), and three clients fetch every URL of it, in alternating rounds, each
into a fresh folder, as one file a body:

- wget2 on the URL list (the peer of the crawl targets);
- a bare libcurl loop: one CurlMulti, --concurrency transfers at once, curl_multi_perform and
  its own select, a write callback that hashes and gathers each body. No event loop, no policy:
  what Python driving libcurl costs at the least;
- mirror.transfer.Engine on the asyncio loop, the same sink and files: what the crawl's engine
  adds to that (its loop integration, its futures);
- with --baseline CHECKOUT, the engine of another checkout too (a folder holding mirror/), for a
  side-by-side of a change.

Every client makes one file a body, so where the files land matters as much as the engine: on a
long-used disk a file in a folder of 24,532 can cost ten times what it costs on a fresh one (see
bench_crawl.py). --fresh-fs GB (root) writes onto a new ext4 file system, as bench_crawl does.

The crawl's own policy, image check, provenance and archive are not in these figures (see
bench_crawl.py for the whole crawl). Prints wall and CPU seconds per client (medians), and the
engine's CPU against the bare loop's.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parent.parent

PY = sys.executable


# -- the clients, each run as `bench_engine.py --client NAME URLS OUT` in a process of its own --
def _write(out: str, n: int, body: bytearray) -> None:
    fd = os.open(f"{out}/{n}.jpg", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, body)
    finally:
        os.close(fd)


def bare_curl(urls: list[str], out: str, concurrency: int) -> int:
    """One CurlMulti driven by curl_multi_perform and its select; returns the bodies written."""
    import hashlib

    import pycurl

    multi = pycurl.CurlMulti()
    idle = []
    for _ in range(concurrency):
        handle = pycurl.Curl()
        handle.setopt(pycurl.NOSIGNAL, 1)
        idle.append(handle)
    todo = iter(enumerate(urls))
    done = failed = 0

    def start(handle: pycurl.Curl, n: int, url: str) -> None:
        digest, body = hashlib.sha256(), bytearray()

        def sink(chunk: bytes) -> None:
            digest.update(chunk)
            body.extend(chunk)

        handle.n, handle.body = n, body
        handle.setopt(pycurl.URL, url)
        handle.setopt(pycurl.WRITEFUNCTION, sink)
        multi.add_handle(handle)

    def fill() -> None:
        while idle:
            item = next(todo, None)
            if item is None:
                return
            start(idle.pop(), *item)

    fill()
    while done + failed < len(urls):
        while multi.perform()[0] == pycurl.E_CALL_MULTI_PERFORM:
            pass
        while True:
            queued, ok, errors = multi.info_read()
            for handle in ok:
                multi.remove_handle(handle)
                _write(out, handle.n, handle.body)
                done += 1
                idle.append(handle)
            for handle, _code, _message in errors:
                multi.remove_handle(handle)
                failed += 1
                idle.append(handle)
            if not queued:
                break
        fill()
        multi.select(1.0)
    return done


def engine(urls: list[str], out: str, concurrency: int) -> int:
    """mirror.transfer.Engine on the asyncio loop, `concurrency` exchanges at once."""
    import asyncio
    import hashlib

    from mirror.transfer import Engine

    written = [0]

    async def run() -> None:
        async with Engine(concurrency=concurrency) as eng:
            todo = iter(enumerate(urls))

            async def worker() -> None:
                for n, url in todo:
                    digest, body = hashlib.sha256(), bytearray()

                    def on_head(_head, digest=digest, body=body):
                        def sink(chunk: bytes) -> None:
                            digest.update(chunk)
                            body.extend(chunk)
                        return sink

                    await eng.get(url, {}, timeout=60, connect_timeout=10, on_head=on_head)
                    _write(out, n, body)
                    written[0] += 1

            await asyncio.gather(*(worker() for _ in range(concurrency)))

    asyncio.run(run())
    return written[0]


def client_main(argv: list[str]) -> None:
    name, urls_file, out, concurrency = argv[0], argv[1], argv[2], int(argv[3])
    urls = Path(urls_file).read_text().split()
    Path(out).mkdir(parents=True, exist_ok=True)
    done = {"curl": bare_curl, "engine": engine}[name](urls, out, concurrency)
    if done != len(urls):
        raise SystemExit(f"{name}: {done} of {len(urls)} bodies written")


# -- the comparison -------------------------------------------------------------------------
def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        client_main(sys.argv[2:])  # the package from PYTHONPATH: this checkout's, or the baseline's
        return
    sys.path.insert(0, str(ROOT))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3); medians")
    ap.add_argument("--work", default=str(ROOT / "bench-out"), help="work folder (default bench-out/)")
    ap.add_argument("--count", type=int, default=0, help="fetch only the first N URLs (default: all)")
    ap.add_argument("--concurrency", type=int, default=16, help="transfers at once, every client (default 16)")
    ap.add_argument("--baseline", metavar="CHECKOUT", help="also time the engine of this checkout (holds mirror/)")
    ap.add_argument("--fresh-fs", type=int, metavar="GB", help="write onto a new ext4 file system of GB gigabytes (root)")
    args = ap.parse_args()
    if args.baseline and not (Path(args.baseline) / "mirror" / "transfer.py").is_file():
        raise SystemExit(f"--baseline {args.baseline}: no mirror/transfer.py there")
    from mirror.replay.data import index_file
    from scripts.bench_crawl import SMALL_BYTES, Bench, measure, quiesce

    bench = Bench(argparse.Namespace(work=args.work, concurrency=args.concurrency, rounds=args.rounds))
    v1 = index_file(1)
    site = bench.site("small", v1.rows, v1.lines, SMALL_BYTES)
    if args.fresh_fs:
        bench.fresh_fs(args.fresh_fs)
    work = bench.out / "engine"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    site.start()
    try:
        lines = site.www.joinpath("RESULTADOS_2024_CSV_V1.csv").read_bytes().splitlines()[1:]
        urls = [line.rsplit(b",", 1)[1].strip().decode() for line in lines]
        urls = urls[:args.count] if args.count else urls
        url_file = work / "urls.txt"
        url_file.write_text("".join(u + "\n" for u in urls))
        bench.warm(site)
        me = str(Path(__file__).resolve())
        clients = {  # name: (command, the checkout whose mirror/ it imports)
            "wget2": (bench.wget2(url_file, work / "out"), ROOT),
            "bare libcurl loop": ([PY, me, "--client", "curl", str(url_file), str(work / "out"),
                                   str(args.concurrency)], ROOT),
            "engine": ([PY, me, "--client", "engine", str(url_file), str(work / "out"), str(args.concurrency)], ROOT),
        }
        if args.baseline:
            clients["engine, baseline"] = (clients["engine"][0], Path(args.baseline).resolve())
        print(f"{len(urls):,} URLs of {SMALL_BYTES:,} bytes from nginx at {site.url}, {args.concurrency} at a time, "
              f"{args.rounds} alternating rounds", flush=True)
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in clients}
        for r in range(1, args.rounds + 1):
            for name, (cmd, tree) in clients.items():
                shutil.rmtree(work / "out", ignore_errors=True)
                (work / "out").mkdir()
                quiesce()
                run = measure(cmd, work / "client.err", tree)
                if run.rc != 0:
                    raise SystemExit(f"{name} failed (exit {run.rc}): {(work / 'client.err').read_text()[-500:]}")
                times[name].append((run.seconds, run.cpu_s))
            print(f"  round {r}: " + ", ".join(f"{n} {t[-1][0]:.2f} s ({t[-1][1]:.2f} CPU)" for n, t in times.items()),
                  flush=True)
    finally:
        site.stop()
        shutil.rmtree(work, ignore_errors=True)
        bench.unmount()
    print(f"\n{'client':<22} {'wall s':>8} {'CPU s':>8}   (medians)")
    medians = {n: (median(w for w, _ in t), median(c for _, c in t)) for n, t in times.items()}
    for name, (wall, cpu) in medians.items():
        print(f"{name:<22} {wall:8.2f} {cpu:8.2f}")
    floor = medians["bare libcurl loop"][1]
    for name in ("engine", "engine, baseline"):
        if name in medians:
            print(f"{name}: {medians[name][1] / floor:.2f} times the bare loop's CPU")


if __name__ == "__main__":
    main()
