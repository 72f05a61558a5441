"""Local replays of real results sites: the test bed, the demo and the benchmark target.

Each replay module names the site adapter it serves (`SITE`) and offers `make(**options)`,
returning an object with `start(host, port)`, `stop()` and `expected()` (the acta keys and
image names it serves). A new site's replay is one new module here; nothing else changes.
"""
from __future__ import annotations

import importlib
import pkgutil

from ..models import UsageError
from .faults import FaultPlan
from .server import Replay, ReplayThread, serve_forever


def replays() -> dict[str, object]:
    """Site name -> the module that replays it."""
    found = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        site = getattr(module, "SITE", None)
        if site:
            found[site] = module
    return found


def replay_for(site: str, **options):
    modules = replays()
    if site not in modules:
        raise UsageError(f"no replay for site {site!r}; replays: {', '.join(sorted(modules))}")
    return modules[site].make(**options)


__all__ = ["FaultPlan", "Replay", "ReplayThread", "replay_for", "replays", "serve_forever"]
