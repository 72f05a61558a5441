"""The registry of publishers, chosen by URI scheme, and what they hand back (a Receipt).

A publisher takes a finished mirror and returns a receipt. To add one: write
`publish/<name>.py` with a class decorated by `@register` that lists its `schemes` and
implements `publish(mirror) -> Receipt` and `plan(mirror) -> Plan` (what publish would
send, read-only: the dry run).
"""
from __future__ import annotations

import importlib
import pkgutil
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ..models import MirrorError, UsageError

PUBLISHERS: dict[str, type] = {}


class PublishError(MirrorError):
    """One target could not be published; the message names it (credentials redacted)."""

    exit_code = 1


@dataclass
class Receipt:
    target: str  # redacted: never holds a credential
    kind: str  # "git" or "ipfs"
    root: str = ""  # the manifest's Merkle root the published copy carries
    cid: str = ""  # IPFS root CID
    details: list[str] = field(default_factory=list)  # one line per shard / step
    changed: bool = False  # did this publish add anything?


@dataclass
class Plan:
    """What a publish would send to one target (a dry run): counts and bytes, pushed nowhere."""

    target: str  # redacted
    files: int = 0  # payload files the target lacks
    bytes: int = 0  # their size
    details: list[str] = field(default_factory=list)  # one line per shard / step


def register(cls: type) -> type:
    for scheme in cls.schemes:
        PUBLISHERS[scheme] = cls
    return cls


def _load_all() -> None:
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


def publisher_for(target: str, **options):
    _load_all()
    scheme = urlsplit(target).scheme.lower()
    cls = PUBLISHERS.get(scheme)
    if cls is None:
        raise UsageError(f"--to {redact(target)}: unknown scheme {scheme + '://' if scheme else '(none)'}; "
                         f"known: {', '.join(s + '://' for s in sorted(PUBLISHERS))}")
    return cls(target, **options)


_USERINFO = re.compile(r"(?<=://)[^/@\s]*@")


def redact(text: str, *secrets: str) -> str:
    """Remove user:password@ from URLs and any known secret value from a message."""
    text = _USERINFO.sub("***@", str(text))
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
