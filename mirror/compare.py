"""Compare someone else's copy of the actas with this mirror, acta by acta, under exactly one label each.

The other copy may be a folder of images in any layout, a sha256 list (`sha256sum` lines or a
JSON object of name -> sha256), or another acta-mirror. Its files are matched to acta keys by
name (a `<9-digit center>.<2-digit table>` in the name, or an image file name our provenance or
archived index CSVs give for a table), and failing that by sha256. Bytes that match none of our
versions are compared as pictures: both decoded to grey, scaled to one grid at most COMPARE_WIDTH
wide, blurred a little, and the largest mean difference over BLOCK x BLOCK cells is the score.
One local edit (a changed vote count) raises one cell; recompression and rescaling raise all a
little. The limits below were measured (README, "comparing with other copies").

The other copy is a stranger's: symbolic links in it are never followed, and a file that is
not what it claims gives a clear line (exit 2), never a traceback.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .export import _why
from .imagecheck import MAX_SCANS, jpeg_scans
from .manifest import PROVENANCE, read_small_file, text_lines
from .models import Entry, IndexFormatError, NotAMirror, Problem, UnsafePath, UsageError
from .state import is_acta_key, iter_records, open_payload, read_inside

LABELS = ("identical", "same_picture", "different_picture", "other_version", "only_here", "only_there")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jfif", ".png", ".webp", ".tif", ".tiff", ".gif", ".bmp")
# What their pictures are decoded as, whatever their names say: Pillow would read a PostScript
# file named .jpg with Ghostscript, which runs it (a loop never returns), and others with their own decoders.
PICTURE_FORMATS = ("JPEG", "PNG", "WEBP", "TIFF", "GIF", "BMP")
# A real acta scan is about 4.4 Mpx; a copy rescaled 3x is 40. Larger pictures are not decoded:
# a 0.5 MB PNG of 13,000 x 13,000 took 2 s and 850 MB to read, and a copy may hold thousands.
MAX_PICTURE_PIXELS = 40_000_000
COMPARE_WIDTH = 256  # the grid pictures are compared on (narrower images: their own width)
BLUR = 1.5  # Gaussian radius on that grid: absorbs the sub-pixel shifts of rescaling
BLOCK = 8  # cell size: a changed three-digit count on a real acta covers about two cells
# Largest cell difference (0-255 grey) still called the same picture. Measured on the 20 real
# scans and on full-size synthesized actas (one shared template): recompression at JPEG quality
# 20-95 scored at most 3.9, a three-digit overwrite at least 10.8; rescaling to 0.25-2x scored
# at most 21.4, a different acta at least 48.3 (118 between real scans).
SAME_SIZE_LIMIT = 6.0
RESCALED_LIMIT = 32.0
ASPECT_TOLERANCE = 0.02  # width/height may differ this much (rounding when rescaled)
MAX_LIST_BYTES = 256 << 20  # a sha256 list for every acta ever published is a few MB
MAX_FILE_BYTES = 256 << 20  # an acta scan is a few MB: a larger file of theirs is not hashed (a sparse TB: an hour)
_KEY_IN_NAME = re.compile(r"(?<![0-9])([0-9]{9})\.([0-9]{2})(?![0-9])")
_SHA_LINE = re.compile(r"^([0-9a-fA-F]{64}) [ *](.+)$")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    detail: str = ""
    here: str = ""  # our file (latest version) or ""
    there: str = ""  # their file name as listed, or ""
    score: float | None = None  # the picture score when pixels were compared


@dataclass
class Report:
    kind: str  # what OTHER was: folder, sha256 list, json list, acta-mirror
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)  # their files no acta key could be found for
    unread: list[str] = field(default_factory=list)  # their files that could not be read from disk
    # another acta-mirror's latest files whose bytes are not the sha256 its own provenance records
    contradicted: list[str] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(LABELS, 0)
        for row in self.rows:
            counts[row.label] += 1
        return counts

    @property
    def agree(self) -> bool:
        """Every acta the same, every file of theirs read, and (another acta-mirror) every one
        the bytes its own provenance records: a file that could not be read is not known to
        match, whatever its recorded sha256 says, and a copy whose files are not what its own
        records say is not a sound copy, even where its bytes happen to be ours."""
        return not self.unread and not self.contradicted and \
            all(row.label in ("identical", "same_picture") for row in self.rows)


@dataclass(frozen=True)
class Theirs:
    """One file of the other copy: its name as listed, sha256, and where to read it (None: a list)."""

    name: str
    sha256: str
    rel: str | None = None
    key: str = ""  # known up front for another acta-mirror
    older: tuple[str, ...] = ()  # another acta-mirror's earlier versions of this acta


@dataclass
class _Ours:
    versions: dict[str, list[Entry]] = field(default_factory=lambda: defaultdict(list))
    names: dict[str, str] = field(default_factory=dict)  # image file name -> key
    by_sha: dict[str, str] = field(default_factory=dict)  # sha256 -> key


# -- our side ---------------------------------------------------------------------------
def _basename(url: str) -> str:
    return unquote(urlsplit(url).path.rsplit("/", 1)[-1])


def _load_ours(mirror: Path, report: Report) -> _Ours:
    if not (mirror / PROVENANCE).is_file():
        raise NotAMirror(f"{mirror}: no {PROVENANCE}; not an acta-mirror bag")
    ours = _Ours()
    indexes = []
    for record in iter_records(mirror / PROVENANCE):  # ours must be clean: a bad line is exit 2
        e = record.entry
        if e.kind == "index":
            indexes.append(e)
            continue
        ours.versions[e.key].append(e)
        ours.by_sha.setdefault(e.sha256, e.key)
        for url in (e.url, e.final_url):
            ours.names.setdefault(_basename(url), e.key)
    for e in indexes:  # tables we never archived still have a file name in the index
        from .sites.resultados2024 import parse_index_bytes

        try:
            raw = read_inside(mirror, e.path, MAX_LIST_BYTES)  # an index is a few MB: a copy's giant is refused unread
            for acta in parse_index_bytes(raw, e.url):
                ours.names.setdefault(_basename(acta.url), acta.key)
        except (OSError, IndexFormatError, UnsafePath) as exc:
            report.notes.append(f"our index {e.path} not used for names: {exc}")
    for entries in ours.versions.values():
        entries.sort(key=lambda x: x.version)
    return ours


# -- their side -------------------------------------------------------------------------
def _hash(root: str, rel: str) -> str:
    """sha256 of one file of theirs; UnsafePath, unread, when it is larger than any acta."""
    with open_payload(root, rel) as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > MAX_FILE_BYTES:
            raise UnsafePath(rel, f"{size:,} bytes, larger than any acta ({MAX_FILE_BYTES:,}); not read")
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _load_theirs(other: Path, report: Report) -> list[Theirs]:
    try:
        st = os.stat(other)
    except OSError as exc:
        raise UsageError(f"{other}: {exc.strerror or exc}") from None
    if os.path.isdir(other):
        if (other / PROVENANCE).is_file() and not (other / PROVENANCE).is_symlink():
            report.kind = "acta-mirror"
            return _their_mirror(other, report)
        report.kind = "folder"
        return _their_folder(other, report)
    if st.st_size > MAX_LIST_BYTES:
        raise UsageError(f"{other}: {st.st_size:,} bytes is too large for a sha256 list")
    try:
        text = read_small_file(other, MAX_LIST_BYTES).decode("utf-8-sig")  # a FIFO or a device would hang
    except ValueError as exc:
        raise UsageError(f"{other}: not a readable sha256 list ({exc})") from None
    except OSError as exc:
        raise UsageError(f"{other}: not a readable sha256 list ({exc.__class__.__name__})") from None
    if text.lstrip().startswith("{"):
        report.kind = "json list"
        return _their_json(other, text)
    report.kind = "sha256 list"
    return _their_sums(other, text)


def _their_mirror(other: Path, report: Report) -> list[Theirs]:
    bad: list[Problem] = []
    entries = [r.entry for r in iter_records(other / PROVENANCE, bad) if is_acta_key(r.entry.key)]
    if bad:
        report.notes.append(f"{len(bad)} bad line(s) in their {PROVENANCE} skipped (first: {bad[0]})")
    by_key: dict[str, list[Entry]] = defaultdict(list)
    for e in entries:
        by_key[e.key].append(e)
    files = []
    for key, versions in by_key.items():
        versions.sort(key=lambda x: x.version)
        latest = versions[-1]
        try:
            sha = _hash(str(other), latest.path)
        except (OSError, UnsafePath) as exc:
            report.notes.append(f"their {latest.path}: {_why(exc)}; compared by its recorded sha256 only")
            report.unread.append(latest.path)
            sha = latest.sha256
            files.append(Theirs(latest.path, sha, None, key, tuple(v.sha256 for v in versions[:-1])))
            continue
        if sha != latest.sha256:
            report.contradicted.append(latest.path)
        files.append(Theirs(latest.path, sha, latest.path, key, tuple(v.sha256 for v in versions[:-1])))
    if report.contradicted:
        report.notes.append(f"{len(report.contradicted)} of their {len(files)} latest files differ from their own "
                            "provenance (compared by the bytes on disk; listed in contradicted): their copy "
                            "does not hold what it records")
    return files


def _walk(top: Path, report: Report):
    """(folder, its file names) of every folder under top, never entering a linked folder; a
    loop, not recursion (os.walk recurses here: a copy nested a thousand folders deep would stop
    it); a folder that cannot be listed is named in report.unread."""
    stack = [str(top)]
    while stack:
        dirpath = stack.pop()
        try:
            with os.scandir(dirpath) as items:
                listed = list(items)
        except OSError as exc:
            rel = os.path.relpath(dirpath, top).replace(os.sep, "/")
            report.notes.append(f"their folder {rel}: {exc.strerror or exc}; nothing in it read")
            report.unread.append(rel + "/")
            continue
        folders = sorted((i.name for i in listed if i.is_dir(follow_symlinks=False)), reverse=True)
        stack.extend(os.path.join(dirpath, d) for d in folders)
        yield dirpath, [i.name for i in listed if not i.is_dir(follow_symlinks=False)]


def _their_folder(other: Path, report: Report) -> list[Theirs]:
    files, links, skipped = [], 0, 0
    for dirpath, filenames in _walk(other, report):
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, other).replace(os.sep, "/")
            if os.path.islink(full):
                links += 1
                continue
            if not name.lower().endswith(IMAGE_EXTENSIONS):
                skipped += 1
                continue
            try:
                files.append(Theirs(rel, _hash(str(other), rel), rel))
            except (OSError, UnsafePath) as exc:
                report.notes.append(f"their {rel}: {_why(exc)}; skipped")
                report.unread.append(rel)
    if links:
        report.notes.append(f"{links} symbolic link(s) in {other} not followed")
    if skipped:
        report.notes.append(f"{skipped} file(s) in {other} are not images by their extension; skipped")
    return files


def _their_json(other: Path, text: str) -> list[Theirs]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{other}: not JSON ({exc})") from None
    except RecursionError:
        raise UsageError(f"{other}: not a JSON object of name -> sha256 (nested too deep)") from None
    if not isinstance(data, dict):
        raise UsageError(f"{other}: expected a JSON object of name -> sha256")
    files = []
    for name, sha in data.items():
        if not isinstance(sha, str) or not _HEX64.match(sha):
            raise UsageError(f"{other}: {name!r}: not a sha256 (64 hex digits)")
        files.append(Theirs(name, sha.lower()))
    return files


def _their_sums(other: Path, text: str) -> list[Theirs]:
    files = []
    for number, line in enumerate(text_lines(text), 1):
        if not line.strip() or line.startswith("#"):
            continue
        m = _SHA_LINE.match(line)
        if not m:
            raise UsageError(f"{other}:{number}: not a '<sha256>  <name>' line (sha256sum format)")
        files.append(Theirs(m.group(2), m.group(1).lower()))
    if not files:
        raise UsageError(f"{other}: no sha256 lines in it")
    return files


def _key_of(f: Theirs, ours: _Ours) -> str:
    if f.key:
        return f.key
    base = f.name.replace("\\", "/").rsplit("/", 1)[-1]
    m = _KEY_IN_NAME.search(base)
    if m:
        return f"{m.group(1)}.{m.group(2)}"
    return ours.names.get(base) or ours.by_sha.get(f.sha256, "")


# -- pictures ---------------------------------------------------------------------------
class _NotDecoded(ValueError):
    """A picture refused unread: its reason is the row's detail."""


@contextmanager
def _picture(root: str, rel: str):
    """rel opened by Pillow (not yet decoded), refused unread (_NotDecoded) when its format is
    not one of PICTURE_FORMATS, it has more than MAX_PICTURE_PIXELS, or it is a JPEG of more
    than MAX_SCANS scans."""
    import warnings

    from PIL import Image

    with open_payload(root, rel) as fh:
        if fh.read(2) == b"\xff\xd8" and (scans := jpeg_scans(fh)) > MAX_SCANS:
            raise _NotDecoded(f"not decoded: a JPEG of {scans:,} scans (a progressive one has about 10)")
        fh.seek(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit is ours, below
            try:
                im = Image.open(fh, formats=PICTURE_FORMATS)
            except Image.DecompressionBombError:
                raise _NotDecoded(f"not decoded: more than {MAX_PICTURE_PIXELS:,} pixels") from None
        with im:
            width, height = im.size
            if width * height > MAX_PICTURE_PIXELS:
                raise _NotDecoded(f"not decoded: {width}x{height} is more than {MAX_PICTURE_PIXELS:,} pixels")
            yield im


def _grid(root: str, rel: str, size: tuple[int, int]):
    """rel decoded to grey on a size grid, blurred; numpy float32."""
    import numpy as np
    from PIL import Image, ImageFilter

    with _picture(root, rel) as im:
        im.draft("L", (size[0] * 2, size[1] * 2))  # JPEG: decode at a reduced scale, much faster
        grey = _grey(im).resize(size, Image.BOX).filter(ImageFilter.GaussianBlur(BLUR))
        return np.asarray(grey, dtype=np.float32)


def _grey(im):
    """8-bit grey of im. Pillow's convert("L") clips 16-bit and 32-bit values at 255 and takes
    floats as they are, so a 16-bit PNG or a float TIFF of an acta came out white or black (a
    "different picture"): those are scaled to 0-255 by their range (0-1 for floats that stay
    within it, else 8 or 16 bits, else their largest value)."""
    import numpy as np
    from PIL import Image

    if not im.mode.startswith(("I", "F")):
        return im.convert("L")
    values = np.asarray(im, dtype=np.float32)
    top = float(values.max()) if values.size else 0.0
    full = 1.0 if im.mode == "F" and top <= 1.0 else 255.0 if top <= 255 else 65535.0 if top <= 65535 else top
    return Image.fromarray(np.clip(values * (255.0 / full), 0, 255).astype(np.uint8), "L")


def _dims(root: str, rel: str) -> tuple[int, int]:
    with _picture(root, rel) as im:
        return im.size


def picture_score(ours: tuple[str, str], theirs: tuple[str, str]) -> tuple[float, bool] | str:
    """(score, same size) of two images, or why they could not be compared (a short reason)."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        w1, h1 = _dims(*ours)
        w2, h2 = _dims(*theirs)
        if abs((w1 / h1) / (w2 / h2) - 1) > ASPECT_TOLERANCE:
            return f"other proportions ({w2}x{h2}, ours {w1}x{h1})"
        width = min(COMPARE_WIDTH, w1, w2)
        size = (width, max(1, round(width * h1 / w1)))
        diff = np.abs(_grid(*ours, size) - _grid(*theirs, size))
    except _NotDecoded as exc:
        return str(exc)
    except (OSError, UnsafePath, UnidentifiedImageError, Image.DecompressionBombError, ValueError, SyntaxError) as exc:
        return f"not a readable image ({exc.__class__.__name__})"
    h, w = (diff.shape[0] // BLOCK) * BLOCK, (diff.shape[1] // BLOCK) * BLOCK
    if h and w:
        cells = diff[:h, :w].reshape(h // BLOCK, BLOCK, w // BLOCK, BLOCK).mean(axis=(1, 3))
        score = float(cells.max())
    else:
        score = float(diff.mean())
    return round(score, 1), (w1, h1) == (w2, h2)


def _same(result) -> bool:
    if isinstance(result, str):
        return False
    score, same_size = result
    return score <= (SAME_SIZE_LIMIT if same_size else RESCALED_LIMIT)


def _judge(task: tuple) -> tuple[str, str, float | None]:
    """One acta whose bytes match none of our versions: (label, detail, score). Runs in a worker."""
    mirror, versions, other, rel = task  # versions: [(path, version)] latest first
    latest = picture_score((mirror, versions[0][0]), (other, rel))
    if _same(latest):
        score, same_size = latest
        how = "recompressed" if same_size else "rescaled or recompressed"
        return "same_picture", f"{how}; picture score {score} (limit {SAME_SIZE_LIMIT if same_size else RESCALED_LIMIT})", score
    for path, version in versions[1:]:
        older = picture_score((mirror, path), (other, rel))
        if _same(older):
            return "other_version", f"the same picture as our v{version} (re-encoded); picture score {older[0]}", older[0]
    if isinstance(latest, str):
        return "different_picture", latest, None
    return "different_picture", f"picture score {latest[0]} (same picture up to {SAME_SIZE_LIMIT if latest[1] else RESCALED_LIMIT})", latest[0]


# -- comparing --------------------------------------------------------------------------
_RANK = {"identical": 0, "same_picture": 1, "other_version": 2, "different_picture": 3}


def compare(mirror: str | os.PathLike, other: str | os.PathLike, *, workers: int | None = None) -> Report:
    mirror, other = Path(mirror), Path(other)
    report = Report(kind="")
    ours = _load_ours(mirror, report)
    theirs = _load_theirs(other, report)
    by_key: dict[str, list[Theirs]] = defaultdict(list)
    for f in theirs:
        key = _key_of(f, ours)
        if key:
            by_key[key].append(f)
        else:
            report.unmatched.append(f.name)
    if report.unread:
        # a mirror's unreadable file is among theirs (by its recorded sha256); a folder's is not
        listed = len(theirs) + (len(report.unread) if report.kind == "folder" else 0)
        report.notes.append(f"{len(report.unread)} of their {listed} files could not be read (named above): "
                            "the copies are not known to agree")
    if report.unmatched:
        report.notes.append(f"{len(report.unmatched)} of their {len(theirs)} files match no acta key by name or "
                            f"sha256 (e.g. {report.unmatched[0]!r}); not counted")
    unread, contradicted = set(report.unread), set(report.contradicted)
    rows: dict[str, list[Row]] = defaultdict(list)
    pending: list[tuple[str, Theirs, tuple]] = []
    for key, files in by_key.items():
        versions = ours.versions.get(key)
        if not versions:
            rows[key].append(Row(key, "only_there", f"{len(files)} file(s), none of ours", "", files[0].name))
            continue
        latest = versions[-1]
        older = {v.sha256: v.version for v in versions[:-1]}
        for f in files:
            if f.sha256 == latest.sha256:
                detail = ("their file not read: by its recorded sha256 only" if f.name in unread else
                          "their own provenance records other bytes for it" if f.name in contradicted else "")
                rows[key].append(Row(key, "identical", detail, latest.path, f.name))
            elif f.sha256 in older:
                rows[key].append(Row(key, "other_version", f"older: our v{older[f.sha256]} of {latest.version}",
                                     latest.path, f.name))
            elif latest.sha256 in f.older:
                rows[key].append(Row(key, "other_version", "newer: theirs replaced the bytes we hold as latest",
                                     latest.path, f.name))
            elif f.rel is None:
                rows[key].append(Row(key, "different_picture", "other bytes (a sha256 list: pixels not compared)",
                                     latest.path, f.name))
            else:
                pending.append((key, f, (str(mirror), [(v.path, v.version) for v in reversed(versions)],
                                         str(other), f.rel)))
    for (key, f, _task), (label, detail, score) in zip(pending, _run([p[2] for p in pending], workers)):
        rows[key].append(Row(key, label, detail, ours.versions[key][-1].path, f.name, score))
    for key, versions in ours.versions.items():
        if key not in rows:
            rows[key].append(Row(key, "only_here", f"{len(versions)} version(s) here", versions[-1].path, ""))
    for key in sorted(rows):
        # Several of their files for one acta: the best one names it, unless one is another picture:
        # a forgery beside the genuine file is still in their copy under this acta's name.
        best = min(rows[key], key=lambda r: _RANK.get(r.label, 9))
        other = next((r for r in rows[key] if r.label == "different_picture"), best)
        if len(rows[key]) > 1:
            best = Row(other.key, other.label, (other.detail + "; " if other.detail else "")
                       + f"{len(rows[key])} of their files are this acta"
                       + (f" (also {best.label}: {best.there})" if other is not best else ""),
                       other.here, other.there, other.score)
        report.rows.append(best)
    return report


def _run(tasks: list[tuple], workers: int | None) -> list[tuple[str, str, float | None]]:
    workers = workers or min(4, os.cpu_count() or 1)
    if len(tasks) < 16 or workers == 1:
        return [_judge(t) for t in tasks]
    from .workers import pool

    with pool(workers) as executor:
        return list(executor.map(_judge, tasks, chunksize=16))


def to_json(report: Report) -> dict:
    return {"kind": report.kind, "counts": report.counts, "total": len(report.rows),
            "actas": [{"key": r.key, "label": r.label, "detail": r.detail, "here": r.here, "there": r.there,
                       "score": r.score} for r in report.rows],
            "unmatched": report.unmatched, "unread": report.unread, "contradicted": report.contradicted,
            "notes": report.notes}
