"""Export a mirror for web archives: a WARC file, or a WACZ package around it, written as a stream.

Every archived file (the index CSVs and every acta version) becomes a WARC `response` record
with a `request` record beside it. Capture times, URLs, status and validators come from
provenance.jsonl; the HTTP headers are rebuilt from those fields (the mirror keeps no raw
header block). The payload digest is the file's sha256 (base32, as warcio writes digests), so
each record ties to a manifest line and through it to the signed Merkle root. The last time a
URL was re-checked and found unchanged (`.acta-mirror/checked.json`, one time per URL) becomes
a `revisit` record. warcio writes the records; cdxj-indexer writes the WACZ index.

The WACZ follows WACZ 1.1.1 and is not signed in the sense of the WACZ signing spec: its
anonymous form needs an ECDSA key and its other form a domain certificate, and the mirror's
key is Ed25519. It carries the mirror's own signed root statement under evidence/ instead.
"""
from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import json
import os
import re
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http import HTTPStatus
from pathlib import Path
from urllib.parse import urlsplit

from . import __version__
from .archindex import _epoch
from .archive import CHECKED, STATE_DIR
from .manifest import BAG_INFO, CHANGES, FAILURES, PAYLOAD_MANIFEST, PROVENANCE, create_beside
from .models import ArchiveWriteError, Entry, NotAMirror, Problem, UnsafePath, UsageError
from .state import MAX_MANIFEST_BYTES, MAX_RECORDS_BYTES, MAX_TAG_BYTES, iter_records, open_payload

WARC_NAME = "data.warc.gz"  # its name inside the WACZ
WACZ_VERSION = "1.1.1"
# Tag files copied into the WACZ under evidence/ when the mirror has them and they are not empty:
# every file the signed statement names, so that scripts/check_signed.py can check them there.
EVIDENCE_FILES = (PAYLOAD_MANIFEST, PROVENANCE, CHANGES, FAILURES, BAG_INFO, "signed-root.json",
                  "signed-root.json.minisig", "signed-root.json.tsr", "signed-root.json.tsr.chain.pem")
EVIDENCE_LIMITS = {PAYLOAD_MANIFEST: MAX_MANIFEST_BYTES, PROVENANCE: MAX_RECORDS_BYTES, CHANGES: MAX_RECORDS_BYTES,
                   FAILURES: MAX_RECORDS_BYTES}  # the others (bag-info, the statement, its signature and
# timestamp) are a few lines or KB each: MAX_TAG_BYTES
# A URL's check time is set when its answer is recorded, a moment after the fetch finished
# (fetched_at). A check this much later than the capture was a later run's re-check.
RECHECK_SLACK = 2.0
CHUNK = 1 << 20
MAX_CHECKED_BYTES = 1 << 28  # checked.json: one time per URL, a few MB at a national mirror's size
LEVEL = 0  # zlib level of each record's gzip member: 0 stores (JPEG bytes do not compress)
_BAD_HEADER = re.compile(r"[\x00-\x1f\x7f]")


@dataclass
class ExportResult:
    out: Path
    recorded: int = 0  # provenance records (every version of every file): the responses' denominator
    responses: int = 0
    revisits: int = 0
    bytes: int = 0  # payload bytes written
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _why(exc: OSError) -> str:
    """A file that could not be read, in a few words (UnsafePath already says why)."""
    if isinstance(exc, UnsafePath):
        return str(exc).split(": ", 1)[-1]
    if exc.errno == errno.ENOENT:
        return "missing"
    return exc.strerror or str(exc)


# -- records ------------------------------------------------------------------------------
def _check_entry(e: Entry) -> None:
    """Provenance text goes into WARC headers: refuse anything that would break a header."""
    for name in ("url", "final_url", "etag", "last_modified", "content_type", "fetched_at"):
        if _BAD_HEADER.search(getattr(e, name)):
            raise NotAMirror(f"{PROVENANCE}: {e.path}: {name} holds a control character")
    for name in ("url", "final_url"):
        url = getattr(e, name)
        if not url.isascii():  # the crawl records URLs as asked, percent-encoded: a URI is ASCII
            raise NotAMirror(f"{PROVENANCE}: {e.path}: {name} holds a character no URL may (not ASCII)")
        try:
            parts = urlsplit(url)
        except ValueError:  # "http://[::1/x" and the like
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc or " " in url:
            raise NotAMirror(f"{PROVENANCE}: {e.path}: {name} is not an http(s) URL")
    _warc_date(e.fetched_at, e.path)
    if not 100 <= e.status <= 599:
        raise NotAMirror(f"{PROVENANCE}: {e.path}: status {e.status} is not an HTTP status")


def _warc_date(iso: str, path: str) -> str:
    try:
        when = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        raise NotAMirror(f"{PROVENANCE}: {path}: fetched_at {iso!r} is not a date") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    try:
        return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    except OverflowError:  # 0001-01-01T00:00+01:00 is before the first UTC instant a date can hold
        raise NotAMirror(f"{PROVENANCE}: {path}: fetched_at {iso!r} is out of range") from None


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _digest(sha256_bytes: bytes) -> str:
    return "sha256:" + base64.b32encode(sha256_bytes).decode()


def sha256_of_digest(digest: str) -> str:
    """The hex sha256 in a WARC digest written by this module ('sha256:BASE32')."""
    algo, _sep, value = digest.partition(":")
    if algo != "sha256":
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return base64.b32decode(value).hex()


class _GzipMembers:
    """One gzip member per WARC record, as .warc.gz wants, at LEVEL.

    warcio's own wrapper compresses at level 9: about 20 MB/s here on JPEG bytes, which do not
    compress (2% at level 1). Stored deflate blocks keep the export at disk speed and stay
    valid gzip for every reader. warcio flushes after each record.
    """

    def __init__(self, fh):
        self.fh = fh
        self.z = None

    def write(self, data) -> int:
        if self.z is None:
            self.z = zlib.compressobj(LEVEL, zlib.DEFLATED, zlib.MAX_WBITS + 16)
        self.fh.write(self.z.compress(data))
        return len(data)

    def flush(self) -> None:
        if self.z is not None:
            self.fh.write(self.z.flush())
            self.z = None
        self.fh.flush()


class _Writer:
    """Builds the records of one WARC with warcio, counting what it wrote."""

    def __init__(self, fh, result: ExportResult, pages=None):
        from warcio.warcwriter import WARCWriter

        self.writer = WARCWriter(_GzipMembers(fh), gzip=False, warc_version="1.1")
        self.result = result
        self.pages = pages

    def warcinfo(self, mirror: Path) -> None:
        info = {"software": f"acta-mirror {__version__} (warcio)", "format": "WARC File Format 1.1",
                "description": "Election tally sheets (actas) and their index, exported from an acta-mirror "
                               "BagIt bag; HTTP headers are rebuilt from provenance.jsonl",
                "isPartOf": mirror.name}
        self.writer.write_record(self.writer.create_warcinfo_record(WARC_NAME, info))

    def _request(self, url: str, date: str, conditional: Entry | None = None):
        from warcio.statusandheaders import StatusAndHeaders

        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = [("Host", parts.netloc), ("Accept", "*/*")]
        if conditional is not None:
            if conditional.etag:
                headers.append(("If-None-Match", conditional.etag))
            if conditional.last_modified:
                headers.append(("If-Modified-Since", conditional.last_modified))
        http = StatusAndHeaders(f"GET {target} HTTP/1.1", headers, is_http_request=True)
        return self.writer.create_warc_record(url, "request", http_headers=http,
                                              warc_headers_dict={"WARC-Date": date})

    @staticmethod
    def _response_headers(e: Entry):
        from warcio.statusandheaders import StatusAndHeaders

        headers = [("Content-Type", e.content_type or "application/octet-stream"),
                   ("Content-Length", str(e.size))]
        if e.etag:
            headers.append(("ETag", e.etag))
        if e.last_modified:
            headers.append(("Last-Modified", e.last_modified))
        http = StatusAndHeaders(f"{e.status} {_reason(e.status)}", headers, protocol="HTTP/1.1")
        http.compute_headers_buffer()
        return http

    def response(self, mirror: Path, e: Entry) -> bool:
        """Write e's response and request records; False (and a problem) if its file is not as recorded."""
        http = self._response_headers(e)
        try:
            fh = open_payload(mirror, e.path)
        except (OSError, UnsafePath) as exc:
            kind = "unsafe" if isinstance(exc, UnsafePath) else "missing" if exc.errno == errno.ENOENT else "unreadable"
            self.result.problems.append(Problem(kind, e.path, _why(exc)))
            return False
        with fh:
            have = os.fstat(fh.fileno()).st_size
            if have != e.size:  # not the recorded bytes, and not read (a copy's sparse terabyte: an hour)
                self.result.problems.append(Problem("changed", e.path, f"{have:,} bytes, its record says {e.size:,}; "
                                                                       "not exported"))
                return False
            payload, block = hashlib.sha256(), hashlib.sha256(http.headers_buff)
            size = 0
            while chunk := fh.read(CHUNK):
                payload.update(chunk)
                block.update(chunk)
                size += len(chunk)
            if payload.hexdigest() != e.sha256 or size != e.size:
                self.result.problems.append(Problem("changed", e.path, "its bytes differ from its recorded sha256; not exported"))
                return False
            fh.seek(0)
            date = _warc_date(e.fetched_at, e.path)
            record = self.writer.create_warc_record(
                e.final_url, "response", payload=fh, length=size, http_headers=http,
                warc_headers_dict={"WARC-Date": date, "WARC-Payload-Digest": _digest(payload.digest()),
                                   "WARC-Block-Digest": _digest(block.digest())})
            self.writer.write_request_response_pair(self._request(e.final_url, date), record)
        self.result.responses += 1
        self.result.bytes += size
        if self.pages is not None:
            title = f"{e.key} v{e.version}" + (f" {e.state} / {e.municipality} / {e.parish}" if e.state else "")
            self.pages.write(json.dumps({"id": record.rec_headers.get_header("WARC-Record-ID").strip("<>").split(":")[-1],
                                         "url": e.final_url, "ts": date, "title": title}) + "\n")
        return True

    def revisit(self, e: Entry, checked_at: float) -> None:
        """An unchanged re-check of e's URL: same payload, no body, pointing at e's capture."""
        date = datetime.fromtimestamp(checked_at, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        original = _warc_date(e.fetched_at, e.path)
        record = self.writer.create_revisit_record(
            e.final_url, _digest(bytes.fromhex(e.sha256)), e.final_url, original,
            http_headers=self._response_headers(e), warc_headers_dict={"WARC-Date": date})
        self.writer.write_request_response_pair(self._request(e.final_url, date, conditional=e), record)
        self.result.revisits += 1


def _recheck_times(mirror: Path, result: ExportResult) -> dict[str, float]:
    """url -> the last time a run asked for it; {} (with a note) when the mirror keeps none."""
    try:
        with open_payload(mirror, f"{STATE_DIR}/{CHECKED}") as fh:
            raw = fh.read(MAX_CHECKED_BYTES + 1)  # one time per URL: a few MB; a planted giant is not read whole
        if len(raw) > MAX_CHECKED_BYTES:
            raise ValueError(f"larger than {MAX_CHECKED_BYTES:,} bytes")
        data = json.loads(raw.decode("utf-8"))
    except FileNotFoundError:
        result.notes.append(f"no {STATE_DIR}/{CHECKED} (a restored or published copy): no revisit records")
        return {}
    except (OSError, ValueError, RecursionError, UnsafePath) as exc:
        why = exc if isinstance(exc, ValueError) and "larger than" in str(exc) else exc.__class__.__name__
        result.notes.append(f"{STATE_DIR}/{CHECKED} unreadable ({why}): no revisit records")
        return {}
    if not isinstance(data, dict):
        result.notes.append(f"{STATE_DIR}/{CHECKED} is not a mapping: no revisit records")
        return {}
    return {u: float(t) for u, t in data.items()  # times as time.time() wrote them: 1970 to 5138
            if isinstance(u, str) and isinstance(t, (int, float)) and not isinstance(t, bool) and 0 < t < 1e11}


def _write_warc(mirror: Path, fh, result: ExportResult, pages=None) -> None:
    """Every response in provenance order, then the revisits of URLs re-checked since."""
    checked = _recheck_times(mirror, result)
    writer = _Writer(fh, result, pages)
    writer.warcinfo(mirror)
    # url -> its last capture (for revisits): the last recorded, as provenance is appended in the
    # order captures are made; the latest fetched_at would name an older one after a clock went back
    latest: dict[str, Entry] = {}
    for record in iter_records(mirror / PROVENANCE):  # a bad line stops the export (exit 2)
        e = record.entry
        _check_entry(e)
        result.recorded += 1
        if writer.response(mirror, e):
            latest[e.url] = e
    for url, e in latest.items():
        when = _epoch(e.fetched_at)  # a date _check_entry took: no zone is UTC, as in _warc_date
        again = checked.get(url, 0.0)
        if again > when + RECHECK_SLACK:
            writer.revisit(e, again)


class _Counting:
    """A write-only file wrapper that hashes and counts what passes through."""

    def __init__(self, fh):
        self.fh = fh
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        self.fh.write(data)
        self.sha256.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        self.fh.flush()


def _check_paths(mirror: Path, out: Path) -> None:
    """A mirror to read, and an OUT that is new and outside it."""
    from .publish import inside

    if not (mirror / PROVENANCE).is_file():
        raise NotAMirror(f"{mirror}: no {PROVENANCE}; not an acta-mirror bag")
    if inside(out, mirror):  # a file in data/ the manifest does not list: the mirror would no longer verify
        raise UsageError(f"{out}: inside the mirror {mirror}; write the export elsewhere")
    if out.exists() or out.is_symlink():
        raise UsageError(f"{out} exists; an export never overwrites a file (choose another name)")
    if not out.parent.is_dir():
        raise UsageError(f"{out.parent}: no such directory")


def _disk(exc: OSError, what: str) -> ArchiveWriteError:
    if exc.errno == errno.ENOSPC:
        return ArchiveWriteError(f"disk full while writing {what}; the mirror is untouched")
    return ArchiveWriteError(f"cannot write {what}: {exc.strerror or exc}")


def export_warc(mirror: str | os.PathLike, out: str | os.PathLike) -> ExportResult:
    """Write mirror as one gzipped WARC at out (written beside, then renamed into place)."""
    mirror, out = Path(mirror), Path(out)
    _check_paths(mirror, out)
    result = ExportResult(out)
    try:
        fd, tmp = create_beside(out)  # 0644 less the umask, as any file of the user's: mkstemp's 0600
        try:                          # kept the export from those it was made for (a web server's user)
            with os.fdopen(fd, "wb") as fh:
                _write_warc(mirror, fh, result)
                fh.flush()
                os.fsync(fh.fileno())
            _place(tmp, out)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    except OSError as exc:
        raise _disk(exc, str(out)) from None
    return result


def _place(tmp: str | os.PathLike, out: Path) -> None:
    """Give the finished file its name, failing rather than replacing a file made meanwhile (a
    hard link); on a file system without hard links (FAT or exFAT on a USB stick), a rename
    once nothing is there."""
    try:
        os.link(tmp, out)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        if os.path.lexists(out):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(out)) from None
        os.rename(tmp, out)


def export_wacz(mirror: str | os.PathLike, out: str | os.PathLike) -> ExportResult:
    """Write mirror as a WACZ 1.1.1 package: WARC, CDXJ index, page list, data package, digest."""
    from cdxj_indexer.main import CDXJIndexer

    mirror, out = Path(mirror), Path(out)
    _check_paths(mirror, out)
    result = ExportResult(out)
    try:
        with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as work:
            work = Path(work)
            with open(work / WARC_NAME, "wb") as raw, open(work / "pages.jsonl", "w", encoding="utf-8") as pages:
                pages.write(json.dumps({"format": "json-pages-1.0", "id": "pages",
                                        "title": "Archived files: the index and every acta version"}) + "\n")
                warc = _Counting(raw)
                _write_warc(mirror, warc, result, pages)
            CDXJIndexer(str(work / "index.cdx"), [str(work / WARC_NAME)], sort=True, filename=WARC_NAME).process_all()
            files = [(work / WARC_NAME, f"archive/{WARC_NAME}", zipfile.ZIP_STORED, warc.sha256.hexdigest()),
                     (work / "index.cdx", "indexes/index.cdx", zipfile.ZIP_DEFLATED, None),
                     (work / "pages.jsonl", "pages/pages.jsonl", zipfile.ZIP_DEFLATED, None)]
            for name in EVIDENCE_FILES:
                try:  # each within what such a file can be: a copy's sparse terabyte is not copied
                    with open_payload(mirror, name, EVIDENCE_LIMITS.get(name, MAX_TAG_BYTES)) as src, \
                            open(work / name, "wb") as dst:
                        while chunk := src.read(CHUNK):
                            dst.write(chunk)
                except FileNotFoundError:
                    continue
                except (OSError, UnsafePath) as exc:
                    result.problems.append(Problem("unsafe" if isinstance(exc, UnsafePath) else "unreadable", name, _why(exc)))
                    continue
                if not (work / name).stat().st_size:  # `wacz validate` refuses an empty resource
                    continue
                files.append((work / name, f"evidence/{name}", zipfile.ZIP_DEFLATED, None))
            tmp = work / "out.wacz"
            with zipfile.ZipFile(tmp, "w", allowZip64=True) as zf:
                resources = []
                for src, arcname, method, sha in files:
                    if sha is None:
                        with open(src, "rb") as fh:
                            sha = hashlib.file_digest(fh, "sha256").hexdigest()
                    zf.write(src, arcname, compress_type=method)
                    resources.append({"name": arcname.rsplit("/", 1)[-1].lower(), "path": arcname,
                                      "hash": f"sha256:{sha}", "bytes": src.stat().st_size})
                now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
                package = json.dumps({"profile": "data-package", "wacz_version": WACZ_VERSION,
                                      "title": f"acta-mirror export of {mirror.resolve().name}",
                                      "description": "Unsigned in the WACZ signing spec's sense; the mirror's "
                                                     "Ed25519-signed Merkle root is in evidence/",
                                      "created": now, "modified": now, "software": f"acta-mirror {__version__}",
                                      "resources": resources}, indent=1).encode()
                zf.writestr("datapackage.json", package, compress_type=zipfile.ZIP_DEFLATED)
                digest = {"path": "datapackage.json", "hash": "sha256:" + hashlib.sha256(package).hexdigest()}
                zf.writestr("datapackage-digest.json", json.dumps(digest, indent=1).encode(),
                            compress_type=zipfile.ZIP_DEFLATED)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            _place(tmp, out)
    except OSError as exc:
        raise _disk(exc, str(out)) from None
    return result
