"""Typed records that pass between the stages, and the exception tree.

Records (frozen dataclasses, and for Entry a frozen msgspec Struct; no dicts with hidden keys):

    Acta      what a site adapter discovered: one table's image URL and its place
    Page      a page the fetcher brought to an adapter: its text and where it came from
    Fetched   what the fetcher brought: a temp file, its sha256 and the HTTP facts
    Entry     one archived file: path, sha256, size, CID and provenance
    Problem   one thing verify found wrong, naming the file

Exceptions (every one the CLI turns into one line and an exit code):

    MirrorError                  exit_code 1 unless a subclass says otherwise
    ├── UsageError               2  bad flags or bad input from the user
    │   ├── IndexFormatError     2  an index CSV or HTML page we cannot read
    │   ├── SourceUnreachable    2  the root cannot be reached at all
    │   └── ConfigError          2  a job file that is wrong (config.py)
    ├── PublishError             1  one publish target failed (publish/__init__.py)
    ├── NotAMirror               2  verify/prove on something that is not a bag
    │   └── UnsafePath           2  a path or file that leads outside the mirror (state.py)
    ├── MirrorLocked             2  another run holds the mirror's lock
    ├── ArchiveWriteError        3  the disk refused a write (full, read-only)
    └── FetchError               1  one URL failed for good (listed in failures.jsonl)
        ├── NotAnImage           1  a 200 answer whose body is not a whole JPEG/PNG
        ├── TooLarge             1  a body above the size cap
        └── Deferred             1  not asked: the host's breaker tripped or the deadline passed

Foreign errors (libcurl, aiohttp, OSError, csv) are translated into these at one boundary
each: the fetcher for network errors, the archive for disk errors, the publishers for
git and the IPFS RPC. Record parsers raise ValueError subclasses (QrFormatError,
SignatureError) that their callers turn into findings.
"""
from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec


class MirrorError(Exception):
    exit_code = 1


class UsageError(MirrorError):
    exit_code = 2


class IndexFormatError(UsageError):
    pass


class SourceUnreachable(UsageError):
    pass


class NotAMirror(MirrorError):
    exit_code = 2


class MirrorLocked(MirrorError):
    exit_code = 2


class UnsafePath(NotAMirror):
    """A record or file that would read or write outside the mirror (absolute, '..', symlink, FIFO)."""

    def __init__(self, path: str, reason: str = ""):
        """UnsafePath(path, reason), or UnsafePath(message) where no path applies."""
        super().__init__(f"{path}: {reason}" if reason else path)
        self.path = path if reason else ""
        self.reason = reason or path


class ArchiveWriteError(MirrorError):
    exit_code = 3


class FetchError(MirrorError):
    """A URL that failed for good, after the fetcher's retries."""

    def __init__(self, url: str, reason: str, *, cause: str = "", attempts: int = 1):
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason
        self.cause = cause or reason  # a short stable category, e.g. "HTTP 404", "timeout"
        self.attempts = attempts


class NotAnImage(FetchError):
    pass


class TooLarge(FetchError):
    pass


class Deferred(FetchError):
    """Not asked (or no longer): the next run asks again."""


@dataclass(frozen=True, slots=True)
class Place:
    """Where a table sits: the site's codes and names, state down to table."""

    state_code: str = ""
    state: str = ""
    municipality_code: str = ""
    municipality: str = ""
    parish_code: str = ""
    parish: str = ""
    center: str = ""  # 9-digit CNE center code
    table: str = ""  # 2-digit table number
    center_name: str = ""  # where the site names its centers (cne pages do)


@dataclass(frozen=True, slots=True)
class Acta:
    site: str
    key: str  # "<9-digit center>.<2-digit table>", the prefix of the QR text
    url: str  # the image
    page: str  # where it was found: the index CSV or the table's HTML page
    place: Place = field(default_factory=Place)
    electors: int | None = None  # the table's registered electors, where its index lists them


@dataclass(frozen=True, slots=True)
class Page:
    text: str  # an HTML page (or CSV) as text, decoded by its charset
    url: str  # where the text came from, after any redirects: its relative links resolve against it


@dataclass(frozen=True, slots=True)
class Fetched:
    url: str
    final_url: str
    status: int  # 200, or 304 when a conditional request found no change
    tmp_path: str | None  # None for 304
    sha256: str
    size: int
    etag: str
    last_modified: str
    content_type: str
    fetched_at: str
    host: str
    redirects: tuple[str, ...] = ()  # every URL answered with a redirect, in order
    trailing_bytes: int = 0  # bytes after the image's end marker (kept, flagged)


# The user's credentials for a site (--header): sent only to the origin a request was made to,
# never on a redirect to another scheme, host or port (as curl and browsers do); their values
# are hidden wherever text is redacted (publish.register_secrets).
CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
MAX_INDEX_BYTES = 256 << 20  # the index of all 30,026 tables of 2024 is a few MB: a larger file is not one
# Failure causes of a download that was not tried to the end but left for the next run (a deadline,
# a host's breaker): such a table is "deferred", not "failed".
DEFERRED_CAUSES = frozenset({"deadline", "deferred: host breaker"})
MAX_FILE_BYTES = 1 << 36  # 64 GiB: far above any acta or index, far below what breaks arithmetic
MAX_VERSION = 1_000_000
_RANGES = {"size": (0, MAX_FILE_BYTES), "version": (1, MAX_VERSION), "status": (100, 599),
           "trailing_bytes": (0, MAX_FILE_BYTES)}
# The whole numbers of a provenance line as msgspec checks them (exact JSON types: no float, no boolean)
_Bytes = Annotated[int, msgspec.Meta(ge=_RANGES["size"][0], le=_RANGES["size"][1])]
_Version = Annotated[int, msgspec.Meta(ge=_RANGES["version"][0], le=_RANGES["version"][1])]
_Status = Annotated[int, msgspec.Meta(ge=_RANGES["status"][0], le=_RANGES["status"][1])]


class Entry(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    """One archived file and its provenance: one line of provenance.jsonl.

    A msgspec Struct, not a dataclass: a line decodes straight into it, every field's JSON type
    and range checked in C, no unknown field allowed (so no float or NaN can hide in one). Made
    in Python, as the archive makes it, nothing is checked. Its fields hold no container that
    could form a cycle, so the collector does not track it (gc=False)."""

    key: str
    kind: str  # "acta" or "index"
    version: _Version
    path: str  # relative to the bag, always under data/
    sha256: str
    size: _Bytes
    cid: str
    url: str
    final_url: str
    host: str
    fetched_at: str
    status: _Status
    etag: str
    last_modified: str
    content_type: str
    site: str
    page: str
    state_code: str = ""
    state: str = ""
    municipality_code: str = ""
    municipality: str = ""
    parish_code: str = ""
    parish: str = ""
    center: str = ""
    table: str = ""
    supersedes: str | None = None
    center_name: str = ""
    redirects: tuple[str, ...] = ()  # URLs that answered with a redirect, before final_url
    trailing_bytes: _Bytes = 0  # bytes after the image's end marker: kept as served, flagged

    def to_json(self) -> str:
        """The record as one provenance line (no newline): its fields sorted by name, compact,
        UTF-8 unescaped, encoded in C."""
        return JSON_LINE(self).decode()

    @classmethod
    def from_json(cls, line: str) -> "Entry":
        """Parse one provenance line; any defect raises ValueError naming it.

        Checked here: JSON object, every field present with its type, whole numbers in range
        (no floats, no booleans, no 1e400), sha256 as 64 lowercase hex digits, and a path that
        stays inside data/. The reader (state.py) adds what needs the whole file: key formats,
        kind against key, duplicate paths.

        A valid line is decoded and checked in C (msgspec, straight into an Entry), and then the
        forms of path, sha256 and supersedes; whatever that refuses goes through the
        field-by-field parser, which names the defect or accepts what msgspec is stricter about
        (an unknown field, a path the pattern does not take). A lone surrogate escape ("\\ud800")
        is refused by both: it is no character, no writer of records makes one, and a command
        that wrote it out (export, site, a path opened) failed with a traceback.
        """
        try:
            return _decoder()(line)
        except _REFUSED:
            return cls.from_json_checked(line)

    @classmethod
    def from_json_block(cls, block: bytes) -> "list[Entry] | None":
        """[from_json(line) for each line of block] (whole lines; blank ones skipped) when every
        line is valid; None as soon as one may not be (then call from_json line by line for the
        message). The forms of path and sha256 are checked after the block is decoded, over all
        its records at once (_forms_valid), which costs less than msgspec's pattern per field.
        Bytes that are not UTF-8 (a raw surrogate included) msgspec refuses itself, as strictly
        as from_json's callers decode a line. (msgspec's decode_lines is not used: it takes two
        records on one line.)"""
        return cls.from_json_lines([line for line in block.split(b"\n") if line.strip()])  # blank: as iter_records

    @classmethod
    def from_json_lines(cls, lines: "list[bytes]") -> "list[Entry] | None":
        """from_json_block of lines already split (none blank): one Entry for each, or None."""
        try:
            rows = list(map(_line_decoder().decode, lines))
        except _REFUSED:
            return None
        return rows if _forms_valid(rows) else None

    @classmethod
    def from_json_checked(cls, line: str) -> "Entry":
        """from_json field by field in Python: slower, and says what is wrong."""
        try:
            obj: Any = json.loads(line, parse_float=_no_float, parse_constant=_no_float)
        except RecursionError:
            raise ValueError("nested too deeply") from None
        except ValueError as exc:
            raise ValueError(f"not JSON ({getattr(exc, 'msg', exc)})") from None
        if not isinstance(obj, dict):
            raise ValueError("not a JSON object")
        kwargs = {}
        for name, required in _FIELDS_REQUIRED:
            if name not in obj:
                if required:
                    raise ValueError(f"missing field {name!r}")
                continue
            value = obj[name]
            if name in _RANGES:
                low, high = _RANGES[name]
                if not isinstance(value, int) or isinstance(value, bool):
                    raise ValueError(f"field {name!r} is not a whole number")
                if not low <= value <= high:
                    raise ValueError(f"field {name!r} is {value}, outside {low}..{high}")
            elif name == "supersedes":
                if value is not None and not _is_sha256(value):
                    raise ValueError("field 'supersedes' is not null or a sha256")
            elif name == "redirects":
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise ValueError(f"field {name!r} is not a list of strings")
                value = tuple(value)
            elif not isinstance(value, str):
                raise ValueError(f"field {name!r} is not a string")
            for text in value if isinstance(value, tuple) else (value,):
                if isinstance(text, str) and not text.isascii():
                    try:
                        text.encode("utf-8")
                    except UnicodeEncodeError:  # JSON's "\ud800": no writer of records makes one
                        raise ValueError(f"field {name!r} holds a lone surrogate (no character: "
                                         "not UTF-8 text)") from None
            kwargs[name] = value
        entry = cls(**kwargs)
        reason = _bad_path_or_sha(entry)
        if reason:
            raise ValueError(reason)
        return entry

    @property
    def place(self) -> Place:
        return Place(self.state_code, self.state, self.municipality_code, self.municipality,
                     self.parish_code, self.parish, self.center, self.table, self.center_name)


def plain(value: Any) -> Any:
    """A value of a subclass of str, int or float as the plain value json writes for it (msgspec
    asks this of every type it does not write itself); TypeError for any other."""
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


# One JSON line of a record (an Entry, a change, a failure): keys sorted, compact, UTF-8 unescaped, as bytes
JSON_LINE = msgspec.json.Encoder(order="sorted", enc_hook=plain).encode
_FIELDS_REQUIRED = tuple((f.name, f.required) for f in msgspec.structs.fields(Entry))
_HEX_DIGITS = b"0123456789abcdef"
_BAD_PART = re.compile(r"/(?:/|\x00|\.\.?(?:/|\x00))")  # an empty, '.' or '..' part, in paths joined and ended by NUL




@functools.cache
def _line_decoder() -> msgspec.json.Decoder:
    """Decodes one line into an Entry, checking the JSON types and ranges but not the forms of
    path, sha256 and supersedes (_forms_valid does). Built on first use: the annotations are
    read then."""
    return msgspec.json.Decoder(Entry)


def _forms_valid(entries: list[Entry]) -> bool:
    """Every sha256 and supersedes 64 lowercase hex digits, every path all_data_paths takes,
    checked over the whole block at once; the decoder has made every one a str."""
    if not entries:
        return True
    shas = [e.sha256 for e in entries] + [e.supersedes for e in entries if e.supersedes is not None]
    return all_sha256(shas) and all_data_paths([e.path for e in entries])


def all_sha256(values: list[str]) -> bool:
    """Every one of these strings (at least one) is 64 lowercase hex digits: a few calls in C for
    them all, not one for each."""
    digits = "".join(values)
    return set(map(len, values)) == {64} and digits.isascii() and not digits.encode().translate(None, _HEX_DIGITS)


def all_data_paths(paths: list[str]) -> bool:
    """Every one of these strings (at least one) is a path inside data/ in the terms of
    unsafe_path: 'data/' first, no part empty, '.' or '..', no NUL (it may refuse more than
    unsafe_path, which the field-by-field parser then asks, never less). Checked at once: joined
    by NUL, which no such path holds, each NUL found is a boundary, and the whole is searched."""
    joined = "\x00".join(paths)
    ends = joined + "\x00"
    return (joined.count("\x00") == len(paths) - 1 and ("\x00" + joined).count("\x00data/") == len(paths)
            and _BAD_PART.search(ends) is None)


@functools.cache
def _decoder():
    """Decode a checked line into an Entry: the types and ranges in C, then the forms (a ValueError
    for any defect, which from_json leaves to the field-by-field parser to name)."""
    decode = _line_decoder().decode

    def line(text: str | bytes) -> Entry:
        entry = decode(text)
        if not _forms_valid([entry]):
            raise ValueError("a path, sha256 or supersedes of another form")
        return entry
    return line


_REFUSED = (ValueError, RecursionError)  # msgspec's DecodeError and ValidationError are ValueErrors


def _bad_path_or_sha(entry: Entry) -> str:
    """Why an entry's path or sha256 is unusable; '' when both are fine."""
    reason = unsafe_path(entry.path)
    if reason or not entry.path.startswith("data/"):
        return f"path {entry.path!r} is not inside data/ ({reason or 'outside data/'})"
    if not _is_sha256(entry.sha256):
        return "sha256 is not 64 lowercase hex digits"
    return ""


def _no_float(text: str):
    raise ValueError(f"{text} is not a whole number")


def _is_sha256(value: Any) -> bool:
    return isinstance(value, str) and all_sha256([value])


def unsafe_path(rel: Any) -> str:
    """Why a relative path from a record could lead outside its folder; '' when it cannot."""
    if not isinstance(rel, str) or not rel:
        return "not a path"
    if rel.startswith("/"):
        return "an absolute path"
    if "\x00" in rel:
        return "a NUL byte"
    parts = rel.split("/")
    if ".." in parts:
        return "'..' in the path"
    if "" in parts or "." in parts:
        return "an empty or '.' part"
    return ""


@dataclass(frozen=True)
class Problem:
    # missing, changed, unlisted, unreadable, tag-missing, tag-changed, oxum, provenance, format,
    # unsafe, duplicate, cid, root, signature, signed
    kind: str
    path: str
    detail: str = ""

    def __str__(self) -> str:
        return printable(f"{self.kind}: {self.path}" + (f" ({self.detail})" if self.detail else ""))


def printable(text: str) -> str:
    """text for a terminal: a name from a copy may hold a newline, a carriage return, an escape
    sequence or a bidi override, which could draw a forged 'OK' line; each such character is
    shown escaped, as repr shows it."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
