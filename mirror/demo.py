"""The one-command demo on the embedded default: the whole job, against the local replay.

It starts the replay, runs a job in two shards, merges them, signs and verifies the result,
publishes it to a local bare Git repository and to the local IPFS node (or writes a CAR if
no node is installed), says how to check it, and stops what it started.
"""
from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from . import ipfsnode
from .audit.coverage import census
from .config import load_job
from .job import RunReport, merge, publish, run_job
from .replay import Replay, ReplayThread
from .sign import generate


@dataclass
class DemoReport:
    out: Path
    mirror: Path
    steps: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    ok: bool = True
    ipfs: bool = False  # whether an IPFS node was started


def run_demo(out: Path, *, limit: int | None, small: bool = True, use_ipfs: bool = True) -> DemoReport:
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    mirror = out / "mirror"
    report = DemoReport(out, mirror)
    with ExitStack() as stack:
        replay = stack.enter_context(ReplayThread(Replay(small=small, limit=limit)))
        keys = replay.replay.keys  # the first `limit` tables of the index and those of the 20 real scans
        tables = f"{len(keys):,} tables" if keys is not None else "every table of the index"
        report.steps.append(f"replay of the 2024 results site on {replay.url} "
                            f"({tables}{', small images' if small else ''})")
        node = None
        if use_ipfs and ipfsnode.installed():
            node = stack.enter_context(ipfsnode.IpfsNode(out / "ipfs-repo"))
            report.steps.append(f"local IPFS node (js-ipfs, offline) on {node.api}")
            report.ipfs = True
        key = out / "signer"
        if not (out / "signer.key").exists():
            secret, public = generate()
            (out / "signer.key").write_text(secret.text())
            (out / "signer.key").chmod(0o600)
            (out / "signer.pub").write_text(public.text())
        job_file = out / "mirror.toml"
        job_file.write_text(
            "[source]\nsite = \"resultados2024\"\n"
            f"root = \"{replay.url}\"\n\n"
            "[output]\ndir = \"mirror\"\n\n"
            "[publish]\n"
            f"git = [\"git+file://{out}/remotes/actas.git\"]\n"
            + (f"ipfs = [\"{node.target}\"]\n" if node else "car = \"mirror.car\"\n")
            + "manifests = \"manifests\"\n\n[sign]\nkey = \"signer.key\"\n")
        job = load_job(job_file)
        shards = []
        for i in (1, 2):
            shard_report = run_job(job, shard=(i, 2), publish_step=False)
            c = shard_report.crawl.counters
            report.steps.append(f"shard {i}/2 crawled: {c.discovered} actas discovered: {c.archived} new, "
                                f"{c.unchanged} unchanged, {c.failed} failed"
                                + (f", {c.not_asked} not asked (checked recently)" if c.not_asked else "")
                                + (f", {c.deferred} deferred" if c.deferred else "")
                                + c.listing_gaps()
                                + f" -> {shard_report.mirror}")
            report.ok &= shard_report.ok
            shards.append(shard_report.mirror)
        stats = merge(mirror, [str(s) for s in shards], sign_key_path=str(out / "signer.key"))
        report.steps.append(f"merged the 2 shards into {mirror} ({stats['added']} files added of the {stats['files']} "
                            f"they hold) and signed its root; {census(mirror).summary()}")
        final = RunReport(mirror)
        publish(job, mirror, final)
        for r in final.receipts:
            where = r.cid and f"root CID {r.cid}" or "pushed"
            report.steps.append(f"published to {r.target}: {where}")
        report.steps.extend(final.notes)
        for failure in final.publish_failures:
            report.steps.append(f"publish FAILED: {failure}")
        report.ok &= not final.publish_failures
    report.checks = [
        f"acta-mirror verify {mirror} --pubkey {key}.pub",
        f"minisign -Vm {mirror}/signed-root.json -p {key}.pub   # the statement only; README: "
        "'checking a copy without acta-mirror' ties the files to it",
        f"acta-mirror restore --from git+file://{out}/remotes/actas.git --out /tmp/actas-restored --pubkey {key}.pub",
    ]
    return report
