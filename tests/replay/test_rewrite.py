"""Rewrites: headers, host, path prefix and regexes, from flags or a YAML file."""

from __future__ import annotations

from pathlib import Path

import pytest

from trafficreel.replay import RewriteError, Rewriter, Rewrites, load_rewrites

HEADERS = [
    (b"host", b"shop"),
    (b"x-token", b"a"),
    (b"accept", b"*/*"),
    (b"X-Token", b"b"),
    (b"x-tenant", b"acme"),
]


def test_set_header_takes_the_place_of_the_first_recorded_one() -> None:
    """A set header replaces every recorded one of that name, at the first one's position."""
    _, _, headers, _ = Rewriter(Rewrites(set_headers={"X-Token": "new"})).apply(b"/", b"", HEADERS, b"")
    assert headers == [(b"host", b"shop"), (b"X-Token", b"new"), (b"accept", b"*/*"), (b"x-tenant", b"acme")]


def test_set_header_is_appended_when_absent_and_remove_drops_all() -> None:
    """A header not recorded is appended; a removed one disappears with its duplicates."""
    rewrites = Rewrites(set_headers={"Authorization": "Bearer t"}, remove_headers=["X-TOKEN"])
    _, _, headers, _ = Rewriter(rewrites).apply(b"/", b"", HEADERS, b"")
    assert headers == [
        (b"host", b"shop"),
        (b"accept", b"*/*"),
        (b"x-tenant", b"acme"),
        (b"Authorization", b"Bearer t"),
    ]


def test_host_prefix_and_substitutions() -> None:
    """Host, the first matching prefix, and regexes in path, query, one header and the body."""
    rewrites = Rewrites.model_validate(
        {
            "host": "staging.svc",
            "path_prefix": [{"from": "/v1/", "to": "/v2/"}],
            "substitute": [
                {"where": "path", "pattern": r"/(\d+)$", "replacement": r"/id-\1"},
                {"where": "query", "pattern": "limit=\\d+", "replacement": "limit=5"},
                {"where": "header:x-tenant", "pattern": "^acme$", "replacement": "acme-test"},
                {"where": "body", "pattern": "prod", "replacement": "test"},
            ],
        }
    )
    path, query, headers, body = Rewriter(rewrites).apply(b"/v1/items/42", b"limit=100&x=1", HEADERS, b"prod")
    assert (path, query, body) == (b"/v2/items/id-42", b"limit=5&x=1", b"test")
    assert (b"host", b"staging.svc") in headers and (b"x-tenant", b"acme-test") in headers


def test_rewrite_file_expands_environment_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """${NAME} in the file is read from the environment, so tokens stay out of the file."""
    monkeypatch.setenv("REPLAY_TOKEN", "s3cret")
    path = tmp_path / "rewrites.yaml"
    path.write_text("set_headers:\n  Authorization: Bearer ${REPLAY_TOKEN}\n")
    assert load_rewrites(path).set_headers == {"Authorization": "Bearer s3cret"}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("unknown_key: 1\n", "unknown_key"),
        ("substitute:\n  - {where: nowhere, pattern: x}\n", "where must be"),
        ("substitute:\n  - {where: body, pattern: '('}\n", "invalid regular expression"),
        ("set_headers:\n  A: ${NOT_SET_ANYWHERE}\n", "NOT_SET_ANYWHERE is not set"),
    ],
)
def test_invalid_rewrite_files_say_what_is_wrong(tmp_path: Path, text: str, needle: str) -> None:
    """Unknown keys, bad locations, bad regexes and missing variables are clear errors."""
    path = tmp_path / "rewrites.yaml"
    path.write_text(text)
    with pytest.raises(RewriteError, match=needle):
        load_rewrites(path)
