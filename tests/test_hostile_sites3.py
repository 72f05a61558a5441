"""A third round against hostile sites and broken job files.

Each test found a defect (fixed since) and runs the real command line against
tests/hostile_site.py on loopback; a traceback always fails it (run_cli).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiohttp import web

from mirror.manifest import read_provenance
from tests.conftest import run_cli
from tests.hostile_site import index_row, jpeg, key_of
from tests.test_hostile_more import crawl, site  # noqa: F401 (a fixture)


def failures(out: Path) -> list[dict]:
    path = out / "failures.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def keys_archived(out: Path) -> list[str]:
    return sorted(e.key for e in read_provenance(out / "provenance.jsonl") if e.kind == "acta")


def etagged(data: bytes, tag: str = '"v1"'):
    """An image that answers 304 to If-None-Match: its ETag, as a static file server does."""
    async def handle(request: web.Request) -> web.Response:
        if request.headers.get("If-None-Match") == tag:
            return web.Response(status=304, headers={"ETag": tag})
        return web.Response(body=data, headers={"Content-Type": "image/jpeg", "ETag": tag})
    return handle


# -- one image URL listed under two tables ------------------------------------------------------
@pytest.mark.parametrize("flags", [[], ["--recheck-after", "86400"]], ids=["conditional", "recheck-after"])
def test_one_image_url_listed_under_two_tables_archives_both(site, tmp_path, flags):
    """Was: the second table was asked with the first one's ETag (or spared by the first one's
    check time), the site answered 304, and the table was counted 'unchanged' on every run
    without ever being archived. Now validators and check times of a URL serve only the acta
    whose file it gave."""
    site.routes["/img/shared.jpg"] = etagged(jpeg(7))
    site.serve_index([index_row(0, f"{site.url}/img/shared.jpg"), index_row(1, f"{site.url}/img/shared.jpg")])
    out = tmp_path / "m"
    for run in range(2):
        proc = crawl(site.url, out, "--concurrency", "1", "--processes", "1", *flags)
        assert proc.returncode == 0, proc.stderr
        assert keys_archived(out) == [key_of(0), key_of(1)], (run, proc.stdout)
        assert f"{2 - 2 * run} archived" in proc.stdout, proc.stdout
