"""Entry.from_json has two decoders: msgspec for valid lines, the field-by-field parser for the
message. They must never disagree on what is valid, nor on the entry a valid line gives."""
from __future__ import annotations

import json
import re

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mirror import models
from mirror.models import Entry

GOOD = Entry(key="010101001.01", kind="acta", version=1, path="data/01/010101001.01.jpg", sha256="a" * 64,
             size=8000, cid="", url="https://x/a.jpg", final_url="https://x/a.jpg", host="x",
             fetched_at="2024-07-30T12:00:00Z", status=200, etag="", last_modified="", content_type="image/jpeg",
             site="resultados2024", page="https://x/index.csv", redirects=("https://x/r",)).to_json()
ENTRY_FIELDS = tuple(sorted(Entry.__struct_fields__))
BODY = GOOD[:-1]  # the line without its closing brace, to append fields


def outcome(decode, line: str):
    try:
        return "ok", decode(line)
    except ValueError as exc:
        return "error", str(exc)


def both(line: str):
    fast, slow = outcome(Entry.from_json, line), outcome(Entry.from_json_checked, line)
    assert fast == slow, line[:200]
    block_agrees(line)
    return fast


def block_agrees(text: str) -> None:
    """Entry.from_json_block decodes a block holding the text's lines exactly when msgspec's
    line decoder takes each of them (blank ones aside), and gives the entries from_json gives;
    else it leaves the block to from_json (None)."""
    got = Entry.from_json_block(f"{GOOD}\n{text}\n".encode("utf-8", "surrogatepass"))
    lines = [line for line in text.split("\n") if line.encode("utf-8", "surrogatepass").strip()]  # blank: skipped
    strict = [outcome(models._decoder(), line) for line in lines]
    if any(kind == "error" for kind, _value in strict):
        assert got is None, text[:200]
    else:
        assert got == [Entry.from_json(GOOD)] + [value for _kind, value in strict], text[:200]
        assert got[1:] == [Entry.from_json(line) for line in lines]


def with_field(name: str, raw: str) -> str:
    """GOOD with one field's JSON text replaced by raw (appended again: JSON's last one wins)."""
    return f'{BODY}, "{name}": {raw}}}'


HOSTILE = [
    # numbers: no float anywhere, whole numbers in range, no booleans
    with_field("size", "1.0"), with_field("size", "1e0"), with_field("size", "1e400"), with_field("size", "-0.0"),
    with_field("size", "NaN"), with_field("size", "Infinity"), with_field("size", "-Infinity"),
    with_field("size", "true"), with_field("size", '"8000"'), with_field("size", "null"),
    with_field("size", str(10 ** 30)), with_field("size", "1" + "0" * 5000), with_field("size", "-1"),
    with_field("size", str(models.MAX_FILE_BYTES)), with_field("size", str(models.MAX_FILE_BYTES + 1)),
    with_field("version", "0"), with_field("version", "1000001"), with_field("status", "99"),
    with_field("status", "600"), with_field("status", "599"), with_field("trailing_bytes", "-1"),
    with_field("trailing_bytes", "false"), with_field("size", "-0"),
    # fields the struct does not know: valid unless they hide what the rules forbid
    with_field("extra", "1.5"), with_field("extra", "NaN"), with_field("extra", '{"a": [1e5]}'),
    with_field("extra", "1"), with_field("extra", '"text"'), with_field("extra", "[" * 100_000 + "]" * 100_000),
    with_field("extra", "1" + "0" * 5000),
    # repeated keys: the last one counts, as in json
    f'{BODY}, "size": 1.5, "size": 7}}', f'{BODY}, "size": 7, "size": 1.5}}', f'{BODY}, "path": "../x"}}',
    '{"size": "x", ' + GOOD[1:],
    # strings
    with_field("etag", '"\\ud800"'), with_field("etag", '"\\ud83d\\ude00"'), with_field("etag", '"a\tb"'),
    with_field("etag", '"\\u0000"'), with_field("etag", "7"), with_field("kind", "null"),
    '{"si\\u007ae": 5, ' + GOOD[1:], "\ufeff" + GOOD, GOOD + " x", GOOD + "\r\n", " \t" + GOOD + "\n",
    # sha256 and supersedes
    GOOD.replace("a" * 64, "A" * 64), GOOD.replace("a" * 64, "a" * 63), GOOD.replace("a" * 64, "a" * 64 + "\n"),
    with_field("supersedes", "5"), with_field("supersedes", '"x"'), with_field("supersedes", "null"),
    with_field("supersedes", f'"{"b" * 64}"'), with_field("supersedes", f'"{"B" * 64}"'),
    # redirects
    with_field("redirects", '"https://x"'), with_field("redirects", "[1]"), with_field("redirects", "[]"),
    with_field("redirects", "[[]]"), with_field("redirects", "[" * 100_000 + "]" * 100_000),
    # paths
    *(with_field("path", json.dumps(p)) for p in [
        "../x", "/data/x", "data/", "data//x", "data/./x", "data/../x", "data/x\u0000", "x/data/y", "data/..",
        "data", "data/.", "data/a b/c.jpg", "data/x/", "datax/y", "data\\x", "data/x\n", "data/ñ.jpg", ""]),
    # lone and paired surrogate escapes msgspec refuses, whitespace JSON does not allow
    with_field("etag", '"\\udc00"'), with_field("etag", '"\\ud800\\ud800"'), with_field("path", '"data/\\udc00"'),
    *(ws + GOOD for ws in ("\x0c", "\x0b", "\xa0", "\u3000", "\x85", "\x00", "\r")),
    *(GOOD + ws for ws in ("\x0c", "\xa0", "\x00", "\x1c")),
    # a repeated key spelled with an escape: still the last one counts
    f'{BODY}, "\\u0073ize": 9}}', f'{BODY}, "\\u0073ize": "9"}}', f'{BODY}, "p\\u0061th": "data/../x"}}',
    # not an entry at all
    "", "[]", '"s"', "1", "null", "{}", "{", GOOD[:-1], '{"key": "k"}',
    json.dumps({k: v for k, v in json.loads(GOOD).items() if k != "sha256"}),
    json.dumps({k: v for k, v in json.loads(GOOD).items() if k not in ("redirects", "trailing_bytes")}),
]


@pytest.mark.parametrize("line", HOSTILE, ids=range(len(HOSTILE)))
def test_both_decoders_agree_on_hostile_lines(line):
    both(line)


def test_the_hostile_lines_cover_both_answers():
    answers = [both(line)[0] for line in HOSTILE]
    assert answers.count("ok") >= 10 and answers.count("error") >= 40


def test_a_valid_line_never_reaches_the_slow_parser(monkeypatch):
    def slow(line):
        raise AssertionError("the field-by-field parser was used for a valid line")
    monkeypatch.setattr(Entry, "from_json_checked", slow)
    entry = Entry.from_json(GOOD)
    assert entry.size == 8000 and entry.redirects == ("https://x/r",) and entry.supersedes is None


JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-2 ** 70, max_value=2 ** 70),
              st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=70),
              st.sampled_from(["a" * 64, "data/x.jpg", "data/../x", "/x", "data/./y", "data//z", "acta"])),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from([*ENTRY_FIELDS, "extra"]), JSON_VALUES, max_size=4),
       st.sets(st.sampled_from(ENTRY_FIELDS), max_size=2))
def test_both_decoders_agree_on_generated_lines(changes, dropped):
    obj = {k: v for k, v in json.loads(GOOD).items() if k not in dropped}
    both(json.dumps({**obj, **changes}))


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(["data", "/", ".", "..", "a", "\x00", "\n", " ", "ñ", "\\"]), max_size=8).map("".join))
def test_both_decoders_agree_on_paths(path):
    both(with_field("path", json.dumps(path)))


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="0123456789abcdefABCDEF\n ", min_size=60, max_size=66))
def test_both_decoders_agree_on_digests(digest):
    both(with_field("sha256", json.dumps(digest)))
    both(with_field("supersedes", json.dumps(digest)))


def block(lines: list[str]) -> bytes:
    return "".join(line + "\n" for line in lines).encode()


def test_a_file_of_valid_lines_is_decoded_at_once_and_a_bad_one_is_left_to_from_json():
    lines = [GOOD, json.dumps({**json.loads(GOOD), "size": 1})]
    assert Entry.from_json_block(block(lines)) == [Entry.from_json(line) for line in lines]
    assert Entry.from_json_block(b"\n" + block(lines) + b" \n") == [Entry.from_json(line) for line in lines]
    assert Entry.from_json_block(block([*lines, with_field("extra", "1")])) is None  # valid, but for from_json to say
    assert Entry.from_json_block(block([*lines, with_field("size", "1.5")])) is None


@pytest.mark.parametrize("line", [with_field("sha256", json.dumps("A" * 64)), with_field("supersedes", json.dumps("a" * 63)),
                                  with_field("path", '"data/a/../b.jpg"'), with_field("path", '"data"'),
                                  with_field("supersedes", json.dumps("a" * 64)), with_field("supersedes", "null")])
def test_the_block_decoder_checks_the_forms_its_struct_leaves_out(line):
    block_agrees(line)


@pytest.mark.parametrize("first", ['"path": "../x"', '"path": "data"', f'"sha256": "{"A" * 64}"', '"sha256": "x"',
                                   '"supersedes": "x"', f'"supersedes": "{"B" * 64}"', '"p\\u0061th": "/etc/x"'])
def test_a_repeated_key_whose_first_value_has_a_bad_form_gives_what_from_json_gives(first):
    # The last value of a repeated key counts, as in json, and the forms are checked on the value
    # that counts: the line decoder, the block decoder and the field-by-field parser all give
    # GOOD's entry.
    line = "{" + first + ", " + GOOD[1:]
    assert models._decoder()(line) == Entry.from_json_checked(line) == Entry.from_json(GOOD)
    assert Entry.from_json(line) == Entry.from_json(GOOD)
    assert Entry.from_json_block(f"{GOOD}\n{line}\n".encode()) == [Entry.from_json(GOOD)] * 2
    later = f"{BODY}, {first}}}"  # the bad value last: refused by every decoder
    assert Entry.from_json_block(f"{GOOD}\n{later}\n".encode()) is None
    with pytest.raises(ValueError):
        Entry.from_json(later)


PATH_PIECES = ["data", "/", ".", "..", "a", "\x00", "\n", "ñ", "data/", "/.", "./", "x"]


# The rules _forms_valid checks over a whole block, one value at a time: a path inside data/ in
# the terms of unsafe_path (parts neither empty, '.' nor '..', no NUL), and a sha256 of 64
# lowercase hex digits.
DATA_PATH = re.compile(r"^data(?:/(?!\.\.?(?:/|\Z))[^/\x00]+)+\Z")
SHA256 = re.compile(r"[0-9a-f]{64}")


def forms_one_by_one(entries: list[Entry]) -> bool:
    """What _forms_valid must answer, one value at a time."""
    return all(DATA_PATH.match(e.path) and SHA256.fullmatch(e.sha256)
               and (e.supersedes is None or SHA256.fullmatch(e.supersedes)) for e in entries)


@settings(max_examples=600, deadline=None)
@given(st.lists(st.tuples(st.lists(st.sampled_from(PATH_PIECES), max_size=7).map("".join),
                          st.sampled_from(["a" * 64, "A" * 64, "a" * 63, "a" * 65, "é" * 64, "0" * 32 + "f" * 32, ""]),
                          st.sampled_from([None, "b" * 64, "b" * 63, "g" * 64])), max_size=5))
def test_the_forms_of_a_whole_block_are_those_of_each_record(rows):
    # _forms_valid checks a block's paths and digests at once, in joined strings: it must answer
    # what checking each record alone answers, whatever a record holds (NUL, '.', '..', '//').
    good = Entry.from_json(GOOD)
    entries = [msgspec.structs.replace(good, path=p, sha256=s, supersedes=sup) for p, s, sup in rows]
    assert models._forms_valid(entries) == forms_one_by_one(entries)
    assert models._forms_valid([good, *entries]) == forms_one_by_one(entries)


@pytest.mark.parametrize("path", ["data/a\x00data/b", "data/a/\x00data/b", "data/.\x00data/b", "data/x\x00",
                                  "\x00data/x", "data/a/..", "data/a/.", "data/a//b", "data/a/", "data/...",
                                  "data/a..", "data/.a", "data/a/b\n", "data/..a/b", "data/./x", "data/a/../b",
                                  "data/a\x00/b", "data", "datax/y", "data/x/./"])
def test_a_path_that_joined_would_look_like_two_is_judged_alone(path):
    good = Entry.from_json(GOOD)
    for entries in ([msgspec.structs.replace(good, path=path)],
                    [good, msgspec.structs.replace(good, path=path), good]):
        assert models._forms_valid(entries) == forms_one_by_one(entries), path


# -- writing records: JSON_LINE writes what json wrote, compact --------------------------------------
def test_a_record_line_is_what_json_writes_with_its_keys_sorted_and_no_spaces():
    import enum

    from mirror.fetchworker import _decode, _encode

    class Text(str):
        def __str__(self):
            return "not this"

    class Number(int):
        pass

    class Kind(str, enum.Enum):
        ACTA = "acta"

    record = {"url": Text("https://x/a b"), "attempts": Number(3), "kind": Kind.ACTA, "at": "2024-07-29T00:00:00Z",
              "reason": 'HTTP 404 "\\\t\n\x00\x7f\u2028ñ😀', "none": None, "list": [1, "x"], "ok": True, "ratio": 0.5}
    want = json.dumps(record, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()
    assert models.JSON_LINE(record) == want
    assert _decode(_encode(record)) == json.loads(want)
    with pytest.raises(TypeError):
        models.JSON_LINE({"x": object()})
    entry = Entry.from_json(GOOD)
    assert entry.to_json().encode() == models.JSON_LINE(entry) and Entry.from_json(entry.to_json()) == entry
    assert json.loads(entry.to_json()) == json.loads(GOOD) and ": " not in entry.to_json()


def test_a_merge_keeps_one_line_for_a_record_written_spaced_and_compact():
    """A change record recovered after a killed run is written the same way by every copy, so a
    merge keeps it once: also when one copy wrote it spaced (before a5addb86) and one compact."""
    from mirror.job import _merge_lines

    change = {"at": "t", "change": "added", "key": "010101001.01", "recovered": True, "sha256": "a" * 64, "url": "u"}
    spaced = json.dumps(change, ensure_ascii=False, sort_keys=True).encode()
    compact, other = models.JSON_LINE(change), models.JSON_LINE({**change, "key": "010101002.01"})
    ours = spaced + b"\n" + b"not json \xff\n"
    merged = _merge_lines(ours, [compact + b"\n" + other + b"\n", b"not json \xff\n[1]\n[1]\n" + spaced])
    assert merged == ours + other + b"\n" + b"[1]\n"
