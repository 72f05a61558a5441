"""Scheduled mirror jobs: run a job file (crawl, verify, publish), and merge shard mirrors."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .archive import Archive, write_bag_files
from .config import Job
from .crawl import CrawlOptions, CrawlResult, crawl, fetch_options
from .manifest import (BAG_INFO, CHANGES, FAILURES, PAYLOAD_MANIFEST, PROVENANCE, TAG_MANIFEST, atomic_write,
                       provenance_lines, read_bag_info)
from .models import UsageError
from .publish import PublishError, Receipt, publisher_for
from .verify import verify

SIGN_KEY_ENV = "ACTA_MIRROR_SIGN_KEY_FILE"
MANIFEST_FILES = (PAYLOAD_MANIFEST, TAG_MANIFEST, BAG_INFO, CHANGES, "signed-root.json", "signed-root.json.minisig")


@dataclass
class RunReport:
    mirror: Path
    crawl: CrawlResult | None = None
    problems: list = field(default_factory=list)
    receipts: list[Receipt] = field(default_factory=list)
    publish_failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.publish_failures and not (self.crawl and self.crawl.failures)


def mirror_dir(job: Job, shard: tuple[int, int]) -> Path:
    """The job's mirror; shard I of N writes beside it, to `<dir>.shard-I-of-N`."""
    text = job["output.dir"]
    if shard != (1, 1):
        text = f"{text.rstrip('/')}.shard-{shard[0]}-of-{shard[1]}"
    return Path(job.resolve(text))


def sign_key(job: Job) -> str | None:
    key = job.resolve(job["sign.key"]) or os.environ.get(SIGN_KEY_ENV, "")
    if key and not Path(key).is_file():
        raise UsageError(f"{job.path}: sign.key: {key}: no such file")
    return key or None


def run_job(job: Job, *, shard: tuple[int, int] = (1, 1), crawl_step: bool = True,
            publish_step: bool = True, counters=None) -> RunReport:
    """Crawl, then verify, then publish (a sharded run publishes nothing: merge first)."""
    out = mirror_dir(job, shard)
    report = RunReport(out)
    if crawl_step:
        report.crawl = asyncio.run(crawl(crawl_options(job, shard), counters))
    report.problems = verify(out)
    if report.problems:
        report.notes.append("not publishing: the mirror does not verify")
        return report
    if shard != (1, 1):
        report.notes.append(f"shard {shard[0]} of {shard[1]}: publish after 'acta-mirror merge'")
        return report
    if publish_step:
        publish(job, out, report)
    return report


def crawl_options(job: Job, shard: tuple[int, int]) -> CrawlOptions:
    return CrawlOptions(
        site=job["source.site"], root=job["source.root"], out=str(mirror_dir(job, shard)),
        discover=job["source.discover"] or None,
        index=job.resolve(job["source.index"]) if job["source.index"] and "://" not in job["source.index"]
        else (job["source.index"] or None),
        shard=shard, wait_lock=job["output.wait_lock"], sign_key=sign_key(job),
        alternates=tuple(job["source.alternates"]), allow_hosts=tuple(job["source.hosts"]),
        **fetch_options(job.values["fetch"]))


def publishers(job: Job) -> list:
    options = dict(max_repo_bytes=job["publish.max_repo_bytes"], max_push_bytes=job["publish.max_push_bytes"],
                   shard_by=job["publish.shard_by"], ipns=job["publish.ipns"] or None,
                   pin_service=job["publish.pin_service"] or None)
    return [publisher_for(target, **options) for target in job["publish.git"] + job["publish.ipfs"]]


def plan_job(job: Job, *, shard: tuple[int, int] = (1, 1), crawl_step: bool = True, publish_step: bool = True):
    """The dry run of run_job: what the crawl would fetch, then what each target would receive
    of the mirror as it is now (the crawl's new files come on top). Changes nothing."""
    from .crawl import plan_crawl

    crawl_plan = asyncio.run(plan_crawl(crawl_options(job, shard))) if crawl_step else None
    out = mirror_dir(job, shard)
    plans = []
    if publish_step and shard == (1, 1) and (out / PROVENANCE).exists():
        plans = [p.plan(out) for p in publishers(job)]
    return crawl_plan, plans


def publish(job: Job, out: Path, report: RunReport) -> None:
    for publisher in publishers(job):
        try:
            report.receipts.append(publisher.publish(out))
        except PublishError as exc:
            report.publish_failures.append(str(exc))
    if job["publish.car"]:
        from .publish.ipfs import write_car

        car = job.resolve(job["publish.car"])
        report.notes.append(f"CAR {car}: root {write_car(out, car)}")
    if job["publish.manifests"]:
        dest = Path(job.resolve(job["publish.manifests"]))
        copy_manifests(out, dest)
        report.notes.append(f"manifests copied to {dest}")


def copy_manifests(mirror: Path, dest: Path) -> None:
    """The small files that let anyone check a copy: manifests, bag-info, changes, signed root."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in MANIFEST_FILES:
        if (mirror / name).exists():
            atomic_write(dest / name, (mirror / name).read_bytes())


def merge(out: str | os.PathLike, shards: list[str | os.PathLike], sign_key_path: str | None = None) -> dict:
    """Combine shard mirrors into one bag at out (which may hold an earlier merge).

    Files are linked (or copied) in; a path that two shards fill with different bytes keeps
    both, the later under the next version name. Nothing in out is ever removed.
    """
    out = Path(out)
    for shard in shards:
        if not (Path(shard) / PROVENANCE).exists():
            raise UsageError(f"{shard}: not a mirror (no {PROVENANCE})")
    stats = {"files": 0, "added": 0, "renamed": 0}
    with Archive(out) as archive:
        known = {line.path: line.sha256 for line in provenance_lines(out / PROVENANCE)}
        have_sha = set(known.values())
        new_lines: list[str] = []
        for shard in map(Path, shards):
            for line in provenance_lines(shard / PROVENANCE):
                stats["files"] += 1
                if known.get(line.path) == line.sha256:
                    continue
                obj = json.loads(line.text)
                if line.path in known:  # same place, other bytes: keep both
                    if line.sha256 in have_sha:
                        continue
                    stem, ext = os.path.splitext(line.path)
                    n = 2
                    while f"{stem}.v{n}{ext}" in known:
                        n += 1
                    obj["path"], obj["version"] = f"{stem}.v{n}{ext}", n
                    stats["renamed"] += 1
                target = out / obj["path"]
                target.parent.mkdir(parents=True, exist_ok=True)
                if not target.exists():
                    try:
                        os.link(shard / line.path, target)
                    except OSError:
                        shutil.copy2(shard / line.path, target)
                known[obj["path"]] = line.sha256
                have_sha.add(line.sha256)
                new_lines.append(json.dumps(obj, ensure_ascii=False, sort_keys=True) + "\n")
                stats["added"] += 1
        if new_lines:
            with open(out / PROVENANCE, "a", encoding="utf-8") as fh:
                fh.write("".join(new_lines))
                fh.flush()
                os.fsync(fh.fileno())
        for name in (CHANGES, FAILURES):
            merged = _merge_lines([out / name] + [Path(s) / name for s in shards])
            atomic_write(out / name, merged)
        info = {}
        for shard in shards:
            for k, v in read_bag_info(Path(shard) / BAG_INFO).items():
                if k not in ("Payload-Oxum", "Acta-Mirror-Merkle-Root", "Acta-Mirror-Merkle-Size", "Bagging-Date"):
                    info.setdefault(k, v)
        write_bag_files(out, info)
    if sign_key_path:
        from .evidence import sign_bag

        sign_bag(out, sign_key_path)
    problems = verify(out)
    if problems:
        raise UsageError(f"the merged mirror does not verify: {problems[0]}")
    return stats


def _merge_lines(paths: list[Path]) -> bytes:
    seen, lines = set(), []
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip() and line not in seen:
                seen.add(line)
                lines.append(line)
    return "".join(line + "\n" for line in lines).encode()
