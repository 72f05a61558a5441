"""Start and stop the local IPFS test node (js-ipfs 0.18, Kubo-compatible RPC) on 127.0.0.1.

It is installed by scripts/setup.sh into tools/ipfs (npm `ipfs@0.66.1`) and runs offline:
no bootstrap peers, no swarm addresses, API and gateway on free loopback ports. Node 20
lacks Promise.withResolvers, so node starts with `--require` of tools/ipfs/polyfill.js.
The node is stopped by its own PID.
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

TOOLS = Path(__file__).resolve().parent.parent / "tools" / "ipfs"
START_TIMEOUT = 90.0
OPEN_FILES = 1 << 18  # descriptors for the node process


def installed() -> bool:
    return shutil.which("node") is not None and (TOOLS / "node_modules" / ".bin" / "jsipfs").exists()


def _more_open_files() -> None:
    """js-ipfs opens every block of a DAG at once when it pins it: a mirror of 25,000 files
    needs more file descriptors than a usual default. Raised as far as this user may."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, OPEN_FILES), max(hard, OPEN_FILES)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class IpfsNode:
    """A js-ipfs daemon with its own repository; use as a context manager."""

    def __init__(self, repo: str | os.PathLike):
        self.repo = Path(repo)
        self.api_port = _free_port()
        self.gateway_port = _free_port()
        self.proc: subprocess.Popen | None = None
        self.log = self.repo.parent / f"{self.repo.name}.log"

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def target(self) -> str:
        return f"ipfs://127.0.0.1:{self.api_port}"

    def _cmd(self, *args: str) -> list[str]:
        return ["node", "--require", str(TOOLS / "polyfill.js"), str(TOOLS / "node_modules" / ".bin" / "jsipfs"), *args]

    def start(self) -> "IpfsNode":
        if not installed():
            raise RuntimeError("the IPFS test node is not installed: run scripts/setup.sh")
        env = {**os.environ, "IPFS_PATH": str(self.repo)}
        if not (self.repo / "config").exists():
            self.repo.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(self._cmd("init", "--profile", "test"), env=env, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
        config_path = self.repo / "config"
        config = json.loads(config_path.read_text())
        config["Bootstrap"] = []
        config.setdefault("Addresses", {}).update({
            "API": f"/ip4/127.0.0.1/tcp/{self.api_port}",
            "Gateway": f"/ip4/127.0.0.1/tcp/{self.gateway_port}",
            "RPC": f"/ip4/127.0.0.1/tcp/{_free_port()}",
            "Swarm": [], "Announce": [], "Delegates": []})
        config.setdefault("Discovery", {})["MDNS"] = {"Enabled": False}
        config["Discovery"]["webRTCStar"] = {"Enabled": False}
        config_path.write_text(json.dumps(config, indent=1))
        for stale in ("api", "repo.lock"):
            path = self.repo / stale
            if path.is_file():
                path.unlink()
            elif path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
        log = open(self.log, "ab")
        self.proc = subprocess.Popen(self._cmd("daemon", "--offline"), env=env, stdout=log, stderr=log,
                                     start_new_session=True, preexec_fn=_more_open_files)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the IPFS node exited with {self.proc.returncode}; see {self.log}")
            try:
                req = urllib.request.Request(f"{self.api}/api/v0/version", method="POST")
                with urllib.request.urlopen(req, timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"the IPFS node did not answer within {START_TIMEOUT:.0f} s; see {self.log}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def __enter__(self) -> "IpfsNode":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
