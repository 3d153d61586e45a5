"""A secret in a query string never reaches the access log; the upstream still gets it."""

from __future__ import annotations

import json
import logging

import pytest

from strangler_proxy.config import load_config_text
from tests.dataplane.conftest import MakeProxy
from tests.dataplane.rawhttp import RawUpstream
from tests.dataplane.test_modes import get

ROUTES = ('[{name: ratings, path: "/api/titles/{id}/ratings", target: target, mode: shadow,'
          ' compare: {redact_query: [session]}}]')


def _targets(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [json.loads(r.getMessage())["target"] for r in caplog.records if r.name == "strangler.access"]


async def test_secret_query_values_are_redacted_in_the_access_log(
    make_proxy: MakeProxy, legacy: RawUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = await make_proxy(ROUTES)
    sent = [
        "/api/titles/tt1/ratings?lang=en&Token=t0p-s3cret&session=s3ss10n",
        "/other?access_token=abc123&page=2",
        "/other?session=s3ss10n-2",  # named by one route: redacted in every line
        "/other?q=token&x=%20",  # "token" as a value is no secret
        "/api/titles/tt2/ratings",
    ]
    with caplog.at_level(logging.INFO, logger="strangler.access"):
        for target in sent:
            assert (await get(proxy, target)).status == 200
    assert _targets(caplog) == [
        "/api/titles/tt1/ratings?lang=en&Token=REDACTED&session=REDACTED",
        "/other?access_token=REDACTED&page=2",
        "/other?session=REDACTED",
        "/other?q=token&x=%20",
        "/api/titles/tt2/ratings",
    ]
    assert [s.target for s in legacy.seen] == sent  # only the log is redacted
    await proxy.shadow.drain()


async def test_a_reload_brings_new_secret_names_to_the_access_log(
    make_proxy: MakeProxy, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = await make_proxy("[]")
    config = proxy.runtime.config
    with caplog.at_level(logging.INFO, logger="strangler.access"):
        await get(proxy, "/a?session=one")
        proxy.runtime.apply(load_config_text(
            "upstreams: " + json.dumps({n: {"url": u.url} for n, u in config.upstreams.items()})
            + "\ncompare: {redact_query: [Session]}\n"
        ))
        await get(proxy, "/a?session=two")
    assert _targets(caplog) == ["/a?session=one", "/a?session=REDACTED"]
