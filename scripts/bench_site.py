#!/usr/bin/env python3
"""Benchmark the voter's site and print figures: page weights, and search under "Slow 4G".

    python3 scripts/bench_site.py [--work bench-out/site] [--archived 0.05]

The mirror: the replay's full 2024 index (24,532 tables), of which a fraction is archived
(small images) and the rest fails with 404, so the site has every table's page and the full
search index. Page weight: the bytes a first visit downloads (HTML, CSS, scripts; the acta
image apart), raw and gzipped. Search: headless Chromium throttled to DevTools' "Slow 4G"
(562.5 ms latency, 1.44 Mbps down, 0.675 Mbps up, no cache), served by a local HTTP server:
the index page's load, then the time from typing to the first result, for a place name
(answered from the places index) and for a centre code (which loads one state's index).
"""
from __future__ import annotations

import argparse
import asyncio
import functools
import gzip
import http.server
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mirror.crawl import CrawlOptions, crawl  # noqa: E402
from mirror.replay import FaultPlan, Replay, ReplayThread  # noqa: E402

SLOW_4G = {"offline": False, "latency": 562.5, "downloadThroughput": 1.44e6 / 8 * 0.9,
           "uploadThroughput": 0.675e6 / 8 * 0.9}  # DevTools' preset: 1.44 and 0.675 Mbps, 90% usable


def make_mirror(work: Path, archived: float) -> Path:
    mirror = work / "mirror"
    if (mirror / "signed-root.json").exists():
        return mirror
    key = work / "signer"
    subprocess.run([sys.executable, "-m", "mirror", "keygen", "--out", str(key), "--force"], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL)
    plan = FaultPlan.parse(f"404={1 - archived}", seed=1)
    t = time.perf_counter()
    with ReplayThread(Replay(small=True, limit=None, faults=plan)) as replay:
        asyncio.run(crawl(CrawlOptions(site="resultados2024", root=replay.url, out=str(mirror), concurrency=32,
                                       sign_key=f"{key}.key")))
    print(f"mirror: crawled in {time.perf_counter() - t:.0f} s")
    return mirror


def weight(files: list[Path]) -> str:
    raw = sum(f.stat().st_size for f in files)
    packed = sum(len(gzip.compress(f.read_bytes(), 6)) for f in files)
    return f"{raw / 1024:.1f} KiB ({packed / 1024:.1f} KiB gzipped), {len(files)} files"


def browser():
    os.environ["SE_OFFLINE"] = "true"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", f"--user-data-dir={tempfile.mkdtemp()}"):
        options.add_argument(flag)
    b = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    b.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": 360, "height": 740, "deviceScaleFactor": 2,
                                                             "mobile": True})
    b.execute_cdp_cmd("Network.enable", {})
    b.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})
    b.execute_cdp_cmd("Network.emulateNetworkConditions", SLOW_4G)
    return b


FIRST_RESULT = """
var done = arguments[arguments.length - 1], list = document.getElementById('results'), box = document.getElementById('q');
var t0 = performance.now();
new MutationObserver(function (m, obs) {
  if (list.querySelector('a')) { obs.disconnect(); done(performance.now() - t0); }
}).observe(list, {childList: true});
box.value = arguments[0];
box.dispatchEvent(new Event('input'));
"""


def search_times(site: Path, place: str, code: str, runs: int = 3) -> None:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/index.html"
    b = browser()
    b.set_script_timeout(120)
    loads, places, codes = [], [], []
    try:
        for _ in range(runs):
            for query, out in ((place, places), (code, codes)):
                b.get(url)  # returns after the load event: the places index is in
                loads.append(b.execute_script(
                    "var n = performance.getEntriesByType('navigation')[0]; return n.loadEventEnd;"))
                out.append(b.execute_async_script(FIRST_RESULT, query))
    finally:
        b.quit()
        server.shutdown()

    def med(xs):
        return sorted(xs)[len(xs) // 2] / 1000

    print(f"Slow 4G, index page loaded (load event): median {med(loads):.2f} s of {len(loads)}")
    print(f"Slow 4G, typing {place!r} to the first result: median {med(places):.3f} s "
          f"(so {med(loads) + med(places):.2f} s from opening the page)")
    print(f"Slow 4G, typing centre code {code!r} to the first result (loads that state's index): "
          f"median {med(codes):.2f} s (so {med(loads) + med(codes):.2f} s from opening the page)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default=str(ROOT / "bench-out" / "site"))
    ap.add_argument("--archived", type=float, default=0.05, help="fraction of the tables archived (default 0.05)")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    mirror = make_mirror(work, args.archived)
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mirror", "site", str(mirror), "--pubkey", str(work / "signer.pub")],
                          cwd=ROOT, capture_output=True, text=True)
    print(f"acta-mirror site: {time.perf_counter() - t:.1f} s, exit {proc.returncode}: {proc.stdout.strip()}")
    site = mirror / "site"
    pages = list(site.rglob("*.html"))
    print(f"site: {len(pages):,} pages, {sum(p.stat().st_size for p in site.rglob('*') if p.is_file()) / 2**20:.1f} MiB")
    common = [site / "acta.css", site / "acta.js"]
    print("index page (first visit):", weight([site / "index.html", *common, site / "buscar" / "lugares.js"]))
    table = max((p for p in pages if re.fullmatch(r"\d{9}\.\d{2}\.html", p.name) and "acta-proof" in p.read_text()),
                key=lambda p: p.stat().st_size)
    print(f"table page (largest archived one, {table.name}; the acta image apart):",
          weight([table, *common, site / "firma.js"]))
    states = sorted((site / "buscar").glob("e*.js"), key=lambda p: p.stat().st_size)
    print(f"state indexes: {len(states)}, largest {states[-1].name}: {weight([states[-1]])}; "
          f"all: {weight(states)}")
    largest_state = states[-1].stem[1:]
    centre = re.search(r'\["(' + largest_state + r'\d{7})"', states[-1].read_text()).group(1)
    search_times(site, "san jose", f"{int(centre)} 1")


if __name__ == "__main__":
    main()
