"""Publish a mirror to IPFS over the Kubo HTTP RPC, pin it, and write CAR files.

It speaks the RPC directly over aiohttp (POST /api/v0/…): version, refs/local, add,
dag/import, pin/add (in pieces when a node cannot pin it whole), name/publish. Files are
added with the unixfs-v1-2025 parameters and every CID the node returns must equal the one
computed locally (mirror/cid.py), so a node, a CAR export and a stranger's own computation
all give the same root CID. A node that lacks most of the mirror gets the whole tree in one
streamed add that wraps it in a directory, as `ipfs add -r` does, and the root it builds must
be the local root. Otherwise only the files it lacks are added, in one streamed add, and
the directory nodes built locally are imported as a small CAR.

Targets: ipfs://HOST:PORT and ipfs+http(s)://HOST:PORT. A token for the RPC, if the node
wants one, comes from ACTA_MIRROR_IPFS_TOKEN; a pinning service's from ACTA_MIRROR_PIN_TOKEN.
"""
from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import secrets
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

from ..archive import DISK_REFUSED, Corrupt, disk_error, published_files, read_checked
from ..cid import Dag, car_block, car_header, cid_to_str, str_to_cid
from ..manifest import append_receipt
from ..merkle import merkle_root
from ..models import NotAMirror, UsageError, printable
from ..state import MirrorState, open_payload
from . import NeedsFullMirror, Plan, PublishError, Receipt, env_secret, inside, redact, register, register_secrets, verified

if TYPE_CHECKING:  # the annotations' names only
    import aiohttp

ADD_PARAMS = {"cid-version": "1", "raw-leaves": "true", "chunker": "size-1048576", "hash": "sha2-256",
              "pin": "false", "cid-base": "base32", "progress": "false"}
PIECE = 1024 * 1024  # a file larger than this is sent in pieces of it, each checked, never held whole
MAX_ANSWERS = 10_000  # lines kept of an answer that is not streamed (version, pin/add, …: a few each)
MAX_BLANK_LINES = 16  # empty lines in one answer (NDJSON has none): more is a node keeping a call alive
RPC_TIMEOUT = 600.0  # a whole call, or the silence an add may keep: a whole mirror's add streams for longer
IPNS_TIMEOUT = 30.0  # best effort: a slow IPNS never fails the run
PIN_POLL_SECONDS = 1.0
PIN_POLL_TIMEOUT = 120.0
PIN_STATES = ("queued", "pinning", "pinned", "failed")  # the Pinning Services API's; anything else is no answer
ERROR_BODY = 64 * 1024  # what is read of an error answer: its message is in the first few hundred bytes
PIN_BODY = 1024 * 1024  # a pin status is a small JSON object; a body larger than this is not one


class KuboRPC:
    """A minimal Kubo RPC client: POST, multipart uploads, NDJSON answers, one clear error."""

    def __init__(self, base: str, shown: str, token: str = ""):
        self.base = base.rstrip("/")
        self.shown = shown
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> "KuboRPC":
        import aiohttp  # here, as in every function that speaks HTTP: a Git publish never loads it (0.24 s)

        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=RPC_TIMEOUT, connect=10),
                                             headers=self.headers)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.session.close()

    async def call(self, endpoint: str, params: dict | None = None, data=None,
                   timeout: float | aiohttp.ClientTimeout | None = None, headers: dict | None = None,
                   each=None) -> list:
        """The answers (NDJSON lines); with `each`, each answer is handed to it as it arrives
        and none are kept (an add of a whole mirror answers one line per file and folder)."""
        import aiohttp
        from aiohttp.http_exceptions import HttpProcessingError

        url = f"{self.base}/api/v0/{endpoint}"
        out: list = []

        def keep(answer) -> None:
            if len(out) == MAX_ANSWERS:
                raise PublishError(f"{self.shown}: {endpoint} answered more than {MAX_ANSWERS:,} lines; "
                                   "a node whose answer never ends")
            out.append(answer)

        take = each or keep
        blank = 0
        try:
            if isinstance(timeout, (int, float)):
                timeout = aiohttp.ClientTimeout(total=timeout)
            kwargs = {"timeout": timeout} if timeout else {}
            async with self.session.post(url, params=params or {}, data=data, headers=headers, **kwargs) as resp:
                if resp.status != 200:
                    raise PublishError(f"{self.shown}: {endpoint} answered HTTP {resp.status}: "
                                       f"{_message(await _head(resp, ERROR_BODY))}")
                async for line in resp.content:
                    if not line.strip():  # each resets the read timeout: an answer of them would never end
                        blank += 1
                        if blank > MAX_BLANK_LINES:
                            raise PublishError(f"{self.shown}: {endpoint} answered more than {MAX_BLANK_LINES} "
                                               "empty lines; a node whose answer never ends")
                        continue
                    try:
                        answer = json.loads(line)
                    except (ValueError, RecursionError):  # RecursionError: JSON nested past Python's stack
                        raise PublishError(f"{self.shown}: {endpoint} answered something that is not JSON") from None
                    take(answer)
        except aiohttp.ClientConnectorError as exc:
            raise PublishError(f"{self.shown}: the IPFS node is not reachable ({exc.os_error.strerror or exc})") from None
        except (aiohttp.ClientError, asyncio.TimeoutError, HttpProcessingError, ValueError) as exc:
            # HttpProcessingError (ValueError before aiohttp 3.10): an answer line over aiohttp's limit
            raise PublishError(f"{self.shown}: {endpoint} failed ({type(exc).__name__}: {str(exc)[:200]})") from None
        return out


async def _head(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """At most limit bytes of an answer's body: a hostile peer's body may never end."""
    body = b""
    while len(body) < limit and (chunk := await resp.content.read(limit - len(body))):
        body += chunk
    return body


def _message(body: bytes) -> str:
    try:
        return json.loads(body).get("Message", "")[:300] or body[:200].decode("utf-8", "replace")
    except (ValueError, AttributeError, RecursionError):
        return body[:200].decode("utf-8", "replace").strip()


@register
class IpfsPublisher:
    schemes = ("ipfs", "ipfs+http", "ipfs+https")
    credentials = "ACTA_MIRROR_IPFS_TOKEN, ACTA_MIRROR_PIN_TOKEN"  # named when a publish fails

    def __init__(self, target: str, *, ipns: str | None = None, pin_service: str | None = None,
                 progress=None, **_):
        register_secrets(target, pin_service)  # a ?token=… of theirs is never printed nor in a receipt
        try:
            parts = urlsplit(target)
            parts.port  # noqa: B018  (a port that is not a number, or out of range, raises here)
        except ValueError as exc:
            raise UsageError(f"--to {redact(target)}: not a URL ({exc})") from None
        if not parts.hostname or not parts.port:
            raise UsageError(f"--to {redact(target)}: give the node's RPC address, like ipfs://127.0.0.1:5001")
        scheme = "https" if parts.scheme == "ipfs+https" else "http"
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname  # an IPv6 address keeps its brackets
        self.base = f"{scheme}://{host}:{parts.port}"
        self.host, self.port = parts.hostname, parts.port
        self.shown = redact(target)
        self.ipns = ipns
        self.pin_service = pin_service
        self.progress = progress or (lambda *a: None)
        # a node or service may echo a token back in an error: no message or record shows one
        self.secrets = tuple(t for t in (os.environ.get("ACTA_MIRROR_IPFS_TOKEN", ""),
                                         os.environ.get("ACTA_MIRROR_PIN_TOKEN", "")) if t)

    def secret_uses(self) -> list[tuple[str, str]]:
        """Where the environment's tokens would go: the node's host, and the pinning service's."""
        uses = [("ACTA_MIRROR_IPFS_TOKEN", self.host)]
        if self.pin_service:
            try:
                uses.append(("ACTA_MIRROR_PIN_TOKEN", urlsplit(self.pin_service).hostname or ""))
            except ValueError:
                pass  # not a URL: no token goes to it (pin_remote says what)
        return uses

    def _token(self) -> str:
        """The node's RPC token from the environment, if it is for this node's host."""
        return env_secret("ACTA_MIRROR_IPFS_TOKEN", self.host, self.port)

    def _run(self, work):
        """Run one publish or plan; what a node or service said reaches a message redacted, on one line."""
        try:
            return asyncio.run(work)
        except PublishError as exc:
            raise PublishError(printable(redact(str(exc), *self.secrets))) from None

    def _cid(self, text, endpoint: str) -> bytes:
        """The binary CID of a node's answer; PublishError when it is none."""
        try:
            return str_to_cid(text)
        except (ValueError, TypeError, AttributeError):
            raise PublishError(f"{self.shown}: {endpoint} answered {str(text)[:60]!r}, not a CID") from None

    async def _held(self, rpc: KuboRPC) -> set[bytes]:
        """The digests of the blocks the node says it holds (refs/local), kept as they arrive."""
        held: set[bytes] = set()

        def each(answer) -> None:
            if isinstance(answer, dict) and answer.get("Ref"):
                held.add(self._cid(answer["Ref"], "refs/local")[-32:])

        await rpc.call("refs/local", each=each)
        return held

    def plan(self, mirror: str | os.PathLike) -> Plan:
        """The dry run: the files (and bytes) the node lacks, asked with read-only RPC calls."""
        return self._run(self._plan(Path(mirror)))

    async def _plan(self, mirror: Path) -> Plan:
        plan = Plan(target=self.shown)
        problem, state = verified(mirror)
        if problem:
            plan.details.append(f"{self.shown}: would refuse: {mirror} does not verify ({problem})")
            return plan
        dag, files = checked_dag(mirror, self.shown, state)
        del state  # its records are not held through the calls
        async with KuboRPC(self.base, self.shown, self._token()) as rpc:
            have = await self._held(rpc)
        missing = [(rel, size) for rel, size, _sha in files if dag.files[rel][0][-32:] not in have]
        plan.files, plan.bytes = len(missing), sum(size for _rel, size in missing)
        plan.details.append(f"{self.shown}: {plan.files} of {len(files)} files to add, {plan.bytes:,} bytes; "
                            f"root CID would be {dag.root_cid}")
        return plan

    def publish(self, mirror: str | os.PathLike) -> Receipt:
        mirror = Path(mirror)
        problem, state = verified(mirror)
        if problem:
            raise PublishError(f"{mirror} does not verify ({problem}); not publishing it to {self.shown}")
        dag, files = checked_dag(mirror, self.shown, state)
        del state  # its records are not held through the publish
        return self._run(self._publish(mirror, dag, files, [rel for rel, _n, _s in files]))

    def publish_delta(self, delta) -> Receipt:
        """Publish a scheduled run's jobstate.Delta: the root directory is built from the
        recorded CIDs of the files published before plus the new files, and only the new files
        and the tag files are offered to the node (those it lacks are added)."""
        files = [(f.path, f.size, f.sha256) for f in delta.files]
        added = {r.path for r in delta.added}
        known = {f.path: (f.cid, f.tsize) for f in delta.files if f.cid and f.path not in added}
        try:
            dag = Dag(delta.bag, files, known)
        except (NotAMirror, ValueError, OSError) as exc:
            raise PublishError(f"{delta.bag}: {exc}; not publishing it to {self.shown}") from None
        here = [f.path for f in delta.files if f.path in added or not f.path.startswith("data/")]
        return self._run(self._publish(delta.bag, dag, files, here))

    async def _publish(self, mirror: Path, dag: Dag, files: list[tuple[str, int, str]], offer: list[str]) -> Receipt:
        """Add what the node lacks among `offer` (files whose bytes are here), make sure it holds
        the directory nodes, pin the root."""
        receipt = Receipt(target=self.shown, kind="ipfs", cid=dag.root_cid,
                          root=merkle_root([(p, s) for p, _n, s in files if p.startswith("data/")]))
        async with KuboRPC(self.base, self.shown, self._token()) as rpc:
            version = next((v for v in await rpc.call("version") if isinstance(v, dict)), {})
            core = f" ({str(version['ipfs-core'])[:40]})" if "ipfs-core" in version else ""
            receipt.details.append(printable(f"{self.shown}: node {str(version.get('Version', '?'))[:40]}{core}"))
            have = await self._held(rpc)
            missing = [rel for rel in offer if dag.files[rel][0][-32:] not in have]
            offered = set(offer)
            absent = [rel for rel, _n, _s in files if rel not in offered and dag.files[rel][0][-32:] not in have]
            if absent:  # a delta builds on blocks the node must hold already; it would wait for them forever
                raise NeedsFullMirror(f"{self.shown}: the node lacks {len(absent)} file(s) published before, e.g. "
                                      f"{absent[0]}")
            # Importing thousands of directory nodes costs a node about as much as building them
            # while it adds the files, so a node that lacks most of the mirror gets all of it.
            if len(offer) == len(files) and 2 * len(missing) > len(files):
                await self._add_tree(rpc, mirror, dag, files)
                pinned = False
            else:
                await self._add_files(rpc, mirror, dag, missing)
                pinned = await self._import_directories(rpc, dag)
            receipt.details.append(f"{self.shown}: added {len(missing)} of {len(files)} files")
            receipt.changed = bool(missing)
            if not pinned:
                pieces = await self._pin(rpc, dag, dag.root)
                if pieces > 1:
                    receipt.details.append(f"{self.shown}: the root could not be pinned whole; "
                                           f"pinned in {pieces} recursive pieces under direct pins")
            receipt.details.append(f"{self.shown}: pinned root {dag.root_cid}")
            if self.ipns:
                receipt.details.append(await self._ipns(rpc, dag.root_cid))
        if self.pin_service:
            receipt.details.append(await pin_remote(self.pin_service, dag.root_cid, name=f"acta-mirror {mirror.name}"))
        receipt.details = [redact(line, *self.secrets) for line in receipt.details]
        append_receipt(mirror, {"kind": "ipfs", "target": self.shown, "root_cid": dag.root_cid,
                                "manifest_root": receipt.root,
                                "published_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                "files_added": len(missing), "details": receipt.details})
        return receipt

    async def _add_tree(self, rpc: KuboRPC, mirror: Path, dag: Dag, files: list[tuple[str, int, str]]) -> None:
        """Add every file under its path in one request wrapped in a directory; the root the node
        builds must be the local root (a node that builds another tree is an error)."""
        upload = Upload(mirror, dag, tree_parts([rel for rel, _n, _s in files]))
        roots: list[tuple[str, bytes]] = []

        def check(name: str, text: str, cid: bytes) -> None:
            if name == "":
                roots.append((text, cid))
            elif name in dag.files and cid != dag.files[name][0]:
                self._wrong_cid(name, text, dag)

        answers = await self._stream_add(rpc, upload, {"wrap-with-directory": "true"}, check)
        if not roots:  # the node reports a failure after its answers began in a trailer, unread here
            raise PublishError(f"{self.shown}: the add ended without the tree's root CID "
                               f"({answers} of {len(upload.parts) + 1} answers); the node's log may say why")
        if roots[0][1] != dag.root:
            raise PublishError(f"{self.shown}: the node's root {roots[0][0]} differs from the local root {dag.root_cid}")

    async def _add_files(self, rpc: KuboRPC, mirror: Path, dag: Dag, rels: list[str]) -> None:
        """Add the files, without their paths, in one request; each CID must be the local one."""
        if not rels:
            return
        # js-ipfs names an answer by its CID when the file's name is all digits
        names = {f"f{i}": rel for i, rel in enumerate(rels)}
        upload = Upload(mirror, dag, list(names.items()))
        seen: set[str] = set()

        def check(name: str, text: str, cid: bytes) -> None:
            if name in names:
                seen.add(name)
                if cid != dag.files[names[name]][0]:
                    self._wrong_cid(names[name], text, dag)

        await self._stream_add(rpc, upload, {}, check)
        if len(seen) != len(rels):
            raise PublishError(f"{self.shown}: add returned {len(seen)} CIDs for {len(rels)} files")

    def _wrong_cid(self, rel: str, text: str, dag: Dag) -> None:
        raise PublishError(f"{self.shown}: {rel}: the node made CID {text}, "
                           f"the manifest's is {cid_to_str(dag.files[rel][0])}")

    async def _stream_add(self, rpc: KuboRPC, upload: Upload, params: dict, check) -> int:
        """One add request whose body is read from disk as it is sent; check(name, CID text,
        binary CID) sees each answer that names a CID as it arrives. Returns how many did."""
        import aiohttp

        count = lines = 0
        most = 2 * (len(upload.parts) + 1) + 64  # a node answers once per part and once for the root

        def each(answer: dict) -> None:
            nonlocal count, lines
            lines += 1
            if lines > most:
                raise PublishError(f"{self.shown}: add answered more than {most:,} lines for {len(upload.parts):,} "
                                   "parts; a node whose answer never ends")
            if not isinstance(answer, dict) or "Hash" not in answer or not isinstance(answer.get("Name"), str):
                return
            try:
                cid = str_to_cid(answer["Hash"])
            except (ValueError, TypeError, AttributeError):
                raise PublishError(f"{self.shown}: add answered {str(answer['Hash'])[:60]!r}, not a CID") from None
            count += 1
            check(answer["Name"], answer["Hash"], cid)

        try:
            await rpc.call("add", {**ADD_PARAMS, **params}, data=upload.body(self.progress, self.shown),
                           headers=upload.headers, each=each,
                           timeout=aiohttp.ClientTimeout(total=None, connect=10, sock_read=RPC_TIMEOUT))
        except Exception:  # whatever the transport made of a stream this side ended, the refusal says why
            upload.raise_refusal(self.shown)
            raise
        upload.raise_refusal(self.shown)
        return count

    async def _import_directories(self, rpc: KuboRPC, dag: Dag) -> bool:
        """Import the directory nodes built locally as a CAR; the node's root must be the local
        root. Returns whether the import pinned it."""
        import aiohttp

        car = io.BytesIO()
        car.write(car_header([dag.root]))
        for cid, block in dag.nodes.items():
            car.write(car_block(cid, block))
        form = aiohttp.FormData()
        form.add_field("file", car.getvalue(), filename="dirs.car", content_type="application/vnd.ipld.car")
        imported = await rpc.call("dag/import", {"pin-roots": "true"}, data=form)
        root = next((r["Root"] for r in imported if isinstance(r, dict) and isinstance(r.get("Root"), dict)), {})
        cid = root["Cid"].get("/", "") if isinstance(root.get("Cid"), dict) else ""
        if not cid or self._cid(cid, "dag/import") != dag.root:
            raise PublishError(f"{self.shown}: the node's root {str(cid)[:60] or 'none'} differs from the local root "
                               f"{dag.root_cid}")
        # The import pins the root recursively and says so in PinErrorMsg ("" when pinned).
        return root.get("PinErrorMsg", "?") == ""

    async def _pin(self, rpc: KuboRPC, dag: Dag, cid: bytes) -> int:
        """Pin cid recursively. A node that cannot (js-ipfs opens every block of a DAG at once
        and runs out of file descriptors on a large one) gets the directory pinned directly
        and each entry pinned the same way, which keeps every block. Returns how many
        recursive pins it took; raises when a piece that is not a directory cannot be pinned."""
        try:
            answers = await rpc.call("pin/add", {"arg": cid_to_str(cid), "recursive": "true"})
        except PublishError:
            if cid not in dag.children:
                raise
        else:
            self._pinned(answers, cid)
            return 1
        try:
            self._pinned(await rpc.call("pin/add", {"arg": cid_to_str(cid), "recursive": "false"}), cid)
        except PublishError as exc:
            if "already pinned recursively" not in str(exc):  # js-ipfs refuses a second, weaker pin
                raise
        pieces = 0
        for _name, child in dag.children[cid]:
            pieces += await self._pin(rpc, dag, child)
        return pieces

    def _pinned(self, answers: list, cid: bytes) -> None:
        """A pin/add answer names what it pinned ({"Pins": [CID]}); one that does not pinned nothing we know of."""
        pins = [p for a in answers if isinstance(a, dict) and isinstance(a.get("Pins"), list) for p in a["Pins"]]
        for pin in pins:
            try:
                if str_to_cid(pin) == cid:
                    return
            except (ValueError, TypeError, AttributeError):
                continue
        raise PublishError(f"{self.shown}: pin/add of {cid_to_str(cid)} answered without naming it pinned; "
                           "it is not known to be pinned")

    async def _ipns(self, rpc: KuboRPC, root: str) -> str:
        try:
            answer = await rpc.call("name/publish", {"arg": f"/ipfs/{root}", "key": self.ipns,
                                                     "allow-offline": "true"}, timeout=IPNS_TIMEOUT)
            name = next((a["Name"] for a in answer if isinstance(a, dict) and isinstance(a.get("Name"), str)), "")
            if not name:
                raise PublishError(f"{self.shown}: name/publish answered no name")
            return printable(f"{self.shown}: IPNS /ipns/{name[:100]} -> {root}")
        except PublishError as exc:
            return f"{self.shown}: IPNS not published (best effort): {exc}"


async def pin_remote(service: str, cid: str, name: str) -> str:
    """Ask an IPFS Pinning Services API endpoint to pin cid; poll until pinned, failed or timeout.
    Only a status of the API's own for this very CID is taken as the service's word."""
    import aiohttp

    try:
        parts = urlsplit(service)
        token = env_secret("ACTA_MIRROR_PIN_TOKEN", parts.hostname or "", parts.port)
    except ValueError:
        token = ""  # not a URL: aiohttp names it below
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    base = service.rstrip("/")
    shown = redact(service, token)
    try:
        async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=30)) as session:
            async with session.post(f"{base}/pins", json={"cid": cid, "name": name}) as resp:
                if resp.status not in (200, 202):
                    raise PublishError(f"pinning service {shown}: HTTP {resp.status}: "
                                       f"{_message(await _head(resp, ERROR_BODY))}")
                status = _pin_status(await _head(resp, PIN_BODY + 1), cid)
            deadline = time.monotonic() + PIN_POLL_TIMEOUT
            while status["status"] in ("queued", "pinning") and time.monotonic() < deadline:
                await asyncio.sleep(PIN_POLL_SECONDS)
                async with session.get(f"{base}/pins/{quote(status['requestid'], safe='')}") as resp:
                    if resp.status != 200:
                        raise PublishError(f"pinning service {shown}: HTTP {resp.status} while polling")
                    status = _pin_status(await _head(resp, PIN_BODY + 1), cid)
    except aiohttp.ClientError as exc:
        raise PublishError(f"pinning service {shown}: {type(exc).__name__}: {exc}") from None
    except asyncio.TimeoutError:
        raise PublishError(f"pinning service {shown}: no answer within 30 s") from None
    except (KeyError, ValueError, TypeError, AttributeError, RecursionError) as exc:
        raise PublishError(f"pinning service {shown}: an answer that is not the Pinning Services API's status of "
                           f"{cid} ({type(exc).__name__}: {str(exc)[:100]})") from None
    if status["status"] == "failed":
        raise PublishError(f"pinning service {shown}: pinning {cid} failed")
    return f"pinning service {shown}: {cid} {status['status']}"


def _pin_status(body: bytes, cid: str) -> dict:
    """A PinStatus of the API for cid; ValueError (or KeyError, TypeError) for anything else."""
    if len(body) > PIN_BODY:
        raise ValueError(f"a status of over {PIN_BODY:,} bytes")
    status = json.loads(body)
    if status["status"] not in PIN_STATES or not isinstance(status["requestid"], str):
        raise ValueError(f"no status of the API: {status['status']!r}")
    if str_to_cid(status["pin"]["cid"]) != str_to_cid(cid):  # a status for another CID says nothing of ours
        raise ValueError("a status for another CID")
    return status


class Upload:
    """The multipart body of one add request, read from disk as it is sent: each part a file
    (its bytes checked against the manifest before they are sent, as archive.read_checked
    does) or a directory. Its length is known from the manifest's sizes, so the node gets a
    Content-Length and no chunked encoding (aiohttp's MultipartWriter knows it only for parts
    held in memory). A file that does not check out ends the stream before its part begins,
    so the node never sees its bytes; the reason is kept in `refused`. A file larger than
    PIECE is hashed whole first, then sent piece by piece, each piece compared with that
    first reading before it goes."""

    def __init__(self, mirror: Path, dag: Dag, parts: list[tuple[str, str | None]]):
        """parts: (name the node sees, path in the mirror or None for a directory)."""
        self.mirror, self.dag, self.parts = mirror, dag, parts
        self.boundary = "acta-mirror-" + secrets.token_hex(12)
        self.refused: Exception | None = None
        end = len(self._end())
        length = sum(len(self._head(name, rel is None)) + 2 + (dag.sizes[rel] if rel else 0) for name, rel in parts)
        self.headers = {"Content-Type": f"multipart/form-data; boundary={self.boundary}",
                        "Content-Length": str(length + end)}

    def _head(self, name: str, directory: bool) -> bytes:
        kind = "application/x-directory" if directory else "application/octet-stream"
        return (f"--{self.boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
                f"filename=\"{quote(name, safe='')}\"\r\nContent-Type: {kind}\r\n\r\n").encode("ascii")

    def _end(self) -> bytes:
        return f"--{self.boundary}--\r\n".encode("ascii")

    async def body(self, progress, shown: str):
        files = sum(1 for _name, rel in self.parts if rel)
        done = 0
        for name, rel in self.parts:
            if rel is None:
                yield self._head(name, True) + b"\r\n"
                continue
            try:  # only bytes that hash to the manifest's sha256 leave this machine
                if self.dag.sizes[rel] <= PIECE:
                    yield self._head(name, False) + read_checked(self.mirror, rel, self.dag.sha256[rel],
                                                                 self.dag.sizes[rel]) + b"\r\n"
                else:
                    pieces = self._pieces(rel)
                    first = next(pieces)  # the whole file checked before its part begins
                    yield self._head(name, False)
                    yield first
                    for piece in pieces:
                        yield piece
                    yield b"\r\n"
            except (OSError, NotAMirror) as exc:
                self.refused = exc
                raise
            done += 1
            if done % 256 == 0 or done == files:
                progress(shown, "add", done, files)
        yield self._end()

    def _pieces(self, rel: str):
        """The PIECE-sized pieces of a large file, once the whole file hashed to the manifest;
        each piece read again and compared with that reading (Corrupt if it changed)."""
        with open_payload(self.mirror, rel) as fh:
            whole, digests, size = hashlib.sha256(), [], 0
            for piece in iter(lambda: fh.read(PIECE), b""):
                whole.update(piece)
                digests.append(hashlib.sha256(piece).digest())
                size += len(piece)
            if size != self.dag.sizes[rel] or whole.hexdigest() != self.dag.sha256[rel]:
                raise Corrupt(f"{rel}: its bytes do not match the manifest (sha256 {whole.hexdigest()}, "
                              f"the manifest says {self.dag.sha256[rel]})")
            fh.seek(0)
            for digest in digests:
                piece = fh.read(PIECE)
                if hashlib.sha256(piece).digest() != digest:
                    raise Corrupt(f"{rel}: it changed on disk while it was being sent")
                yield piece

    def raise_refusal(self, shown: str) -> None:
        if self.refused is not None:
            exc = self.refused
            raise PublishError(f"{self.mirror}: {getattr(exc, 'strerror', None) or exc}; "
                               f"not publishing it to {shown}") from None


def tree_parts(rels: list[str]) -> list[tuple[str, str | None]]:
    """The parts of a directory upload in the order a Kubo node reads one: each folder before
    its entries, and the entries of a folder together (a folder's own name then '/')."""
    tree: dict = {}
    for rel in rels:
        *folders, name = rel.split("/")
        node = tree
        for folder in folders:
            node = node.setdefault(folder, {})
        node[name] = rel
    parts: list[tuple[str, str | None]] = []

    def walk(node: dict, prefix: str) -> None:
        for name in sorted(node, key=lambda n: n.encode("utf-8")):
            if isinstance(node[name], dict):
                parts.append((prefix + name, None))
                walk(node[name], f"{prefix}{name}/")
            else:
                parts.append((prefix + name, node[name]))

    walk(tree, "")
    return parts


def checked_dag(mirror: Path, shown: str, state: MirrorState | None = None) -> tuple[Dag, list[tuple[str, int, str]]]:
    """The DAG of what a published copy holds; PublishError naming the first file that is
    not a regular file inside the mirror or does not match its manifest. state: as
    archive.published_files takes it."""
    try:
        files = published_files(mirror, state)
        return Dag(mirror, files), files
    except (NotAMirror, ValueError) as exc:  # ValueError: a directory too large for one block
        raise PublishError(f"{mirror}: {exc}; not publishing it to {shown}") from None
    except OSError as exc:
        raise PublishError(f"{mirror}: cannot read {exc.filename or 'a file'} ({exc.strerror}); "
                           f"not publishing it to {shown}") from None


def write_car(mirror: str | os.PathLike, out: str | os.PathLike) -> str:
    """Write the mirror's UnixFS DAG as a CARv1 file; returns the root CID. Every byte is
    checked against the manifests as it is written; on any failure no file is left."""
    mirror, out = Path(mirror), Path(out)
    if inside(out, mirror):
        raise UsageError(f"{out}: inside the mirror {mirror}: the CAR file would overwrite what is archived; "
                         "write it elsewhere")
    dag, files = checked_dag(mirror, str(out))
    # a new file under a name no one could guess: a link planted at a known name was written through
    tmp = str(out.with_name(f".{out.name}.{secrets.token_hex(8)}.part"))
    try:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as fh:
            fh.write(car_header([dag.root]))
            for cid, block in dag.nodes.items():
                fh.write(car_block(cid, block))
            for rel, _size, _sha in files:
                for cid, data in dag.leaf_blocks(rel):
                    fh.write(car_block(cid, data))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except NotAMirror as exc:
        raise PublishError(f"{mirror}: {exc}; not writing {out}") from None
    except OSError as exc:
        if exc.errno in DISK_REFUSED or exc.filename in (tmp, str(out)):
            raise disk_error(exc, f"writing {out}") from None
        raise PublishError(f"{mirror}: cannot read {exc.filename or 'a file'} ({exc.strerror}); not writing {out}") from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    return dag.root_cid
