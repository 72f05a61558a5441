"""A static results site for benchmarks: nginx from Debian over a folder of valid JPEGs and an index.

Shared by scripts/bench_crawl.py and scripts/bench_scheduled.py. nginx runs unprivileged with its
own config (`nginx -p DIR -c DIR/nginx.conf`: daemon on, one worker, sendfile and ETags on), so a
benchmark measures the client, not a Python server that saturates a core.
"""
from __future__ import annotations

import csv
import io
import os
import random
import re
import shutil
import socket
import subprocess
from pathlib import Path

from mirror.replay.data import REAL_PREFIX, index_file

INDEX_NAME = "RESULTADOS_2024_CSV_V1.csv"
JPEG_FORMAT = "jpeg 2: no '<' in the padding"  # what jpeg() makes; a cache of older images is remade


def jpeg(text: str, size: int, rng: random.Random) -> bytes:
    """A valid JPEG of `size` bytes (or of its picture's size, if larger): a small picture, padded
    with random bytes in COM segments right after SOI (a crawl rejects bytes after the end marker).
    The same text and rng state make the same bytes."""
    from PIL import Image, ImageDraw

    img = Image.new("L", (160, 220), 255)
    ImageDraw.Draw(img).text((8, 8), text, fill=0)
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=70)
    body = out.getvalue()
    need = size - len(body)
    segments = []
    while need > 4:
        n = min(65533, need - 4)
        # no "<": random bytes would now and then spell "<svg" or "<meta", and the crawl rightly
        # refuses HTML markup inside a JPEG (a polyglot)
        segments.append(b"\xff\xfe" + (n + 2).to_bytes(2, "big") + rng.randbytes(n).replace(b"<", b"="))
        need -= n + 4
    return body[:2] + b"".join(segments) + body[2:]


def synthetic_lines(n: int) -> list[bytes]:
    """n index lines in V1's CSV format (each a real row's names and votes) with synthetic keys:
    centres from 900000000 up (above every real one), tables 1-10, one image URL each."""
    v1 = index_file(1)
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    for i in range(n):
        row = next(csv.reader([v1.lines[i % len(v1.lines)].decode("utf-8")]))
        row[6], row[7] = str(900_000_000 + i // 10), str(i % 10 + 1)  # CENTRO, MESA
        row[-1] = f"{REAL_PREFIX.decode()}synthetic_{i:06d}_Acta.jpg"
        writer.writerow(row)
    return out.getvalue().encode().splitlines(keepends=True)


def nginx_binary() -> str:
    """The nginx executable, installed from Debian with apt-get when missing."""
    found = shutil.which("nginx") or (Path("/usr/sbin/nginx").exists() and "/usr/sbin/nginx")
    if not found:
        subprocess.run(["apt-get", "install", "-y", "nginx"], check=True)
        found = shutil.which("nginx") or "/usr/sbin/nginx"
    return found


def nginx_version() -> str:
    out = subprocess.run([nginx_binary(), "-v"], capture_output=True, text=True).stderr
    match = re.search(r"nginx/(\S+)", out)
    return match.group(1) if match else out.strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Site:
    """nginx on 127.0.0.1 over `folder`/www.

    log: an access log of status, body bytes and URI per request (see downloaded()).
    fallback: a file in www served for every .jpg that is not there, so a large synthetic index
    needs one image on disk.
    """

    def __init__(self, folder: Path, port: int | None = None, log: bool = True, fallback: str | None = None):
        self.dir = Path(folder).resolve()
        self.www = self.dir / "www"
        self.log = self.dir / "access.log"
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.www.mkdir(parents=True, exist_ok=True)
        for sub in ("tmp", "logs"):
            (self.dir / sub).mkdir(exist_ok=True)
        access = f"access_log {self.log} bench;" if log else "access_log off;"
        # as root, nginx's workers would run as nobody and could not read a private folder
        user = "user root;" if os.geteuid() == 0 else ""
        jpg = f"location ~ \\.jpg$ {{ try_files $uri /{fallback}; }}" if fallback else ""
        (self.dir / "nginx.conf").write_text(f"""
daemon on;
{user}
pid {self.dir}/nginx.pid;
worker_processes 1;
error_log {self.dir}/logs/error.log;
events {{ worker_connections 256; }}
http {{
    log_format bench '$status $body_bytes_sent $request_uri';
    {access}
    client_body_temp_path {self.dir}/tmp;
    proxy_temp_path {self.dir}/tmp;
    fastcgi_temp_path {self.dir}/tmp;
    uwsgi_temp_path {self.dir}/tmp;
    scgi_temp_path {self.dir}/tmp;
    sendfile on;
    etag on;
    types {{ image/jpeg jpg; text/csv csv; }}
    server {{
        listen 127.0.0.1:{self.port};
        root {self.www};
        {jpg}
    }}
}}
""")

    def _nginx(self, *extra: str, check: bool = True) -> None:
        subprocess.run([nginx_binary(), "-q", "-p", str(self.dir), "-c", str(self.dir / "nginx.conf"), *extra],
                       check=check, stderr=subprocess.DEVNULL if not check else None)

    def start(self) -> None:
        self._nginx()

    def stop(self) -> None:
        self._nginx("-s", "stop", check=False)

    def write_index(self, lines, header: bytes) -> int:
        """Serve these V1 index lines at /INDEX_NAME, image URLs moved onto this site; its size."""
        prefix = self.url.encode() + b"/"
        data = header + b"".join(line.replace(REAL_PREFIX, prefix, 1) for line in lines)
        (self.www / INDEX_NAME).write_bytes(data)
        return len(data)

    def log_offset(self) -> int:
        return self.log.stat().st_size if self.log.exists() else 0

    def downloaded(self, since: int) -> tuple[int, int, int]:
        """(body bytes, requests, 304 answers) logged after offset since."""
        with open(self.log, "rb") as fh:
            fh.seek(since)
            lines = fh.read().decode().splitlines()
        parts = [ln.split(" ", 2) for ln in lines if ln.strip()]
        return sum(int(p[1]) for p in parts), len(parts), sum(p[0] == "304" for p in parts)
