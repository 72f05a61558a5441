"""IPFS: a real js-ipfs node on loopback (started by mirror/ipfsnode.py), CIDs, CAR, pinning."""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
import urllib.request
from pathlib import Path

import pytest
from aiohttp import web

from mirror.cid import file_cid, raw_cid, str_to_cid
from mirror.crawl import CrawlOptions, crawl
from mirror.archive import Corrupt
from mirror.ipfsnode import IpfsNode
from mirror.manifest import read_provenance
from mirror.publish.ipfs import ADD_PARAMS
from tests.conftest import run_cli


def rpc(api: str, endpoint: str, params: str = "", data: bytes | None = None, headers=None) -> bytes:
    req = urllib.request.Request(f"{api}/api/v0/{endpoint}{'?' + params if params else ''}", data=data or b"",
                                 method="POST", headers=headers or {})
    with urllib.request.urlopen(req, timeout=120) as resp:
        return resp.read()


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    with IpfsNode(tmp_path_factory.mktemp("ipfs") / "repo") as n:
        yield n


@pytest.fixture
def own_node(tmp_path):
    """A node for one test: a garbage collection that stalls stalls only that test."""
    with IpfsNode(tmp_path / "repo") as n:
        yield n


@pytest.fixture
def mirror(replay, tmp_path) -> Path:
    out = tmp_path / "mirror"
    asyncio.run(crawl(CrawlOptions(site="resultados2024", root=replay.url, out=str(out))))
    return out


def test_publish_cat_back_and_republish_adds_nothing(node, mirror):
    proc = run_cli("publish", str(mirror), "--to", node.target)
    assert proc.returncode == 0, proc.stderr
    root = proc.stdout.strip().splitlines()[-1]
    assert root.startswith("bafy")
    for entry in read_provenance(mirror / "provenance.jsonl"):
        body = rpc(node.api, "cat", f"arg={entry.cid}")
        assert hashlib.sha256(body).hexdigest() == entry.sha256
        by_path = rpc(node.api, "cat", f"arg=/ipfs/{root}/{entry.path}")
        assert by_path == body  # the tree holds each file at its bag path
    assert rpc(node.api, "cat", f"arg=/ipfs/{root}/manifest-sha256.txt") == (mirror / "manifest-sha256.txt").read_bytes()
    again = run_cli("publish", str(mirror), "--to", node.target)
    assert again.returncode == 0 and "added 0 of" in again.stdout
    assert again.stdout.strip().splitlines()[-1] == root
    receipts = [json.loads(x) for x in (mirror / "publish-receipts.jsonl").read_text().splitlines()]
    assert receipts[-1]["root_cid"] == root and receipts[-1]["files_added"] == 0
    assert run_cli("verify", str(mirror), "--cids").returncode == 0  # receipts are outside the bag's manifests


def test_local_cids_equal_the_nodes_for_small_and_large_files(node, tmp_path):
    for size in (0, 1000, 1024 * 1024, 1024 * 1024 + 1, 3_500_000):
        path = tmp_path / f"f{size}"
        path.write_bytes(os.urandom(size))
        boundary = "acta-mirror-test"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n"
                f"Content-Type: application/octet-stream\r\n\r\n").encode() + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        params = "&".join(f"{k}={v}" for k, v in ADD_PARAMS.items())
        answer = json.loads(rpc(node.api, "add", params, body,
                                {"Content-Type": f"multipart/form-data; boundary={boundary}"}).splitlines()[-1])
        local = file_cid(path, size, hashlib.sha256(path.read_bytes()).hexdigest())
        assert str_to_cid(answer["Hash"]) == str_to_cid(local), size
        if size <= 1024 * 1024:
            assert local == raw_cid(hashlib.sha256(path.read_bytes()).hexdigest())


def test_a_raw_cid_is_the_multibase_base32_of_its_binary_cid_for_every_bit_of_the_digest():
    """raw_cid writes the base32 itself (one integer, not base64's encoder): the empty file's
    well-known CID, and for a digest with each one bit set, and all bits, the same text as the
    general path (cid_bytes, then base64's base32)."""
    from mirror.cid import RAW_CODEC, cid_bytes, cid_to_str

    assert raw_cid(hashlib.sha256(b"").hexdigest()) == "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
    digests = [bytes(32), b"\xff" * 32] + [(1 << bit).to_bytes(32, "big") for bit in range(256)]
    for digest in digests:
        assert raw_cid(digest.hex()) == cid_to_str(cid_bytes(RAW_CODEC, digest)), digest.hex()
        assert str_to_cid(raw_cid(digest.hex())) == cid_bytes(RAW_CODEC, digest)


def test_car_into_a_fresh_node_gives_the_same_root(node, mirror, tmp_path):
    published = run_cli("publish", str(mirror), "--to", node.target)
    assert published.returncode == 0, published.stderr
    root = published.stdout.strip().splitlines()[-1]
    car = tmp_path / "mirror.car"
    made = run_cli("car", str(mirror), "-o", str(car))
    assert made.returncode == 0 and made.stdout.strip().splitlines()[-1] == root
    with IpfsNode(tmp_path / "fresh") as fresh:
        boundary = "car-boundary"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"m.car\"\r\n"
                f"Content-Type: application/vnd.ipld.car\r\n\r\n").encode() + car.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        answer = rpc(fresh.api, "dag/import", "pin-roots=true", body,
                     {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        roots = [json.loads(x)["Root"]["Cid"]["/"] for x in answer.splitlines() if b"Root" in x]
        assert [str_to_cid(r) for r in roots] == [str_to_cid(root)]
        for entry in read_provenance(mirror / "provenance.jsonl"):
            assert rpc(fresh.api, "cat", f"arg=/ipfs/{root}/{entry.path}") == (mirror / entry.path).read_bytes()


def test_only_checked_bytes_reach_the_node(node, replay_factory, tmp_path):
    """A flipped byte (same size) in a file the node lacks is refused before anything is sent;
    a host file symlinked into the mirror is never published."""
    r = replay_factory(seed=1313)  # images no other test has put on the node
    mirror = tmp_path / "mirror"
    asyncio.run(crawl(CrawlOptions(site="resultados2024", root=r.url, out=str(mirror))))
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"a host file, not evidence " + os.urandom(16).hex().encode())
    (mirror / "notes.txt").symlink_to(secret)
    held = {str_to_cid(json.loads(x)["Ref"]) for x in rpc(node.api, "refs/local").splitlines() if x.strip()}
    bad = sorted(e.path for e in read_provenance(mirror / "provenance.jsonl")
                 if e.kind == "acta" and str_to_cid(e.cid) not in held)[0]
    data = bytearray((mirror / bad).read_bytes())
    data[len(data) // 2] ^= 0x01
    (mirror / bad).write_bytes(bytes(data))
    proc = run_cli("publish", str(mirror), "--to", node.target)
    assert proc.returncode == 1 and bad in proc.stderr, proc.stdout + proc.stderr
    local = {str_to_cid(json.loads(x)["Ref"]) for x in rpc(node.api, "refs/local").splitlines() if x.strip()}
    for body in (bytes(data), secret.read_bytes()):
        assert str_to_cid(raw_cid(hashlib.sha256(body).hexdigest())) not in local, "unchecked bytes reached the node"
    data[len(data) // 2] ^= 0x01
    (mirror / bad).write_bytes(bytes(data))
    proc = run_cli("publish", str(mirror), "--to", node.target)
    assert proc.returncode == 0, proc.stderr
    root = proc.stdout.strip().splitlines()[-1]
    listing = rpc(node.api, "ls", f"arg=/ipfs/{root}")
    assert b"notes.txt" not in listing and b"provenance.jsonl" in listing
    local = {str_to_cid(json.loads(x)["Ref"]) for x in rpc(node.api, "refs/local").splitlines() if x.strip()}
    assert str_to_cid(raw_cid(hashlib.sha256(secret.read_bytes()).hexdigest())) not in local


def _recording_proxy(node, calls: list, on_add=None):
    """In front of the real node: records each call as (endpoint, query), and lets
    on_add(query, answers) rewrite what an add answers."""
    import aiohttp

    async def forward(request):
        endpoint = request.path.removeprefix("/api/v0/")
        calls.append((endpoint, dict(request.query)))
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{node.api}{request.path_qs}", data=await request.read(),
                                    headers={"Content-Type": request.headers.get("Content-Type", "")}) as resp:
                body, status = await resp.read(), resp.status
        if endpoint == "add" and on_add:
            answers = on_add(request.query, [json.loads(x) for x in body.splitlines() if x.strip()])
            body = b"".join(json.dumps(a).encode() + b"\n" for a in answers)
        return web.Response(body=body, status=status, content_type="application/json")

    return _Server({"/api/v0/{tail:.*}": forward})


def test_a_first_publish_is_one_add_of_the_whole_tree(node, replay_factory, tmp_path):
    """A node that lacks the mirror gets it in one add wrapped in a directory, builds the
    directories itself (no CAR import) and gives the local root; a re-publish adds nothing."""
    r = replay_factory(seed=1717)  # images no other test has put on the node
    mirror = tmp_path / "mirror"
    asyncio.run(crawl(CrawlOptions(site="resultados2024", root=r.url, out=str(mirror))))
    calls: list = []
    with _recording_proxy(node, calls) as url:
        proc = run_cli("publish", str(mirror), "--to", url.replace("http://", "ipfs://"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    root = proc.stdout.strip().splitlines()[-1]
    adds = [query for endpoint, query in calls if endpoint == "add"]
    assert len(adds) == 1 and adds[0]["wrap-with-directory"] == "true"
    assert adds[0]["chunker"] == "size-1048576" and adds[0]["raw-leaves"] == "true"
    assert "dag/import" not in [endpoint for endpoint, _q in calls]
    pins = [json.loads(x) for x in rpc(node.api, "pin/ls", f"arg={root}").splitlines() if x.strip()]
    assert pins, "the root is not pinned"
    for entry in read_provenance(mirror / "provenance.jsonl"):
        assert hashlib.sha256(rpc(node.api, "cat", f"arg=/ipfs/{root}/{entry.path}")).hexdigest() == entry.sha256
    calls.clear()
    with _recording_proxy(node, calls) as url:
        again = run_cli("publish", str(mirror), "--to", url.replace("http://", "ipfs://"))
    assert again.returncode == 0 and "added 0 of" in again.stdout and again.stdout.strip().endswith(root)
    assert "add" not in [endpoint for endpoint, _q in calls]


def test_a_node_that_answers_another_root_is_refused(node, replay_factory, tmp_path):
    """The tree's root is the node's word that it holds the mirror as published: a node whose
    answer names another root (here: its data folder's), no root, or another CID for one
    file fails the publish and writes no receipt."""
    r = replay_factory(seed=1818)
    mirror = tmp_path / "mirror"
    asyncio.run(crawl(CrawlOptions(site="resultados2024", root=r.url, out=str(mirror))))

    def other_root(query, answers):
        if query.get("wrap-with-directory") == "true":
            data = next(a["Hash"] for a in answers if a.get("Name") == "data")
            for a in answers:
                if a.get("Name") == "":
                    a["Hash"] = data
        return answers

    with _recording_proxy(node, [], other_root) as url:
        proc = run_cli("publish", str(mirror), "--to", url.replace("http://", "ipfs://"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "differs from the local root" in proc.stderr
    assert not (mirror / "publish-receipts.jsonl").exists()

    def no_root(query, answers):
        return [a for a in answers if a.get("Name") != ""]

    # a fresh mirror: the node now holds the first one's files, so it would take no tree add
    mirror = tmp_path / "mirror2"
    asyncio.run(crawl(CrawlOptions(site="resultados2024", root=replay_factory(seed=1819).url, out=str(mirror))))
    with _recording_proxy(node, [], no_root) as url:
        proc = run_cli("publish", str(mirror), "--to", url.replace("http://", "ipfs://"))
    assert proc.returncode == 1 and "without the tree's root CID" in proc.stderr, proc.stdout + proc.stderr
    assert not (mirror / "publish-receipts.jsonl").exists()

    def one_file_wrong(query, answers):
        files = [a for a in answers if a.get("Name", "").endswith(".jpg")]
        files[0]["Hash"] = files[1]["Hash"]
        seen.append(files[0]["Name"])
        return answers

    seen: list = []
    mirror = tmp_path / "mirror3"
    asyncio.run(crawl(CrawlOptions(site="resultados2024", root=replay_factory(seed=1820).url, out=str(mirror))))
    with _recording_proxy(node, [], one_file_wrong) as url:
        proc = run_cli("publish", str(mirror), "--to", url.replace("http://", "ipfs://"))
    assert proc.returncode == 1 and f"{seen[0]}: the node made CID" in proc.stderr, proc.stdout + proc.stderr
    assert not (mirror / "publish-receipts.jsonl").exists()


def test_a_file_over_one_piece_is_sent_in_checked_pieces(node, replay_factory, tmp_path):
    """A file larger than a piece (here under site/) is sent piece by piece and gives the node
    the local CIDs; one that no longer hashes to its record is refused before its part begins."""
    from mirror.archive import published_files
    from mirror.cid import Dag
    from mirror.publish.ipfs import PIECE, Upload, tree_parts

    r = replay_factory(seed=1919)
    mirror = tmp_path / "mirror"
    asyncio.run(crawl(CrawlOptions(site="resultados2024", root=r.url, out=str(mirror))))
    (mirror / "site").mkdir()
    big = os.urandom(3 * PIECE + 12345)
    (mirror / "site" / "big.bin").write_bytes(big)
    proc = run_cli("publish", str(mirror), "--to", node.target)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    root = proc.stdout.strip().splitlines()[-1]
    assert rpc(node.api, "cat", f"arg=/ipfs/{root}/site/big.bin") == big

    files = published_files(mirror)
    dag = Dag(mirror, files)
    dag.sha256["site/big.bin"] = hashlib.sha256(b"other bytes").hexdigest()
    upload = Upload(mirror, dag, tree_parts([rel for rel, _n, _s in files]))
    sent = []

    async def drain():
        async for chunk in upload.body(lambda *a: None, "test"):
            sent.append(chunk)

    with pytest.raises(Corrupt, match="site/big.bin"):
        asyncio.run(drain())
    assert "site/big.bin" in str(upload.refused)
    assert not any(b"big.bin" in chunk or big[:PIECE] in chunk for chunk in sent)


def test_tree_parts_put_each_folder_before_its_entries():
    from mirror.publish.ipfs import tree_parts

    parts = tree_parts(["b", "a-b", "a/d/e", "a/c", "a/d/f"])
    assert parts == [("a", None), ("a/c", "a/c"), ("a/d", None), ("a/d/e", "a/d/e"), ("a/d/f", "a/d/f"),
                     ("a-b", "a-b"), ("b", "b")]


def test_ipns_is_best_effort(node, mirror):
    proc = run_cli("publish", str(mirror), "--to", node.target, "--ipns", "self")
    assert proc.returncode == 0, proc.stderr
    assert "IPNS" in proc.stdout


def test_node_down_or_broken_exits_1_clearly(mirror, tmp_path):
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = run_cli("publish", str(mirror), "--to", f"ipfs://127.0.0.1:{port}")
    assert proc.returncode == 1 and "not reachable" in proc.stderr

    async def broken(request):
        return web.json_response({"Message": "datastore on fire", "Code": 0, "Type": "error"}, status=500)

    with _Server({"/api/v0/{tail:.*}": broken}) as url:
        proc = run_cli("publish", str(mirror), "--to", url.replace("http://", "ipfs://"))
        assert proc.returncode == 1 and "HTTP 500" in proc.stderr and "datastore on fire" in proc.stderr


def _pin_failing_proxy(node, refuse):
    """In front of the real node: dag/import reports a failed pin, as js-ipfs does when it runs
    out of file descriptors on a large DAG, and a recursive pin/add of any CID refuse(cid)
    picks fails the same way. Everything else reaches the node."""
    import aiohttp

    emfile = "EMFILE: too many open files"

    async def forward(request):
        if request.path.endswith("/pin/add") and request.query.get("recursive") == "true" \
                and refuse(request.query["arg"]):
            return web.json_response({"Message": f"Failed to add pin: {emfile}", "Code": 0, "Type": "error"},
                                     status=500)
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{node.api}{request.path_qs}", data=await request.read(),
                                    headers={"Content-Type": request.headers.get("Content-Type", "")}) as resp:
                body, status = await resp.read(), resp.status
        if request.path.endswith("/dag/import"):
            answers = [json.loads(x) for x in body.splitlines() if x.strip()]
            for a in answers:
                a["Root"]["PinErrorMsg"] = emfile
                rpc(node.api, "pin/rm", f"arg={a['Root']['Cid']['/']}")  # as if the pin had failed
            body = b"".join(json.dumps(a).encode() + b"\n" for a in answers)
        return web.Response(body=body, status=status, content_type="application/json")

    return _Server({"/api/v0/{tail:.*}": forward})


def test_a_root_too_large_to_pin_whole_is_pinned_in_pieces(own_node, mirror):
    from mirror.archive import published_files
    from mirror.cid import Dag

    dag = Dag(mirror, published_files(mirror))
    data = dict(dag.children[dag.root])["data"]
    too_large = {dag.root, data}
    with _pin_failing_proxy(own_node, lambda arg: str_to_cid(arg) in too_large) as url:
        proc = run_cli("publish", str(mirror), "--to", url.replace("http://", "ipfs://"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    states = len(dag.children[data])
    tags = len(dag.children[dag.root]) - 1
    assert f"pinned in {states + tags} recursive pieces" in proc.stdout
    listed = [json.loads(x) for x in rpc(own_node.api, "pin/ls", "type=direct").splitlines() if x.strip()]
    direct = {str_to_cid(cid) for answer in listed for cid in answer.get("Keys", {})} | \
             {str_to_cid(answer["Cid"]) for answer in listed if "Cid" in answer}
    assert {dag.root, data} <= direct
    rpc(own_node.api, "repo/gc")  # what the pins keep survives a garbage collection
    for entry in read_provenance(mirror / "provenance.jsonl"):
        assert hashlib.sha256(rpc(own_node.api, "cat", f"arg=/ipfs/{dag.root_cid}/{entry.path}")).hexdigest() == entry.sha256


def test_a_root_the_node_cannot_pin_at_all_is_an_error(node, mirror):
    with _pin_failing_proxy(node, lambda arg: True) as url:
        proc = run_cli("publish", str(mirror), "--to", url.replace("http://", "ipfs://"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Failed to add pin" in proc.stderr and "EMFILE" in proc.stderr


def test_pinning_service_client(node, mirror):
    seen = {"auth": [], "polls": 0}

    async def create(request):
        seen["auth"].append(request.headers.get("Authorization"))
        body = await request.json()
        seen["cid"] = body["cid"]
        return web.json_response({"requestid": "r-1", "status": "queued", "pin": body}, status=202)

    async def status(request):
        seen["polls"] += 1
        state = "pinned" if seen["polls"] >= 2 else "pinning"
        return web.json_response({"requestid": request.match_info["id"], "status": state, "pin": {"cid": seen["cid"]}})

    with _Server({"/pins": create, "/pins/{id}": status}) as url:
        env_token = {"ACTA_MIRROR_PIN_TOKEN": "pin-token-123"}
        proc = run_cli("publish", str(mirror), "--to", node.target, "--pin-service", url, env=env_token)
        assert proc.returncode == 0, proc.stderr
        root = proc.stdout.strip().splitlines()[-1]
        assert seen["cid"] == root and seen["auth"] == ["Bearer pin-token-123"] and seen["polls"] >= 2
        assert "pinned" in proc.stdout and "pin-token-123" not in proc.stdout + proc.stderr


def test_verify_cids_catches_a_wrong_cid(mirror):
    prov = mirror / "provenance.jsonl"
    lines = prov.read_text().splitlines()
    obj = json.loads(lines[1])
    obj["cid"] = raw_cid("0" * 64)
    lines[1] = json.dumps(obj)
    prov.write_text("\n".join(lines) + "\n")
    proc = run_cli("verify", str(mirror), "--cids", "--json")
    kinds = {(p["kind"], p["path"]) for p in json.loads(proc.stdout)["problems"]}
    assert proc.returncode == 1 and ("cid", obj["path"]) in kinds


class _Server:
    """A tiny aiohttp server on 127.0.0.1 in a thread (for stand-ins of outside services)."""

    def __init__(self, routes: dict):
        self.routes = routes

    def __enter__(self) -> str:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

        async def start():
            app = web.Application(client_max_size=1 << 30)  # IPFS adds are larger than aiohttp's default
            for path, handler in self.routes.items():
                app.router.add_route("*", path, handler)
            self.runner = web.AppRunner(app)
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            return site._server.sockets[0].getsockname()[1]

        port = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)



def test_choosing_a_publisher_does_not_load_the_ipfs_http_client():
    """Every publish loads every publisher module to find the one for its URL; the IPFS one
    imports aiohttp only where it speaks HTTP, so a Git publish never pays for it (0.24 s)."""
    import subprocess
    import sys

    code = ("import sys; from mirror.publish import publisher_for; "
            "p = publisher_for('git+file:///nowhere/actas.git'); "
            "print(type(p).__name__, 'aiohttp' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0 and out.stdout.split() == ["GitPublisher", "False"], (out.stdout, out.stderr)
