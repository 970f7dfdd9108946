"""Comparing responses: fast path, headers, JSON paths, ignores, unordered arrays, codings, digests, noise."""

from __future__ import annotations

import gzip
import hashlib
import json
import zlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trafficreel.replay import _compare
from trafficreel.replay._compare import Comparator, CompareOptions, Difference, NoiseModel, Observed

JSON = "application/json"


def _json(value: Any, *, status: int = 200, headers: list[tuple[bytes, bytes]] | None = None) -> Observed:
    return Observed(status, headers or [], json.dumps(value).encode(), content_type=JSON)


def _diff(expected: Any, actual: Any, **options: Any) -> list[Difference]:
    return Comparator(CompareOptions(**options)).compare(_json(expected), _json(actual))


def test_public_surface() -> None:
    """The module exports exactly the comparator, its options, its value types and the noise model."""
    assert sorted(_compare.__all__) == [
        "Comparator",
        "CompareOptions",
        "Difference",
        "NoiseModel",
        "Observed",
    ]


def test_equal_responses_are_equal_without_decoding_or_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Equal status, chosen headers and body bytes give no differences without touching the body."""

    def never(*args: object) -> Any:
        raise AssertionError("the body was decoded or parsed")

    monkeypatch.setattr(json, "loads", never)
    monkeypatch.setattr(zlib, "decompressobj", never)
    body = gzip.compress(b'{"a": 1}')
    headers = [(b"Content-Type", JSON.encode()), (b"Content-Encoding", b"gzip"), (b"X-Id", b"1")]
    comparator = Comparator(CompareOptions(headers=("x-id", "content-type")))
    assert comparator.compare(Observed(200, headers, body), Observed(200, list(headers), body)) == []


def test_status_change_is_reported() -> None:
    """A different status is one difference at "status"."""
    found = Comparator().compare(Observed(200, [], b"ok"), Observed(500, [], b"ok"))
    assert found == [Difference("status", "changed", "200", "500")]


def test_chosen_headers_compare_case_insensitively_and_others_are_ignored() -> None:
    """Listed header names match in any case; unlisted headers never make a difference."""
    comparator = Comparator(CompareOptions(headers=("Content-Type", "X-Version", "X-Gone")))
    expected = Observed(200, [(b"content-type", b"a/b"), (b"X-Other", b"1"), (b"x-gone", b"yes")], b"")
    actual = Observed(200, [(b"CONTENT-TYPE", b"a/c"), (b"X-Other", b"2"), (b"X-Version", b"7")], b"")
    assert comparator.compare(expected, actual) == [
        Difference("header:content-type", "changed", "a/b", "a/c"),
        Difference("header:x-gone", "missing", "yes", None),
        Difference("header:x-version", "added", None, "7"),
    ]
    same = Observed(200, [(b"Content-Type", b"a/b"), (b"X-Other", b"3"), (b"X-GONE", b"yes")], b"")
    assert comparator.compare(expected, same) == []


def test_json_differences_name_each_leaf_by_path() -> None:
    """Changed, missing, added and retyped leaves are reported at their exact JSON paths."""
    expected = {"user": {"id": 1, "name": "a", "a.b": True}, "items": [{"name": "x"}, {"name": "y"}], "n": 1}
    actual = {
        "user": {"id": "1", "a.b": True, "new": None},
        "items": [{"name": "x"}, {"name": "z"}, {}],
        "n": 1.0,
    }
    assert _diff(expected, actual) == [
        Difference("body:$.user.id", "type", "1", '"1"'),
        Difference("body:$.user.name", "missing", '"a"', None),
        Difference("body:$.user.new", "added", None, "null"),
        Difference("body:$.items[1].name", "changed", '"y"', '"z"'),
        Difference("body:$.items[2]", "added", None, "{}"),
        Difference("body:$.n", "changed", "1", "1.0"),
    ]
    assert _diff({"a.b": {"é x": 1}, "0": [True]}, {"a.b": {"é x": 2}, "0": [1]}) == [
        Difference('body:$["a.b"]["é x"]', "changed", "1", "2"),
        Difference('body:$["0"][0]', "type", "true", "1"),
    ]


def test_ignored_paths_and_headers_are_left_out() -> None:
    """Ignore entries take exact paths, [*] for any index, $.. for any depth, and header: names."""
    expected = {"meta": {"request_id": "a", "page": 1}, "items": [{"id": 1, "at": "t1", "deep": {"at": "t"}}]}
    actual = {"meta": {"request_id": "b", "page": 2}, "items": [{"id": 2, "at": "t2", "deep": {"at": "u"}}]}
    ignore = ("$.meta.request_id", "$.items[*].id", "$..at", "header:Date")
    comparator = Comparator(CompareOptions(ignore=ignore, headers=("date",)))
    found = comparator.compare(
        _json(expected, headers=[(b"Date", b"Mon")]), _json(actual, headers=[(b"Date", b"Tue")])
    )
    assert found == [Difference("body:$.meta.page", "changed", "1", "2")]
    assert _diff(expected, actual, ignore=("$.meta", "$.items")) == []
    assert _diff({"a": 1}, {"a": 2}, ignore=("body",)) == []


def test_bad_paths_are_rejected_with_what_to_write() -> None:
    """An unreadable ignore or unordered entry raises ValueError saying how to write it."""
    with pytest.raises(ValueError, match=r"write .*\$\.items\[\*\]\.id"):
        Comparator(CompareOptions(ignore=("$.items[x]",)))
    with pytest.raises(ValueError, match="not a JSON path"):
        Comparator(CompareOptions(unordered=("header:date",)))


def test_unordered_arrays_compare_as_multisets() -> None:
    """Listed arrays ignore order but not counts; a mismatch is one difference at the array's path."""
    assert _diff([3, 1, 2], [1, 2, 3], unordered=("$",)) == []
    assert _diff([3, 1, 2], [1, 2, 3]) != []
    nested = {"a": {"tags": ["x", "y"]}, "b": [{"tags": [1, 2]}]}
    swapped = {"a": {"tags": ["y", "x"]}, "b": [{"tags": [2, 1]}]}
    assert _diff(nested, swapped, unordered=("$..tags",)) == []
    assert _diff({"items": ["a", "a", "b"]}, {"items": ["b", "a", "b"]}, unordered=("$.items",)) == [
        Difference("body:$.items", "changed", '["a"]', '["b"]')
    ]


def test_unordered_arrays_respect_ignores_and_nested_unordered_arrays() -> None:
    """Elements are matched without their ignored fields and with their own unordered arrays sorted."""
    expected = {"items": [{"id": 1, "n": "a", "tags": [1, 2]}, {"id": 2, "n": "b", "tags": []}]}
    actual = {"items": [{"id": 9, "n": "b", "tags": []}, {"id": 8, "n": "a", "tags": [2, 1]}]}
    options = {"unordered": ("$.items", "$..tags"), "ignore": ("$.items[*].id",)}
    assert _diff(expected, actual, **options) == []


def test_gzip_json_equals_the_same_json_plain() -> None:
    """A gzip-encoded body is decoded first, so it equals the same JSON sent plain; changes still show."""
    plain = json.dumps({"a": [1, 2]}).encode()
    zipped = Observed(200, [(b"Content-Encoding", b"gzip")], gzip.compress(plain), content_type=JSON)
    assert Comparator().compare(zipped, Observed(200, [], plain, content_type=JSON)) == []
    deflated = Observed(
        200, [], zlib.compress(b'{"a": [1, 3]}'), content_type=JSON, content_encoding="deflate"
    )
    assert Comparator().compare(zipped, deflated) == [Difference("body:$.a[1]", "changed", "2", "3")]


def test_invalid_gzip_is_a_difference_not_an_exception() -> None:
    """A body that cannot be decoded is a "body" difference naming the coding."""
    broken = Observed(200, [], b"\x1f\x8b\x08garbage", content_encoding="gzip", content_type=JSON)
    [found] = Comparator().compare(broken, _json({"a": 1}))
    assert (found.location, found.kind) == ("body", "changed")
    assert found.expected is not None and found.expected.startswith("cannot decode gzip")
    cut = Observed(200, [], gzip.compress(b'{"a": 1}')[:-12], content_encoding="gzip")
    assert (
        Comparator().compare(cut, _json({"a": 1}))[0].expected
        == "cannot decode gzip: the compressed stream ends early"
    )


def test_unknown_coding_compares_digests() -> None:
    """A content coding with no decoder here compares the bytes as transferred, by digest."""
    [found] = Comparator().compare(
        Observed(200, [], b"abc", content_encoding="x-custom"),
        Observed(200, [], b"abd", content_encoding="x-custom"),
    )
    assert (
        found.location == "body"
        and found.expected == f"sha256:{hashlib.sha256(b'abc').hexdigest()[:16]} (3 bytes)"
    )


def test_zstd_is_decoded() -> None:
    """A zstd-encoded body equals the same body plain (backports.zstd comes with the replay extra)."""
    from backports import zstd

    plain = b'{"a": [1, 2]}'
    encoded = Observed(200, [], zstd.compress(plain), content_type=JSON, content_encoding="zstd")
    assert Comparator().compare(encoded, Observed(200, [], plain, content_type=JSON)) == []


def test_not_kept_body_compares_digest_and_size() -> None:
    """A recorded body not kept matches an actual body of the same SHA-256 and differs otherwise."""
    body = b"\x89PNG binary"
    recorded = Observed(200, [], None, "NOT_KEPT", hashlib.sha256(body).digest(), len(body))
    assert Comparator().compare(recorded, Observed(200, [], body)) == []
    [found] = Comparator().compare(recorded, Observed(200, [], body + b"!"))
    assert found.location == "body" and found.kind == "changed"
    assert found.expected == f"sha256:{hashlib.sha256(body).hexdigest()[:16]} ({len(body)} bytes)"
    assert found.actual is not None and found.actual.startswith("sha256:")
    size_only = Observed(200, [], None, "NOT_KEPT", None, 3)
    assert Comparator().compare(size_only, Observed(200, [], b"abc")) == []
    assert len(Comparator().compare(size_only, Observed(200, [], b"abcd"))) == 1


def test_truncated_body_compares_the_kept_prefix() -> None:
    """A truncated recorded body matches any actual body that starts with the kept bytes."""
    recorded = Observed(200, [], b'{"items": [1, 2', "TRUNCATED", content_type=JSON)
    assert Comparator().compare(recorded, _json({"items": [1, 2, 3]})) == []
    [found] = Comparator().compare(recorded, _json({"items": [1, 3, 3]}))
    assert found.location == "body" and found.expected == "at 14: b'{\"items\": [1, 2'"
    assert Comparator().compare(recorded, Observed(200, [], b'{"items"')) != []


def test_no_body_against_a_body_and_unknown_bodies() -> None:
    """No body against a non-empty one is a difference; aborted or unknown recorded bodies are not compared."""
    [found] = Comparator().compare(Observed(204, [], None, "NONE"), Observed(204, [], b"x"))
    assert (found.location, found.kind, found.expected) == ("body", "added", None)
    assert Comparator().compare(Observed(204, [], None, "NONE"), Observed(204, [], b"", "NONE")) == []
    assert Comparator().compare(Observed(200, [], b"par", "ABORTED"), Observed(200, [], b"full")) == []
    assert Comparator().compare(Observed(200, [], b"?", "UNKNOWN"), Observed(200, [], b"other")) == []


def test_text_diff_gives_short_bounded_values_around_the_first_difference() -> None:
    """Non-JSON text differs at "body" with values of at most 120 characters near the first change."""
    expected = Observed(200, [], ("line\n" * 5000 + "old" + "tail" * 500).encode(), content_type="text/plain")
    actual = Observed(200, [], ("line\n" * 5000 + "new" + "tail" * 500).encode(), content_type="text/plain")
    [found] = Comparator().compare(expected, actual)
    assert (found.location, found.kind) == ("body", "changed")
    assert found.expected is not None and found.actual is not None
    assert len(found.expected) <= 120 and len(found.actual) <= 120
    assert found.expected.startswith("at 25000: ") and "old" in found.expected and "new" in found.actual


def test_binary_bodies_compare_by_digest() -> None:
    """Bodies of a binary type compare by digest; body="none" leaves bodies out."""
    png = Observed(200, [], b"\x89PNG\x00\x01", content_type="image/png")
    other = Observed(200, [], b"\x89PNG\x00\x02", content_type="image/png")
    [found] = Comparator().compare(png, other)
    assert found.expected is not None and found.expected.startswith("sha256:")
    assert Comparator(CompareOptions(body="none")).compare(png, other) == []


def _baseline(request_id: str, date: bytes, total: int) -> Observed:
    headers = [(b"Date", date), (b"Content-Type", JSON.encode())]
    return _json({"request_id": request_id, "total": total}, headers=headers)


def test_noise_model_learns_ids_and_dates_then_hides_only_them() -> None:
    """Noise learned from two baseline replays hides those locations; a real change still shows."""
    model = NoiseModel()
    learned = model.learn("GET /orders/{id}", _baseline("a", b"Mon", 3), _baseline("b", b"Tue", 3))
    assert {d.location for d in learned} == {"header:date", "body:$.request_id"}
    noise = model.noise("GET /orders/{id}")
    comparator = Comparator(CompareOptions(headers=("date",)))
    expected = _baseline("a", b"Mon", 3)
    assert comparator.compare(expected, _baseline("c", b"Wed", 3), noise=noise) == []
    assert comparator.compare(expected, _baseline("c", b"Wed", 4), noise=noise) == [
        Difference("body:$.total", "changed", "3", "4")
    ]
    assert model.noise("GET /other") == frozenset()


def test_noise_generalises_array_indices() -> None:
    """Noise learned at items[0] applies at every index, in lists of any length."""
    model = NoiseModel()
    model.learn(
        "GET /items", _json({"items": [{"id": "x", "n": 1}]}), _json({"items": [{"id": "y", "n": 1}]})
    )
    assert model.noise("GET /items") == {"body:$.items[*].id"}
    expected = _json({"items": [{"id": i, "n": 1} for i in range(6)]})
    actual = _json({"items": [{"id": -i, "n": 1 + (i == 5)} for i in range(6)]})
    found = Comparator().compare(expected, actual, noise=model.noise("GET /items"))
    assert found == [Difference("body:$.items[5].n", "changed", "1", "2")]


def test_noise_round_trips_through_json() -> None:
    """to_json and from_json keep every key and location; an unreadable location is a ValueError."""
    model = NoiseModel()
    model.learn("GET /a", _baseline("a", b"Mon", 1), _baseline("b", b"Tue", 1))
    model.learn("GET /b", _json({'x"y': [1]}), _json({'x"y': [2]}))
    data = model.to_json()
    assert data == {"GET /a": ["body:$.request_id", "header:date"], "GET /b": ['body:$["x\\"y"][*]']}
    again = NoiseModel.from_json(json.loads(json.dumps(data)))
    assert again.to_json() == data
    assert again.noise("GET /b") == model.noise("GET /b")
    with pytest.raises(ValueError, match="Cannot read the location"):
        NoiseModel.from_json({"GET /a": ["somewhere"]})
    with pytest.raises(ValueError, match="must be a list of locations"):
        NoiseModel.from_json({"GET /a": "header:date"})


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=25,
)


@given(_json_values)
def test_any_json_value_equals_itself(value: Any) -> None:
    """Any JSON value, serialised two different ways, compares equal to itself."""
    compact = Observed(200, [], json.dumps(value, separators=(",", ":")).encode(), content_type=JSON)
    spaced = Observed(200, [], json.dumps(value, indent=2).encode() + b" ", content_type=JSON)
    assert Comparator(CompareOptions(unordered=("$..tags",))).compare(compact, spaced) == []


@given(st.lists(_json_values, max_size=6), st.randoms(use_true_random=False))
def test_unordered_root_array_ignores_any_permutation(items: list[Any], random: Any) -> None:
    """A root array listed as unordered equals any permutation of itself."""
    shuffled = list(items)
    random.shuffle(shuffled)
    assert _diff(items, shuffled, unordered=("$",)) == []
