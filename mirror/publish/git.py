"""Publish a mirror to Git remotes as shard repositories under host limits; restore from them.

Sharding policy. Files are grouped by their top directory under data/ (a state, or the
index). Groups are packed, in name order, into shards of at most --max-repo-bytes; a
group is never split, and once a group is in a shard it stays there (the assignment is
kept in shards.json in every shard, so later publishes extend it and never move files).
`--shard-by state` gives each group a shard of its own instead.

Shard URLs. Shard 01 lives at the target URL itself; shard k at the same URL with `-k`
before `.git` (or a `{shard}` placeholder in the URL is replaced by 01, 02, ...).

Each shard repository is a BagIt bag of its part (bagit.txt, bag-info.txt, manifest,
provenance, tag manifest, data/...) and also carries full-manifest-sha256.txt, shards.json
and the whole provenance in full-provenance/ (files of FULL_CHUNK_LINES lines), so one clone
tells what every other should hold.
Shard 01 also carries the whole mirror's tag files byte for byte under full-bag/ (bag-info,
manifests, changes, failures, the signed root and its signature), so a restored mirror passes
`verify --pubkey`, and the site/ folder when `acta-mirror site` made one. The provenance is
not carried there a second time when the chunks of full-provenance/, one after the other, are
its bytes (restore joins them); only when they are not (blank lines, another writer's lines).

Nothing unchecked leaves: every payload file sent is read inside the mirror without following
a symlink and must hash to its manifest line; tag files must match the tag manifest. The
staging repositories live in the user's cache (publish.working_dir), never in the mirror, and
git runs with a configuration given on its environment: no hooks, our identity, our helper,
a bound on a host's silence (ACTA_MIRROR_GIT_SILENCE_SECONDS; git:// through mirror/gitrelay.py).

Commits are built from the mirror's files (no working tree, no index), only for new files,
split so that no push carries more than --max-push-bytes. Each tree is the previous commit's
with only the changed paths replaced, and only objects the staging repository lacks are
written, so a publish costs what changed, not the size of the mirror. A push that is
rejected as non-fast-forward is fetched, rebuilt on the new tip and pushed again, at most
PUSH_ATTEMPTS times. Credentials come from the environment (ACTA_MIRROR_GIT_USERNAME,
ACTA_MIRROR_GIT_PASSWORD) through a credential helper, or from git's own helpers; they are
never written into a URL, a config file, a message or a commit.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator
from urllib.parse import unquote, urlsplit, urlunsplit

import git
from git.objects.fun import tree_entries_from_data

from .. import __version__, gitrelay
from ..archive import (DISK_REFUSED, PUBLISHED_TAG_FILES, SITE_DIR, disk_error, published_files, read_checked,
                       write_bag_files)
from ..manifest import (BAG_INFO, BAGIT_TXT, PAYLOAD_MANIFEST, PROVENANCE, TAG_MANIFEST, append_receipt,
                        format_bag_info, format_manifest, parse_bag_info, parse_manifest_text)
from ..evidence import SIGNATURE, STATEMENT, tree_root
from ..merkle import merkle_root
from ..sign import PublicKey, SignatureError, load_public, parse_signature, verify_signature
from ..state import Record, is_shard_name, read_records
from ..models import ArchiveWriteError, NotAMirror, UsageError, printable
from ..verify import verify
from . import (NeedsFullMirror, Plan, PublishError, Receipt, env_secret, inside, redact, register, register_secrets, verified,
               working_dir)

DEFAULT_MAX_REPO_BYTES = 900 * 1000 * 1000  # a repository should stay well under 1 GB
DEFAULT_MAX_PUSH_BYTES = 1000 * 1000 * 1000  # GitHub refuses pushes over 2 GB
PARALLEL_SHARDS = 2  # shards published at once: one is built in Python while git pushes another
PUSH_ATTEMPTS = 6  # one push + 5 rebuilds on a new remote tip after a non-fast-forward
PUSH_BACKOFF = 0.5  # seconds, full jitter, doubling per attempt
BRANCH = "main"
# Images never shrink as deltas of one another, and looking for one took half of a first
# push's time (pack-objects, 8,800 small actas: 19 s, 9.4 s without; the pack 1.5% larger).
NO_DELTA = "*.jpg -delta\n*.jpeg -delta\n*.png -delta\n"
FULL_MANIFEST = "full-manifest-sha256.txt"
FULL_PROVENANCE = "full-provenance.jsonl"  # the same, whole, in shards published by earlier versions
# The whole mirror's provenance in files of FULL_CHUNK_LINES lines, in order (cat them to get it):
# the provenance only grows, so a publish writes its last file and the new ones, never the rest.
FULL_CHUNKS = "full-provenance"
FULL_CHUNK_LINES = 1000
MAX_RECORD_BLOB = 1 << 29  # a manifest or provenance file of ~3 million lines: a larger blob is a planted bomb
SHARDS_JSON = "shards.json"
# Files that make a clone check out other bytes than the ones committed (line ends, encodings,
# filters; submodules): never in a shard, removed when a host planted one.
CHECKOUT_FILES = (".gitattributes", ".gitmodules")
FULL_BAG = "full-bag"  # in shard 01: the whole mirror's tag files, byte for byte (provenance: see above)
# Git asks it with the host it is talking to on stdin: a password goes to the target's own host
# only, never to another one that host redirected git to.
CREDENTIAL_HELPER = ('!f() { test "$1" = get || exit 0; '
                     'test -n "$ACTA_MIRROR_GIT_PASSWORD" || exit 0; '
                     'while IFS= read -r line && test -n "$line"; do '
                     'case "$line" in host=*) host=$(printf %s "${line#host=}" | tr A-Z a-z);; esac; done; '
                     'test "$host" = "$ACTA_MIRROR_GIT_HOST" || exit 0; '
                     'echo "username=${ACTA_MIRROR_GIT_USERNAME:-acta-mirror}"; '
                     'echo "password=${ACTA_MIRROR_GIT_PASSWORD}"; }; f')
AUTHOR = ("acta-mirror", "acta-mirror@localhost")
# Every git command runs with these settings on its environment, above any repository's own
# config: no hook runs (not even one in a repository that came from elsewhere), our identity,
# our credential helper, a bound on silence (http.lowSpeedTime, and see GitPublisher._bounds),
# no automatic gc (a background repack of a scratch repository after a large publish took 40 s
# of CPU from the publishes that followed).
# Git waits for a silent server forever, over every transport. GitPublisher._bounds bounds it at
# ACTA_MIRROR_GIT_SILENCE_SECONDS (default NO_DATA_SECONDS): over HTTP a transfer under 1 byte/s
# for that long ends (git's own GIT_HTTP_LOW_SPEED_TIME overrides it); over git:// the traffic
# goes through mirror/gitrelay.py, which gives up when no byte moved either way for that long;
# over SSH, ssh gives up on a server that answers neither the connection nor its keepalives. A
# server busy with a large push still sends a keepalive every 5 s (git's receive.keepAlive and
# uploadpack.keepAlive), so it is not cut. A proxy or ssh command of the user's own is left alone.
NO_DATA_SECONDS = gitrelay.DEFAULT_SECONDS
SILENCE_VARIABLE = gitrelay.VARIABLE  # ACTA_MIRROR_GIT_SILENCE_SECONDS
MAX_SILENCE_SECONDS = gitrelay.MAX_SECONDS
GIT_SETTINGS = {"core.hooksPath": "/dev/null", "core.fsmonitor": "false", "user.name": AUTHOR[0],
                "user.email": AUTHOR[1], "gc.auto": "0", "credential.helper": CREDENTIAL_HELPER,
                "http.lowSpeedLimit": "1", "http.lowSpeedTime": str(NO_DATA_SECONDS)}
# A local target's receive-pack runs here, and git hands it none of our config: tell it itself
# that no command that repository's config names runs (it may have come from anyone): no hook,
# no alternateRefsCommand (run to list an alternate's refs), and no checkout of a pushed branch
# into a work tree (updateInstead runs the smudge filters its config and info/attributes name).
LOCAL_RECEIVE_PACK = ("git -c core.hooksPath=/dev/null -c core.alternateRefsCommand=true "
                      "-c receive.denyCurrentBranch=refuse receive-pack")
logging.getLogger("git").addHandler(logging.NullHandler())
logging.getLogger("git").propagate = False  # GitPython's own error lines would bypass redaction


class RemoteChanged(PublishError):
    """A remote changed behind publish's back: files it held are gone (deleted, history rewritten),
    or files were planted in it that change what a clone checks out."""

    advice = ("find out who changed that repository (its host's audit log, its other clones), and keep "
              "the copies that still hold those files")


def group_of(path: str) -> str:
    parts = path.split("/")
    return "/".join(parts[:2]) if len(parts) > 2 else "data"


def _is_local(url: str) -> bool:
    """A repository on this machine (file:// or a path): git runs its receive-pack as our child."""
    return url.startswith("file://") or "://" not in url and not re.match(r"^[\w.-]+@?[\w.-]*:", url)


def shard_url(target_url: str, shard: str) -> str:
    if "{shard}" in target_url:
        return target_url.replace("{shard}", shard)
    if shard == "01":
        return target_url
    if target_url.endswith(".git"):
        return f"{target_url[:-4]}-{shard}.git"
    return f"{target_url.rstrip('/')}-{shard}"


def assign_shards(groups: dict[str, int], previous: dict[str, str], policy: str, budget: int) -> dict[str, str]:
    """group -> shard name; groups already placed keep their shard."""
    assignment = dict(previous)
    if policy == "state":
        names = sorted(set(assignment.values()) | {"00"})
        used = {int(n) for n in names}
        for g in sorted(groups):
            if g not in assignment:
                nxt = max(used) + 1
                used.add(nxt)
                assignment[g] = f"{nxt:02d}"
        return assignment
    sizes: dict[str, int] = {}
    for g, shard in assignment.items():
        sizes[shard] = sizes.get(shard, 0) + groups.get(g, 0)
    current = max(sizes, default="01")
    sizes.setdefault(current, 0)
    for g in sorted(groups):
        if g in assignment:
            continue
        if sizes[current] and sizes[current] + groups[g] > budget:
            current = f"{int(current) + 1:02d}"
            sizes[current] = 0
        assignment[g] = current
        sizes[current] += groups[g]
    if not all(is_shard_name(name) for name in assignment.values()):
        raise PublishError("more than 99 shards: raise --max-repo-bytes")
    return assignment


def read_layout(text: str | None, where: str) -> dict:
    """shards.json from a remote: {"shards": [...], "groups": {group: shard}}, shard names of two
    digits; PublishError naming where it came from otherwise. Empty for a remote without one."""
    if text is None:
        return {"shards": [], "groups": {}}
    try:
        layout = json.loads(text)
        shards, groups = layout.get("shards", []), layout.get("groups", {})
        ok = (isinstance(shards, list) and isinstance(groups, dict)
              and all(is_shard_name(n) for n in [*shards, *groups.values()])
              and all(isinstance(g, str) for g in groups))
    except (ValueError, AttributeError, TypeError, RecursionError):
        ok = False
    if not ok:
        raise PublishError(f"{where}: {SHARDS_JSON} is damaged (shard names must be two digits)")
    return {"shards": shards, "groups": groups}


@register
class GitPublisher:
    schemes = ("git+file", "git+https", "git+http", "git+ssh", "git")
    credentials = "ACTA_MIRROR_GIT_USERNAME, ACTA_MIRROR_GIT_PASSWORD"  # named when a publish fails

    def __init__(self, target: str, *, max_repo_bytes: int = DEFAULT_MAX_REPO_BYTES,
                 max_push_bytes: int = DEFAULT_MAX_PUSH_BYTES, shard_by: str = "size", progress=None, **_):
        if shard_by not in ("size", "state"):
            raise UsageError(f"--shard-by must be size or state, not {shard_by!r}")
        if max_repo_bytes < 1 or max_push_bytes < 1:
            raise UsageError("--max-repo-bytes and --max-push-bytes must be positive")
        self.target = target
        self.max_repo_bytes = max_repo_bytes
        self.max_push_bytes = max_push_bytes
        self.shard_by = shard_by
        self.progress = progress or (lambda *a: None)
        self.url, self._secret = _git_url(target)
        register_secrets(target)  # a ?access_token=… of its URL is never printed
        self.shown = redact(target, self._secret)
        self.silence = silence_seconds()  # a bad value is refused before anything is sent
        self._transport: tuple[dict[str, str], dict[str, str]] | None = None  # see _bounds
        self._info: dict[str, str] = {}  # the mirror's bag-info, read (checked) by publish()
        self._discard = False  # remove each shard's staging repository once pushed (publish_delta)
        self._whole_made: tuple[list[Record], _Whole] | None = None  # see _whole
        self._foreign_seen: dict[str, bool] = {}  # see _foreign
        self._rooted: tuple[list[Record], str] = ([], "")  # the mirror's lines and their Merkle root
        self._seen: dict[str, str | None] = {}  # url -> its tip when this staging repository last saw it
        self._held: set[str] | None = None  # the payload files publish_delta has in hand (None: all of them)
        self._extras: dict[str, str] = {}  # the mirror's files besides the payload, sha256 by name (_publish)

    # -- publish -------------------------------------------------------------------
    def publish(self, mirror: str | os.PathLike) -> Receipt:
        mirror = Path(os.path.abspath(mirror))  # git and the cache key need no relative path
        problem, state = verified(mirror)
        if problem:
            raise PublishError(f"{mirror} does not verify ({problem}); not publishing it to {self.shown}")
        try:
            files = published_files(mirror, state)  # refuses symlinks, specials, tag files that do not match
            del state  # its records (tens of MB) are not held through the publish
            entries = read_records(mirror / PROVENANCE)  # the lines themselves, as the chunks carry them
        except (OSError, NotAMirror) as exc:
            raise PublishError(f"{mirror}: {getattr(exc, 'strerror', None) or exc}; "
                               f"not publishing it to {self.shown}") from None
        extras = {rel: sha for rel, _n, sha in files if not rel.startswith("data/")}
        self._held = None  # the whole mirror is in hand
        return self._publish(mirror, entries, extras)

    def publish_delta(self, delta) -> Receipt:
        """Publish a scheduled run's jobstate.Delta: the shard trees are fetched without blobs
        and each new commit is built on the previous tree, so only the new files (all of
        them in delta.bag, checked by jobstate.take_delta) and the fresh tag files are sent."""
        bag = Path(os.path.abspath(delta.bag))
        self._discard = True
        self._held = {e.path for e in delta.added}
        try:
            return self._publish(bag, list(delta.records), dict(delta.tags))
        finally:  # the staging repository holds this run's blobs only: nothing to keep
            shutil.rmtree(self._staging(bag), ignore_errors=True)

    def _staging(self, mirror: Path, create: bool = True) -> Path:
        """This mirror's staging repositories for this target, in the user's working state: never
        inside the mirror (XDG_CACHE_HOME set to a folder in it put them in data/, and the next
        verify found a thousand files no manifest lists)."""
        path = working_dir("git", os.path.realpath(mirror), self.shown, create=False)
        if inside(path, mirror):
            raise UsageError(f"{path}: the working state (XDG_CACHE_HOME) is inside the mirror {mirror}; "
                             "set XDG_CACHE_HOME to a folder outside it")
        return working_dir("git", os.path.realpath(mirror), self.shown, create=create)

    def _publish(self, mirror: Path, entries: list[Record], extras: dict[str, str]) -> Receipt:
        # bag-info only as the tag manifest vouches for it: never through a symlink
        self._info = parse_bag_info(self._checked(mirror, BAG_INFO, extras[BAG_INFO]).decode("utf-8", "replace")) \
            if BAG_INFO in extras else {}
        receipt = Receipt(target=self.shown, kind="git", root=_root(entries))
        self._extras = extras
        self._whole_made = None  # made again from this publish's lines (see _whole)
        self._seen = {}
        self._rooted = (entries, receipt.root)
        staging = self._staging(mirror)
        lock = os.open(staging / "lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one publisher per staging area; others wait
            self._publish_locked(mirror, staging, entries, extras, receipt)
        except GIT_ERRORS as exc:  # a remote's objects that git itself fails on (a tree too deep for it)
            if refused := _disk_refusal(exc):  # or this machine's disk: no fault of the remote's
                raise ArchiveWriteError(f"the disk refused git's write in {staging} ({refused}) while publishing to "
                                        f"{self.shown}; free space there (or set XDG_CACHE_HOME), then re-run: what "
                                        "was pushed stays") from None
            raise PublishError(redact(f"{self.shown}: {_git_failure(exc)}", self._secret)) from None
        except OSError as exc:
            if exc.errno in DISK_REFUSED:
                raise disk_error(exc, f"staging the publish to {self.shown} in {staging}") from None
            raise
        finally:
            os.close(lock)
        try:
            append_receipt(mirror, {"kind": "git", "target": self.shown, "manifest_root": receipt.root,
                                    "published_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                    "changed": receipt.changed, "details": receipt.details})
        except OSError as exc:
            raise disk_error(exc, f"recording the publish in {mirror}") from None
        return receipt

    def plan(self, mirror: str | os.PathLike) -> Plan:
        """The dry run: per shard, the files and bytes the remote lacks. It reads the remote's
        tip (from the staging repository when it holds it, else into a temporary one, fetching
        no blob it can avoid) and writes nothing in the mirror or the remote."""
        mirror = Path(os.path.abspath(mirror))
        plan = Plan(target=self.shown)
        problem, _state = verified(mirror)
        if problem:
            plan.details.append(f"{self.shown}: would refuse: {mirror} does not verify ({problem})")
            return plan
        try:
            entries = read_records(mirror / PROVENANCE)
        except NotAMirror as exc:
            plan.details.append(f"{self.shown}: would refuse: {exc}")
            return plan
        staging = self._staging(mirror, create=False)  # ours, never the mirror's
        with tempfile.TemporaryDirectory(prefix="acta-mirror-plan-") as scratch:
            def remote(shard: str) -> tuple[git.Repo | None, str | None]:
                url = shard_url(self.url, shard)
                parts = urlsplit(url)
                if parts.scheme == "file" and not Path(parts.path).exists():
                    return None, None  # publish would create it
                cached = self._repo(staging, shard) if (staging / f"{shard}.git").exists() else None
                fresh = self._repo(Path(scratch), shard)
                try:
                    heads = fresh.git.ls_remote(url, f"refs/heads/{BRANCH}")
                except git.GitCommandError as exc:
                    raise self._fail(f"cannot reach {redact(url, self._secret)}", exc) from None
                if not heads.strip():
                    return None, None
                tip = heads.split()[0]
                if cached is not None and _has_commit(cached, tip):
                    return cached, tip
                try:
                    fresh.git.remote("add", "target", url)
                    fresh.git.fetch("--depth=1", "--filter=blob:none", "target", f"refs/heads/{BRANCH}")
                except git.GitCommandError as exc:
                    raise self._fail("fetch failed", exc) from None
                if not _has_commit(fresh, tip):
                    raise self._no_commit(url, tip)
                return fresh, tip

            repo, tip = remote("01")
            previous = read_layout(_read_blob(repo, tip, SHARDS_JSON), self.shown)["groups"] if tip else {}
            groups: dict[str, int] = {}
            for e in entries:
                groups[group_of(e.path)] = groups.get(group_of(e.path), 0) + e.size
            assignment = assign_shards(groups, previous, self.shard_by, self.max_repo_bytes)
            for shard in sorted(set(assignment.values())):
                if shard != "01":
                    repo, tip = remote(shard)
                shown = redact(shard_url(self.shown, shard), self._secret)
                have = _manifest_in(_read_blob(repo, tip, PAYLOAD_MANIFEST), f"{shown}: {PAYLOAD_MANIFEST}")
                mine = [e for e in entries if assignment[group_of(e.path)] == shard]
                # Files its manifest lists that its tree no longer holds: publish sends them again
                # (and refuses when this mirror lacks them). Names only: no blob is fetched here.
                gone = self._gone(repo, shard_url(self.url, shard), tip, _tree_files(repo, tip) if tip else {},
                                  have, mine)[0]
                have = {p: sha for p, sha in have.items() if p not in gone}
                lacked = sorted(set(gone) - {e.path for e in mine})
                clash = [e.path for e in mine if e.path in have and have[e.path] != e.sha256]
                new = [e for e in mine if e.path not in have]
                size = sum(e.size for e in new)
                plan.files += len(new)
                plan.bytes += size
                line = (f"{shown}: shard {shard}: {len(new)} of {len(mine)} files to send, {size:,} bytes, "
                        f"in {len(_batches(new, self.max_push_bytes))} push(es)" if new else
                        f"{shown}: shard {shard}: nothing to send ({len(mine)} files there already)")
                if gone:
                    line += (f"; {len(gone)} file(s) it held are gone from it, e.g. {gone[0]}: " +
                             (f"would refuse: this mirror lacks {len(lacked)} of them, e.g. {lacked[0]}" if lacked
                              else "counted above, to be sent again"))
                if clash:
                    line += f"; would refuse: {len(clash)} file(s) there differ from this mirror's, e.g. {clash[0]}"
                plan.details.append(line)
        return plan

    def _publish_locked(self, mirror: Path, staging: Path, entries: list[Record], extras: dict[str, str],
                        receipt: Receipt) -> Receipt:
        for stale in staging.rglob("*.lock"):  # left by a publisher that was killed
            if stale.name != "lock":
                stale.unlink()
        first = self._repo(staging, "01")
        tip = self._fetch(first, shard_url(self.url, "01"))
        previous = read_layout(_read_blob(first, tip, SHARDS_JSON), self.shown)["groups"] if tip else {}
        of = [group_of(e.path) for e in entries]
        groups: dict[str, int] = {}
        for e, group in zip(entries, of):
            groups[group] = groups.get(group, 0) + e.size
        assignment = assign_shards(groups, previous, self.shard_by, self.max_repo_bytes)
        shards = sorted(set(assignment.values()))
        mine: dict[str, list[Record]] = {shard: [] for shard in shards}
        for e, group in zip(entries, of):
            mine[assignment[group]].append(e)
        whole = self._whole(entries)  # what every shard carries, made before they share it
        blobs = {}  # shard 01's extra files, stored once: the full bag's tag files and the site
        for rel, sha in extras.items():
            if rel == PROVENANCE and whole.joined == sha:
                continue  # full-provenance/ holds these very bytes: not carried twice (see FULL_BAG)
            name = rel if rel.startswith(SITE_DIR + "/") else f"{FULL_BAG}/{rel}"
            data = self._checked(mirror, rel, sha)
            blobs[name] = _store(first, data, sha=_git_id(data))

        def publish_shard(shard: str) -> tuple[str, bool]:
            done = self._publish_shard(mirror, staging, shard, mine[shard], entries, assignment, shards,
                                       blobs if shard == "01" else {})
            # Pushed: its blobs need no disk any more (shard 01's extras too: only its own publish
            # reads them). Removed here, before this thread builds the next shard, so a run holds
            # its files and the shards in hand, not a second copy of everything.
            if self._discard:
                shutil.rmtree(staging / f"{shard}.git", ignore_errors=True)
            return done

        # Shards are separate repositories: while one waits on git (a push), another is built.
        with ThreadPoolExecutor(max_workers=PARALLEL_SHARDS) as pool:
            runs = [pool.submit(publish_shard, shard) for shard in shards]
        for run in runs:
            line, pushed = run.result()  # the first shard that failed, in shard order, raises here
            receipt.details.append(line)
            receipt.changed |= pushed
        return receipt

    def _checked(self, mirror: Path, rel: str, sha256: str, size: int | None = None) -> bytes:
        try:
            return read_checked(mirror, rel, sha256, size)
        except (OSError, NotAMirror) as exc:
            raise PublishError(f"{mirror}: {getattr(exc, 'strerror', None) or exc}; "
                               f"not publishing it to {self.shown}") from None

    def _env(self) -> dict[str, str]:
        settings, env = self._bounds()
        settings = {**GIT_SETTINGS, **settings}
        env = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true", "SSH_ASKPASS": "true",
               "GIT_CONFIG_COUNT": str(len(settings)), **env}
        for i, (key, value) in enumerate(settings.items()):
            env[f"GIT_CONFIG_KEY_{i}"], env[f"GIT_CONFIG_VALUE_{i}"] = key, value
        env["ACTA_MIRROR_GIT_HOST"] = urlsplit(self.url).netloc.rpartition("@")[2].lower()
        if self._secret:
            env["ACTA_MIRROR_GIT_PASSWORD"] = self._secret
            env["ACTA_MIRROR_GIT_USERNAME"] = unquote(urlsplit(self.target).username or "") or "acta-mirror"
        else:  # the environment's token, if it is for this host (ACTA_MIRROR_GIT_PASSWORD_FOR)
            parts = urlsplit(self.url)
            env["ACTA_MIRROR_GIT_PASSWORD"] = env_secret("ACTA_MIRROR_GIT_PASSWORD", parts.hostname or "", parts.port)
        return env

    def _bounds(self) -> tuple[dict[str, str], dict[str, str]]:
        """The git settings and environment that end a transfer from a silent host after
        self.silence seconds: over HTTP(S) http.lowSpeedTime; over git:// our relay as git's
        proxy; over SSH ssh's own timeouts. Made once (the relay's script is written then), and
        never over the user's own proxy (GIT_PROXY_COMMAND, core.gitProxy) or ssh command
        (GIT_SSH_COMMAND, GIT_SSH, core.sshCommand; or a variant of ssh named: GIT_SSH_VARIANT,
        ssh.variant, which may take other options than OpenSSH's)."""
        if self._transport is None:
            settings = {"http.lowSpeedTime": str(self.silence)}
            env = {SILENCE_VARIABLE: str(self.silence)}
            scheme = urlsplit(self.url).scheme
            if scheme == "git" and "GIT_PROXY_COMMAND" not in os.environ and "core.gitproxy" not in _users_git_config():
                settings["core.gitProxy"] = _relay_command()
            elif scheme == "ssh" and not {"GIT_SSH_COMMAND", "GIT_SSH", "GIT_SSH_VARIANT"} & set(os.environ) \
                    and not {"core.sshcommand", "ssh.variant"} & _users_git_config():
                env["GIT_SSH_COMMAND"] = ssh_command(self.silence)
            self._transport = settings, env
        return self._transport

    def secret_uses(self) -> list[tuple[str, str]]:
        """Where the environment's token would go: this target's host, over HTTP(S) without a
        password of its own (publishers_for checks that it is one host)."""
        parts = urlsplit(self.url)
        if self._secret or parts.scheme not in ("http", "https"):
            return []
        return [("ACTA_MIRROR_GIT_PASSWORD", parts.hostname or "")]

    def _repo(self, staging: Path, shard: str) -> git.Repo:
        path = staging / f"{shard}.git"
        try:
            if path.exists():
                repo = git.Repo(path)
            else:
                repo = git.Repo.init(path, bare=True, initial_branch=BRANCH)
            attributes = path / "info" / "attributes"
            if not attributes.exists():
                attributes.parent.mkdir(exist_ok=True)
                attributes.write_text(NO_DELTA)
        except (git.GitError, OSError) as exc:
            if _disk_refusal(exc) or getattr(exc, "errno", None) in DISK_REFUSED:
                raise  # this machine's disk: said as such by _publish
            raise PublishError(f"{self.shown}: the staging repository {path} is unusable ({exc}); remove it") from None
        repo.git.update_environment(**self._env())
        return repo

    def _fail(self, what: str, exc: Exception) -> PublishError:
        detail = str(getattr(exc, "stderr", "") or exc)
        lines = [ln.strip().strip("'\"").strip() for ln in detail.splitlines()]
        lines = [ln.removeprefix("stderr: ").strip("'\" ") for ln in lines if ln]
        told = [ln for ln in lines if ln.startswith(("fatal:", "error:", "remote:", "ERROR"))]
        reason = (told or [ln for ln in lines if ln] or [type(exc).__name__])[0]
        if reason.startswith("fatal: Could not read from remote repository") and urlsplit(self.url).scheme == "ssh":
            # ssh said why, before git's line
            ssh = [ln for ln in lines[:lines.index(reason)] if not ln.lower().startswith(("fatal:", "warning:"))]
            if ssh:
                reason = f"ssh: {ssh[0]}"
                if self._transport and "GIT_SSH_COMMAND" in self._transport[1] and \
                        re.search(r"timed out|not responding", reason):
                    reason += f" (no answer for {self.silence} s; {SILENCE_VARIABLE} sets the seconds)"
        # the remote's own words: escaped, so that they cannot move the cursor or draw a line
        return PublishError(redact(f"{self.shown}: {what}: {printable(reason)}", self._secret))

    def _ensure_remote(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme == "file" and not Path(parts.path).exists():
            Path(parts.path).parent.mkdir(parents=True, exist_ok=True)
            made = git.Repo.init(parts.path, bare=True, initial_branch=BRANCH)
            with made.config_writer() as config:  # let the next publish fetch it without blobs
                config.set_value("uploadpack", "allowFilter", "true")

    def _fetch(self, repo: git.Repo, url: str) -> str | None:
        """The remote's tip of main, fetched into the staging repo without blobs; None when it
        has none yet. The remote is a promisor: the few blobs read later (a shard's manifest,
        shards.json) are fetched when read, the payload never. A server that refuses filters
        sends everything, as before."""
        self._ensure_remote(url)
        if url not in self._seen:  # before this publish fetches: where the remote was when last seen
            self._seen[url] = _commit_of(repo, f"refs/remotes/target/{BRANCH}")
        try:
            heads = repo.git.ls_remote(url, f"refs/heads/{BRANCH}")
        except git.GitCommandError as exc:
            raise self._fail(f"cannot reach {redact(url, self._secret)}", exc) from None
        if not heads.strip():
            return None
        try:
            self._remote(repo, url)
            repo.git.fetch("--filter=blob:none", "target", f"+refs/heads/{BRANCH}:refs/remotes/target/{BRANCH}")
        except git.GitCommandError as exc:
            raise self._fail("fetch failed", exc) from None
        tip = heads.split()[0]
        if not _has_commit(repo, tip):  # a host's ref files may name a tree or a blob
            raise self._no_commit(url, tip)
        return tip

    def _no_commit(self, url: str, tip: str) -> PublishError:
        return PublishError(f"{self.shown}: {BRANCH} of {redact(url, self._secret)} points at no commit ({tip[:12]})")

    @staticmethod
    def _remote(repo: git.Repo, url: str) -> git.Remote:
        try:
            remote = repo.remote("target")
            if remote.url != url:
                remote.set_url(url)
        except ValueError:
            remote = repo.create_remote("target", url)
        return remote

    def _publish_shard(self, mirror: Path, staging: Path, shard: str, mine: list[Record], everything: list[Record],
                       assignment: dict, shards: list[str], blobs: dict[str, str]) -> tuple[str, bool]:
        """(the shard's line, whether anything was pushed)."""
        url = shard_url(self.url, shard)
        shown = redact(shard_url(self.shown, shard), self._secret)
        repo = self._repo(staging, shard)
        checked: dict[str, str] = {}  # path -> blob of its checked bytes, kept across attempts
        mine_paths = {e.path for e in mine}
        for attempt in range(1, PUSH_ATTEMPTS + 1):
            tip = self._fetch(repo, url)
            have = _manifest_in(_read_blob(repo, tip, PAYLOAD_MANIFEST), f"{shown}: {PAYLOAD_MANIFEST}")
            listing = _tree_files(repo, tip) if tip else {}
            gone, rewritten = self._gone(repo, url, tip, listing, have, mine)
            problem = f"{rewritten}; every file it held is still there" if rewritten else ""
            planted = sorted(p for p in listing if p.rpartition("/")[2] in CHECKOUT_FILES)
            if gone:
                have = {p: sha for p, sha in have.items() if p not in gone}  # sent again, as new files
                problem = f"{len(gone)} file(s) it held are gone from it or hold other bytes, e.g. {gone[0]}" + (
                    f"; {rewritten}" if rewritten else "")
                cannot = [p for p in gone if p not in mine_paths or self._held is not None and p not in self._held]
                if cannot and not tip:  # no branch at all: a new (or emptied) repository, not a changed one
                    raise NeedsFullMirror(f"{shown}: shard {shard}: it holds none of the {len(cannot)} file(s) this "
                                          f"run builds on (a new or emptied repository), e.g. {cannot[0]}")
                if cannot:
                    raise RemoteChanged(
                        f"{shown}: shard {shard}: {problem}; not publishing onto it: this run cannot send "
                        f"{len(cannot)} of them again, e.g. {cannot[0]} (a scheduled run holds only its new files): "
                        "publish them from a full mirror (acta-mirror restore --from another target, then publish)")
            if planted:
                problem = "; ".join([*([problem] if problem else []), f"it carried {len(planted)} file(s) that change "
                                     f"what a clone checks out, e.g. {planted[0]}: removed"])
            for e in mine:
                if e.path in have and have[e.path] != e.sha256:
                    raise PublishError(f"{shown}: {e.path} there differs from this mirror's; refusing to overwrite evidence")
            # Lines of files another writer put there; read only when there are any.
            remote_part = _lines_in(repo, tip, PROVENANCE) if set(have) - mine_paths else []
            remote_full = _full_lines(repo, tip) if self._foreign(repo, tip, everything) else []
            new = [e for e in mine if e.path not in have]
            for e in new:  # every new file is checked (and stored) before the first push
                if e.path not in checked:
                    checked[e.path] = _store(repo, self._checked(mirror, e.path, e.sha256, e.size))
            whole = self._whole(_union(remote_full, everything))
            own = self._extras.get(PROVENANCE)  # the sha256 of this mirror's provenance.jsonl
            if blobs and own and whole.joined != own and f"{FULL_BAG}/{PROVENANCE}" not in blobs:
                # another writer's lines in the chunks: they are not this mirror's file, which goes whole
                data = self._checked(mirror, PROVENANCE, own)
                blobs = {**blobs, f"{FULL_BAG}/{PROVENANCE}": _store(repo, data, sha=_git_id(data))}
            part = _union(remote_part, mine)
            batches = _batches(new, self.max_push_bytes) or [[]]
            parent = tip
            pushed = 0
            rejected = False
            done_paths = {e.path for e in part if e.path in have}
            for batch in batches:
                done_paths.update(e.path for e in batch)
                done = [e for e in part if e.path in done_paths]  # in the mirror's order, whatever came first
                self.progress(self.shown, shard, len(done), len(part))
                base = _commit_tree(repo, parent) if parent else None
                part_root = _root(done)
                tree = self._tree(repo, base, batch, checked, done, part_root, whole, blobs, assignment, shard, shards,
                                  planted)
                if tree == base:
                    continue
                message = (f"acta-mirror {__version__}: shard {shard}: +{len(batch)} files "
                           f"({len(done)} in shard, {whole.count} in mirror)\n\n"
                           f"Manifest root (RFC 9162, full mirror): {whole.root}\n"
                           f"Shard manifest root: {part_root}\n")
                commit = repo.git.commit_tree(tree, *(["-p", parent] if parent else []), "-m", message)
                if not self._push(repo, url, commit):
                    rejected = True
                    break
                parent = commit
                pushed += 1
            if not rejected:
                if pushed:
                    self._kept(repo, url, parent, f"{shown}: shard {shard}")
                if problem:  # said as a failure, once: the next publish builds on what is there now
                    raise RemoteChanged(f"{shown}: shard {shard}: {problem}" + (
                        f"; sent again, {len(done)} there now, head {parent[:12]}" if gone else ""))
                if not pushed:
                    return f"{shown}: shard {shard} unchanged ({len(part)} files there)", False
                return (f"{shown}: shard {shard}: +{len(new)} files, {len(done)} there now, in {pushed} push(es), "
                        f"head {parent[:12]}"), True
            time.sleep(random.uniform(0, PUSH_BACKOFF * 2 ** attempt))
        raise PublishError(f"{shown}: gave up after {PUSH_ATTEMPTS} pushes rejected as non-fast-forward")

    def _kept(self, repo: git.Repo, url: str, commit: str, where: str) -> None:
        """The remote's branch holds the commit just pushed (or a later one built on it): a host
        may answer 'ok' to a push and not keep it."""
        try:
            heads = repo.git.ls_remote(url, f"refs/heads/{BRANCH}").split()
        except git.GitCommandError as exc:
            raise self._fail("checking the push", exc) from None
        tip = heads[0] if heads else ""
        if tip == commit:
            return
        if tip:  # another writer's, on ours? fetch it and see
            try:
                repo.git.fetch("--filter=blob:none", "target", f"+refs/heads/{BRANCH}:refs/remotes/target/{BRANCH}")
            except git.GitCommandError as exc:
                raise self._fail("checking the push", exc) from None
            if _is_ancestor(repo, commit, tip):
                return
        raise PublishError(f"{where}: the remote answered that it took {commit[:12]}, but its {BRANCH} is at "
                           f"{tip[:12] or 'nothing'}: it did not keep it")

    def _gone(self, repo: git.Repo, url: str, tip: str | None, listing: dict[str, tuple[str, str]],
              have: dict[str, str], mine: list[Record]) -> tuple[list[str], str]:
        """Payload files the remote held and no longer holds as files, or holds with other bytes
        than it held (sorted), and what says that its history was rewritten ('' when it was not,
        as far as this staging repository saw). It held what its own manifest lists, what its
        tip held when this staging repository last saw it, and, in a scheduled run, what the
        job's state says was published before this run. A path's bytes never change (a new
        version is a new path): other bytes there are not another writer's."""
        present = {p for p, (mode, _sha) in listing.items() if mode in ("100644", "100755")}
        held = set(have)
        if self._held is not None:
            held |= {e.path for e in mine if e.path not in self._held}
        seen, rewritten = self._seen.get(url), ""
        if seen and seen != tip:
            before = {p: sha for p, (_mode, sha) in _tree_files(repo, seen).items() if p.startswith("data/")}
            held |= set(before)
            present -= {p for p in before if p in present and listing[p][1] != before[p]}
            if not tip or not _is_ancestor(repo, seen, tip):
                rewritten = (f"its history was rewritten since the last publish from here "
                             f"({seen[:12]} is no longer in it{'' if tip else ', nor is its branch'})")
        return sorted(held - present), rewritten

    def _foreign(self, repo: git.Repo, tip: str | None, everything: list[Record]) -> bool:
        """Does the remote's full manifest list files this mirror lacks (another writer's)?
        Shards usually carry the same full manifest: each one is read once."""
        blob = _read_blob(repo, tip, FULL_MANIFEST, ref=True) if tip else None
        if blob is None:
            return False
        if blob not in self._foreign_seen:
            paths = {e.path for e in everything}
            listed = _manifest_in(_blob(repo, blob).decode("utf-8", "replace"), f"{self.shown}: {FULL_MANIFEST}")
            self._foreign_seen[blob] = any(p not in paths for p in listed)
        return self._foreign_seen[blob]

    def _whole(self, full: list[Record]) -> _Whole:
        """The whole mirror's files, made once per publish: every shard carries the same."""
        made = self._whole_made
        if made is not None and made[0] is full:
            return made[1]
        files = {FULL_MANIFEST: format_manifest((e.path, e.sha256) for e in full)}
        for i in range(0, len(full), FULL_CHUNK_LINES):
            name = f"{FULL_CHUNKS}/{i // FULL_CHUNK_LINES:06d}.jsonl"
            files[name] = "".join(e.text for e in full[i:i + FULL_CHUNK_LINES]).encode()
        root = self._rooted[1] if self._rooted[0] is full else _root(full)
        joined = hashlib.sha256()
        for name, data in files.items():
            if name != FULL_MANIFEST:
                joined.update(data)  # in name order: made so
        whole = _Whole(root, len(full), {n: (_git_id(d), d) for n, d in files.items()},
                       {n: hashlib.sha256(d).hexdigest() for n, d in files.items()}, joined.hexdigest())
        self._whole_made = (full, whole)
        return whole

    def _tree(self, repo, base, batch, checked, part, part_root, whole, blobs, assignment, shard, shards,
              planted) -> str:
        """The shard's tree: the parent's, without the planted paths, plus this batch's files (blobs
        of checked bytes), fresh tag files and shard 01's extra files. Only what changed is stored."""
        part_info = {k: v for k, v in self._info.items() if k != "Payload-Oxum"}
        part_info.update({
            "Payload-Oxum": f"{sum(e.size for e in part)}.{len(part)}",
            "Acta-Mirror-Shard": f"{shard} of {len(shards)}",
            "Acta-Mirror-Full-Root": whole.root,
            # the shard is a bag of its own: its root is its own manifest's, so a clone verifies
            "Acta-Mirror-Merkle-Root": part_root,
            "Acta-Mirror-Merkle-Size": str(len(part)),
        })
        tags = {
            "bagit.txt": BAGIT_TXT.encode(),
            BAG_INFO: format_bag_info(part_info),
            PAYLOAD_MANIFEST: format_manifest((e.path, e.sha256) for e in part),
            PROVENANCE: "".join(e.text for e in part).encode(),
            SHARDS_JSON: json.dumps({"policy": self.shard_by, "max_repo_bytes": self.max_repo_bytes,
                                     "shards": shards, "groups": assignment}, indent=1, sort_keys=True).encode(),
        }
        digests = {**{n: hashlib.sha256(d).hexdigest() for n, d in tags.items()}, **whole.sha256}
        tags[TAG_MANIFEST] = format_manifest(digests.items())
        files: dict[str, tuple[str, bytes | None] | None] = {n: (_git_id(d), d) for n, d in tags.items()}
        files.update(whole.files)
        files[FULL_PROVENANCE] = None  # earlier versions carried it whole; the chunks replace it
        files.update((path, None) for path in planted)
        files.update((e.path, (checked[e.path], None)) for e in batch)
        files.update((name, (sha, None)) for name, sha in blobs.items())
        # the site and the full bag's tag files are replaced whole, as the chunks are
        fresh = {FULL_CHUNKS, SITE_DIR, FULL_BAG} if blobs else {FULL_CHUNKS}
        try:
            return _write_tree(repo, base, files, fresh) or _store(repo, b"", b"tree")
        except ValueError as exc:  # a tree on the remote that GitPython refuses to read
            raise PublishError(f"{self.shown}: the remote's tree is damaged ({exc})") from None

    def _push(self, repo: git.Repo, url: str, commit: str) -> bool:
        """True when pushed; False when rejected as non-fast-forward; raises on anything else."""
        remote = self._remote(repo, url)
        repo.git.update_ref(f"refs/heads/{BRANCH}", commit)  # GitPython reports on named refs only
        try:
            local = {"receive_pack": LOCAL_RECEIVE_PACK,
                     "allow_unsafe_options": True} if _is_local(url) else {}  # our own fixed command
            results = remote.push(f"refs/heads/{BRANCH}:refs/heads/{BRANCH}", **local)
        except git.GitCommandError as exc:
            text = str(getattr(exc, "stderr", "") or exc)
            if "non-fast-forward" in text or "fetch first" in text or "rejected" in text and "stale" in text:
                return False
            raise self._fail("push failed", exc) from None
        for info in results:
            if info.flags & git.PushInfo.REJECTED:
                return False
            if info.flags & git.PushInfo.REMOTE_REJECTED and ("failed to update ref" in info.summary
                                                              or "lock" in info.summary):
                return False  # another writer held the ref at that moment: fetch, rebuild, retry
            if info.flags & (git.PushInfo.ERROR | git.PushInfo.REMOTE_REJECTED | git.PushInfo.REMOTE_FAILURE):
                raise PublishError(redact(f"{self.shown}: push refused: {printable(info.summary.strip())}",
                                          self._secret))
        if not results:
            raise PublishError(f"{self.shown}: push reported nothing; the remote may have refused it")
        return True


# -- restore -----------------------------------------------------------------------------
def restore(targets: list[str], out: str | os.PathLike, progress=None,
            pubkey: str | os.PathLike | None = None) -> list[str]:
    """Fetch every shard (each from the first target that has it), reassemble, verify (with
    pubkey: and check that the mirror is signed by that key).

    Shards are cloned bare into a directory of our own inside out and read from git's
    objects, never checked out: a shard's symlinks, paths and names never reach the disk
    unchecked. On any failure restore removes what it made, and only that."""
    progress = progress or (lambda *a: None)
    out = Path(out)
    public = load_public(pubkey) if pubkey is not None else None  # a wrong key path: before any clone
    if out.is_symlink() or (out.exists() and (not out.is_dir() or any(out.iterdir()))):
        raise UsageError(f"{out} is not a new or empty directory; restore needs one")
    publishers = [GitPublisher(t) for t in targets]
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".restore-", dir=out))
    except OSError as exc:
        raise disk_error(exc, f"making {out}") from None
    try:
        notes = _restore(publishers, out, work, progress, public)
    except BaseException as exc:
        # out was new or empty: everything in it now is restore's own
        shutil.rmtree(out, ignore_errors=True) if created else _empty(out)
        if isinstance(exc, GIT_ERRORS):  # a shard's objects that git itself fails on
            secrets = (p._secret for p in publishers)
            raise PublishError(redact(_git_failure(exc, "a shard's repository"), *secrets)) from None
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    problems = verify(out, pubkey=pubkey)
    if problems:
        raise PublishError(f"the restored mirror does not verify: {problems[0]}")
    return notes


GIT_ERRORS = (git.GitCommandError, git.exc.ODBError)


def _git_failure(exc: Exception, where: str = "the remote's repository") -> str:
    """One line for a git command (or a read of git's objects) that failed on what a remote sent."""
    if isinstance(exc, git.GitCommandError):
        said = [ln.strip() for ln in str(exc.stderr or "").splitlines() if ln.strip(" '")]
        how = f"killed by signal {-exc.status}" if isinstance(exc.status, int) and exc.status < 0 else \
            f"exit code {exc.status}"
        command = " ".join(str(part) for part in exc.command[:2]) if isinstance(exc.command, list) else "git"
        return (f"{command} failed on {where} ({how}"
                + (f": {printable(said[0].removeprefix('stderr:').strip(chr(39) + ' '))})" if said else ")")
                + ": damaged, or made to break git")
    return f"{where} is damaged ({type(exc).__name__}: {exc})"


DISK_SAYS = ("No space left on device", "Disk quota exceeded", "Read-only file system", "File too large")


def _disk_refusal(exc: Exception) -> str:
    """What git said when the failure was this machine's disk refusing a write; '' otherwise
    (a remote's own full disk comes in lines that start 'remote:')."""
    said = [ln for ln in str(getattr(exc, "stderr", "") or exc).splitlines()
            if not ln.strip(" '").startswith("remote:")]
    return next((words for words in DISK_SAYS if any(words in ln for ln in said)), "")


def _empty(directory: Path) -> None:
    for entry in os.scandir(directory):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            os.unlink(entry.path)


def _restore(publishers: list["GitPublisher"], out: Path, work: Path, progress,
             public: PublicKey | None = None) -> list[str]:
    notes: list[str] = []

    def clone(shard: str) -> tuple[git.Repo, str]:
        errors = []
        for i, pub in enumerate(publishers):
            url = shard_url(pub.url, shard)
            dest = work / f"{shard}-{i}.git"
            # Only a password in this URL: the push token in the environment is for the user's own
            # targets, and a mirror restored from may be anyone's (a 401 would have it handed over).
            env = {**pub._env(), "ACTA_MIRROR_GIT_PASSWORD": pub._secret}
            try:
                git.Git().execute(["git", "clone", "--quiet", "--bare", "--depth=1", f"--branch={BRANCH}", url,
                                   str(dest)], env={**os.environ, **env})
            except git.GitCommandError as exc:
                shutil.rmtree(dest, ignore_errors=True)
                errors.append(str(pub._fail(f"shard {shard}", exc)))
                continue
            shown = redact(shard_url(pub.shown, shard), pub._secret)
            repo = git.Repo(dest)
            repo.git.update_environment(**env)
            names = repo.git.rev_parse("--show-object-format")
            if names != "sha1":  # what the shards are published as, and what git's object reader takes
                errors.append(f"{shown}: shard {shard}: a repository of {printable(names)} object names; "
                              "restore reads SHA-1 ones, as publish writes them")
                continue
            tip = _commit_of(repo, "HEAD")
            if tip is None:  # a host's ref files may name a tree or a blob
                errors.append(f"{shown}: shard {shard}: its branch {BRANCH} points at no commit")
                continue
            notes.append(f"shard {shard} from {shown}")
            return repo, tip
        raise PublishError("; ".join(errors) or f"shard {shard}: no target given")

    first, first_tip = clone("01")
    layout = read_layout(_read_blob(first, first_tip, SHARDS_JSON), f"shard 01 ({SHARDS_JSON})")
    first_tree = _tree_files(first, first_tip)  # read once: the key check, the shard's files, the bag files
    manifest = _regular(first_tree, f"{FULL_BAG}/{PAYLOAD_MANIFEST}")
    listed = _manifest_in(_blob(first, manifest[1]).decode("utf-8", "replace"),
                          f"shard 01: {FULL_BAG}/{PAYLOAD_MANIFEST}") if manifest else {}
    if public is not None:
        _signed_with(first, first_tree, listed, public)
    shards = {"01": (first, first_tip)}
    for shard in layout["shards"]:
        if shard not in shards:
            shards[shard] = clone(shard)
    full: dict[str, Record] = {}
    try:
        lines = _full_lines(first, first_tip)
    except PublishError as exc:
        raise PublishError(f"shard 01: {exc}") from None
    for e in lines:
        full.setdefault(e.path, e)
    restored: set[str] = set()
    for shard, (repo, tip) in sorted(shards.items()):
        tree = first_tree if shard == "01" else _tree_files(repo, tip)
        for e in _checked_lines(repo, tip, PROVENANCE, f"shard {shard}"):
            if e.path in restored:
                continue
            if any(_is_dot_git(part) for part in e.path.split("/")):
                raise PublishError(f"shard {shard}: {e.path}: a '.git' folder in a path (git would run what "
                                   "its config says in the restored copy); not restored")
            entry = tree.get(e.path)
            if entry is None or entry[0] not in ("100644", "100755"):
                raise PublishError(f"shard {shard}: {e.path} is missing or not a regular file")
            # The size first (asked without opening the blob: a stream left unread is read whole
            # when collected, or fails noisily once git's process is gone), then the bytes
            # streamed to disk: a blob of zeros that git keeps in kilobytes would otherwise be
            # inflated whole into memory.
            if _info(repo, entry[1]).size != e.size:
                raise PublishError(f"shard {shard}: {e.path} does not match its provenance line")
            blob = _stream(repo, entry[1])
            digest = hashlib.sha256()
            _write_new(out, e.path, _hashed_chunks(blob, digest))
            if digest.hexdigest() != e.sha256:
                raise PublishError(f"shard {shard}: {e.path} does not match its provenance line")
            restored.add(e.path)
        progress("restore", shard, len(restored), len(full))
    missing = sorted(set(full) - restored)
    if missing:
        raise PublishError(f"the shards lack {len(missing)} file(s) the full manifest lists, e.g. {missing[0]}")
    tree = first_tree
    carried = {name: _regular(tree, f"{FULL_BAG}/{name}") for name in PUBLISHED_TAG_FILES
               if f"{FULL_BAG}/{name}" in tree}
    if manifest and set(listed) == restored:
        for name, (_mode, sha) in carried.items():
            _fits(_info(first, sha).size, f"shard 01: {FULL_BAG}/{name}")
        for name, (_mode, sha) in carried.items():  # byte for byte (the signature covers them), streamed
            _write_new(out, name, _hashed_chunks(_stream(first, sha), hashlib.sha256()))
        if PROVENANCE not in carried:  # carried once, as full-provenance/: its chunks one after the other
            chunks = _chunk_blobs(first, first_tip)
            if not chunks and FULL_PROVENANCE in tree:  # as _full_lines read them: an earlier version's one file
                chunks = [_regular(tree, FULL_PROVENANCE)[1]]
            _write_new(out, PROVENANCE, (_blob(first, sha) for sha in chunks))
    else:  # older shards, or files from several writers: a bag rebuilt from the full provenance
        notes.append("the shards carry no signed tag files for this set of files; bag files rebuilt")
        _write_new(out, PROVENANCE, "".join(e.text for e in full.values()).encode())
        info = parse_bag_info(_blob(first, _regular(tree, BAG_INFO)[1]).decode("utf-8", "replace")) \
            if BAG_INFO in tree else {}
        for key in ("Payload-Oxum", "Acta-Mirror-Shard", "Acta-Mirror-Full-Root"):
            info.pop(key, None)
        write_bag_files(out, info)
    return notes


def _signed_with(repo: git.Repo, tree: dict[str, tuple[str, str]], listed: dict[str, str], public: PublicKey) -> None:
    """With --pubkey, before any other shard is fetched: shard 01's full-bag/ statement (in its
    tree) must be signed with that key and name the root of the full-bag/ manifest (listed, as
    read). A copy that nobody or somebody else signed is refused before its bulk is downloaded
    (the whole copy is still verified against the key at the end)."""
    paths = [f"{FULL_BAG}/{name}" for name in (STATEMENT, SIGNATURE, PAYLOAD_MANIFEST)]
    missing = next((p for p in paths if p not in tree), None)
    if missing:
        raise PublishError(f"shard 01 has no {missing}: the published mirror carries no signed statement, so it "
                           "is not signed with the key you gave; nothing restored")
    statement, signature = (_blob(repo, _regular(tree, p)[1]) for p in paths[:2])
    try:
        trusted = verify_signature(statement, parse_signature(signature.decode("utf-8", "replace"), paths[1]),
                                   public, paths[0], paths[1])
        root = json.loads(statement)["merkle_root"]
    except SignatureError as exc:
        raise PublishError(f"shard 01: {exc}; nothing restored") from None
    except (ValueError, KeyError, TypeError, RecursionError):
        raise PublishError(f"shard 01: {paths[0]} is not a root statement; nothing restored") from None
    computed = tree_root(sorted(listed.items()))
    if root != computed or f"merkle root {computed} " not in trusted + " ":
        raise PublishError(f"shard 01: the signed root is not the root of {paths[2]} ({computed}); nothing restored")


# Characters HFS+ ignores in a name: '.g\u200cit' is '.git' on a Mac (git's own is_hfs_dotgit)
_HFS_IGNORED = dict.fromkeys([*range(0x200C, 0x2010), *range(0x202A, 0x202F), *range(0x206A, 0x2070), 0xFEFF])


def _is_dot_git(name: str) -> bool:
    """A name that a file system here or elsewhere opens as '.git' (any case; Windows drops trailing
    dots and spaces and knows it as git~1): a folder by it is a repository whose config git obeys."""
    name = name.translate(_HFS_IGNORED).casefold().rstrip(". ")
    return name in (".git", "git~1")


def _checked_lines(repo: git.Repo, tip: str, path: str, where: str) -> list[Record]:
    """Provenance lines from a shard, through the validated reader (paths inside data/, keys
    of the site's format, no path twice); PublishError naming the shard otherwise."""
    try:
        return _lines_in(repo, tip, path)
    except PublishError as exc:
        raise PublishError(f"{where}: {exc}") from None


def _tree_files(repo: git.Repo, tip: str) -> dict[str, tuple[str, str]]:
    """path -> (mode, blob sha) of every entry of a commit's tree."""
    listing = repo.git.ls_tree("-r", "-z", "--full-tree", tip)
    files = {}
    for item in listing.split("\0"):
        if item:
            meta, _, path = item.partition("\t")
            mode, _kind, sha = meta.split()
            files[path] = (mode, sha)
    return files


def _regular(tree: dict[str, tuple[str, str]], path: str) -> tuple[str, str] | None:
    """Shard 01's entry for one of its bag files (None if it has none); a link, a folder or a
    submodule there is a damaged shard."""
    entry = tree.get(path)
    if entry is not None and entry[0] not in ("100644", "100755"):
        raise PublishError(f"shard 01: {path} is not a regular file (git mode {entry[0]})")
    return entry


def _blob(repo: git.Repo, sha: str) -> bytes:
    """A record's blob, whole: one larger than any record is refused unread (a blob of zeros
    that git keeps in kilobytes would otherwise be inflated whole into memory)."""
    _fits(_info(repo, sha).size, sha)
    return _stream(repo, sha).read()


def _info(repo: git.Repo, sha: str):
    """An object's header from git's database. gitdb raises a bare ValueError on what it cannot
    parse (an object id of another hash, a damaged header): as any object git fails on."""
    try:
        return repo.odb.info(bytes.fromhex(sha))
    except ValueError as exc:
        raise git.exc.ODBError(f"object {sha}: {exc}") from None


def _stream(repo: git.Repo, sha: str):
    """An object's bytes as a stream (see _info)."""
    try:
        return repo.odb.stream(bytes.fromhex(sha))
    except ValueError as exc:
        raise git.exc.ODBError(f"object {sha}: {exc}") from None


def _fits(size: int, what: str) -> None:
    if size > MAX_RECORD_BLOB:
        raise PublishError(f"{what}: {size:,} bytes, larger than any record of a mirror; not read")


def _hashed_chunks(blob, digest) -> Iterator[bytes]:
    """A git blob's bytes a MiB at a time, each added to digest on the way."""
    while chunk := blob.read(1 << 20):
        digest.update(chunk)
        yield chunk


def _write_new(root: Path, rel: str, data: bytes | Iterable[bytes]) -> None:
    """A new file inside a directory restore made: O_EXCL and O_NOFOLLOW, never over anything."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with open(fd, "wb") as fh:
            fh.writelines([data] if isinstance(data, bytes) else data)
    except OSError as exc:
        raise disk_error(exc, f"restoring {rel}") from None


def _store(repo: git.Repo, data: bytes, kind: bytes = b"blob", sha: str | None = None) -> str:
    """Store checked bytes as a loose object in the staging repository; its id. Written in
    process, not by a `git hash-object` per file (25,000 subprocesses cost a minute), and
    directly: gitdb's LooseObjectDB.store took 1 ms an object, most of a first publish's time
    in Python. An object the repository holds loose already is not written again."""
    raw = b"%s %d\0%s" % (kind, len(data), data)
    sha = sha or hashlib.sha1(raw).hexdigest()
    folder = os.path.join(repo.git_dir, "objects", sha[:2])
    path = os.path.join(folder, sha[2:])
    if os.path.exists(path):
        return sha
    os.makedirs(folder, exist_ok=True)
    temp = os.path.join(folder, f"tmp_obj_{os.getpid()}_{threading.get_ident()}")  # git's gc prunes tmp_obj_*
    with open(temp, "wb") as fh:
        fh.write(zlib.compress(raw, 1))
    os.chmod(temp, 0o444)
    os.replace(temp, path)  # a reader sees the whole object or none
    return sha


def _git_id(data: bytes, kind: bytes = b"blob") -> str:
    """The object id git gives these bytes, without storing them."""
    digest = hashlib.sha1(b"%s %d\0" % (kind, len(data)))
    digest.update(data)
    return digest.hexdigest()


def _write_tree(repo: git.Repo, base: str | None, changes: dict, fresh: set[str] = frozenset(),
                whole: bool = False) -> str | None:
    """The tree `base` (a tree id, or None) with `changes` applied: path -> (blob id, the bytes
    to store unless the tree has that blob there already) or None to remove it. A folder named
    in `fresh` (at the top) holds exactly its changed paths afterwards. Only the folders on a
    changed path are read and written, so a publish costs what changed, not the mirror's size.
    None for a tree left empty. The base's blobs may be absent (a blobless fetch): they are on
    the remote."""
    old: dict[str, tuple[int, str]] = {}
    if base:
        for binsha, mode, name in tree_entries_from_data(_stream(repo, base).read()):
            old[name] = (mode, binsha.hex())
    entries = {} if whole else dict(old)
    nested: dict[str, dict] = {}
    for path, blob in changes.items():
        head, sep, rest = path.partition("/")
        if sep:
            nested.setdefault(head, {})[rest] = blob
        elif blob is None:
            entries.pop(head, None)
        else:
            sha, data = blob
            if data is not None and old.get(head, (0, ""))[1] != sha:
                _store(repo, data, sha=sha)
            entries[head] = (0o100644, sha)
    for head in set(nested) | set(fresh):
        mode, sha = old.get(head, (0, ""))
        sub = _write_tree(repo, sha if mode == 0o40000 else None, nested.get(head, {}),
                          whole=whole or head in fresh)
        if sub is None:
            entries.pop(head, None)
        else:
            entries[head] = (0o40000, sub)
    if not entries:
        return None
    # git's order: by name, a folder's name as if it ended in "/"
    items = sorted(((name.encode("utf-8", "surrogateescape"), mode, sha) for name, (mode, sha) in entries.items()),
                   key=lambda item: item[0] + b"/" if item[1] == 0o40000 else item[0])
    data = b"".join(b"%o %s\0%s" % (mode, name, bytes.fromhex(sha)) for name, mode, sha in items)
    tree = _git_id(data, b"tree")
    return tree if tree == base else _store(repo, data, b"tree", tree)


def _commit_tree(repo: git.Repo, commit: str) -> str:
    return repo.commit(commit).tree.hexsha


@dataclass(frozen=True)
class _Whole:
    """The whole mirror's files that every shard carries, made once per publish."""

    root: str  # the full manifest's Merkle root
    count: int  # files in the mirror
    files: dict[str, tuple[str, bytes]]  # name -> (blob id, bytes): the full manifest, the provenance chunks
    sha256: dict[str, str]  # name -> sha256, for the shard's tag manifest
    joined: str  # sha256 of the chunks one after the other: the provenance file they are


# -- helpers -------------------------------------------------------------------------------
def silence_seconds() -> int:
    """ACTA_MIRROR_GIT_SILENCE_SECONDS, the seconds without a byte from a host after which a
    transfer ends (NO_DATA_SECONDS when unset or empty); UsageError for anything but a whole
    number from 1 to MAX_SILENCE_SECONDS."""
    given = os.environ.get(SILENCE_VARIABLE, "")
    seconds = gitrelay.seconds_from(given)
    if seconds is None:
        raise UsageError(f"{SILENCE_VARIABLE}={printable(given.strip()[:40])}: not a whole number of seconds from 1 "
                         f"to {MAX_SILENCE_SECONDS:,}")
    return seconds


def ssh_command(seconds: int) -> str:
    """ssh with a bound on a silent server: no banner within `seconds` ends the connection, so
    does a key exchange that stalls for two keepalive periods, and so, once connected, do three
    keepalive periods (about `seconds`) without a packet from the server. A server that is alive
    answers the keepalives, however long its git takes."""
    every = max(1, -(-seconds // 3))
    return f"ssh -o ConnectTimeout={seconds} -o ServerAliveInterval={every} -o ServerAliveCountMax=2"


def _users_git_config() -> set[str]:
    """Which of core.gitProxy, core.sshCommand and ssh.variant (lower case) the user's git config
    sets: the system's, the user's and the environment's (git -c, GIT_CONFIG_COUNT), not a
    repository's."""
    try:
        found = subprocess.run(["git", "config", "--get-regexp", r"^(core\.(gitproxy|sshcommand)|ssh\.variant)$"],
                               env={**os.environ, "GIT_DIR": os.devnull}, capture_output=True, text=True,
                               errors="replace", timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return set()
    return {line.split(" ", 1)[0].lower() for line in found.stdout.splitlines()}


_RELAY_LOCK = threading.Lock()


def _relay_command() -> str:
    """The program git runs as its proxy for git:// (core.gitProxy): mirror/gitrelay.py run by
    this Python, isolated (-I), so that neither the folder git runs it in nor PYTHONPATH matters.
    Git runs a proxy without a shell, with the host and the port as its only arguments: the
    command is a two-line script, written in the user's cache once for this Python and this copy
    of acta-mirror."""
    python = sys.executable or "python3"
    relay = os.path.abspath(gitrelay.__file__)
    text = (f"#!/bin/sh\n# acta-mirror's relay for git:// (git's core.gitProxy), see mirror/gitrelay.py\n"
            f"exec {shlex.quote(python)} -I {shlex.quote(relay)} \"$@\"\n")
    folder = working_dir("relay", python, relay)
    path = folder / "git-proxy"
    with _RELAY_LOCK:
        try:
            if path.read_text() == text and os.access(path, os.X_OK):
                return str(path)
        except (OSError, ValueError):
            pass
        temp = folder / f".git-proxy-{os.getpid()}-{threading.get_ident()}"
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o700)
            with open(fd, "w") as fh:
                fh.write(text)
            os.chmod(temp, 0o700)
            os.replace(temp, path)  # another acta-mirror running sees the old script or this one
        except OSError as exc:
            raise disk_error(exc, f"writing git's relay for git:// in {folder}") from None
    return str(path)


def _git_url(target: str) -> tuple[str, str]:
    """The URL git is given (scheme without 'git+', no password) and the password, if any."""
    try:
        parts = urlsplit(target)
        parts.port  # noqa: B018  (a port that is not a number, or out of range, raises here)
    except ValueError as exc:
        raise UsageError(f"--to {redact(target)}: not a URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme.startswith("git+"):
        scheme = scheme[4:]
    if not parts.netloc and scheme != "file":
        raise UsageError(f"--to {redact(target)}: no host")
    if scheme == "file" and (parts.netloc.lower() not in ("", "localhost") or not parts.path.startswith("/")):
        # git+file:backup.git or git+file://tmp/x.git were made at /backup.git and /x.git
        raise UsageError(f"--to {redact(target)}: a file URL names a folder by its whole path, "
                         "as git+file:///home/me/backup.git")
    secret = unquote(parts.password or "")
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    if parts.username and scheme in ("ssh",):
        netloc = f"{parts.username}@{netloc}"
    return urlunsplit((scheme, netloc, parts.path, parts.query, "")), secret


def _manifest_in(text: str | None, where: str) -> dict[str, str]:
    """A manifest a remote holds, parsed: {path: sha256}; PublishError naming where when a line is
    damaged (that target fails, not the command)."""
    try:
        return parse_manifest_text(text or "", where)
    except NotAMirror as exc:
        raise PublishError(f"{exc} (the remote's file is damaged)") from None


def _read_blob(repo: git.Repo, commit: str | None, path: str, ref: bool = False) -> str | None:
    """The text of a file in a commit (its blob id with ref=True); None when it has none."""
    if not commit:
        return None
    try:
        if ref:
            return repo.git.rev_parse("--verify", "-q", f"{commit}:{path}")
        _fits(int(repo.git.cat_file("-s", f"{commit}:{path}")), path)
        return repo.git.show(f"{commit}:{path}")
    except git.GitCommandError:
        return None


def _commit_of(repo: git.Repo, ref: str) -> str | None:
    try:
        return repo.git.rev_parse("--verify", "-q", f"{ref}^{{commit}}")
    except git.GitCommandError:
        return None


def _is_ancestor(repo: git.Repo, older: str, newer: str) -> bool:
    try:
        repo.git.merge_base("--is-ancestor", older, newer)
        return True
    except git.GitCommandError:  # 1: it is not; 128: one of them is missing, so it is not either
        return False


def _has_commit(repo: git.Repo, sha: str) -> bool:
    try:
        repo.git.cat_file("-e", f"{sha}^{{commit}}")
        return True
    except git.GitCommandError:
        return False


def _lines_in(repo: git.Repo, commit: str | None, path: str) -> list[Record]:
    return _records(_read_blob(repo, commit, path), path)


def _chunk_blobs(repo: git.Repo, commit: str) -> list[str]:
    """The blobs of the commit's full-provenance/ chunks, in name order."""
    chunks = []
    for item in repo.git.ls_tree("-z", commit, "--", f"{FULL_CHUNKS}/").split("\0"):
        meta, _, name = item.partition("\t")
        if item and meta.split()[1] == "blob":
            chunks.append((name, meta.split()[2]))
    return [sha for _name, sha in sorted(chunks)]


def _full_lines(repo: git.Repo, commit: str) -> list[Record]:
    """The whole mirror's provenance a shard carries: its chunks in name order, or the one
    file that shards of earlier versions carry."""
    chunks = _chunk_blobs(repo, commit)
    if not chunks:
        return _lines_in(repo, commit, FULL_PROVENANCE)
    text = "".join(_blob(repo, sha).decode("utf-8", "surrogateescape") for sha in chunks)
    return _records(text, FULL_CHUNKS)


def _records(text: str | None, path: str) -> list[Record]:
    if not text:
        return []
    # surrogateescape: the bytes as the remote holds them (GitPython decodes that way), so a
    # line that is not UTF-8 is named by the reader, neither a traceback nor quietly repaired
    with tempfile.NamedTemporaryFile("w", delete=False, encoding="utf-8", errors="surrogateescape") as fh:
        fh.write(text + "\n")
        name = fh.name
    try:
        return read_records(name)  # the one validated reader, as for a mirror on disk
    except NotAMirror as exc:
        raise PublishError(f"the remote's {path} is damaged: {str(exc).replace(name, path)}") from None
    finally:
        os.unlink(name)


def _root(lines: list[Record]) -> str:
    return merkle_root([(e.path, e.sha256) for e in lines])


def _union(first: list[Record], second: list[Record]) -> list[Record]:
    if not first:
        return second  # the same list: what is made from it once is reused (GitPublisher._whole)
    seen = {e.path for e in first}
    return list(first) + [e for e in second if e.path not in seen]


def _batches(entries: list[Record], limit: int) -> list[list[Record]]:
    batches, current, size = [], [], 0
    for e in entries:
        if current and size + e.size > limit:
            batches.append(current)
            current, size = [], 0
        current.append(e)
        size += e.size
    if current:
        batches.append(current)
    return batches
