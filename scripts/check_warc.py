"""Does a WACZ serve only signed files? Python's standard library only, short on purpose.

Run it as `python3 check_warc.py FILE.wacz` in the folder FILE.wacz was unzipped into, after
minisign and check_signed.py (in evidence/) said that evidence/ holds the signed manifest and
provenance. It reads the WACZ's member names only (no member is unpacked): a name held by two
members, or one with '..', an empty or '.' part, a leading '/' or a backslash, is refused at once,
as unzip and a replay tool could then read different files under one name.
It checks every record of archive/data.warc.gz, and the record that each line of
indexes/index.cdx (what a replay tool looks a URL up in) points at:
- a response's payload hashes (sha256) to a version that evidence/provenance.jsonl records for
  the response's URL, under a path and sha256 that evidence/manifest-sha256.txt lists, and its
  HTTP head is a 200 with only the headers the export writes (Content-Type, Content-Length,
  ETag, Last-Modified), each once, Content-Length the payload's: a redirect, a Refresh or an
  encoding would make a replay serve other bytes;
- its WARC-Payload-Digest is its payload's, and an index line's digest its record's (a replay finds
  the payload of a revisit by it);
- a revisit names its own URL and the digest of such a version, and has such a head and no payload;
- an index line points at a response or revisit for its own URL, under its own URL's key (the path
  of its SURT);
- each page of pages/pages.jsonl (the list a replay shows) has the title the export gives its URL's
  signed version (key, version, place);
- there is no other kind of record but warcinfo and request (which a replay does not serve), and
  no other file in archive/, indexes/ or pages/ (a replay could read it; this script does not).
A record that repeats a WARC header (a replay reads the first, a naive reader the last) or is
larger than any signed file (a gzip bomb) cannot be read.
Exit 0: every record checks out; 1: one does not, or the WACZ cannot be read (each reason printed).
"""
import base64
import gzip
import hashlib
import io
import json
import os
import re
import sys
import unicodedata
import urllib.parse
import zipfile
import zlib

WARC = "archive/data.warc.gz"
INDEX = "indexes/index.cdx"
PAGES = "pages/pages.jsonl"
EXPORTED_HEADERS = {b"content-type", b"content-length", b"etag", b"last-modified"}


def member_problem(wacz):
    """Why unzip and a replay tool could read different files from this WACZ under one name, or None."""
    seen = set()
    for name in zipfile.ZipFile(wacz).namelist():  # the central directory only: nothing is unpacked
        if "\\" in name or {"", ".", ".."} & set(name.removesuffix("/").split("/")):
            return f"{wacz}: a member named {name!r}, which unzip and a replay tool may read as different files"
        folded = unicodedata.normalize("NFC", name.removesuffix("/")).casefold()  # one file on macOS and Windows
        if folded in seen:
            return f"{wacz}: two members named {name!r} (or alike): unzip and a replay tool may read different ones"
        seen.add(folded)
    return None


def warc_records(stream, largest):
    """(headers with lower-case names, block) of each WARC record; ValueError for a record
    with a header twice or a block over `largest` bytes."""
    blank = 0
    while line := stream.readline(65536):
        if not line.strip():
            blank += 1  # the blank lines that end a record (two); a stream of them is no WARC
            if blank > 4:
                raise ValueError("blank lines where a WARC record should begin")
            continue
        if not line.startswith(b"WARC/"):
            raise ValueError(f"not a WARC record: {line[:40]!r}")
        headers, blank = {}, 0
        while (line := stream.readline(65536)) not in (b"\r\n", b""):
            name, _, value = line.decode("utf-8").partition(":")
            name = name.strip().lower()
            if not line.endswith(b"\n"):
                raise ValueError(f"a WARC header line cut short or over 64 KiB: {line[:40]!r}")
            if name in headers and name != "warc-concurrent-to":
                raise ValueError(f"a WARC record with {name[:40]!r} twice (a replay reads the first)")
            headers[name] = value.strip()
        if not 0 <= int(headers["content-length"]) <= largest:
            raise ValueError(f"a WARC record of {int(headers['content-length']):,} bytes, larger than any signed file")
        yield headers, stream.read(int(headers["content-length"]))


def head_ok(head, size):
    """Is this HTTP head what the export writes: a 200 with only its headers, each once, on lines
    ending in CRLF, and Content-Length the payload's size? A redirect, a Refresh, a range or an
    encoding would make a replay serve something else than the signed payload."""
    status, *lines = head.split(b"\r\n")
    fields = [(name.strip().lower(), value.strip()) for name, _, value in (f.partition(b":") for f in lines)]
    names = [name for name, _ in fields]
    return (re.fullmatch(rb"HTTP/1\.[01] 200 [^\r\n]*", status) is not None and b"\n" not in b"".join(lines)
            and b"\r" not in b"".join(lines) and len(set(names)) == len(names) and set(names) <= EXPORTED_HEADERS
            and dict(fields).get(b"content-length") == str(size).encode())


def digest(value):
    """The hex sha256 of a 'sha256:BASE32' digest (a WARC header's or an index line's)."""
    algorithm, _, value = (value or ":").partition(":")
    return base64.b32decode(value).hex() if algorithm == "sha256" else None


def problem(headers, block):
    """Why this record is not a signed file, or None."""
    kind, url = headers.get("warc-type"), headers.get("warc-target-uri", "")
    if kind in ("warcinfo", "request"):
        return None
    head, _, payload = block.partition(b"\r\n\r\n")  # the HTTP status line and headers, then the payload
    if kind == "response":
        sha = hashlib.sha256(payload).hexdigest()
    elif kind == "revisit" and headers.get("warc-refers-to-target-uri", url) == url and not payload:
        sha = digest(headers.get("warc-payload-digest"))
    else:
        return f"{url}: a {kind} record, which acta-mirror never writes here"
    if sha not in signed.get(url, {}):
        return f"{url}: a {kind} of a file the signed records do not list for it"
    if not head_ok(head, signed[url][sha]):
        return f"{url}: a {kind} whose HTTP head would make a replay serve other bytes than its payload"
    if digest(headers.get("warc-payload-digest")) != sha:  # a replay finds a revisit's payload by it
        return f"{url}: a {kind} whose WARC-Payload-Digest is not its payload's"
    return None


signed = {}  # URL: {sha256: size} of each version the provenance records, if the manifest lists it too
titles = {}  # URL: the page titles the export gives those versions (key, version, place)
bad, records = [], 0
if len(sys.argv) != 2:  # the folder's files are checked all the same
    bad.append("give the .wacz this folder was unzipped from (python3 check_warc.py FILE.wacz): a zip may hold "
               "two members under one name, and unzip and a replay tool read different ones")
else:
    try:
        why = member_problem(sys.argv[1])
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        why = f"{sys.argv[1]}: the WACZ cannot be read ({exc.__class__.__name__}: {exc})"
    if why:  # the folder need not be what a replay reads: nothing in it proves anything
        print("NOT SIGNED:", why)
        sys.exit(1)
try:
    manifest = set(open("evidence/manifest-sha256.txt", encoding="utf-8").read().splitlines())
    for line in open("evidence/provenance.jsonl", encoding="utf-8"):
        record = json.loads(line)
        if f"{record['sha256']}  {record['path']}" in manifest:
            signed.setdefault(record["final_url"], {})[record["sha256"]] = int(record["size"])
            place = f" {record['state']} / {record['municipality']} / {record['parish']}" if record["state"] else ""
            titles.setdefault(record["final_url"], set()).add(f"{record['key']} v{record['version']}{place}")
    for folder, ours in (("archive", WARC), ("indexes", INDEX), ("pages", PAGES)):  # a replay may read any file there
        for name in sorted(set(os.listdir(folder)) - {os.path.basename(ours)}):
            bad.append(f"{folder}/{name}: a file besides {ours}, which acta-mirror never writes (not checked)")
    for number, line in enumerate(open(PAGES, encoding="utf-8")):  # the list a replay shows to pick a page from
        page = json.loads(line)
        if number == 0 and "url" not in page:  # the list's header; every other line is a page
            continue
        if page.get("title") not in titles.get(page.get("url"), ()):
            bad.append(f"pages.jsonl: {page.get('url')} is titled {page.get('title')!r}, which the signed records "
                       "do not give it")
    largest = max((size for sizes in signed.values() for size in sizes.values()), default=0) + (1 << 20)  # + a head
    for headers, block in warc_records(gzip.open(WARC), largest):
        records += 1
        bad.append(problem(headers, block))
    with open(WARC, "rb") as warc:
        for line in open(INDEX, encoding="utf-8"):
            key, _, where = line.split(" ", 2)
            where = json.loads(where)
            # pywb looks a URL up by the line's key (SURT: host reversed, path lowercased): it must be the url's
            path = urllib.parse.unquote(urllib.parse.urlsplit(where["url"]).path or "/").lower()
            if urllib.parse.unquote(key.partition(")")[2].partition("?")[0]) != path:
                bad.append(f"index.cdx: the key {key} is not the key of {where['url']}")
            if where["filename"] != os.path.basename(WARC):  # a file this script does not read
                bad.append(f"index.cdx: {where['url']} points into {where['filename']!r}, which is not {WARC}")
            warc.seek(int(where["offset"]))
            member = gzip.GzipFile(fileobj=io.BytesIO(warc.read(min(int(where["length"]), 2 * largest))))
            for headers, block in warc_records(member, largest):
                if headers.get("warc-target-uri") != where["url"]:
                    bad.append(f"index.cdx: {where['url']} points at another URL's record")
                elif headers.get("warc-type") not in ("response", "revisit"):  # a replay serves what a line names
                    bad.append(f"index.cdx: {where['url']} points at a {headers.get('warc-type')} record, not a response")
                elif "digest" in where and digest(where["digest"]) != digest(headers.get("warc-payload-digest")):
                    bad.append(f"index.cdx: {where['url']}'s digest is not its record's")
                else:
                    bad.append(problem(headers, block))
except (OSError, EOFError, ValueError, KeyError, IndexError, TypeError, AttributeError, zlib.error) as exc:
    bad.append(f"the WACZ cannot be read ({exc.__class__.__name__}: {exc})")
bad = list(dict.fromkeys(reason for reason in bad if reason))  # a record the index points at is seen twice
for reason in bad:
    print("NOT SIGNED:", reason)
print(f"{len(bad)} problem(s) in {records} WARC records and their index; the signed records list "
      f"{sum(len(v) for v in signed.values())} file versions")
sys.exit(1 if bad else 0)
