"""Comparing other people's copies with a mirror: copies made here from the replay, one label per acta."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from conftest import crawl_into, run_cli, small_replay
from mirror.manifest import iter_provenance

LABELS = ("identical", "same_picture", "different_picture", "other_version", "only_here", "only_there")


@pytest.fixture(scope="module")
def mirrors(tmp_path_factory):
    """`old`: crawled before the replay changed some images (V1); `both`: before and after (V1 and V2)."""
    base = tmp_path_factory.mktemp("compare")
    with small_replay("change=0.25") as thread:
        crawl_into(thread.url, base / "old")
        crawl_into(thread.url, base / "both")
        thread.replay.epoch = 2
        crawl_into(thread.url, base / "both")
    return base


def actas(mirror: Path):
    """key -> list of versions (Entry), oldest first."""
    versions: dict = {}
    for e in iter_provenance(mirror / "provenance.jsonl"):
        if e.kind == "acta":
            versions.setdefault(e.key, []).append(e)
    return versions


def image_name(e) -> str:
    return e.url.rsplit("/", 1)[-1]  # the index's URL column gives each table's file name


def run_compare(mirror: Path, other: Path) -> tuple[int, dict]:
    proc = run_cli("compare", str(mirror), str(other), "--json")
    assert proc.returncode in (0, 1), proc.stderr
    report = json.loads(proc.stdout)
    keys = [row["key"] for row in report["actas"]]
    assert len(keys) == len(set(keys)), "an acta under more than one label"
    assert set(report["counts"]) == set(LABELS) and sum(report["counts"].values()) == len(keys)
    return proc.returncode, report


def labels(report: dict) -> dict[str, str]:
    return {row["key"]: row["label"] for row in report["actas"]}


def test_identical_copy_in_another_layout(mirrors, tmp_path):
    both = mirrors / "both"
    copy = tmp_path / "copy"
    for i, (key, versions) in enumerate(actas(both).items()):
        folder = copy / f"part{i % 4}" / "deep"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(both / versions[-1].path, folder / image_name(versions[-1]))
    code, report = run_compare(both, copy)
    assert code == 0 and report["counts"]["identical"] == len(actas(both)) == len(report["actas"])
    text = run_cli("compare", str(both), str(copy))
    assert text.returncode == 0 and f"identical          {len(actas(both)):>7,} of {len(actas(both))} actas" in text.stdout


def test_recompressed_resized_swapped_deleted(mirrors, tmp_path):
    both = mirrors / "both"
    versions = actas(both)
    keys = sorted(versions)
    real = [k for k in keys if Image.open(both / versions[k][-1].path).width >= 600]
    small = [k for k in keys if k not in real]
    assert len(real) >= 8 and len(small) >= 8
    copy = tmp_path / "copy"
    copy.mkdir()
    expect = {}
    qualities = iter((35, 60, 90, 50, 75))
    for k in keys:
        e = versions[k][-1]
        src, dst = both / e.path, copy / f"{k}.jpg"  # named by acta key, as some volunteers did
        expect[k] = "identical"
        if k in real[:3] or k in small[:2]:
            Image.open(src).save(dst, "JPEG", quality=next(qualities))
            expect[k] = "same_picture"
        elif k in real[3:5]:
            im = Image.open(src)
            scale = 0.5 if k == real[3] else 0.75
            im.resize((round(im.width * scale), round(im.height * scale)), Image.LANCZOS).save(dst, "JPEG", quality=80)
            expect[k] = "same_picture"
        elif k == real[5]:  # swapped: another table's scan under this name
            shutil.copy(both / versions[real[6]][-1].path, dst)
            expect[k] = "different_picture"
        elif k == real[7]:  # doctored: one vote count painted over on the real scan
            im = Image.open(src).convert("L")
            draw = ImageDraw.Draw(im)
            x, y = int(im.width * 0.6), int(im.height * 0.3)
            draw.rectangle((x, y, x + 40, y + 20), fill=245)
            draw.text((x + 2, y + 2), "187", fill=10)
            im.save(dst, "JPEG", quality=90)
            expect[k] = "different_picture"
        elif k in small[2:5]:  # deleted from their copy
            expect[k] = "only_here"
            continue
        else:
            shutil.copy(src, dst)
    (copy / "999999999.01.jpg").write_bytes((both / versions[keys[0]][-1].path).read_bytes()[:-2] + b"\xff\xd9")
    expect["999999999.01"] = "only_there"
    (copy / "notes.txt").write_text("not an image")
    code, report = run_compare(both, copy)
    assert code == 1
    got = labels(report)
    assert got == expect, {k: (got.get(k), v) for k, v in expect.items() if got.get(k) != v}
    assert report["counts"]["same_picture"] == 7 and report["counts"]["only_here"] == 3
    scored = {row["key"]: row["score"] for row in report["actas"] if row["score"] is not None}
    assert all(scored[k] is not None for k in real[:5])
    assert any("not images" in note for note in report["notes"])


def test_v1_copy_against_a_mirror_that_kept_v2(mirrors, tmp_path):
    both, old = mirrors / "both", mirrors / "old"
    versions = actas(both)
    changed = {k for k, v in versions.items() if len(v) > 1}
    assert changed, "the replay's change fault should have replaced some images"
    copy = tmp_path / "v1"
    copy.mkdir()
    for k, v in versions.items():  # a volunteer copy taken before the replacement
        shutil.copy(both / v[0].path, copy / image_name(v[0]))
    code, report = run_compare(both, copy)
    got = labels(report)
    assert code == 1 and {k for k, label in got.items() if label == "other_version"} == changed
    assert all(got[k] == "identical" for k in versions if k not in changed)
    assert all("older: our v1 of 2" in row["detail"] for row in report["actas"] if row["key"] in changed)
    # two acta-mirrors: ours stopped at V1, theirs went on to V2 (and the other way round)
    code, report = run_compare(old, both)
    assert {k for k, label in labels(report).items() if label == "other_version"} == changed
    assert all("newer" in row["detail"] for row in report["actas"] if row["label"] == "other_version")
    code, report = run_compare(both, old)
    assert {k for k, label in labels(report).items() if label == "other_version"} == changed


def test_sha256_lists(mirrors, tmp_path):
    both = mirrors / "both"
    versions = actas(both)
    keys = sorted(versions)
    lines, mapping = [], {}
    for k in keys:
        e = versions[k][-1]
        sha = hashlib.sha256((both / e.path).read_bytes()).hexdigest()
        if k == keys[0]:
            sha = "0" * 64  # a copy whose bytes are not ours
        lines.append(f"{sha}  downloads/{image_name(e)}\n")
        mapping[image_name(e)] = sha
    sums = tmp_path / "SHA256SUMS"
    sums.write_text("".join(lines[1:-1]) + lines[0])
    code, report = run_compare(both, sums)
    got = labels(report)
    assert got[keys[0]] == "different_picture" and got[keys[-1]] == "only_here"
    assert sum(1 for v in got.values() if v == "identical") == len(keys) - 2
    js = tmp_path / "hashes.json"
    js.write_text(json.dumps(mapping))
    code, report = run_compare(both, js)
    assert report["counts"]["identical"] == len(keys) - 1 and report["kind"] == "json list"


def test_links_in_their_copy_are_not_followed(mirrors, tmp_path):
    both = mirrors / "both"
    versions = actas(both)
    copy = tmp_path / "copy"
    copy.mkdir()
    keys = sorted(versions)
    for k in keys[1:]:
        shutil.copy(both / versions[k][-1].path, copy / f"{k}.jpg")
    os.symlink(both / versions[keys[0]][-1].path, copy / f"{keys[0]}.jpg")
    os.symlink(both / "data", copy / "linked-folder")
    code, report = run_compare(both, copy)
    assert labels(report)[keys[0]] == "only_here"
    assert any("symbolic link" in note for note in report["notes"])


def test_bad_input_is_one_line(mirrors, tmp_path):
    both = mirrors / "both"
    cases = {
        "missing": (tmp_path / "nothing", "No such file"),
        "sums": (tmp_path / "bad.sums", "not a '<sha256>  <name>' line"),
        "json": (tmp_path / "bad.json", "not JSON"),
        "jsonhash": (tmp_path / "badhash.json", "not a sha256"),
        "binary": (tmp_path / "bin", "not a readable sha256 list"),
        "empty": (tmp_path / "empty", "no sha256 lines"),
        "deep": (tmp_path / "deep.json", "nested too deep"),
    }
    (tmp_path / "deep.json").write_text('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}")
    (tmp_path / "bad.sums").write_text("hello world\n")
    (tmp_path / "bad.json").write_text('{"a": ')
    (tmp_path / "badhash.json").write_text(json.dumps({"a.jpg": "xyz"}))
    (tmp_path / "bin").write_bytes(b"\xff\xfe\x00garbage")
    (tmp_path / "empty").write_text("")
    for name, (path, message) in cases.items():
        proc = run_cli("compare", str(both), str(path))
        assert proc.returncode == 2, (name, proc.stdout, proc.stderr)
        assert message in proc.stderr, (name, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1
    proc = run_cli("compare", str(tmp_path), str(both))
    assert proc.returncode == 2 and "not an acta-mirror bag" in proc.stderr


def test_a_damaged_other_mirror_is_still_compared(mirrors, tmp_path):
    both = mirrors / "both"
    theirs = tmp_path / "theirs"
    shutil.copytree(both, theirs)
    versions = actas(theirs)
    keys = sorted(versions)
    lines = (theirs / "provenance.jsonl").read_text().splitlines(keepends=True)
    lines.insert(3, '{"path": "/etc/passwd", "key": "010101001.01"}\n')  # a hostile line
    (theirs / "provenance.jsonl").write_text("".join(lines))
    victim = theirs / versions[keys[0]][-1].path
    victim.write_bytes(b"their bytes are not what their provenance says")
    code, report = run_compare(both, theirs)
    got = labels(report)
    assert got[keys[0]] == "different_picture" and "not a readable image" in \
        next(r["detail"] for r in report["actas"] if r["key"] == keys[0])
    assert sum(1 for v in got.values() if v == "identical") == len(keys) - 1
    assert any("bad line(s)" in n for n in report["notes"]) and any("their own provenance" in n for n in report["notes"])


def test_a_copy_kept_at_16_bits_or_as_floats_is_the_same_picture(mirrors, tmp_path):
    """Pillow's convert("L") clips 16-bit values at 255 and takes floats as they are: a
    volunteer's 16-bit PNG of an acta scored 254, a float TIFF (0-1) near that, and each was
    called a different picture. They are now scaled by their range first."""
    import numpy as np

    both = mirrors / "both"
    versions = actas(both)
    real = [k for k in sorted(versions) if Image.open(both / versions[k][-1].path).width >= 600][:3]
    copy = tmp_path / "copy"
    copy.mkdir()
    for k, how in zip(real, ("16-bit png", "float tiff", "swapped 16-bit")):
        grey = np.asarray(Image.open(both / versions[k][-1].path).convert("L"), dtype=np.float32)
        if how == "16-bit png":
            Image.fromarray((grey * 257).astype(np.uint16)).save(copy / f"{k}.png")
        elif how == "float tiff":
            Image.fromarray(grey / 255.0).save(copy / f"{k}.tif")
        else:  # another table's scan at 16 bits: still a different picture
            other = np.asarray(Image.open(both / versions[real[0]][-1].path).convert("L"), dtype=np.float32)
            Image.fromarray((other * 257).astype(np.uint16)).save(copy / f"{k}.png")
    code, report = run_compare(both, copy)
    got = {row["key"]: (row["label"], row["score"]) for row in report["actas"] if row["key"] in real}
    assert got[real[0]][0] == "same_picture" and got[real[0]][1] <= 1.0, got
    assert got[real[1]][0] == "same_picture" and got[real[1]][1] <= 1.0, got
    assert got[real[2]][0] == "different_picture", got
