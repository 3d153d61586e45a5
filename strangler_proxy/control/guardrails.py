"""Diff-gated rollback (and optional progressive promotion) for canary and extracted routes.

:class:`Guardrails` is a :class:`~strangler_proxy.diff.result.ResultListener`. For
every route or field in ``canary`` or ``extracted`` it keeps a sliding window
of the last ``window`` results no older than ``window_s`` seconds: every
request the candidate handled, mirrored or served. MATCH and SERVED (the
candidate served the client, nothing compared) are OK outcomes, CANDIDATE_ERROR
an error -- on mirrored or served traffic alike -- and MISMATCH a mismatch; so
the error rate is over all the traffic the candidate handled, and a route in
``extracted`` without reverse shadow (or canary at 100 %) is watched too.
Legacy errors and skipped comparisons are not the candidate's doing and are
not counted, nor are TRANSIENT results (a mismatch gone when both sides were
asked again: replication lag) -- neither as a sample nor as a mismatch.
The error rate is errors over every result in the window; the mismatch rate
is mismatches over the *compared* ones (served traffic cannot mismatch),
judged only once at least ``min_samples`` were compared. When the window
holds at least ``min_samples`` results and either rate is *above* its
threshold, the route is rolled back -- through :meth:`FlipService.flip`, so atomically, persisted and
audited (``who="guardrails"``, ``kind="rollback"``, the figures in
``details``) -- to the mode it had before it entered canary/extracted
(default ``shadow``). It also counts ``strangler_rollbacks_total{route}`` and
logs a warning.

Minimum-sample gating, and why it never stalls silently:

* below ``min_samples`` nothing is decided: two bad requests never roll back;
* while the window is younger than ``window_s`` the state is ``warming up``;
* a route that still has fewer than ``min_samples`` results once ``window_s``
  has passed is reported as ``insufficient traffic`` (admin ``/routes``,
  ``strangler routes``, one warning log line): it is never rolled back
  automatically *and never promoted automatically* -- a person decides.

``observe`` is a few deque operations and never raises; the rollback itself
runs as a task on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from strangler_proxy.config import GuardrailConfig, Mode, PromotionConfig
from strangler_proxy.control.flips import ACTIVE_MODES, KIND_PROMOTION, KIND_ROLLBACK, FlipService
from strangler_proxy.control.precedence import is_field
from strangler_proxy.diff.result import GRAPHQL_KEY_PREFIX, ShadowResult, Verdict
from strangler_proxy.errors import FlipError, StranglerError
from strangler_proxy.routing.cells import split_scoped

log = logging.getLogger("strangler.guardrails")

WHO_GUARDRAILS = "guardrails"
WHO_PROMOTION = "promotion"
DEFAULT_TICK_S = 1.0

# SERVED is an OK outcome for the error rate; it is kept apart only so the
# mismatch rate stays over compared results (served traffic cannot mismatch:
# counting it would dilute the rate by the canary's percent).
_OK, _ERROR, _MISMATCH, _SERVED = 0, 1, 2, 3
_COUNTED = {
    Verdict.MATCH: _OK,
    Verdict.SERVED: _SERVED,
    Verdict.CANDIDATE_ERROR: _ERROR,
    Verdict.MISMATCH: _MISMATCH,
}  # LEGACY_ERROR, SKIPPED and TRANSIENT are not the candidate's doing: not counted at all

STATE_INACTIVE = "inactive"
STATE_WARMING_UP = "warming up"
STATE_INSUFFICIENT = "insufficient traffic"
STATE_OK = "ok"
STATE_ROLLING_BACK = "rolling back"


@dataclass(slots=True)
class _Window:
    mode: Mode
    started: float
    samples: deque[tuple[float, int]] = field(default_factory=deque)
    errors: int = 0
    mismatches: int = 0
    served: int = 0
    rolling_back: bool = False
    warned_insufficient: bool = False
    last_step: float = 0.0  # when the percent was last stepped up (progressive promotion)

    def add(self, now: float, outcome: int, limit: int) -> None:
        self.samples.append((now, outcome))
        self.errors += outcome == _ERROR
        self.mismatches += outcome == _MISMATCH
        self.served += outcome == _SERVED
        while len(self.samples) > limit:
            self._drop()

    def prune(self, now: float, max_age_s: float) -> None:
        while self.samples and now - self.samples[0][0] > max_age_s:
            self._drop()

    def _drop(self) -> None:
        _, outcome = self.samples.popleft()
        self.errors -= outcome == _ERROR
        self.mismatches -= outcome == _MISMATCH
        self.served -= outcome == _SERVED

    @property
    def compared(self) -> int:
        """Results in the window that compared something (all but SERVED)."""
        return len(self.samples) - self.served

    def figures(self, cfg: GuardrailConfig, now: float) -> dict[str, Any]:
        n, compared = len(self.samples), self.compared
        return {
            "samples": n,
            "served": self.served,
            "compared": compared,
            "errors": self.errors,
            "mismatches": self.mismatches,
            "error_rate": round(self.errors / n, 4) if n else 0.0,
            "mismatch_rate": round(self.mismatches / compared, 4) if compared else 0.0,
            "span_s": round(now - self.samples[0][0], 3) if n else 0.0,
            "min_samples": cfg.min_samples,
            "max_error_rate": cfg.max_error_rate,
            "max_mismatch_rate": cfg.max_mismatch_rate,
            "window": cfg.window,
            "window_s": cfg.window_s,
        }


class Guardrails:
    """Watches results of canary/extracted routes and rolls a failing one back.

        >>> guard = Guardrails(flips)        # doctest: +SKIP
        >>> dispatcher.add_listener(guard)   # doctest: +SKIP
        >>> guard.start()                    # doctest: +SKIP
    """

    def __init__(self, flips: FlipService, *, clock: Callable[[], float] = time.monotonic,
                 tick_s: float = DEFAULT_TICK_S) -> None:
        self.flips = flips
        self.clock = clock
        self.tick_s = tick_s
        self._windows: dict[str, _Window] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ticker: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Remember the loop rollbacks run on and start the promotion ticker."""
        self._loop = asyncio.get_running_loop()
        self._ticker = self._loop.create_task(self._tick_forever(), name="strangler-promotion")

    async def stop(self) -> None:
        tasks = list(self._tasks) + ([self._ticker] if self._ticker else [])
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._ticker = None

    # ------------------------------------------------------------ listener

    def observe(self, result: ShadowResult) -> None:
        """Count one result; schedule a rollback if a threshold is crossed. Never raises."""
        try:
            self._observe(result)
        except Exception:  # noqa: BLE001 -- a listener must never break the shadow path
            log.exception("guardrails could not observe %r", getattr(result, "key", result))

    def _observe(self, result: ShadowResult) -> None:
        outcome = _COUNTED.get(result.verdict)
        if outcome is None or result.mode not in (Mode.CANARY.value, Mode.EXTRACTED.value):
            return
        name = result.key.removeprefix(GRAPHQL_KEY_PREFIX)
        cfg = self._config(name)
        state = self.flips.state(name)
        if cfg is None or not cfg.enabled or state is None or state.mode not in ACTIVE_MODES:
            self._windows.pop(name, None)
            return
        now = self.clock()
        window = self._windows.get(name)
        if window is None or window.mode is not state.mode:
            window = self._windows[name] = _Window(mode=Mode(state.mode), started=now, last_step=now)
        window.add(now, outcome, cfg.window)
        window.prune(now, cfg.window_s)
        if window.rolling_back or len(window.samples) < cfg.min_samples:
            return
        n, compared = len(window.samples), window.compared
        tripped = []
        if window.errors / n > cfg.max_error_rate:  # over everything the candidate handled
            tripped.append("error_rate")
        # Over compared results only, and only once there are min_samples of
        # them: a handful of comparisons in a mostly-served window decides nothing.
        if compared >= cfg.min_samples and window.mismatches / compared > cfg.max_mismatch_rate:
            tripped.append("mismatch_rate")
        if tripped:
            window.rolling_back = True
            figures = window.figures(cfg, now) | {"tripped": tripped, "from": {"mode": state.mode.value,
                                                                               "percent": state.percent}}
            self._schedule(name, figures)

    def _schedule(self, name: str, figures: dict[str, Any]) -> None:
        loop = self._loop
        if loop is None:
            log.error("guardrails of %s tripped but were never started; no rollback", name)
            return
        loop.call_soon_threadsafe(self._spawn, name, figures)

    def _spawn(self, name: str, figures: dict[str, Any]) -> None:
        task = asyncio.get_running_loop().create_task(self._rollback(name, figures), name=f"rollback-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _rollback(self, name: str, figures: dict[str, Any]) -> None:
        seen = self.flips.state(name)
        try:
            target = await self.flips.rollback_target(name)
            reason = "; ".join(
                f"{what.replace('_', ' ')} {figures[what]:.2%} > {figures['max_' + what]:.2%}"
                for what in figures["tripped"]
            ) + f" over {figures['samples']} samples in {figures['span_s']:.1f}s"
            outcome = await self.flips.flip(
                name, target.mode, None, who=WHO_GUARDRAILS, reason=reason, kind=KIND_ROLLBACK,
                details=figures, only_if=seen,
            )
        except FlipError as exc:  # someone flipped it meanwhile: their decision stands
            log.warning("rollback of %s not applied: %s", name, exc)
            self._windows.pop(name, None)
            return
        except StranglerError as exc:
            log.error("rollback of %s failed, will retry on the next result: %s", name, exc)
            window = self._windows.get(name)
            if window is not None:
                window.rolling_back = False
            return
        self._windows.pop(name, None)
        metrics = self.flips.runtime.metrics
        metrics.inc(metrics.rollbacks_total, name)
        log.warning(
            "ROLLBACK %s: %s %g%% -> %s (%s)", name, outcome.from_mode.value, outcome.from_percent,
            outcome.to_mode.value, reason,
        )

    # -------------------------------------------------------------- status

    def status(self, name: str) -> dict[str, Any] | None:
        """What the guardrails see for a route or field (for /routes); None if unknown."""
        cfg = self._config(name)
        state = self.flips.state(name)
        if cfg is None or state is None:
            return None
        if not cfg.enabled or state.mode not in ACTIVE_MODES:
            return {"state": STATE_INACTIVE if cfg.enabled else "disabled"}
        now = self.clock()
        window = self._windows.get(name)
        if window is None or window.mode is not state.mode:
            # Start the clock now, so a route that never gets traffic ends up "insufficient traffic".
            window = self._windows[name] = _Window(mode=Mode(state.mode), started=now, last_step=now)
        window.prune(now, cfg.window_s)
        figures = window.figures(cfg, now)
        figures["state"] = self._state_of(name, window, cfg, now)
        return figures

    def _state_of(self, name: str, window: _Window, cfg: GuardrailConfig, now: float) -> str:
        if window.rolling_back:
            return STATE_ROLLING_BACK
        if len(window.samples) >= cfg.min_samples:
            window.warned_insufficient = False
            return STATE_OK
        if now - window.started < cfg.window_s:
            return STATE_WARMING_UP
        if not window.warned_insufficient:
            window.warned_insufficient = True
            log.warning("%s: only %d results in %gs (min_samples %d): insufficient traffic -- no automatic "
                        "rollback or promotion until it has more", name, len(window.samples), cfg.window_s,
                        cfg.min_samples)
        return STATE_INSUFFICIENT

    def _config(self, name: str) -> GuardrailConfig | None:
        config = self.flips.config
        name = split_scoped(name)[0]  # a cell's window follows its route's (or field's) rules
        if is_field(name):
            fc = config.graphql.fields.get(name)
            return config.guardrails_for(fc) if fc is not None else None
        route = self.flips.runtime.table.get(name)
        return config.guardrails_for(route.config) if route is not None else None

    # ----------------------------------------------------------- promotion

    async def promote_once(self) -> list[str]:
        """Step up every ready canary route whose promotion interval has passed; names stepped."""
        stepped: list[str] = []
        now = self.clock()
        for route in self.flips.runtime.table.routes:
            promotion = route.config.promotion
            window = self._windows.get(route.name)
            if promotion is None or route.mode is not Mode.CANARY or window is None:
                continue
            cfg = self.flips.config.guardrails_for(route.config)
            if now - window.last_step < promotion.interval_s:
                continue
            if self._state_of(route.name, window, cfg, now) != STATE_OK:
                continue  # warming up, insufficient traffic or rolling back: never promote blind
            nxt = _next_step(promotion, route.percent)
            if nxt is None:
                continue
            figures = window.figures(cfg, now)
            try:
                await self.flips.flip(
                    route.name, Mode.CANARY, nxt, who=WHO_PROMOTION, kind=KIND_PROMOTION, details=figures,
                    reason=f"ready for {promotion.interval_s:g}s at {route.percent:g}% "
                           f"({figures['samples']} samples, error rate {figures['error_rate']:.2%}, "
                           f"mismatch rate {figures['mismatch_rate']:.2%})",
                    only_if=self.flips.state(route.name),
                )
            except StranglerError as exc:
                log.warning("promotion of %s not applied: %s", route.name, exc)
                continue
            window.last_step = now
            stepped.append(route.name)
        return stepped

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            try:
                await self.promote_once()
            except Exception:  # noqa: BLE001 -- the ticker must survive; it is logged
                log.exception("progressive promotion failed")


def _next_step(promotion: PromotionConfig, percent: float) -> float | None:
    return next((float(s) for s in sorted(promotion.steps) if s > percent), None)
