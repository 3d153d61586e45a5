"""Secret query parameters: which values are replaced, and that nothing else changes."""

from __future__ import annotations

import io
import logging

import pytest

from strangler_proxy.config import CompareConfig, load_config_text
from strangler_proxy.dataplane.accesslog import ACCESS_LOGGER, AccessLog, BufferedLineHandler
from strangler_proxy.diff.redaction import ALWAYS_REDACTED_QUERY, QueryRedaction, configured_query_names
from strangler_proxy.errors import ConfigError


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/api/titles/tt1", "/api/titles/tt1"),
        ("/a?", "/a?"),
        ("/a?token", "/a?token"),  # no value, nothing to hide
        ("/a?token=", "/a?token="),
        ("/a?token=x", "/a?token=REDACTED"),
        ("/a?TOKEN=x&Api_Key=y", "/a?TOKEN=REDACTED&Api_Key=REDACTED"),
        ("/a?x=1&password=p%40ss&y=2", "/a?x=1&password=REDACTED&y=2"),
        ("/a?sig=abc;secret=s", "/a?sig=REDACTED;secret=REDACTED"),
        ("/a?%74oken=abc", "/a?%74oken=REDACTED"),  # an encoded name is still the name
        ("/a?access%5Ftoken=abc&b=%20", "/a?access%5Ftoken=REDACTED&b=%20"),
        ("/a?token=a=b&c=d", "/a?token=REDACTED&c=d"),
        ("/a?token=1&token=2", "/a?token=REDACTED&token=REDACTED"),
        ("/a?tokens=1&my_token=2&q=token", "/a?tokens=1&my_token=2&q=token"),
        ("/a?q=%2Ftoken%3Dx", "/a?q=%2Ftoken%3Dx"),
        ("http://films.example/a?secret=s#frag", "http://films.example/a?secret=REDACTED#frag"),
        ("/a/token=x", "/a/token=x"),  # the path is not a query
    ],
)
def test_default_names(target: str, expected: str) -> None:
    assert QueryRedaction().target(target) == expected


def test_the_defaults() -> None:
    assert ALWAYS_REDACTED_QUERY == {"token", "access_token", "api_key", "password", "secret", "sig"}


def test_configured_names_add_to_the_defaults_case_insensitively() -> None:
    q = QueryRedaction(("Session", "x-sig"))
    assert q.target("/a?session=1&SESSION=2&x-sig=3&token=4&k=5") == (
        "/a?session=REDACTED&SESSION=REDACTED&x-sig=REDACTED&token=REDACTED&k=5")


def test_an_untouched_target_is_the_same_object() -> None:
    q = QueryRedaction()
    for target in ("/api/titles/tt1", "/api/titles?page=2&limit=50", "/a?q=%20"):
        assert q.target(target) is target


def test_redact_query_merges_like_the_other_redaction_rules() -> None:
    config = load_config_text("""
upstreams:
  legacy: {url: "http://127.0.0.1:8001"}
  svc: {url: "http://127.0.0.1:8002"}
compare: {redact_query: [session]}
routes:
  - {name: a, path: /a, target: svc, mode: shadow, compare: {redact_query: [otp]}}
  - {name: b, path: /b, target: svc, mode: shadow}
graphql:
  backends: {legacy: {upstream: legacy}, svc: {upstream: svc}}
  fields:
    Title.rating: {target: svc, compare: {redact_query: [pin]}}
""")
    a, b = config.routes
    assert config.compare_for(a).redact_query == ("session", "otp")
    assert config.compare_for(b).redact_query == ("session",)
    assert configured_query_names(config) == ("session", "otp", "pin")


@pytest.mark.parametrize("name", ["", "a=b", "a&b", "a b", "x?"])
def test_a_name_that_cannot_be_a_query_parameter_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="query parameter name"):
        CompareConfig(redact_query=(name,))
    with pytest.raises(ConfigError, match="redact_query"):
        load_config_text(f'upstreams: {{legacy: {{url: "http://127.0.0.1:1"}}}}\ncompare: {{redact_query: ["{name}"]}}\n')


def test_the_access_log_fast_path_writes_redacted_lines() -> None:
    logger = logging.getLogger(ACCESS_LOGGER)
    saved = (logger.handlers[:], logger.level, logger.propagate)
    stream = io.BytesIO()
    handler = BufferedLineHandler(stream, flush_interval_s=60)
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        log = AccessLog(query=QueryRedaction(("session",)))
        log.emit("r", "shadow", "legacy", "GET", "/a?session=s3ss&api_key=k3y&n=1", 200, 0.001)
        log.emit(None, "legacy", "legacy", "GET", "/b", 200, 0.001)
        handler.flush()
    finally:
        handler.close()
        logger.handlers[:], logger.level, logger.propagate = saved
    out = stream.getvalue()
    assert b'"target":"/a?session=REDACTED&api_key=REDACTED&n=1"' in out and b'"target":"/b"' in out
    assert b"s3ss" not in out and b"k3y" not in out
