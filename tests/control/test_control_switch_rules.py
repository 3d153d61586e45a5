"""The pure rules of upstream switches: naming an endpoint, what a failover or a drain may do,
and what a reloaded file keeps (control/switch_rules.py)."""

from __future__ import annotations

import doctest

import pytest

from strangler_proxy.config import load_config_text
from strangler_proxy.control import switch_rules as rules
from strangler_proxy.control.state_store import StoredSwitch
from strangler_proxy.errors import SwitchError
from strangler_proxy.routing.endpoints import UpstreamSwitch

THREE = """
upstreams:
  legacy:
    endpoints:
      - {url: "http://10.0.0.1:8001", zone: eu}
      - {url: "http://10.0.0.2:8001/", zone: eu}
      - {url: "http://app:pw@10.0.0.3:8001", zone: us, priority: 1}
  ratings: {url: "http://10.0.1.1:8101"}
"""
EU1, EU2, US = "http://10.0.0.1:8001", "http://10.0.0.2:8001", "http://app:***@10.0.0.3:8001"


@pytest.fixture
def cfg():  # type: ignore[no-untyped-def]
    return load_config_text(THREE)


def test_the_examples_in_the_docstrings_hold() -> None:
    failed, attempted = doctest.testmod(rules, optionflags=doctest.ELLIPSIS)
    assert attempted > 5 and failed == 0


@pytest.mark.parametrize(("ref", "url"), [
    (EU1, EU1), (EU2 + "/", EU2), ("http://app:pw@10.0.0.3:8001", US), (US, US),  # URLs, as written or as shown
    ("0", EU1), ("2", US),  # indexes
    ("us", US),  # a zone with one endpoint
])
def test_an_endpoint_is_named_by_url_index_or_a_zone_with_one_endpoint(cfg, ref, url) -> None:  # type: ignore[no-untyped-def]
    assert rules.endpoint_key(rules.resolve_endpoint("legacy", cfg.upstreams["legacy"], ref)) == url


@pytest.mark.parametrize(("ref", "message"), [
    ("eu", "zone 'eu' has 2 endpoints: name one by URL or index"),
    ("3", "no endpoint '3': give its URL, index or zone"),
    ("http://10.9.9.9:1", "no endpoint http://10.9.9.9:1 (endpoints: 0 http://10.0.0.1:8001 (eu), "),
    ("mars", "no endpoint 'mars'"),
])
def test_a_reference_that_names_no_single_endpoint_is_refused(cfg, ref, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SwitchError, match="^upstream 'legacy': ") as caught:
        rules.resolve_endpoint("legacy", cfg.upstreams["legacy"], ref)
    assert message in str(caught.value)
    assert "pw@" not in str(caught.value)  # a listing never shows a password


def test_a_reference_that_is_both_an_index_and_another_zone_is_refused() -> None:
    cfg = load_config_text("""
upstreams:
  legacy:
    endpoints:
      - {url: "http://10.0.0.1:8001", zone: "1"}
      - {url: "http://10.0.0.2:8001", zone: eu}
""")
    with pytest.raises(SwitchError, match="both endpoint 1 .* and zone 1 .*: name it by URL"):
        rules.resolve_endpoint("legacy", cfg.upstreams["legacy"], "1")
    # Index 0 is the endpoint of zone "1"... and zone "0" does not exist: no doubt there.
    assert rules.resolve_endpoint("legacy", cfg.upstreams["legacy"], "0").url == "http://10.0.0.1:8001"


def test_failover_needs_a_zone_of_the_upstream_with_an_endpoint_not_drained(cfg) -> None:  # type: ignore[no-untyped-def]
    up = cfg.upstreams["legacy"]
    assert rules.failover("legacy", up, UpstreamSwitch(), "us") == UpstreamSwitch(pinned_zone="us")
    assert rules.failover("legacy", up, UpstreamSwitch(pinned_zone="us"), None) == UpstreamSwitch()
    with pytest.raises(SwitchError, match=r"no endpoint in zone 'mars' \(zones: eu, us\)"):
        rules.failover("legacy", up, UpstreamSwitch(), "mars")
    with pytest.raises(SwitchError, match="every endpoint in zone 'us' is drained: undrain one first"):
        rules.failover("legacy", up, UpstreamSwitch(drained=frozenset({US})), "us")
    with pytest.raises(SwitchError, match="no such upstream .known: legacy, ratings."):
        rules.upstream_config(cfg, "legasy")


def test_draining_keeps_a_candidate(cfg) -> None:  # type: ignore[no-untyped-def]
    up = cfg.upstreams["legacy"]
    ep = {ref: rules.resolve_endpoint("legacy", up, ref) for ref in ("0", "1", "2")}
    two = rules.drain("legacy", up, rules.drain("legacy", up, UpstreamSwitch(), ep["0"]), ep["1"])
    assert two.drained == {EU1, EU2}
    with pytest.raises(SwitchError, match="is its last endpoint that is not drained; a drained endpoint is never "
                                          "chosen"):
        rules.drain("legacy", up, two, ep["2"])
    # Pinned to eu: its last endpoint there cannot go, but another zone could take over.
    pinned = rules.drain("legacy", up, UpstreamSwitch(pinned_zone="eu"), ep["0"])
    with pytest.raises(SwitchError, match="last endpoint not drained in zone 'eu', which the upstream is pinned to: "
                                          "fail over to another zone"):
        rules.drain("legacy", up, pinned, ep["1"])
    # Draining what is drained, undraining what is not: nothing changes.
    assert rules.drain("legacy", up, two, ep["0"]) == two
    assert rules.undrain(up, two, ep["2"]) == two
    assert rules.undrain(up, two, ep["0"]).drained == {EU2}
    # One endpoint: never drained.
    single = cfg.upstreams["ratings"]
    with pytest.raises(SwitchError, match="last endpoint"):
        rules.drain("ratings", single, UpstreamSwitch(), rules.resolve_endpoint("ratings", single, "0"))


def _stored(upstream: str, pin: str | None, *drained: str) -> StoredSwitch:
    return StoredSwitch(upstream, pin, tuple(sorted(drained)), version=3, updated_by="ops")


def test_a_file_keeps_the_switches_it_still_allows(cfg) -> None:  # type: ignore[no-untyped-def]
    stored = {"legacy": _stored("legacy", "us", EU1)}
    assert rules.reconcile_switches(cfg, stored) == {}
    assert rules.effective_switches(cfg, stored) == {"legacy": UpstreamSwitch("us", frozenset({EU1}))}


@pytest.mark.parametrize(("text", "stored", "after", "audited"), [
    # The upstream is gone: everything goes.
    ("upstreams: {ratings: {url: 'http://10.0.1.1:8101'}}\nproxy: {default_upstream: ratings}",
     _stored("legacy", "us", EU1), None,
     [("us", "auto", "the upstream was removed from the file"),
      ("drained", "removed", "the upstream was removed from the file")]),
    # Zone us is gone: the pin goes, the drain of an endpoint still there stays.
    ("upstreams: {legacy: {endpoints: [{url: 'http://10.0.0.1:8001', zone: eu}, {url: 'http://10.0.0.2:8001', "
     "zone: eu}]}}",
     _stored("legacy", "us", EU1), ("legacy", None, (EU1,)),
     [("us", "auto", "the file has no endpoint in zone 'us' any more")]),
    # A drained endpoint is gone from the file.
    ("upstreams: {legacy: {endpoints: [{url: 'http://10.0.0.2:8001', zone: eu}, {url: 'http://10.0.0.3:8001', "
     "zone: us}]}}",
     _stored("legacy", None, EU1), None, [("drained", "removed", "the endpoint was removed from the file")]),
    # The file leaves only drained endpoints: the drains go (an upstream always keeps a candidate).
    ("upstreams: {legacy: {url: 'http://10.0.0.1:8001'}}",
     _stored("legacy", None, EU1), None,
     [("drained", "serving", "the file leaves no other endpoint; a drained endpoint is never chosen")]),
    # Pinned to eu where the only endpoint left is drained: the pin goes first, the drain stays.
    ("upstreams: {legacy: {endpoints: [{url: 'http://10.0.0.1:8001', zone: eu}, {url: 'http://10.0.0.3:8001', "
     "zone: us}]}}",
     _stored("legacy", "eu", EU1), ("legacy", None, (EU1,)),
     [("eu", "auto", "the file leaves no endpoint in zone 'eu' that is not drained")]),
])
def test_a_file_drops_what_it_no_longer_allows_and_says_why(text, stored, after, audited) -> None:  # type: ignore[no-untyped-def]
    cfg = load_config_text(text)
    [(name, change)] = rules.reconcile_switches(cfg, {stored.upstream: stored}).items()
    assert name == "legacy" and change.before == stored
    if after is None:
        assert change.after is None
    else:
        assert change.after is not None
        assert (change.after.upstream, change.after.pinned_zone, change.after.drained) == after
        assert change.after.version == stored.version  # written against the version it was read at
    assert [(d.from_mode, d.to_mode, d.reason) for d in change.drafts] == audited
    assert {(d.name, d.who, d.kind) for d in change.drafts} == {("upstream:legacy", "file", "file")}
    expected = {} if after is None else {"legacy": UpstreamSwitch(after[1], frozenset(after[2]))}
    assert rules.effective_switches(cfg, {stored.upstream: stored}) == expected


def test_the_data_plane_gets_the_real_urls(cfg) -> None:  # type: ignore[no-untyped-def]
    switches = rules.effective_switches(cfg, {"legacy": _stored("legacy", None, US)})
    assert switches == {"legacy": UpstreamSwitch(None, frozenset({US}))}
    assert rules.data_plane_switches(cfg, switches) == {
        "legacy": UpstreamSwitch(None, frozenset({"http://app:pw@10.0.0.3:8001"}))}


def test_audit_rows_name_the_upstream_apart_from_routes() -> None:
    draft = rules.drain_draft("ratings", EU1, "eu", rules.SERVING, rules.DRAINED, who="ops", kind="drain",
                              reason="patching")
    assert draft.name == "upstream:ratings"  # a route called ratings keeps its own history
    assert draft.details == {"upstream": "ratings", "endpoint": EU1, "zone": "eu"}
