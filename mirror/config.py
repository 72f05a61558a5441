"""The job file (TOML) read into settings; every key is declared here once, with its documentation.

A wrong job file fails with one line naming the file, the key and what is wrong (exit 2).
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .models import UsageError


class ConfigError(UsageError):
    pass


@dataclass(frozen=True)
class Key:
    type: type | tuple
    default: Any
    doc: str


SCHEMA: dict[str, dict[str, Key]] = {
    "source": {
        "site": Key(str, None, "site adapter name, e.g. `resultados2024` (required)"),
        "root": Key(str, None, "the site's root URL (required)"),
        "discover": Key(str, "", "`csv`, `html` or `both`; empty: the site's own first way"),
        "index": Key(str, "", "an index file or URL to read instead of the site's default index"),
        "alternates": Key(list, [], "other hosts serving the same paths (mirrors, an S3 bucket), tried when the root's host fails"),
    },
    "output": {
        "dir": Key(str, "", "the mirror directory, relative to the job file; shard I of N crawls into `<dir>.shard-I-of-N`. "
                   "Empty: with `publish.manifests` set, no local mirror (the run works from the manifests folder), "
                   "else `mirror`"),
        "wait_lock": Key(bool, False, "wait for another run on the same directory instead of exiting with 2"),
    },
    "fetch": {
        "concurrency": Key(int, 16, "requests in flight"),
        "rate": Key((int, float), 0.0, "requests per second per host; 0 for no pacing"),
        "timeout": Key((int, float), 60.0, "seconds for a whole request"),
        "max_bytes": Key(int, 25 * 1024 * 1024, "size cap per file"),
        "proxy": Key(str, "", "`http://`, `https://`, `socks5://` or `socks5h://` proxy URL"),
        "recheck_after": Key((int, float), 0.0, "seconds: known URLs checked more recently are not asked again"),
    },
    "publish": {
        "git": Key(list, [], "Git targets (`git+file://`, `git+https://`, `git+ssh://`, `git://`)"),
        "ipfs": Key(list, [], "IPFS nodes (`ipfs://HOST:PORT`)"),
        "car": Key(str, "", "also write the mirror as this CAR file (relative to the job file)"),
        "pin_service": Key(str, "", "IPFS Pinning Services API endpoint; token from `ACTA_MIRROR_PIN_TOKEN`"),
        "ipns": Key(str, "", "IPNS key to publish the root under (best effort)"),
        "max_repo_bytes": Key(int, 900_000_000, "size budget of one Git shard repository"),
        "max_push_bytes": Key(int, 1_000_000_000, "most new file bytes in one Git push"),
        "shard_by": Key(str, "size", "`size` or `state`: how Git shard repositories are cut"),
        "manifests": Key(str, "", "the job's state between runs: the published manifests, provenance and CIDs are "
                         "kept here (the `manifests/` folder of the tool's repo)"),
        "allow_none": Key(bool, False, "let a run without any Git or IPFS target succeed (otherwise it fails, exit 2)"),
    },
    "sign": {
        "key": Key(str, "", "minisign secret key file (relative to the job file); empty: `ACTA_MIRROR_SIGN_KEY_FILE`"),
        "required": Key(bool, True, "a run that would publish without a signing key fails (exit 2); false to allow it"),
    },
}


@dataclass(frozen=True)
class Job:
    path: Path
    values: dict[str, dict[str, Any]]

    def __getitem__(self, dotted: str) -> Any:
        section, key = dotted.split(".")
        return self.values[section][key]

    def resolve(self, relative: str) -> str:
        """A path from the job file, taken relative to the job file's folder."""
        if not relative:
            return ""
        p = Path(relative)
        return str(p if p.is_absolute() else (self.path.parent / p))


def load_job(path: str | Path) -> Job:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such job file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: unreadable ({exc.__class__.__name__})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    values: dict[str, dict[str, Any]] = {}
    for section in raw:
        if section not in SCHEMA:
            raise ConfigError(f"{path}: [{section}]: unknown section (known: {', '.join(SCHEMA)})")
        if not isinstance(raw[section], dict):
            raise ConfigError(f"{path}: {section}: must be a [section] table")
    for section, keys in SCHEMA.items():
        given = raw.get(section, {})
        for key in given:
            if key not in keys:
                raise ConfigError(f"{path}: {section}.{key}: unknown key (known: {', '.join(keys)})")
        values[section] = {}
        for key, spec in keys.items():
            if key not in given:
                if spec.default is None:
                    raise ConfigError(f"{path}: {section}.{key}: required ({spec.doc})")
                values[section][key] = spec.default
                continue
            value = given[key]
            if not isinstance(value, spec.type) or (isinstance(value, bool) and spec.type is not bool):
                want = spec.type.__name__ if isinstance(spec.type, type) else " or ".join(t.__name__ for t in spec.type)
                raise ConfigError(f"{path}: {section}.{key}: must be {want}, not {type(value).__name__} {value!r}")
            if isinstance(value, list) and not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{path}: {section}.{key}: must be a list of strings")
            values[section][key] = value
    checks = {
        "source.discover": lambda v: v in ("", "csv", "html", "both"),
        "publish.shard_by": lambda v: v in ("size", "state"),
        "fetch.concurrency": lambda v: 1 <= v <= 512,
        "fetch.rate": lambda v: v >= 0,
        "fetch.timeout": lambda v: v > 0,
        "fetch.max_bytes": lambda v: v > 0,
        "fetch.recheck_after": lambda v: v >= 0,
    }
    for dotted, ok in checks.items():
        section, key = dotted.split(".")
        if not ok(values[section][key]):
            raise ConfigError(f"{path}: {dotted}: {values[section][key]!r} is out of range ({SCHEMA[section][key].doc})")
    return Job(path, values)
