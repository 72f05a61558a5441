"""The fast paths of the validated reader give exactly what the line-by-line paths give:
parse_manifest's whole-file pattern, and read_entries against iter_records."""
from __future__ import annotations

import json
import os

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mirror import state
from mirror.models import Entry

SHA = "ab" * 32


def slow_manifest(data: bytes, payload: bool = True):
    problems = []
    saved = state._plain_payload
    state._plain_payload = lambda text: None  # every file goes line by line
    try:
        result = state.parse_manifest(data, "manifest-sha256.txt", problems, payload=payload)
    finally:
        state._plain_payload = saved
    return list(result.items()), problems


def fast_manifest(data: bytes, payload: bool = True):
    problems = []
    result = state.parse_manifest(data, "manifest-sha256.txt", problems, payload=payload)
    return list(result.items()), problems


PLAIN = "".join(f"{SHA}  data/01/0101{i:05d}/0101{i:05d}.01.jpg\n" for i in range(5))
MANIFESTS = [
    PLAIN, PLAIN.rstrip("\n"), "", "\n", PLAIN + "\n", PLAIN + PLAIN.splitlines(True)[0], PLAIN.upper(),
    PLAIN.replace("  data", " *data"), PLAIN.replace("  data", "   data"), PLAIN.replace("  data", " data"),
    PLAIN.replace("  data", "xxdata"), PLAIN.replace("  data", "\t data"), PLAIN + f"{SHA}\x00 data/x\n",
    PLAIN + f"{SHA}  data/x\x00\n",
    PLAIN + f"{SHA}  data/../x\n", PLAIN + f"{SHA}  data/./x\n", PLAIN + f"{SHA}  data//x\n",
    PLAIN + f"{SHA}  /data/x\n", PLAIN + f"{SHA}  bag-info.txt\n", PLAIN + f"{SHA}  data/a%0Ab\n",
    PLAIN + f"{SHA}  data/a%25b\n", PLAIN + f"{SHA}  data/a\rb\n", PLAIN + f"{SHA}  data/a\x85b\n",
    PLAIN + f"{SHA}  data/a\u2028b\n", PLAIN + f"{SHA}  data/a\x0cb\n", PLAIN + f"{SHA}  data/x \n",
    PLAIN + f"{SHA}  data/..\n", PLAIN + f"{SHA}  data/...\n", PLAIN + f"{SHA}  data\n", PLAIN + f"{SHA}  data/\n",
    PLAIN + f"{SHA[:-1]}  data/x\n", PLAIN + f"{SHA}0  data/x\n", PLAIN + "   \n", PLAIN.replace("\n", "\r\n"),
    PLAIN + f"{SHA}  data/a\x00b\n", PLAIN + f"{SHA}  data/ñ.jpg\n",
    # every other character str.splitlines() breaks at, and ones it does not
    *(PLAIN + f"{SHA}  data/a{c}b\n" for c in "\x0b\x1c\x1d\x1e\x1f\u2029\t\x7f\ufeff"),
    "\ufeff" + PLAIN, PLAIN + f"{SHA}  data/x\x0c", PLAIN.replace("\n", "\r"), PLAIN + f"{SHA}  data/a/.\n",
    PLAIN + f"{SHA}  data/%\n", f"{SHA}  data/x\n\n{SHA}  data/y\n",
]


@pytest.mark.parametrize("text", MANIFESTS, ids=range(len(MANIFESTS)))
def test_the_manifest_fast_path_gives_what_the_loop_gives(text):
    assert fast_manifest(text.encode()) == slow_manifest(text.encode())


def test_a_plain_manifest_takes_the_fast_path(monkeypatch):
    monkeypatch.setattr(state, "split_manifest_line", None)  # the loop would fail on its first line
    items, problems = fast_manifest(PLAIN.encode())
    assert len(items) == 5 and not problems


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([SHA, SHA.upper(), SHA[:-2], "x" * 64]),
                          st.sampled_from(["  ", " *", " ", "   "]),
                          st.lists(st.sampled_from(["data", "/", ".", "..", "a", "%0A", "%", "\r", "\x85", " ", "\x00"]),
                                   max_size=6).map("".join),
                          st.sampled_from(["\n", "\r\n", "\n\n"])), max_size=5))
def test_generated_manifests_agree(lines):
    data = "".join(d + sep + p + end for d, sep, p, end in lines).encode()
    assert fast_manifest(data) == slow_manifest(data)


GOOD = json.loads(Entry(key="010101001.01", kind="acta", version=1, path="data/01/010101001.01.jpg", sha256=SHA,
                        size=8000, cid="", url="u", final_url="u", host="h", fetched_at="t", status=200, etag="",
                        last_modified="", content_type="image/jpeg", site="s", page="p").to_json())


def line(**changes) -> bytes:
    return (json.dumps({**GOOD, **changes}) + "\n").encode()


def acta(n: int) -> bytes:
    key = f"0101010{n:02d}.01"
    return line(key=key, path=f"data/01/{key}.jpg")


VALID = b"".join(acta(n) for n in range(20))
LONG = 2000  # state.MAX_LINE_BYTES in the tests below: a line of LONG bytes and its newline is read
PROVENANCE_FILES = {
    "valid": VALID, "no final newline": VALID.rstrip(b"\n"), "empty": b"", "blank lines": b"\n\n" + VALID + b"  \n",
    "crlf": VALID.replace(b"\n", b"\r\n"), "a path twice": VALID + acta(3), "a key twice, two paths":
        VALID + line(key="010101003.01", path="data/02/010101003.01.jpg"),
    "a float": VALID + line(size=1.5), "an unknown field": VALID + line(extra=1, key="010101099.01",
                                                                          path="data/9/010101099.01.jpg"),
    "an unknown float": VALID + line(extra=1.5), "kind against key": VALID + line(kind="index"),
    "a bad key": VALID + line(key="x", path="data/x.jpg"), "not utf-8": VALID + b'{"key": "\xff"}\n',
    "utf-8 surrogate": VALID + line(etag="x").replace(b'"x"', b'"\xed\xa0\x80"'), "not json": b"{\n" + VALID,
    "a form feed line": VALID + b"\x0c\n",
    # where JSON values and lines part ways: two records on one line, and, with a blank line
    # or a record across two lines beside it, as many records as lines
    "two on a line": VALID + acta(30).rstrip(b"\n") + acta(31),
    "two on a line, one blank": VALID + acta(30).rstrip(b"\n") + b" " + acta(31) + b"\n",
    "one across two lines, two on one": VALID + acta(30).replace(b'"cid": ""', b'"cid":\n{}')
        + acta(31).rstrip(b"\n") + acta(32),
    "indented": VALID + json.dumps({**GOOD, "key": "010101040.01", "path": "data/01/010101040.01.jpg"},
                                   indent=1).encode() + b"\n",
    "a line at the bound": VALID + line(etag="e" * (LONG - len(line(etag="")) + 1), key="010101041.01",
                                        path="data/01/010101041.01.jpg"),
    "a line over the bound": VALID + line(etag="e" * (LONG - len(line(etag="")) + 2)) + acta(42),
    "the last line over the bound": VALID + line(etag="e" * (LONG - len(line(etag="")) + 2)).rstrip(b"\n"),
    "a record in a line over the bound": VALID + acta(43).rstrip(b"\n") + b" " * LONG + b"\n",
}


@pytest.mark.parametrize("name", PROVENANCE_FILES)
def test_read_entries_gives_what_iter_records_gives(tmp_path, name, monkeypatch):
    path = tmp_path / "provenance.jsonl"
    path.write_bytes(PROVENANCE_FILES[name])
    monkeypatch.setattr(state, "READ_SIZE", 300)  # several batches: a path repeated across two is seen
    monkeypatch.setattr(state, "MAX_LINE_BYTES", LONG)
    slow_problems, fast_problems = [], []
    slow = [r.entry for r in state.iter_records(path, slow_problems)]
    assert state.read_entries(path, fast_problems) == slow and fast_problems == slow_problems


def test_read_entries_of_no_file_and_of_a_link(tmp_path):
    problems = []
    assert state.read_entries(tmp_path / "provenance.jsonl", problems) == [] and problems == []
    (tmp_path / "real.jsonl").write_bytes(VALID)
    os.symlink(tmp_path / "real.jsonl", tmp_path / "provenance.jsonl")
    assert state.read_entries(tmp_path / "provenance.jsonl", problems) == []
    assert [p.kind for p in problems] == ["unsafe"]


def test_a_valid_provenance_is_not_read_line_by_line(tmp_path, monkeypatch):
    path = tmp_path / "provenance.jsonl"
    path.write_bytes(VALID)
    monkeypatch.setattr(state, "iter_records", None)
    assert len(state.read_entries(path, [])) == 20


def test_read_entries_refuses_a_long_line_inside_a_block_as_iter_records_does(tmp_path, monkeypatch):
    # A whole line before the block's last one was never measured: with READ_SIZE above
    # MAX_LINE_BYTES, a line iter_records refuses as too long was taken as a record.
    path = tmp_path / "provenance.jsonl"
    path.write_bytes(VALID)
    monkeypatch.setattr(state, "READ_SIZE", len(VALID) + 1)
    monkeypatch.setattr(state, "MAX_LINE_BYTES", len(acta(0)) - 2)
    slow_problems, fast_problems = [], []
    slow = [r.entry for r in state.iter_records(path, slow_problems)]
    assert slow == [] and len(slow_problems) == 20
    assert state.read_entries(path, fast_problems) == slow and fast_problems == slow_problems


# Pieces of lines where JSON and line splitting part ways, bytes that are not UTF-8, records
# near the line bound, and lines the block decoder leaves to from_json.
PIECES = [acta(n) for n in range(6)] + [
    acta(1).rstrip(b"\n"), b"\n", b"\r\n", b" \t\n", b"\x0b\n", b"\x0c\n", b"\x1c\n", b"\x85", "\u2028".encode(),
    "\ufeff".encode(), b"\x00", b"\xff", b"\r", b" " * 200, acta(9).replace(b"\n", b"\r\n"),
    line(etag="e" * 300, key="010101051.01", path="data/01/010101051.01.jpg"),
    b'{"path": "../x", ' + acta(12)[1:], line(key="010101013.01", path="data/01/010101013.01.jpg", supersedes="A" * 64),
    acta(15).replace(b'"etag": ""', b'"etag": "\\ud800"'), acta(16).replace(b'"etag": ""', b'"etag": "\xed\xa0\x80"'),
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=10), st.integers(1, 700), st.integers(1, 700))
def test_read_entries_agrees_with_iter_records_at_any_block_and_line_bound(tmp_path_factory, pieces, read_size, max_line):
    path = tmp_path_factory.mktemp("p") / "provenance.jsonl"
    path.write_bytes(b"".join(pieces))
    bounds = state.READ_SIZE, state.MAX_LINE_BYTES
    state.READ_SIZE, state.MAX_LINE_BYTES = read_size, max_line
    try:
        slow_problems, fast_problems = [], []
        slow = [r.entry for r in state.iter_records(path, slow_problems)]
        assert state.read_entries(path, fast_problems) == slow and fast_problems == slow_problems
    finally:
        state.READ_SIZE, state.MAX_LINE_BYTES = bounds


KEY_PIECES = ["010101001", ".", "01", "001", "1", "\x00", "index/", "x", "０"]
PATH_ENDS = ["010101001.01.jpg", "010101001.011.jpg", "010101001.01", "x.jpg", "", "010101001.001.jpg"]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["acta", "index", "other"]),
                          st.lists(st.sampled_from(KEY_PIECES), min_size=1, max_size=4).map("".join),
                          st.sampled_from(["data/01/", "data/index/", "data/", ""]), st.sampled_from(PATH_ENDS)),
                max_size=6))
def test_entries_fit_answers_what_check_entry_answers_for_each(rows):
    # read_entries checks a block's records at once (entries_fit): it must refuse a block exactly
    # when check_entry finds something wrong with one of its records.
    good = Entry.from_json(json.dumps(GOOD))
    entries = [msgspec.structs.replace(good, kind=kind, key=key, path=folder + name) for kind, key, folder, name in rows]
    for block in (entries, [good, *entries], [good, good]):
        assert state.entries_fit(block) == (not any(map(state.check_entry, block))), block


@pytest.mark.parametrize("key, name", [("010101001.01", "010101001.01.jpg"), ("010101001.01", "010101001.011.jpg"),
                                       ("010101001.011", "010101001.01.jpg"), ("010101001.01\x00010101001.01", "x"),
                                       ("010101001.0", "010101001.0.jpg"), ("010101001.0111", "010101001.0111.jpg"),
                                       ("0101010011.01", "0101010011.01.jpg"), ("010101001.01", "a010101001.01.jpg"),
                                       ("010101001.01\x00010101001.01", "010101001.01\x00010101001.01.jpg")])
def test_entries_fit_on_acta_keys_and_file_names(key, name):
    good = Entry.from_json(json.dumps(GOOD))
    odd = msgspec.structs.replace(good, key=key, path=f"data/01/{name}")
    for entries in ([odd], [odd, good], [good, odd, good], [good, odd]):  # first, alone, between, last
        assert state.entries_fit(entries) == (not any(map(state.check_entry, entries))), (key, name)
