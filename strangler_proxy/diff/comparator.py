"""The comparison stage: a :class:`ShadowPair` in, an immutable :class:`ShadowResult` out.

Pipeline (the shadow dispatcher runs it in its worker, never on the request's
hot path)::

    verdict gates   skipped? legacy error? candidate error?
    lift            status, allow-listed headers, body -> JSON / text / sha256
    learn noise     legacy vs legacy_again (when sampled) -> NoiseModel
    diff            status, headers, body (rules applied while walking)
    subtract noise  differences on ignored or learned-noise paths -> result.noise
    redact          sample bodies, difference values, headers in result.extra

    >>> from strangler_proxy.config import CompareConfig
    >>> from strangler_proxy.diff.exchange import Exchange, ShadowPair
    >>> leg = Exchange("legacy", "GET", "/a", status=200, body=b'{"n": 1, "request_id": "x"}')
    >>> cand = Exchange("target", "GET", "/a", status=200, body=b'{"n": 1, "request_id": "y"}')
    >>> r = DiffComparator().compare(ShadowPair("a", "shadow", "legacy", leg, cand), CompareConfig(ignore=("$..request_id",)))
    >>> r.verdict.value, [d.path for d in r.noise]
    ('match', ['$.request_id'])
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from strangler_proxy.config import CompareConfig
from strangler_proxy.diff.differ import MAX_DIFFERENCES, RawDiff, clip, diff_raw
from strangler_proxy.diff.exchange import Exchange, ShadowPair
from strangler_proxy.diff.lifter import Form, Lifted, header_values, lift
from strangler_proxy.diff.noise import NoiseModel
from strangler_proxy.diff.redaction import REDACTED, body_sample, redact_header_value, redact_headers, redact_value
from strangler_proxy.diff.result import Difference, DiffKind, ShadowResult, Verdict
from strangler_proxy.diff.rules import CompiledRules, compile_rules, generalise_path, generalised_prefixes, render_path

log = logging.getLogger(__name__)

DEFAULT_SAMPLE_BODY_LIMIT = 16 * 1024
# Exchange.error values meaning "not compared on purpose" rather than "failed".
SKIP_ERRORS = frozenset({"too-large", "dropped", "unsafe-method", "skipped", "sampled-out", "queue-full"})
STATUS_PATH = "status"
HEADER_PATH_PREFIX = "header:"
# Text body differences show this much of each side around the first change.
_SNIPPET_BEFORE, _SNIPPET_AFTER = 40, 200

SOURCE_RULE = "rule"
SOURCE_LEARNED = "learned"


class Comparator(Protocol):
    """Turns one pair into one result; must not raise (callers still guard it).

    The REST shadow path and the GraphQL field shadows both take one of these:
    :class:`DiffComparator` in the proxy, anything with the same method in tests.
    """

    def compare(self, pair: ShadowPair, rules: CompareConfig) -> ShadowResult: ...


class DiffComparator:
    """Compares both sides of a shadowed request (a :class:`Comparator`).

    ``noise`` is shared by every comparison so what legacy disagrees with
    itself about is learned across requests; bodies sampled into results are
    redacted and cut to ``sample_body_limit`` bytes. Samples are attached to
    every verdict but MATCH (they are evidence; a match needs none) unless
    ``samples_on_match``.
    """

    def __init__(
        self,
        noise: NoiseModel | None = None,
        sample_body_limit: int = DEFAULT_SAMPLE_BODY_LIMIT,
        *,
        samples_on_match: bool = False,
    ) -> None:
        self.noise = noise if noise is not None else NoiseModel()
        self.sample_body_limit = sample_body_limit
        self.samples_on_match = samples_on_match

    def compare(self, pair: ShadowPair, rules: CompareConfig | CompiledRules | None) -> ShadowResult:
        try:
            return self._compare(pair, compile_rules(rules))
        except Exception as exc:  # noqa: BLE001 -- like Scientist: a comparator bug must not stop the pipeline
            log.exception("comparing %s failed", pair.key)
            return _result(pair, Verdict.SKIPPED, reason=f"compare-failed: {type(exc).__name__}: {exc}")

    # ------------------------------------------------------------ stages

    def _compare(self, pair: ShadowPair, rules: CompiledRules) -> ShadowResult:
        leg, cand = pair.legacy, pair.candidate
        skip = _skip_reason(pair)
        if skip is not None:
            return _result(pair, Verdict.SKIPPED, reason=skip)
        if leg.status is None or leg.error is not None or leg.status >= 500:
            return self._error_result(pair, rules, Verdict.LEGACY_ERROR, _error_reason("legacy", leg))
        if (leg.body == cand.body and cand.status == leg.status and cand.error is None
                and pair.legacy_again is None and not self.samples_on_match and not _header_diffs(leg, cand, rules)):
            # Byte-equal answers with the same status and headers: nothing to lift, nothing any rule could add.
            return _result(pair, Verdict.MATCH)
        lifted_leg = lift(leg)
        if pair.legacy_again is not None:
            # Legacy against itself teaches noise whatever the candidate did.
            self._learn(pair.key, leg, lifted_leg, pair.legacy_again, rules)
        if cand.status is None or cand.error is not None or cand.status >= 500:
            return self._error_result(pair, rules, Verdict.CANDIDATE_ERROR, _error_reason("candidate", cand))
        lifted_cand = lift(cand)

        meta: list[Difference] = []
        if leg.status != cand.status:
            meta.append(Difference(DiffKind.STATUS, STATUS_PATH, leg.status, cand.status))
        meta.extend(_header_diffs(leg, cand, rules))
        body, ignored, truncated = _body_diffs(lifted_leg, lifted_cand, rules)

        key = pair.key
        learned = self.noise.paths(key)
        real: list[Difference] = []
        noise: list[Difference] = []
        sources: list[str] = []
        for d in meta:
            if d.kind is not DiffKind.STATUS and learned and d.path in learned:
                noise.append(_redact_meta(d, rules))
                sources.append(SOURCE_LEARNED)
            else:
                real.append(_redact_meta(d, rules))
        for raw in ignored:
            noise.append(_finish(raw, rules))
            sources.append(SOURCE_RULE)
        for raw in body:
            if learned and self.noise.explains(key, generalised_prefixes(raw[1])) is not None:
                noise.append(_finish(raw, rules))
                sources.append(SOURCE_LEARNED)
            else:
                real.append(_finish(raw, rules))

        verdict = Verdict.MISMATCH if real else Verdict.MATCH
        extra: dict[str, Any] = {}
        if sources:
            extra["noise_sources"] = sources
        if truncated:
            extra["differences_truncated"] = True
        samples: tuple[bytes | None, bytes | None] = (None, None)
        if verdict is not Verdict.MATCH or self.samples_on_match:
            samples = self._samples(pair, rules, lifted_leg, lifted_cand, extra)
        return _result(
            pair,
            verdict,
            differences=tuple(real),
            noise=tuple(noise),
            legacy_body=samples[0],
            candidate_body=samples[1],
            extra=extra,
        )

    def _learn(self, key: str, leg: Exchange, lifted_leg: Lifted, again: Exchange, rules: CompiledRules) -> None:
        """Legacy vs legacy: whatever differs is volatile for this key. Status is
        never learned -- a flapping status is a legacy error, not noise."""
        if not again.ok or again.body_truncated or again.status != leg.status:
            return
        lifted_again = lift(again)
        if lifted_again.form is not lifted_leg.form:
            return  # JSON once, an HTML page the next time: flaky legacy, not noise
        self.noise.observe(key)
        paths = [d.path for d in _header_diffs(leg, again, rules)]
        body, _, _ = _body_diffs(lifted_leg, lifted_again, rules)
        paths.extend(generalise_path(raw[1]) for raw in body)
        if paths:
            self.noise.learn(key, paths)

    def _error_result(self, pair: ShadowPair, rules: CompiledRules, verdict: Verdict, reason: str) -> ShadowResult:
        extra: dict[str, Any] = {}
        leg_body, cand_body = self._samples(pair, rules, lift(pair.legacy), lift(pair.candidate), extra)
        return _result(pair, verdict, reason=reason, legacy_body=leg_body, candidate_body=cand_body, extra=extra)

    def _samples(
        self, pair: ShadowPair, rules: CompiledRules, leg: Lifted, cand: Lifted, extra: dict[str, Any]
    ) -> tuple[bytes | None, bytes | None]:
        limit = self.sample_body_limit
        leg_body, leg_cut = body_sample(leg, rules, limit)
        cand_body, cand_cut = body_sample(cand, rules, limit)
        if leg_cut:
            extra["legacy_body_truncated"] = True
        if cand_cut:
            extra["candidate_body_truncated"] = True
        extra["legacy_headers"] = redact_headers(pair.legacy.response_headers, rules)
        extra["candidate_headers"] = redact_headers(pair.candidate.response_headers, rules)
        return leg_body, cand_body


# ------------------------------------------------------------ helpers


def _result(pair: ShadowPair, verdict: Verdict, **kw: Any) -> ShadowResult:
    leg, cand = pair.legacy, pair.candidate
    return ShadowResult(
        key=pair.key,
        mode=pair.mode,
        verdict=verdict,
        at=pair.at,
        legacy_status=leg.status,
        candidate_status=cand.status,
        legacy_latency_s=leg.latency_s,
        candidate_latency_s=cand.latency_s,
        method=leg.method,
        target=leg.target,
        partition=pair.partition,
        **kw,
    )


def _skip_reason(pair: ShadowPair) -> str | None:
    for side, ex in (("legacy", pair.legacy), ("candidate", pair.candidate)):
        if ex.error is not None and (ex.error in SKIP_ERRORS or ex.error.startswith("skip")):
            return f"{side}: {ex.error}"
        if ex.body_truncated:
            # A cut body cannot be compared honestly.
            return f"{side}: too-large"
    return None


def _error_reason(side: str, ex: Exchange) -> str:
    return failure_reason(side, ex.status, ex.error)


def failure_reason(side: str, status: int | None, error: str | None) -> str:
    """How a side's failure reads in every result: ``candidate: timeout``, ``legacy: status 503``."""
    if error is not None:
        return f"{side}: {error}"
    if status is None:
        return f"{side}: no response"
    return f"{side}: status {status}"


def _header_diffs(a: Exchange, b: Exchange, rules: CompiledRules) -> list[Difference]:
    if not rules.headers:
        return []
    va = header_values(a.response_headers, rules.headers)
    vb = header_values(b.response_headers, rules.headers)
    return [
        Difference(DiffKind.HEADER, HEADER_PATH_PREFIX + name, va[name], vb[name])
        for name in rules.headers
        if va[name] != vb[name]
    ]


def _body_diffs(a: Lifted, b: Lifted, rules: CompiledRules) -> tuple[list[RawDiff], list[RawDiff], bool]:
    if a.raw == b.raw:
        return [], [], False  # byte-equal: nothing any rule could add
    if a.form is not b.form:
        return [(DiffKind.TYPE, (), a.form.value, b.form.value)], [], False
    if a.form is Form.JSON:
        return diff_raw(a.value, b.value, rules, boolfree=a.boolfree and b.boolfree, limit=MAX_DIFFERENCES)
    if a.form is Form.TEXT:
        norm = rules.normaliser(()) if rules.has_normalise else None
        if norm is not None and norm(a.value) == norm(b.value):
            return [], [], False
        sa, sb = _snippets(a.value, b.value)
        return [(DiffKind.BODY, (), sa, sb)], [], False
    if a.form is Form.BINARY and a.value != b.value:
        return [(DiffKind.BODY, (), f"{a.value} ({len(a.raw)} bytes)", f"{b.value} ({len(b.raw)} bytes)")], [], False
    return [], [], False


def _snippets(a: str, b: str) -> tuple[str, str]:
    """Both texts around their first difference."""
    # Length of the common prefix by bisection: slice compares run in C.
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    i = lo
    start = max(0, i - _SNIPPET_BEFORE)

    def cut(s: str) -> str:
        end = i + _SNIPPET_AFTER
        return ("…" if start else "") + s[start:end] + ("…" if end < len(s) else "")

    return cut(a), cut(b)


def _finish(raw: RawDiff, rules: CompiledRules) -> Difference:
    kind, path, a, b = raw
    if rules.redact_paths:
        if kind is DiffKind.BODY:
            # A text body cannot be searched for the configured secrets.
            a = b = REDACTED
        else:
            a, b = redact_value(a, path, rules), redact_value(b, path, rules)
    return Difference(kind, render_path(path), clip(a), clip(b))


def _redact_meta(d: Difference, rules: CompiledRules) -> Difference:
    if d.kind is not DiffKind.HEADER:
        return d
    name = d.path[len(HEADER_PATH_PREFIX) :]
    a, b = redact_header_value(name, d.legacy, rules), redact_header_value(name, d.candidate, rules)
    if a is d.legacy and b is d.candidate:
        return d
    return Difference(d.kind, d.path, a, b)
