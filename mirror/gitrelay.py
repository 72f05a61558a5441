"""Carry git's git:// traffic to a host and back, and give up when no byte moves for a while.

Git runs this as its proxy command for git:// (core.gitProxy, set by mirror/publish/git.py) with
two arguments, the host and the port, and speaks the protocol over its standard input and
output. Git itself waits forever on a git:// host that accepts the connection and then says
nothing (HTTP has http.lowSpeedTime, git:// has nothing): here, when no byte has gone either
way for ACTA_MIRROR_GIT_SILENCE_SECONDS (default 300), the relay says so in one line on standard
error and exits 1, and git fails with that line. A host busy with a large push is not cut: git's
receive-pack and upload-pack send a keepalive every 5 s while they work.

It is run by file path with `python -I` (see git.py's _relay_command), so it imports nothing
but the standard library: it works from any folder git starts it in, whatever the import path.
Both ways are kept apart: when git ends its side (end of input), the socket's sending side is
shut and the host's answer is still read to its end; when the host ends, the relay hands git
what is left of the answer and exits, which git reads as the end.
"""
from __future__ import annotations

import errno
import os
import select
import socket
import sys
import time

VARIABLE = "ACTA_MIRROR_GIT_SILENCE_SECONDS"
DEFAULT_SECONDS = 300
MAX_SECONDS = 1_000_000
CHUNK = 1 << 16
HELD = 1 << 20  # bytes kept for a side that is slow to take them, before its source is read again
AGAIN = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR)


def seconds_from(text: str | None) -> int | None:
    """The variable's bound in whole seconds: DEFAULT_SECONDS when it is unset or empty, None
    when it is no whole number from 1 to MAX_SECONDS (the one reading of the variable: acta-mirror
    refuses None before git starts, so the relay is handed a good value)."""
    text = (text or "").strip()
    if not text:
        return DEFAULT_SECONDS
    if not (text.isascii() and text.isdigit() and len(text) <= len(str(MAX_SECONDS))):
        return None
    return int(text) if 1 <= int(text) <= MAX_SECONDS else None


def _say(line: str) -> None:
    try:
        os.write(2, (line + "\n").encode("utf-8", "replace"))
    except OSError:
        pass


def relay(host: str, port: int, seconds: int, stdin: int = 0, stdout: int = 1) -> int:
    """Copy bytes between the two file descriptors and host:port until the host ended and git has
    all it said (0), or until nothing moved for `seconds` or no connection was made (1, with one
    line said); 1 too when git went away."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        sock = socket.create_connection((host, port), timeout=seconds)
    except socket.timeout:
        _say(f"fatal: no answer from {where} for {seconds} s when connecting; gave up ({VARIABLE} sets the seconds)")
        return 1
    except OSError as exc:
        _say(f"fatal: cannot connect to {where}: {exc.strerror or exc}")
        return 1
    sock.setblocking(False)
    for fd in (stdin, stdout):
        os.set_blocking(fd, False)
    to_host, to_git = bytearray(), bytearray()
    git_open, host_open = True, True  # each side still sending
    shut = False  # the host was told that git is done sending
    moved = time.monotonic()
    with sock:
        while True:
            if not git_open and not to_host and not shut:
                try:
                    sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                shut = True
            if not host_open and not to_git:
                return 0  # git has all the host said, and the host takes no more: git sees the end
            readers = ([stdin] if git_open and len(to_host) < HELD else []) + \
                      ([sock] if host_open and len(to_git) < HELD else [])
            writers = ([sock] if to_host else []) + ([stdout] if to_git else [])
            left = moved + seconds - time.monotonic()
            if left <= 0:
                _say(f"fatal: no data to or from {where} for {seconds} s; gave up ({VARIABLE} sets the seconds)")
                return 1
            try:
                ready_r, ready_w, _ = select.select(readers, writers, [], left)
            except InterruptedError:
                continue
            ended = (git_open, host_open)
            carried = 0  # bytes read or written in this round
            if stdin in ready_r:
                data = _read(lambda: os.read(stdin, CHUNK))
                git_open = data != b""
                to_host += data or b""
                carried += len(data or b"")
            if sock in ready_r:
                data = _read(lambda: sock.recv(CHUNK))
                host_open = data != b""
                to_git += data or b""
                carried += len(data or b"")
            if sock in ready_w and to_host:
                sent = _write(lambda: sock.send(to_host))
                if sent is None:  # the host is gone: what it said is all git gets, and git judges it
                    host_open = False
                    to_host.clear()
                else:
                    del to_host[:sent]
                    carried += sent
            if stdout in ready_w and to_git:
                sent = _write(lambda: os.write(stdout, to_git))
                if sent is None:  # git went away: nothing left to carry
                    return 1
                del to_git[:sent]
                carried += sent
            if carried or ended != (git_open, host_open):  # a byte moved, or a side ended
                moved = time.monotonic()


def _read(how) -> bytes | None:
    """The bytes read; b'' at the end (or when the side failed: a reset is an end, and git
    judges whether what came before was whole); None when there were none after all."""
    try:
        return how()
    except OSError as exc:
        return None if exc.errno in AGAIN else b""


def _write(how) -> int | None:
    """Bytes written (0 when none could be); None when that side is gone."""
    try:
        return how()
    except OSError as exc:
        return 0 if exc.errno in AGAIN else None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or not args[1].isascii() or not args[1].isdigit() or not 0 < int(args[1]) < 65536:
        _say("usage: gitrelay.py HOST PORT (git runs it as its proxy for git://)")
        return 2
    try:
        return relay(args[0], int(args[1]), seconds_from(os.environ.get(VARIABLE)) or DEFAULT_SECONDS)
    except KeyboardInterrupt:  # Ctrl-C reaches git and this alike: git says what stopped
        return 130


if __name__ == "__main__":
    sys.exit(main())
