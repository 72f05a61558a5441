"""The registry of publishers, chosen by URI scheme, and what they hand back (a Receipt).

A publisher takes a finished mirror and returns a receipt. To add one: write
`publish/<name>.py` with a class decorated by `@register` that lists its `schemes` and
implements `publish(mirror) -> Receipt` and `plan(mirror) -> Plan` (what publish would
send, read-only: the dry run). A publisher that sends a token from the environment lists where
in `secret_uses()`: (variable, host) pairs, which publishers_for checks (one host per token).
"""
from __future__ import annotations

import hashlib
import importlib
import os
import pkgutil
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, unquote_plus, urlsplit, urlunsplit

from ..models import CREDENTIAL_HEADERS, MirrorError, UsageError

if TYPE_CHECKING:
    from ..state import MirrorState

PUBLISHERS: dict[str, type] = {}


class PublishError(MirrorError):
    """One target could not be published; the message names it (credentials redacted)."""

    exit_code = 1


class NeedsFullMirror(PublishError):
    """A scheduled run's delta builds on files the target lacks (a new or emptied target): only a
    full mirror can fill it."""

    advice = ("a scheduled run holds only the files it downloads: publish a full mirror to it once "
              "(acta-mirror restore --from a target that holds it, then acta-mirror publish --to it)")


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


def verified(mirror: Path) -> tuple[str | None, "MirrorState"]:
    """What `verify --fast` says of a mirror before it is published: its first problem (None
    when it has none), and the mirror as that check read it, for archive.published_files to
    take as read instead of reading the records and manifests again."""
    from ..verify import check

    checked = check(mirror, fast=True)
    problems = checked.problems + checked.seal.problems
    return (str(problems[0]) if problems else None), checked.state


def register(cls: type) -> type:
    for scheme in cls.schemes:
        PUBLISHERS[scheme] = cls
    return cls


def _load_all() -> None:
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


def publisher_for(target: str, **options):
    _load_all()
    try:
        scheme = urlsplit(target).scheme.lower()
    except ValueError as exc:  # "[::1" and the like
        raise UsageError(f"--to {redact(target)}: not a URL ({exc})") from None
    cls = PUBLISHERS.get(scheme)
    if cls is None:
        raise UsageError(f"--to {redact(target)}: unknown scheme {scheme + '://' if scheme else '(none)'}; "
                         f"known: {', '.join(s + '://' for s in sorted(PUBLISHERS))}")
    return cls(target, **options)


def publishers_for(targets, **options) -> list:
    """A publisher for each target (bad usage fails before any is used), once it is sure that no
    token from the environment would go to more than one host (check_secret_scope)."""
    publishers = [publisher_for(t, **options) for t in targets]
    check_secret_scope(publishers)
    return publishers


def env_secret(name: str, host: str, port: int | None = None) -> str:
    """The token in environment variable `name`, for a target on host (and port): '' when
    NAME_FOR is set and names neither the host nor host:port (a comma-separated list). The token
    is hidden from then on wherever text is redacted (a server may quote it in an error)."""
    token = os.environ.get(name, "")
    if token:
        _register(token, least=3)
    scope = os.environ.get(f"{name}_FOR")
    if not token or scope is None:
        return token
    allowed = {h.strip().lower() for h in scope.split(",") if h.strip()}
    host = host.lower().strip("[]")
    return token if host in allowed or f"{host}:{port}" in allowed or f"[{host}]:{port}" in allowed else ""


def check_secret_scope(publishers) -> None:
    """UsageError when a token from the environment would go to targets on two or more hosts: a
    token is for one host, and a second target (a typo, a stranger's edit of a job file) would
    be handed it. NAME_FOR names the hosts it may go to; then the others get none."""
    hosts: dict[str, set[str]] = {}
    for pub in publishers:
        for name, host in getattr(pub, "secret_uses", lambda: ())():
            hosts.setdefault(name, set()).add(host.lower().strip("[]"))
    for name, where in sorted(hosts.items()):
        if len(where) > 1 and os.environ.get(name) and f"{name}_FOR" not in os.environ:
            raise UsageError(f"{name} would go to {len(where)} hosts ({', '.join(sorted(where))}); a token is "
                             f"for one: set {name}_FOR to the host it is for (the others then get none), "
                             "or give each target its own credentials")


# A URL in text ends at a quote, < or > (a message quotes one): a password holding one is hidden
# as a value instead (register_secrets).
_URL_ENDS = r"\s'\"<>"
_URL = re.compile(rf"[A-Za-z][A-Za-z0-9+.-]*://[^{_URL_ENDS}]+")
_ENDS_URL = re.compile(f"[{_URL_ENDS}]")  # where _URL stops


def _redact_url(match: re.Match) -> str:
    url = match.group(0)
    try:
        parts = urlsplit(url)
    except ValueError:  # not a URL after all (e.g. a bad IPv6 literal): hide everything before an @
        return re.sub(r"(?<=://).*@", "***@", url)
    if "@" not in parts.netloc:
        return url
    # The host follows the LAST @ of the authority, as urllib and git read it: a password
    # holding an @ is hidden whole.
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))


# Query parameters that carry a credential by their name (a signed or tokened link to an index
# or a bucket). Only the values found in URLs the user gives (register_secrets) are hidden: a
# parameter of a site's own links may be what tells two actas apart, and hiding it would merge them.
SECRET_PARAMS = frozenset({
    "token", "access_token", "auth", "key", "api_key", "apikey", "password", "passwd", "secret", "signature",
    "sig", "x-amz-signature", "x-amz-credential", "x-amz-security-token", "x-goog-signature",
    "x-goog-credential", "awsaccesskeyid"})
_PARAM = re.compile(r"(?<=[?&;])([^=&;#]+)=([^&;#]*)")  # name=value pairs of a query, split on & and ;
_registered: set[str] = set()  # values from this process's own URLs, hidden wherever they appear


def register_secrets(*urls: str | None, headers: dict[str, str] | None = None) -> None:
    """Hide from now on, in everything redact() handles, the values of credential-named query
    parameters (SECRET_PARAMS) of these user-given URLs (--root, --index, --alternate, --proxy),
    a password of theirs that holds a quote, < >, or a space (text searched for URLs ends a URL
    there, before its @: redact() would not see it), and the credentials of these request
    headers (an Authorization's, and a Cookie's values of 16 characters or more: a session, not
    'consent=yes'): a site that sends one back, in a redirect or an ETag, never gets it into the
    records. Other passwords and user names are not registered: a short one ('1:1', Tor's
    stream isolation) would be hidden inside dates and paths, which are evidence."""
    for url in urls:
        try:
            parts = urlsplit(url or "")
        except ValueError:
            continue
        for name, raw in _PARAM.findall("?" + parts.query):  # split as redact_message splits: on & and ;
            if unquote(name).lower() in SECRET_PARAMS:
                _register(raw)
        userinfo = parts.netloc.rpartition("@")[0]
        if _ENDS_URL.search(userinfo):  # distinctive enough to hide wherever it appears, however short
            _register(userinfo, least=3)
            _register(userinfo.partition(":")[2], least=4)
    for name, value in (headers or {}).items():
        if name.lower() == "cookie":
            for pair in value.split(";"):
                _register(pair.partition("=")[2].strip(), least=16)
        elif name.lower() in CREDENTIAL_HEADERS:
            _register(value.strip().rpartition(" ")[2])  # the token after its scheme (Bearer, Basic)


def _register(value: str, least: int = 8) -> None:
    """A secret value to hide, as given and percent-decoded, when it has at least `least`
    characters (a short value would hide too much of other text)."""
    decoded = unquote_plus(value)
    if len(decoded) >= least:
        _registered.update({value, decoded})  # as the URL carries it, and as a message may quote it


def redact(text: str, *secrets: str) -> str:
    """The one redaction of credentials: user:password@ out of every URL in the text, and any
    known secret value (as given and percent-decoded; and those of register_secrets) out of the rest."""
    text = str(text)
    if "@" in text:  # a URL without one carries no credentials (most of them: the crawl asks per file)
        text = _URL.sub(_redact_url, text)
    if _registered:  # the longest first: one holding another is hidden whole
        secrets = (*secrets, *sorted(_registered, key=len, reverse=True))
    for secret in secrets:
        for form in {secret, unquote(secret)} if secret else ():
            if form:
                text = text.replace(form, "***")
    return text


def redact_message(text: str) -> str:
    """redact(), and the values of credential-named query parameters of every URL in the text:
    for the one-line error of a command, which may quote a URL before register_secrets saw it
    (a job file's mistyped key). Never for a URL kept as evidence or as a key (see SECRET_PARAMS)."""
    def params(match: re.Match) -> str:
        return _PARAM.sub(lambda m: f"{m.group(1)}=***" if unquote(m.group(1)).lower() in SECRET_PARAMS and m.group(2)
                          else m.group(0), match.group(0))

    return _URL.sub(params, redact(text))


def inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Is path the folder or in it, once symlinks and '..' are resolved (neither need exist)?"""
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(folder))


def working_dir(kind: str, *keys: str, create: bool = True) -> Path:
    """A directory for this user's working state (Git staging repositories), made with mode
    0700 under $XDG_CACHE_HOME/acta-mirror (default ~/.cache/acta-mirror) and named by a hash
    of keys (a mirror's real path and a target): never state that came inside a mirror.
    create=False only names it (a dry run writes nothing)."""
    from ..config import home

    cache = os.environ.get("XDG_CACHE_HOME")
    if not cache:
        found = home()
        if found is None:  # HOME unset, and a user ID without a home
            raise UsageError("no folder for working state: set XDG_CACHE_HOME (or HOME) to one")
        cache = found / ".cache"
    base = Path(cache) / "acta-mirror" / kind
    path = base / hashlib.sha256("\n".join(keys).encode()).hexdigest()[:24]
    if not create:
        return path
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        from ..archive import disk_error

        raise disk_error(exc, f"making the working directory {path}") from None
    if path.is_symlink() or not path.is_dir() or path.stat().st_uid != os.geteuid():
        raise UsageError(f"{path}: the working directory is not a directory of yours; remove it")
    return path
