"""Scheduled mirror jobs: run a job file (crawl, verify, publish), and merge shard mirrors.

A job with `publish.manifests` and no `output.dir` keeps no local mirror: each run starts from
the manifests folder (mirror/jobstate.py), downloads what changed and publishes only that.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from .archive import Archive, append_durably, disk_error, read_inside, write_bag_files
from .config import ConfigError, Job
from .crawl import CrawlOptions, CrawlResult, crawl, fetch_options
from .manifest import BAG_INFO, CHANGES, FAILURES, PROVENANCE, atomic_write, parse_bag_info
from .models import JSON_LINE, NotAMirror, Problem, UnsafePath, UsageError
from .state import MAX_MANIFEST_BYTES, MAX_TAG_BYTES, MirrorState, Record, is_acta_key, iter_records, open_payload
from .publish import PublishError, Receipt, inside, publisher_for, publishers_for, redact
from .verify import check, verify

SIGN_KEY_ENV = "ACTA_MIRROR_SIGN_KEY_FILE"


@dataclass
class RunReport:
    mirror: Path
    crawl: CrawlResult | None = None
    problems: list = field(default_factory=list)
    receipts: list[Receipt] = field(default_factory=list)
    publish_failures: list[str] = field(default_factory=list)  # targets, the CAR file, the timestamp
    notes: list[str] = field(default_factory=list)
    targets: int = 0  # publish targets tried: the receipts' denominator
    hashed: int = 0  # payload files whose bytes the verify step read and matched...
    listed: int = 0  # ...of the files the mirror (or the manifests folder) lists
    again: str = "acta-mirror run --publish-only"  # what publishes again after a target failed
    coverage: str = ""  # the tables of the site's list the mirror holds ('47 of 52 tables archived; 5 failed ...')

    @property
    def ok(self) -> bool:
        return not self.problems and not self.publish_failures and not (self.crawl and self.crawl.failures)


def mirror_dir(job: Job, shard: tuple[int, int]) -> Path:
    """The job's mirror; shard I of N writes beside it, to `<dir>.shard-I-of-N`."""
    text = job["output.dir"] or "mirror"
    if shard != (1, 1):
        text = f"{text.rstrip('/')}.shard-{shard[0]}-of-{shard[1]}"
    return Path(job.resolve(text))


def key_file(job: Job) -> str:
    """The secret key file the job signs with: sign.key (relative to the job file), else the
    file ACTA_MIRROR_SIGN_KEY_FILE names; '' when neither names one. Not checked."""
    return job.resolve(job["sign.key"]) or os.environ.get(SIGN_KEY_ENV, "")


def index_file(job: Job) -> str:
    """The local index file the job reads instead of the site's (source.index, relative to the
    job file); '' when it reads the site's or an index URL."""
    index = job["source.index"]
    return job.resolve(index) if index and "://" not in index else ""


def sign_key(job: Job) -> str | None:
    key = key_file(job)
    if key and not Path(key).is_file():
        raise UsageError(f"{job.path}: sign.key: {key}: no such file")
    if key:
        from .sign import load_secret

        try:
            load_secret(key)  # a key that cannot sign fails now, not after the crawl it was to sign
        except UsageError as exc:
            raise UsageError(f"{job.path}: sign.key: {exc}") from None
    return key or None


def unseen(step: str):
    """No display for a step: run_job's default `shown`."""
    return contextlib.nullcontext()


def run_job(job: Job, *, shard: tuple[int, int] = (1, 1), crawl_step: bool = True,
            publish_step: bool = True, counters=None, shown=unseen) -> RunReport:
    """Crawl, then verify, then publish (a sharded run publishes nothing: merge first).

    shown(step) is the display of the 'crawl' and the 'publish' step, a context manager around
    each: a crawl's figures end with the crawl, and the publishers report through the publish
    one's `step`, so an hour of pushing never shows as a crawl at 100%."""
    if publish_step and shard == (1, 1):
        check_publishable(job, sign_key(job))
    check_places(job)
    if from_manifests(job):
        if shard != (1, 1) or not crawl_step:
            raise UsageError(f"{job.path}: a job without output.dir works from its manifests folder in one "
                             "run: no --shard, no --publish-only")
        return run_from_manifests(job, publish_step=publish_step, counters=counters, shown=shown)
    out = mirror_dir(job, shard)
    if publish_step and shard == (1, 1) and job["publish.manifests"]:
        from .jobstate import not_behind  # before the crawl: the state saved at the end replaces no other

        not_behind(out, Path(job.resolve(job["publish.manifests"])))
    report = RunReport(out)
    if crawl_step:
        with shown("crawl"):
            report.crawl = asyncio.run(crawl(crawl_options(job, shard), counters))
    report.problems, report.listed, state = verify_counted(out)
    report.hashed = report.listed
    if report.problems:
        report.notes.append("not publishing: the mirror does not verify")
        return report
    if shard == (1, 1):  # a shard's mirror holds its part of the list only: counted once merged
        report.coverage = coverage_of(out, state)  # the records verify read, not read again
    if shard != (1, 1):
        report.notes.append(f"shard {shard[0]} of {shard[1]}: publish after 'acta-mirror merge'")
        return report
    if job["sign.tsa"]:
        stamp(job, out, report)
    if publish_step:
        publish(job, out, report, shown)
    return report


def coverage_of(mirror: Path, state=None, *, index_held: bool = True) -> str:
    """The mirror's coverage of the site's list of tables, one line, for the run's report; or why
    it was not counted. state: the mirror as verify read it (clean), else it is read here.
    index_held=False: a scheduled run's working bag (audit.coverage.census)."""
    from .audit.coverage import census

    try:
        return census(mirror, state, index_held=index_held).summary()
    except (NotAMirror, OSError) as exc:
        return f"not counted ({getattr(exc, 'strerror', None) or exc})"


def verify_counted(out: Path) -> tuple[list[Problem], int, MirrorState]:
    """verify(out), with the number of files the manifest lists (every one of them hashed), and
    the mirror's state as verify read it."""
    checked = check(out)
    return checked.problems + checked.seal.problems, len(checked.state.manifest), checked.state


def from_manifests(job: Job) -> bool:
    """Does this job keep its state in the manifests folder instead of a local mirror?"""
    return not job["output.dir"] and bool(job["publish.manifests"])


def check_publishable(job: Job, key: str | None) -> None:
    """A run that would archive nowhere, or publish unsigned, fails unless the job file says so."""
    if not (job["publish.git"] or job["publish.ipfs"]) and not job["publish.allow_none"]:
        raise UsageError(f"{job.path}: no publish targets (publish.git, publish.ipfs): this run would back up "
                         "nothing anywhere; add a target, or set publish.allow_none = true")
    if not key and job["sign.required"]:
        raise UsageError(f"{job.path}: no signing key (sign.key or {SIGN_KEY_ENV}): nobody could check the copy; "
                         "add a key, or set sign.required = false")
    for name in ("publish.git", "publish.ipfs"):  # a target that cannot be read fails now, not after the crawl
        for target in job[name]:
            try:
                publisher_for(target, **_publish_options(job))
            except UsageError as exc:  # the publishers name a target as the publish command's --to does
                raise ConfigError(f"{job.path}: {name}: {str(exc).removeprefix('--to ')}") from None
    try:  # and a token that would go to two hosts, before anything is fetched
        publishers(job)
    except UsageError as exc:
        raise ConfigError(f"{job.path}: publish: {exc}") from None


def check_places(job: Job) -> None:
    """The files the job names, before anything runs: nothing it writes besides the crawl may
    land in its mirror (a CAR file or the manifests folder there would overwrite archived files
    or break the bag), nor the mirror or the CAR file in the manifests folder (committed between
    runs), the CAR file's folder must exist, and the authority's CA file."""
    if job["sign.tsa_ca"] and not Path(job.resolve(job["sign.tsa_ca"])).is_file():
        raise UsageError(f"{job.path}: sign.tsa_ca: {job.resolve(job['sign.tsa_ca'])}: no such file")
    car = Path(job.resolve(job["publish.car"])) if job["publish.car"] else None
    if car and car.is_dir():
        raise UsageError(f"{job.path}: publish.car: {car} is a folder; name the CAR file to write")
    if car and not car.parent.is_dir():
        raise UsageError(f"{job.path}: publish.car: {car.parent}: no such folder")
    if car:
        _car_is_no_input(job, car)
    folder = job.resolve(job["publish.manifests"])
    secrets = ((f"the secret key (sign.key or {SIGN_KEY_ENV})", key_file(job)),
               ("the job file (it may hold fetch.headers' credentials)", str(job.path)))
    places = [("the manifests folder", folder)] if folder else []
    if not from_manifests(job):
        places.append(("the mirror", str(mirror_dir(job, (1, 1)))))
    for what, path in secrets:  # what lies in them is published (site/ with the mirror) or committed
        for where, place in places:
            if path and inside(path, place):
                raise UsageError(f"{job.path}: {what} {path} is inside {where} {place}, which is published or "
                                 "committed with it; keep it outside")
    if from_manifests(job):
        return
    out = mirror_dir(job, (1, 1))
    for key in ("publish.car", "publish.manifests"):
        if job[key] and inside(job.resolve(job[key]), out):
            raise UsageError(f"{job.path}: {key}: {job.resolve(job[key])} is inside the mirror {out}: it would "
                             "overwrite or add to what is archived; give a path outside it")
    for key, path in (("publish.manifests", out), ("publish.car", car)):  # committed between runs: keep it small
        if folder and path and inside(path, folder):
            raise UsageError(f"{job.path}: {key}: {path} is inside the manifests folder {folder}: the folder "
                             "committed between runs would carry every archived file; keep them apart")


def _car_is_no_input(job: Job, car: Path) -> None:
    """UsageError when the CAR file would be written over a file the job reads: the job file,
    its secret key, the authority's CA or a local index (the index is evidence no bag holds,
    the key cannot be made again). By name, and by the file itself (a link to it)."""
    reads = (("the job file", str(job.path)), (f"the secret key (sign.key or {SIGN_KEY_ENV})", key_file(job)),
             ("the authority's CA (sign.tsa_ca)", job.resolve(job["sign.tsa_ca"])),
             ("the index (source.index)", index_file(job)))
    for what, path in reads:
        if not path:
            continue
        try:
            same = os.path.abspath(path) == os.path.abspath(car) or os.path.samefile(path, car)
        except OSError:  # one of them does not exist (yet): not the same file
            same = False
        if same:
            raise UsageError(f"{job.path}: publish.car: {car} is {what}: writing the CAR there would destroy it; "
                             "name another file")


def crawl_options(job: Job, shard: tuple[int, int], out: Path | None = None, sign: bool = True) -> CrawlOptions:
    """The crawl of this job: into its mirror, or into out (a scheduled run's working bag,
    signed afterwards only when something changed: sign=False)."""
    return CrawlOptions(
        site=job["source.site"], root=job["source.root"], out=str(out or mirror_dir(job, shard)),
        discover=job["source.discover"] or None,
        index=index_file(job) or job["source.index"] or None,
        shard=shard, wait_lock=job["output.wait_lock"], sign_key=sign_key(job) if sign else None,
        alternates=tuple(job["source.alternates"]), allow_hosts=tuple(job["source.hosts"]),
        **fetch_options(job.values["fetch"]))


def stamp(job: Job, out: Path, report: RunReport) -> None:
    """A trusted timestamp of this run's signed root; a failed authority fails the run, not the mirror."""
    from .models import MirrorError
    from .timestamp import timestamp

    try:
        attested, _new = timestamp(out, job["sign.tsa"], ca=job.resolve(job["sign.tsa_ca"]) or None)
        report.notes.append(f"timestamp: signed-root.json existed by {attested.time:%Y-%m-%d %H:%M:%S} UTC "
                            f"({attested.authority})")
    except MirrorError as exc:  # its message names the authority's URL, with any user:password@ in it
        report.publish_failures.append(redact(f"timestamp: {exc}"))


def run_from_manifests(job: Job, *, publish_step: bool = True, counters=None, shown=unseen) -> RunReport:
    """One scheduled run with no local mirror: seed a working bag (in the temp folder) from the
    manifests folder, crawl into it (conditional requests from the recorded validators; only
    new and changed files are stored), check the delta, publish it, save the folder. The
    folder is written only after every target took the delta, so a run killed or failed
    while publishing leaves it as it was and the next run does the same work again; it is
    written as one (jobstate.save), so a run killed while writing it leaves a save that the
    next read of the folder completes or undoes whole. The folder is locked from its read to
    its save (jobstate.held): a second run at once exits with 2, or waits with output.wait_lock."""
    from .jobstate import held

    key = sign_key(job)
    with held(job.resolve(job["publish.manifests"]), wait=job["output.wait_lock"]) as folder:
        return _run_from_manifests(job, key, folder, publish_step=publish_step, counters=counters, shown=shown)


def _run_from_manifests(job: Job, key: str | None, folder: Path, *, publish_step: bool, counters, shown) -> RunReport:
    from .evidence import sign_bag
    from .jobstate import CHECKS, TARGETS, check_signed, read_job_state, save, save_checks, seed, take_delta

    before = read_job_state(folder)
    check_signed(before, key)
    report = RunReport(folder, again="acta-mirror run (the next run from the folder sends it again)")
    try:
        work = Path(tempfile.mkdtemp(prefix="acta-mirror-run-"))
    except OSError as exc:
        raise disk_error(exc, f"making the run's working folder in {tempfile.gettempdir()} (TMPDIR)") from None
    try:
        bag = work / "bag"
        try:
            seed(before, bag)
        except OSError as exc:  # the temp folder may be a small disk of its own (a runner's /tmp)
            raise disk_error(exc, f"copying the manifests folder's state into {bag} (TMPDIR)") from None
        with shown("crawl"):
            report.crawl = asyncio.run(crawl(crawl_options(job, (1, 1), out=bag, sign=False), counters))
        if key and _needs_signature(before.folder, bag):
            sign_bag(bag, key, source=redact(job["source.root"]))
            if job["sign.tsa"]:
                stamp(job, bag, report)
        try:
            delta = take_delta(before, bag)
        except UsageError as exc:
            report.problems.append(Problem("delta", str(folder), str(exc)))
            report.notes.append("not publishing: what this run downloaded does not check out")
            return report
        report.hashed, report.listed = len(delta.added), len(delta.records)
        report.coverage = coverage_of(bag, index_held=False)
        report.notes.append(f"state: {len(delta.added)} new file(s) of {len(delta.records)} recorded "
                            f"({sum(r.size for r in delta.added)} bytes downloaded and kept)")
        targets = target_names(job)
        if not delta.changed:
            # A target the folder does not name as holding this state (new to the job, or a folder
            # saved before targets.txt) is sent it unchanged: one that lacks the mirror refuses.
            named = before.targets or frozenset()
            unheard = unnamed(targets, before)
            held = None
            if unheard and publish_step:
                report.notes.append(f"{len(unheard)} of {len(targets)} target(s) not named in {folder / TARGETS} "
                                    "as holding this state: sending it to them")
                took = publish_each(job, report, shown, lambda publisher: publisher.publish_delta(delta),
                                    only=unheard)
                if took:  # recorded: each that took it, and no other
                    held = [t for t in targets if t in named or t in took]
            elif unheard:
                report.notes.append(f"not publishing (--no-publish): {len(unheard)} target(s) not named in "
                                    f"{folder / TARGETS} were not checked")
            # what the site confirmed, so the next runs need not ask again; and who holds the state
            written = save_checks(delta, held)
            what_for = {CHECKS: "the check times", TARGETS: "who holds the state"}
            report.notes.append(f"nothing changed: {folder} left as it was"
                                + (" but for " + " and ".join(f"{name}, {what_for[name]}" for name in written)
                                   if written else ""))
            return report
        if not publish_step:
            report.notes.append("not publishing (--no-publish): the manifests folder is left as it was")
            return report
        publish_each(job, report, shown, lambda publisher: publisher.publish_delta(delta))
        if job["publish.car"]:
            report.notes.append("publish.car needs a local mirror (output.dir); no CAR written")
        if report.publish_failures:
            report.notes.append(f"{folder} left as it was: the next run publishes this delta again")
            return report
        save(delta, _secret(key), targets)
        report.notes.append(f"manifests written to {folder}")
        return report
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _secret(key: str | None):
    """The job's secret key, read, to sign what it saves (cids.txt); None without one."""
    from .sign import load_secret

    return load_secret(key) if key else None


def _needs_signature(folder: Path, bag: Path) -> bool:
    """Sign when a signed tag file changed, or the state was never signed: an unchanged run
    keeps the old signature, so it changes nothing to commit."""
    from .state import SIGNED_TAG_FILES

    for name in (*SIGNED_TAG_FILES, "signed-root.json"):
        old, new = folder / name, bag / name
        if os.path.lexists(old) != os.path.lexists(new):
            return True
        if os.path.lexists(new) and read_inside(bag, name) != read_inside(folder, name):
            return True
    return False


def _publish_options(job: Job) -> dict:
    return dict(max_repo_bytes=job["publish.max_repo_bytes"], max_push_bytes=job["publish.max_push_bytes"],
                shard_by=job["publish.shard_by"], ipns=job["publish.ipns"] or None,
                pin_service=job["publish.pin_service"] or None)


def publishers(job: Job, display=None) -> list:
    """The job's publishers; with a display, each reports its progress through display.step."""
    step = {"progress": display.step} if display is not None else {}
    return publishers_for(job["publish.git"] + job["publish.ipfs"], **_publish_options(job), **step)


def plan_job(job: Job, *, shard: tuple[int, int] = (1, 1), crawl_step: bool = True, publish_step: bool = True):
    """The dry run of run_job: what the crawl would fetch, then what each target would receive
    of the mirror as it is now (the crawl's new files come on top). Changes nothing."""
    from .crawl import plan_crawl

    check_places(job)
    crawl_plan = None
    if crawl_step and from_manifests(job):  # planned against what the run seeds: the folder's records and check times
        from .jobstate import read_job_state, seed

        with tempfile.TemporaryDirectory(prefix="acta-mirror-plan-") as tmp:
            seed(read_job_state(job.resolve(job["publish.manifests"]), settle=False), Path(tmp, "bag"))
            crawl_plan = asyncio.run(plan_crawl(crawl_options(job, shard, out=Path(tmp, "bag"), sign=False)))
    elif crawl_step:
        crawl_plan = asyncio.run(plan_crawl(crawl_options(job, shard)))
    out = mirror_dir(job, shard)
    plans = []
    if publish_step and shard == (1, 1) and (out / PROVENANCE).exists():
        plans = [p.plan(out) for p in publishers(job)]
    return crawl_plan, plans


def held_as(publisher) -> str:
    """How targets.txt names a target: as the run shows it (credentials hidden), and a node with
    the IPNS key and pinning service it is published with, so that one added to the job later
    makes a target the folder does not name (sent the state by the next run)."""
    extra = [f"{name}={redact(value)}" for name in ("ipns", "pin_service") if (value := getattr(publisher, name, None))]
    return " ".join([publisher.shown, *extra])


def unnamed(targets: list[str], state) -> list[str]:
    """The targets a manifests folder's state (jobstate.JobState) does not name as holding it
    (targets.txt); none while the state is empty."""
    return [] if state.empty else [t for t in targets if t not in (state.targets or ())]


def unnamed_targets(job: Job) -> tuple[list[str], Path]:
    """For a dry run: the job's targets its manifests folder does not name, and the file."""
    from .jobstate import TARGETS, read_job_state

    folder = Path(job.resolve(job["publish.manifests"]))
    return unnamed(target_names(job), read_job_state(folder, settle=False)), folder / TARGETS


def target_names(job: Job) -> list[str]:
    """The job's publish targets as targets.txt in the manifests folder records them."""
    return [held_as(publisher) for publisher in publishers(job)]


def publish_each(job: Job, report: RunReport, shown, send, only=None) -> list[str]:
    """send(publisher) to every target of the job (or those `only` names, as held_as gives
    them), under the publish step's display; each receipt or failure into the report (one
    target failing never stops the others). Returns the targets that took it (held_as)."""
    took = []
    with shown("publish") as display:
        for publisher in publishers(job, display):
            if only is not None and held_as(publisher) not in only:
                continue
            report.targets += 1
            try:
                report.receipts.append(send(publisher))
                took.append(held_as(publisher))
            except PublishError as exc:  # with its own advice when it has some (the CLI adds the usual)
                report.publish_failures.append(f"{exc}; {exc.advice}" if getattr(exc, "advice", "") else str(exc))
    return took


def publish(job: Job, out: Path, report: RunReport, shown=unseen) -> None:
    failed = len(report.publish_failures)
    publish_each(job, report, shown, lambda publisher: publisher.publish(out))
    refused = len(report.publish_failures) - failed  # the targets' own: not a timestamp's, nor the CAR file's
    if job["publish.car"]:
        from .publish.ipfs import write_car

        car = job.resolve(job["publish.car"])
        try:
            report.notes.append(f"CAR {car}: root {write_car(out, car)}")
        except PublishError as exc:
            report.publish_failures.append(str(exc))
    if job["publish.manifests"]:
        from .jobstate import save_from_mirror

        dest = Path(job.resolve(job["publish.manifests"]))
        if refused:  # as a run from the folder does: it says what every target holds
            report.notes.append(f"{dest} left as it was: {refused} of {report.targets} target(s) did not take "
                                "the mirror")
            return
        save_from_mirror(out, dest, _secret(key_file(job)), target_names(job))
        report.notes.append(f"manifests copied to {dest}")


def merge(out: str | os.PathLike, shards: list[str | os.PathLike], sign_key_path: str | None = None) -> dict:
    """Combine shard mirrors into one bag at out (which may hold an earlier merge).

    Every shard is read before out is touched: its records must be sound (paths inside
    data/) and every file it adds must be a regular file reached without a symlink whose
    bytes hash to its line. Files are linked (or copied) in through out's temp folder and
    renamed into place before their lines are recorded; a path that two shards fill with
    different bytes keeps both, the later under the next version name. Nothing in out is
    ever removed, and a shard that fails a check leaves out as it was. A signed out is merged
    into only with a key to sign it again: its old signature would no longer match.
    """
    from .evidence import STATEMENT

    out = Path(out)
    for shard in shards:  # the same folder is harmless; one inside the other makes files neither lists
        if os.path.realpath(shard) != os.path.realpath(out) and (inside(out, shard) or inside(shard, out)):
            inner, outer = (out, shard) if inside(out, shard) else (shard, out)
            raise UsageError(f"{inner} is inside {outer}: a merged mirror and its shards are separate folders")
    if not sign_key_path and os.path.lexists(out / STATEMENT):
        raise UsageError(f"{out} is signed ({STATEMENT}): a merge changes what was signed; "
                         "pass --sign-key to sign the merged mirror")
    # every shard file read here, before out is touched: a refusal later would leave out half-merged
    sources = [(Path(shard), _shard_lines(Path(shard)), _shard_files(Path(shard))) for shard in shards]
    stats = {"files": 0, "added": 0, "renamed": 0}
    with Archive(out) as archive:
        known: dict[str, str] = {}
        kept: dict[str, set[str]] = {}  # a path -> the sha256 of every version of it (its .vN names too)
        tables: dict[str, str] = {}  # an acta key -> the path of its first version here
        for line in iter_records(out / PROVENANCE):
            known[line.path] = line.sha256
            kept.setdefault(_first_version(line.path), set()).add(line.sha256)
            if is_acta_key(line.entry.key):
                tables.setdefault(line.entry.key, _first_version(line.path))
        # Oldest fetch first, whichever shard holds it: of two copies of one file (an index the
        # site updated between two shards' runs), the later fetched is the later version, as in
        # one crawl, never the shard named last. Lines of the same time keep their order.
        incoming = sorted(((shard, line) for shard, lines, _files in sources for line in lines),
                          key=lambda item: str(item[1].entry.fetched_at))
        staged: list[tuple[Path, str]] = []  # (temp file, final path)
        new_lines: list[str] = []
        try:
            for shard, line in incoming:
                stats["files"] += 1
                if known.get(line.path) == line.sha256:
                    continue
                entry, text = line.entry, line.text  # the shard's line, byte for byte
                # One table is one file and its versions: another shard's copy of it under another
                # folder or spelling (a case, a Unicode form) is a version of the file kept here.
                first = tables.get(entry.key) if is_acta_key(entry.key) else None
                first = first or _first_version(line.path)
                if line.path in known or first != _first_version(line.path):  # other bytes: keep both
                    if line.sha256 in kept.get(first, ()):
                        continue  # kept already as a version of this file
                    stem, ext = os.path.splitext(first)
                    n = 2
                    while f"{stem}.v{n}{ext}" in known:
                        n += 1
                    entry = msgspec.structs.replace(entry, path=f"{stem}.v{n}{ext}", version=n)
                    text = entry.to_json() + "\n"
                    stats["renamed"] += 1
                tmp = archive.tmp / f"merge-{len(staged)}"
                _stage(shard, line, tmp)
                staged.append((tmp, entry.path))
                known[entry.path] = line.sha256
                kept.setdefault(_first_version(entry.path), set()).add(line.sha256)
                if is_acta_key(entry.key):
                    tables.setdefault(entry.key, _first_version(entry.path))
                new_lines.append(text)
                stats["added"] += 1
            _check_places(out, [rel for _tmp, rel in staged])
            placed: list[Path] = []
            try:
                for tmp, rel in staged:
                    target = out / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.rename(tmp, target)
                    placed.append(target)
            except OSError:
                for target in placed:  # new names only (checked above): out is left as it was
                    os.unlink(target)
                raise
            if new_lines:
                append_durably(out / PROVENANCE, "".join(new_lines))
            for name in (CHANGES, FAILURES):
                ours = read_inside(out, name) if os.path.lexists(out / name) else b""
                atomic_write(out / name, _merge_lines(ours, [files[name] for _s, _l, files in sources]))
            info = {}
            for _shard, _lines, files in sources:
                text = files[BAG_INFO].decode("utf-8", "replace")
                for k, v in parse_bag_info(text).items():
                    if k not in ("Payload-Oxum", "Acta-Mirror-Merkle-Root", "Acta-Mirror-Merkle-Size", "Bagging-Date"):
                        info.setdefault(k, v)
            write_bag_files(out, info)
        except OSError as exc:
            raise disk_error(exc, f"merging into {out}") from None
    if sign_key_path:
        from .evidence import sign_bag

        sign_bag(out, sign_key_path)
    problems = verify(out)
    if problems:
        raise UsageError(f"the merged mirror does not verify: {problems[0]}")
    return stats


def _check_places(out: Path, rels: list[str]) -> None:
    """UsageError, before anything is moved into out, when a file to merge has no place of its
    own: its name is on disk already (evidence is never overwritten), a folder on its way is a
    file there, or it is a folder on the way of another file merged (a shard's paths can say
    anything): a merge refused half-way would leave files in out that no record lists."""
    folders = {str(parent) for rel in rels for parent in Path(rel).parents}
    seen: set[Path] = set()
    for rel in rels:
        if rel in folders:
            raise UsageError(f"a shard lists {rel} both as a file and as a folder of other files; not merging")
        if os.path.lexists(out / rel):
            raise UsageError(f"{out}: {rel} is on disk but not recorded; not merging over it")
        for parent in Path(rel).parents:
            if parent in seen or str(parent) == ".":
                break
            seen.add(parent)
            if (out / parent).is_symlink() or (os.path.lexists(out / parent) and not (out / parent).is_dir()):
                raise UsageError(f"{out}: {parent} is not a folder, and {rel} goes inside it; not merging")


def _first_version(path: str) -> str:
    """The path a version name (KEY.v2.jpg) is a version of (KEY.jpg); any other path itself."""
    stem, ext = os.path.splitext(path)
    found = re.fullmatch(r"(.+)\.v\d+", stem)
    return (found[1] if found else stem) + ext


def _shard_lines(shard: Path) -> list[Record]:
    """A shard's provenance records through the validated reader (paths inside data/, keys of
    the site's format, no path twice, no symlink); UsageError naming the shard otherwise."""
    if not shard.is_dir() or not os.path.lexists(shard / PROVENANCE):
        raise UsageError(f"{shard}: not a mirror (no {PROVENANCE})")
    try:
        return list(iter_records(shard / PROVENANCE))
    except NotAMirror as exc:
        raise UsageError(f"{exc}; not merging {shard}") from None


SHARD_FILE_LIMITS = {CHANGES: MAX_MANIFEST_BYTES, FAILURES: MAX_MANIFEST_BYTES, BAG_INFO: MAX_TAG_BYTES}


def _shard_files(shard: Path) -> dict[str, bytes]:
    """A shard's bag files merged into out (SHARD_FILE_LIMITS), each never through a symlink
    and never read past its limit (a sparse terabyte is refused, not held in memory); empty
    when it has none. UsageError naming the shard otherwise."""
    files = {}
    for name, limit in SHARD_FILE_LIMITS.items():
        if not os.path.lexists(shard / name):
            files[name] = b""
            continue
        try:
            files[name] = read_inside(shard, name, limit)  # a giant is refused by its size, unread
        except (OSError, NotAMirror) as exc:
            why = exc.reason if isinstance(exc, UnsafePath) else getattr(exc, "strerror", None) or exc
            raise UsageError(f"{shard}/{name}: {why}; not merging {shard}") from None
    return files


def _stage(shard: Path, line: Record, tmp: Path) -> None:
    """Put a shard's file at tmp after checking it: a regular file reached without a symlink,
    whose bytes hash to its line. A hard link when the file is ours and nobody else may write
    it (and the file system allows), else a copy: a linked file is one file with two names,
    and a shard from a tarball or another user's folder (mode 0666, or their own file) could be
    rewritten through its other name after the merge, changing the evidence in out."""
    try:
        src = open_payload(shard, line.path)
    except (OSError, NotAMirror) as exc:
        raise UsageError(f"{shard}: {line.path}: {getattr(exc, 'strerror', None) or exc}; not merging it") from None
    with src:
        fd = src.fileno()
        # the size first: a file of another size is not the recorded bytes (a sparse terabyte: an hour)
        digest = hashlib.file_digest(src, "sha256").hexdigest() if os.fstat(fd).st_size == line.size else ""
        if digest != line.sha256 or os.fstat(fd).st_size != line.size:
            raise UsageError(f"{shard}: {line.path} does not match its provenance line; not merging it")
        st = os.fstat(fd)
        if st.st_uid == os.geteuid() and not st.st_mode & 0o022:  # nobody else may rewrite it
            try:
                os.link(shard / line.path, tmp, follow_symlinks=False)
                linked = os.lstat(tmp)
                if (linked.st_dev, linked.st_ino) == (st.st_dev, st.st_ino):
                    return  # the very file just checked
                os.unlink(tmp)
            except OSError:
                pass
        src.seek(0)
        copied = hashlib.sha256()  # the bytes copied are hashed again: the file may change after its check
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644), "wb") as dst:
            while chunk := src.read(1 << 20):
                copied.update(chunk)
                dst.write(chunk)
            dst.flush()
            os.fsync(dst.fileno())
        if copied.hexdigest() != line.sha256:
            os.unlink(tmp)
            raise UsageError(f"{shard}: {line.path} changed while it was copied (someone is writing it); "
                             "not merging it")


def _merge_lines(ours: bytes, theirs: list[bytes]) -> bytes:
    """Our record byte for byte, then each shard line it does not hold yet. Lines are split at
    newlines only, as bytes: a record is evidence, never re-encoded (bytes that are not UTF-8
    stay as they are) nor broken at a U+2028 that JSON writes raw. A line holds a record we
    hold when they are the same JSON (_same_record): a change recovered after a killed run is
    written the same way by every copy, spaced by versions before a5addb86, compact since."""
    seen = set(map(_same_record, ours.split(b"\n")))
    lines = [ours + (b"\n" if ours and not ours.endswith(b"\n") else b"")]
    for text in theirs:
        for line in text.split(b"\n"):
            if line.strip() and (same := _same_record(line)) not in seen:
                seen.add(same)
                lines.append(line + b"\n")
    return b"".join(lines)


def _same_record(line: bytes) -> bytes:
    """What two lines holding one record share: the record as JSON_LINE writes it (keys sorted,
    compact); the bytes themselves for a line that is no JSON object."""
    try:
        record = json.loads(line.decode("utf-8"))  # as the readers take a line: UTF-8 or nothing
        return JSON_LINE(record) if isinstance(record, dict) else line
    except (ValueError, TypeError, RecursionError):  # a UnicodeError is a ValueError
        return line
