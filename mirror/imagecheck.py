"""Check that bytes are a whole JPEG or PNG, by structure, as they stream in.

Magic bytes prove nothing: a blocked site can put a PNG signature in front of an HTML page,
or wrap random bytes in JPEG start and end markers. `ImageCheck` walks the structure as the
chunks arrive; the compressed data is skipped by one regular-expression search per scan:

- JPEG: every segment from SOI up to the first scan (a frame header must come first), the
  entropy-coded data (stuffed 0xFF00 and restart markers), the segments between the scans of
  a progressive file, and a real end of image (EOI). HTML markup in a comment or application
  segment (a JPEG/HTML polyglot) is refused.
- PNG: the signature, IHDR first, every chunk's length, type and CRC, IDAT before IEND.

A scan far too small for its frame cannot be whole (every 8x8 block costs at least two bits)
and is refused. Bytes after the end marker are kept (what the server sent is evidence) and
counted in `trailing`. When the structure is valid but unusual (no quantization or Huffman
tables before the scan, arithmetic coding, a height left to a DNL segment), `needs_decode` is
set and `decode()` lets Pillow have the last word; libjpeg forgives much, but not a missing
table. Problems raise `NotImage` (a ValueError) with a short stable `cause` and a reason.
"""
from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

JPEG_SIGNATURE = b"\xff\xd8\xff"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # frame headers (not DHT, JPG, DAC)
_ARITHMETIC = frozenset({0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM and RSTn carry no length
_HTML = re.compile(rb"<\s*(html|script|!doctype|body|iframe|svg|head|meta|object|embed)\b", re.IGNORECASE)
_SNIFF = 64  # bytes looked at before calling a body that is no image HTML or junk
_PIXELS_PER_SCAN_BYTE = 2048  # a whole scan has at least 1 byte per 256 pixels: 8x margin
_CHUNK_TYPE = re.compile(rb"[A-Za-z]{4}")
# In a scan, 0xFF00 is a stuffed byte, 0xFFD0-D7 a restart and 0xFFFF fill: anything else is a marker.
_MARKER_IN_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_NOT_FILL = re.compile(rb"[^\xff]")
MAX_SCANS = 100  # a progressive JPEG has about 10; libjpeg decodes every block again for each, so more is refused unread


class NotImage(ValueError):
    def __init__(self, reason: str, cause: str = "not an image"):
        super().__init__(reason)
        self.reason = reason
        self.cause = cause


@dataclass(frozen=True)
class Verdict:
    kind: str  # "image/jpeg" or "image/png"
    trailing: int  # bytes after the end marker
    needs_decode: bool  # valid structure, unusual enough to ask a decoder


def looks_like_html(head: bytes) -> bool:
    return head.lstrip()[:1] == b"<" or bool(_HTML.search(head[:1024]))


class ImageCheck:
    """Feed chunks in order; `finish()` returns a Verdict or raises NotImage."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._state = "signature"
        self.kind = ""
        self.trailing = 0
        self._unusual = ""
        # JPEG
        self._frame: tuple[int, int] | None = None  # (width, height)
        self._huffman = False
        self._quantization = False
        self._arithmetic = False
        self._scan_bytes = 0
        # PNG
        self._chunk_type = b""
        self._chunk_left = 0
        self._crc = 0
        self._seen_idat = False

    def feed(self, chunk: bytes | bytearray) -> None:
        """The next bytes of the file."""
        if not chunk:
            return
        if self._state == "trailing":
            self.trailing += len(chunk)
            return
        start = 0
        if self._state == "scan" and not self._buf:
            # most of a scanned page: compressed data, searched where it lies rather than copied
            found = _MARKER_IN_SCAN.search(chunk)
            if found is None:
                end = len(chunk) - (chunk[-1] == 0xFF)  # keep a last 0xFF: the next byte decides
                self._scan_bytes += end
                self._buf += chunk[end:]
                return
            self._scan_bytes += found.start()
            self._state = "marker"
            start = found.start()
        self._buf += chunk[start:] if start else chunk
        pos = self._jpeg(0) if self.kind == "image/jpeg" else self._png(0) if self.kind else self._signature()
        del self._buf[:pos]

    def finish(self) -> Verdict:
        if self._state == "signature":
            if not self._buf:
                raise NotImage("empty body", "not an image")
            self._signature(final=True)
            raise NotImage(f"{len(self._buf)} bytes: too short for a JPEG or PNG", "not an image")
        if self._state != "trailing":
            what = "JPEG" if self.kind == "image/jpeg" else "PNG"
            raise NotImage(f"{what} cut short: no end of image", "truncated image")
        if self.kind == "image/jpeg" and self._frame:
            width, height = self._frame
            if height == 0:
                self._unusual = self._unusual or "height given after the scan (DNL)"
            elif self._scan_bytes * _PIXELS_PER_SCAN_BYTE < width * height:
                raise NotImage(f"JPEG scan of {self._scan_bytes} bytes cannot hold {width}x{height} pixels")
        return Verdict(self.kind, self.trailing, bool(self._unusual))

    # -- signature --------------------------------------------------------------
    def _signature(self, final: bool = False) -> int:
        head = bytes(self._buf[:8])
        for signature, kind in ((JPEG_SIGNATURE, "image/jpeg"), (PNG_SIGNATURE, "image/png")):
            if head.startswith(signature):
                self.kind = kind
                if kind == "image/jpeg":
                    self._state = "marker"
                    return self._jpeg(2)
                self._state = "chunk"
                return self._png(8)
            if signature.startswith(head) and not final:  # a prefix (a 2-byte first chunk, as over Tor): wait
                return 0
        if len(self._buf) < _SNIFF and not final:  # enough to tell an HTML page from other junk
            return 0
        if looks_like_html(bytes(self._buf[:1024])):
            raise NotImage("an HTML page where an image belongs", "HTML instead of an image")
        raise NotImage("not a JPEG or PNG (no image signature)", "not an image")

    # -- JPEG ---------------------------------------------------------------------
    def _jpeg(self, pos: int) -> int:
        buf = self._buf
        while True:
            if self._state == "scan":
                found = _MARKER_IN_SCAN.search(buf, pos)
                if found is None:  # keep a last 0xFF: the byte after it decides
                    end = len(buf) - 1 if buf.endswith(b"\xff") else len(buf)
                    self._scan_bytes += end - pos
                    return end
                self._scan_bytes += found.start() - pos
                self._state = "marker"
                pos = found.start()
                continue
            if self._state == "trailing":
                self.trailing += len(buf) - pos
                return len(buf)
            # a marker is expected at pos
            if pos >= len(buf):
                return pos
            if buf[pos] != 0xFF:
                _broken(bytes(buf[pos:pos + 1024]), f"JPEG structure broken at a segment boundary (byte {buf[pos]:#04x}, not a marker)")
            found = _NOT_FILL.search(buf, pos + 1)  # a marker may follow any number of 0xFF fill bytes
            if found is None:  # fill only, so far: keep one 0xFF (the byte after it decides), drop the rest
                return len(buf) - 1
            pos = found.start()
            start = pos - 1  # what waits for more keeps one 0xFF, never the fill before it (read once)
            marker = buf[pos]
            if marker in _STANDALONE:
                pos += 1
                continue
            if marker == 0xD9:
                if self._scan_bytes == 0:
                    raise NotImage("JPEG ends before any image data (no frame and scan)")
                self._state = "trailing"
                pos += 1
                continue
            if marker in (0x00, 0xD8) or marker < 0xC0:
                raise NotImage(f"JPEG structure broken: marker {marker:#04x} where a segment belongs")
            if pos + 3 > len(buf):
                return start
            length = int.from_bytes(buf[pos + 1:pos + 3], "big")
            if length < 2:
                raise NotImage(f"JPEG segment {marker:#04x} with length {length}")
            end = pos + 1 + length
            if end > len(buf):
                return start  # wait for the whole segment (at most 64 KB)
            self._segment(marker, bytes(buf[pos + 3:end]))
            pos = end

    def _segment(self, marker: int, body: bytes) -> None:
        if marker in _SOF:
            if self._frame is not None and self._scan_bytes:
                raise NotImage("JPEG has a second frame after its image data")
            if len(body) < 6:
                raise NotImage("JPEG frame header too short")
            height, width, comps = int.from_bytes(body[1:3], "big"), int.from_bytes(body[3:5], "big"), body[5]
            if width == 0 or not 1 <= comps <= 4 or len(body) != 6 + 3 * comps:
                raise NotImage(f"JPEG frame header is not valid ({width}x{height}, {comps} components)")
            self._frame = (width, height)
            if marker in _ARITHMETIC:
                self._arithmetic = True
                self._unusual = "arithmetic coding"
        elif marker == 0xC4:
            self._huffman = True
        elif marker == 0xDB:
            self._quantization = True
        elif marker == 0xDA:
            if self._frame is None:
                raise NotImage("JPEG scan before any frame header")
            if not body or len(body) != 4 + 2 * body[0] or not 1 <= body[0] <= 4:
                raise NotImage("JPEG scan header is not valid")
            if not self._quantization:
                self._unusual = self._unusual or "no quantization tables before the scan"
            if not self._huffman and not self._arithmetic:
                self._unusual = self._unusual or "no Huffman tables (default tables assumed)"
            self._state = "scan"
        elif 0xE0 <= marker <= 0xEF or marker == 0xFE:
            if b"<" in body and _HTML.search(body):  # the find is memchr-fast; the pattern is not
                raise NotImage("HTML markup inside the JPEG (a JPEG/HTML polyglot)", "polyglot")

    # -- PNG ------------------------------------------------------------------------
    def _png(self, pos: int) -> int:
        buf = self._buf
        while True:
            if self._state == "trailing":
                self.trailing += len(buf) - pos
                return len(buf)
            if self._state == "chunk":
                if pos + 8 > len(buf):
                    return pos
                length = int.from_bytes(buf[pos:pos + 4], "big")
                ctype = bytes(buf[pos + 4:pos + 8])
                if length > 0x7FFFFFFF or not _CHUNK_TYPE.fullmatch(ctype):
                    raise NotImage("PNG structure broken: not a chunk header")
                if not self._chunk_type and (ctype != b"IHDR" or length != 13):
                    _broken(bytes(buf[pos:pos + 1024]), "PNG does not start with its header chunk (IHDR)")
                if ctype == b"IEND" and not self._seen_idat:
                    raise NotImage("PNG ends before any image data (IDAT)")
                self._seen_idat |= ctype == b"IDAT"
                self._chunk_type, self._chunk_left = ctype, length
                self._crc = zlib.crc32(ctype)
                self._state = "data"
                pos += 8
            if self._state == "data":
                if self._chunk_type == b"IHDR":
                    if pos + 13 > len(buf):
                        return pos
                    if int.from_bytes(buf[pos:pos + 4], "big") == 0 or int.from_bytes(buf[pos + 4:pos + 8], "big") == 0:
                        raise NotImage("PNG header gives a zero width or height")
                take = min(self._chunk_left, len(buf) - pos)
                self._crc = zlib.crc32(memoryview(buf)[pos:pos + take], self._crc)
                self._chunk_left -= take
                pos += take
                if self._chunk_left:
                    return pos
                self._state = "crc"
            if self._state == "crc":
                if pos + 4 > len(buf):
                    return pos
                if int.from_bytes(buf[pos:pos + 4], "big") != self._crc:
                    raise NotImage(f"PNG chunk {self._chunk_type.decode()} fails its CRC")
                pos += 4
                self._state = "trailing" if self._chunk_type == b"IEND" else "chunk"


def _broken(rest: bytes, reason: str) -> None:
    """Raise for a broken structure, naming an HTML page behind image magic bytes as such."""
    if looks_like_html(rest):
        raise NotImage(f"an HTML page behind image magic bytes ({reason})", "HTML instead of an image")
    raise NotImage(reason)


def decode(path: str) -> None:
    """Let Pillow decode the file (JPEGs at 1/8 scale, which is enough to find a broken
    stream and much faster); raise NotImage if it cannot."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.draft("L", (max(1, img.width // 8), max(1, img.height // 8)))
            img.load()
    except Exception as exc:  # Pillow raises many types for bad data; all mean the same here
        raise NotImage(f"does not decode as an image ({type(exc).__name__})", "not an image") from None


def check_bytes(data: bytes) -> Verdict:
    """The whole check on bytes in memory (tests, and files read back)."""
    check = ImageCheck()
    check.feed(data)
    return check.finish()


def jpeg_scans(fh) -> int:
    """The scans (SOS markers) in a JPEG file, read in chunks from its start: in entropy-coded
    data a 0xFF byte is followed by 0x00 or a restart marker, so 0xFFDA starts a scan (or an
    embedded thumbnail's). Readers that decode refuse a file of more than MAX_SCANS."""
    fh.seek(0)
    count, carry = 0, b""
    for chunk in iter(lambda: fh.read(1 << 20), b""):
        data = carry + chunk
        count += data.count(b"\xff\xda")
        carry = data[-1:]
    return count
