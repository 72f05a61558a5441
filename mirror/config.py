"""Settings: the user config file and the job file (TOML), every key declared here once, documented.

Precedence, one rule for every setting (settle()): the defaults below, then the user config
file ($XDG_CONFIG_HOME/acta-mirror/config.toml), then the job file, then the command's flags;
the later wins. A wrong file fails with one line naming the file, the key and what is wrong
(exit 2).
"""
from __future__ import annotations

import ipaddress
import math
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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
        "hosts": Key(list, [], "other hosts images may come from (a CDN), besides the root's and the alternates'"),
    },
    "output": {
        "dir": Key(str, "", "the mirror directory, relative to the job file; shard I of N crawls into `<dir>.shard-I-of-N`. "
                   "Empty: with `publish.manifests` set, no local mirror (the run works from the manifests folder), "
                   "else `mirror`"),
        "wait_lock": Key(bool, False, "wait for another run on the same directory instead of exiting with 2"),
    },
    "fetch": {
        "concurrency": Key(int, 16, "requests in flight"),
        "processes": Key(int, 2, "processes downloading images: 2 uses a second core once a crawl passes 256 images; 1 keeps to one"),
        "rate": Key((int, float), 0.0, "requests per second per host, at least 0.001; 0 for no pacing"),
        "timeout": Key((int, float), 60.0, "seconds for a whole request, at most 86400"),
        "deadline": Key((int, float), 0.0, "seconds for the whole crawl; then it stops cleanly and the rest is deferred to the next run (0: none)"),
        "max_bytes": Key(int, 25 * 1024 * 1024, "size cap per file"),
        "proxy": Key(str, "", "`http://`, `https://`, `socks5://` or `socks5h://` proxy URL"),
        "recheck_after": Key((int, float), 0.0, "seconds: known URLs checked more recently are not asked again"),
        "user_agent": Key(str, "", "the User-Agent header; empty: acta-mirror's own"),
        "headers": Key(dict, {}, "more request headers, e.g. `{ Referer = \"https://example.org/\" }`"),
    },
    "publish": {
        "git": Key(list, [], "Git targets (`git+file://`, `git+https://`, `git+ssh://`, `git://`)"),
        "ipfs": Key(list, [], "IPFS nodes (`ipfs://HOST:PORT`)"),
        "car": Key(str, "", "also write the mirror as this CAR file (relative to the job file; outside the mirror)"),
        "pin_service": Key(str, "", "IPFS Pinning Services API endpoint; token from `ACTA_MIRROR_PIN_TOKEN`"),
        "ipns": Key(str, "", "IPNS key to publish the root under (best effort)"),
        "max_repo_bytes": Key(int, 900_000_000, "size budget of one Git shard repository"),
        "max_push_bytes": Key(int, 1_000_000_000, "most new file bytes in one Git push"),
        "shard_by": Key(str, "size", "`size` or `state`: how Git shard repositories are cut"),
        "manifests": Key(str, "", "the job's state between runs: the published manifests, provenance and CIDs are "
                         "kept here (the `manifests/` folder of the tool's repo; outside the mirror)"),
        "allow_none": Key(bool, False, "let a run without any Git or IPFS target succeed (otherwise it fails, exit 2)"),
    },
    "sign": {
        "key": Key(str, "", "minisign secret key file (relative to the job file); empty: `ACTA_MIRROR_SIGN_KEY_FILE`"),
        "required": Key(bool, True, "a run that would publish without a signing key fails (exit 2); false to allow it"),
        "tsa": Key(str, "", "RFC 3161 time-stamping authority URL: every run's signed root gets a trusted timestamp (`signed-root.json.tsr`)"),
        "tsa_ca": Key(str, "", "CA certificate file (PEM, relative to the job file) the authority's answer must verify up to"),
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


# The sections a user config file may set: defaults for every crawl and run on this machine.
USER_SECTIONS = ("fetch",)

Values = dict[str, dict[str, Any]]


def home() -> Path | None:
    """The user's home folder; None where there is none to find: HOME unset and no entry for
    this user ID in the password database (a container run under an arbitrary user ID)."""
    try:
        return Path.home()
    except RuntimeError:
        return None


def user_config_path() -> Path | None:
    """None when neither XDG_CONFIG_HOME nor a home folder says where it would be: no user config."""
    if os.environ.get("XDG_CONFIG_HOME"):
        return Path(os.environ["XDG_CONFIG_HOME"]) / "acta-mirror" / "config.toml"
    base = home()
    return base / ".config" / "acta-mirror" / "config.toml" if base else None


MAX_FILE_CHARS = 1 << 20  # a job file is a few hundred bytes: more is a wrong path (/dev/zero, a disk image)


def _read_toml(path: Path, what: str) -> dict:
    import tomllib  # here, not at start-up: most runs read no TOML file

    try:
        # opened without waiting (a FIFO would block the run until a writer came) and read only if regular
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        with open(fd, encoding="utf-8-sig") as fh:  # -sig: a BOM, as Windows editors write one, is no error
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ConfigError(f"{path}: not a regular file: not a {what}")
            text = fh.read(MAX_FILE_CHARS + 1)
        if len(text) > MAX_FILE_CHARS:
            raise ConfigError(f"{path}: longer than {MAX_FILE_CHARS} characters: not a {what}")
        return tomllib.loads(text)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such {what}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: unreadable ({exc.__class__.__name__})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses once per level of nested arrays and tables
        raise ConfigError(f"{path}: not valid TOML: arrays or tables nested too deeply") from None


def _given(path: Path, raw: dict, sections) -> Values:
    """The keys a file sets, each checked against SCHEMA; nothing filled in."""
    values: Values = {}
    for section in raw:
        if section not in sections:
            raise ConfigError(f"{path}: [{section}]: unknown section (known: {', '.join(sections)})")
        if not isinstance(raw[section], dict):
            raise ConfigError(f"{path}: {section}: must be a [section] table")
        keys = SCHEMA[section]
        values[section] = {}
        for key, value in raw[section].items():
            if key not in keys:
                raise ConfigError(f"{path}: {section}.{key}: unknown key (known: {', '.join(keys)})")
            spec = keys[key]
            if not isinstance(value, spec.type) or (isinstance(value, bool) and spec.type is not bool):
                want = spec.type.__name__ if isinstance(spec.type, type) else " or ".join(t.__name__ for t in spec.type)
                shown = "" if f"{section}.{key}" in SECRET_KEYS else f" {value!r}"
                raise ConfigError(f"{path}: {section}.{key}: must be {want}, not {type(value).__name__}{shown}")
            if isinstance(value, list) and not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{path}: {section}.{key}: must be a list of strings")
            if isinstance(value, dict) and not all(isinstance(v, str) for v in value.values()):
                raise ConfigError(f"{path}: {section}.{key}: every value must be a string")
            strings = value.values() if isinstance(value, dict) else value if isinstance(value, list) else [value]
            if any("\0" in v for v in strings if isinstance(v, str)):  # no path, URL or name holds one
                raise ConfigError(f"{path}: {section}.{key}: holds a NUL character (\\u0000)")
            values[section][key] = value
    _check_ranges(path, values)
    return values


def load_user_config(path: str | Path | None = None) -> Values:
    """The user's defaults (only the keys the file sets); no file is no defaults."""
    path = Path(path) if path else user_config_path()
    if path is None or not os.path.lexists(path):
        return {}
    if not path.exists():  # a link to nothing, or a loop: a config meant to send the crawl through Tor
        raise ConfigError(f"{path}: config file: a symbolic link that leads to no file; remove it or make it a file")
    return _given(path, _read_toml(path, "config file"), USER_SECTIONS)


def settle(*layers: Values, path: Path | str = "the flags") -> Values:
    """The one precedence rule: SCHEMA's defaults, then each layer in order, the later winning
    key by key (a table such as fetch.headers merges name by name). Missing required keys and
    values out of range fail here, naming `path`."""
    values: Values = {section: {key: spec.default for key, spec in keys.items()} for section, keys in SCHEMA.items()}
    for layer in layers:
        for section, given in layer.items():
            for key, value in given.items():
                if value is None:
                    continue
                old = values[section][key]
                values[section][key] = {**old, **value} if isinstance(old, dict) else value
    for section, keys in values.items():
        for key, value in keys.items():
            if value is None:
                raise ConfigError(f"{path}: {section}.{key}: required ({SCHEMA[section][key].doc})")
    _check_ranges(path, values)
    return values


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP token (RFC 9110)


# Headers the fetcher sets itself or that change what a GET returns: a validator the archive did
# not choose gets a 304 for a changed file (counted unchanged), Range a part, Accept-Encoding a
# compressed body. No flag or job file may add them.
RESERVED_HEADERS = frozenset({"accept-encoding", "te", "range", "if-range", "if-none-match", "if-modified-since",
                              "if-match", "if-unmodified-since", "content-length", "transfer-encoding", "expect"})


def reserved_header(headers) -> str:
    """The first of these header names acta-mirror keeps to itself, or ''."""
    return next((name for name in headers if name.lower() in RESERVED_HEADERS), "")


def header_ok(name: str, value: str) -> bool:
    """A header a request can carry: a token for a name; a value of ASCII without line breaks
    (libcurl is handed ASCII; a letter such as 'ñ' goes percent-encoded, as in a URL)."""
    return bool(_HEADER_NAME.fullmatch(name)) and value.isascii() and not any(c in value for c in "\r\n\0")


# Keys whose values an error line never shows: they may hold a password or a token
# (a proxy's user:password@ without a scheme is no URL the redaction recognizes).
SECRET_KEYS = ("fetch.headers", "fetch.proxy")
MAX_TIMEOUT = 86400  # seconds: a request longer than a day is a typo, and libcurl counts in a C long of ms
MIN_RATE = 0.001  # requests per second: slower is no crawl (a tiny rate would pace one request per aeon)


def host_ok(text: str) -> bool:
    """A bare host name or IP address, as the host policy compares them: no scheme, port, path
    or user (one such never matches a host, and the images from it all fail as off-site)."""
    host = text.strip().strip("[]")
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return bool(re.fullmatch(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?", host))


def http_url(text: str) -> bool:
    """An http(s) URL naming a host, the one test of a URL a user gives (a malformed one, '[::1'
    or a port that is not a number, is none; nor is port 0)."""
    try:
        parts = urlsplit(text)
        return parts.scheme.lower() in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:
        return False


_RANGES = {
    "fetch.headers": lambda v: all(header_ok(k, x) for k, x in v.items()) and not reserved_header(v),
    "fetch.user_agent": lambda v: header_ok("User-Agent", v),
    "fetch.proxy": lambda v: v == "" or bool(re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", v)),
    "source.discover": lambda v: v in ("", "csv", "html", "both"),
    "publish.shard_by": lambda v: v in ("size", "state"),
    "publish.max_repo_bytes": lambda v: v > 0,
    "publish.max_push_bytes": lambda v: v > 0,
    "fetch.concurrency": lambda v: 1 <= v <= 512,
    "fetch.processes": lambda v: v in (1, 2),
    "fetch.rate": lambda v: v == 0 or v >= MIN_RATE,
    "fetch.timeout": lambda v: math.isfinite(v) and 0 < v <= MAX_TIMEOUT,
    "fetch.deadline": lambda v: math.isfinite(v) and v >= 0,
    "fetch.max_bytes": lambda v: v > 0,
    "fetch.recheck_after": lambda v: v >= 0,
    "sign.tsa": lambda v: v == "" or http_url(v),  # checked before the crawl, not at the end of it
    "publish.pin_service": lambda v: v == "" or http_url(v),
    "source.hosts": lambda v: all(host_ok(h) for h in v),
}


def _check_ranges(path, values: Values) -> None:
    for dotted, ok in _RANGES.items():
        section, key = dotted.split(".")
        value = values.get(section, {}).get(key)
        if value is not None and not ok(value):
            shown = _bad_header(value) if dotted == "fetch.headers" else \
                "the value (not shown)" if dotted in SECRET_KEYS else repr(value)
            raise ConfigError(f"{path}: {dotted}: {shown} is out of range ({SCHEMA[section][key].doc})")


def _bad_header(headers: dict[str, str]) -> str:
    """Which header is wrong, never its value (or a name that may be one)."""
    if reserved_header(headers):
        return f"{reserved_header(headers)} (acta-mirror sets it itself, or it changes what a download returns)"
    name = next(k for k, v in headers.items() if not header_ok(k, v))
    if _HEADER_NAME.fullmatch(name):
        return f"the value of {name} (not shown: a line break, a NUL or a letter outside ASCII)"
    return "a header name (not shown: not an HTTP token, e.g. holding a space or a colon)"


def load_job(path: str | Path, user: Values | None = None, flags: Values | None = None) -> Job:
    """A job file settled over the user's defaults and under the command's flags."""
    path = Path(path)
    given = _given(path, _read_toml(path, "job file"), SCHEMA)
    job = Job(path, settle(user or {}, given, flags or {}, path=path))
    for key, urls in (("source.root", [job["source.root"]]), ("source.alternates", job["source.alternates"])):
        for url in urls:
            if not http_url(url):  # named here, not as the crawl's --root or --alternate
                shown = "the value (not shown: it holds an @, perhaps a password)" if "@" in url else repr(url)
                raise ConfigError(f"{path}: {key}: {shown} is not an http(s) URL naming a host")
    return job
