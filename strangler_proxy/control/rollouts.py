"""Rollouts: a flip that moves wave by wave over cells, gated on health. Pure; no I/O.

A rollout moves one route (or GraphQL field) to a target mode -- ``extracted``
or ``canary:P`` -- over ordered *waves* of cells (``"c1;c2,c3;rest"``), with
optional canary percent *steps* inside each wave before the target. Its plan is
the list of steps, wave after wave:

    >>> spec = RolloutSpec("ratings", parse_target("extracted"), parse_waves("c1;rest", ["c1", "c2", "c3"]),
    ...                    parse_steps("5,50", parse_target("extracted")), bake_s=60, max_wait_s=600,
    ...                    min_samples=None, on_failure="rollback")
    >>> [s.text() for s in spec.plan()]
    ['c1: canary 5%', 'c1: canary 50%', 'c1: extracted', 'c2,c3: canary 5%', 'c2,c3: canary 50%', 'c2,c3: extracted']

Each step flips its cells (per-cell overrides ``route@cell``), waits the bake
time, then asks the gate of every cell of the wave (:func:`judge_cell`,
:func:`judge_wave`): *pass* (next step), *wait* (too few samples, or not yet
proven; never a pass) or *fail* (roll back, or pause). A step that still waits
``max_wait_s`` after its bake time pauses and says why. :func:`next_action`
says what the driver (rollout_driver.py) does next with a persisted rollout;
:func:`rollback_moves` what undoing it does to each cell.

Durations are seconds, or a number with ``s``, ``m`` or ``h``:

    >>> parse_duration("5m"), parse_duration("0.2s"), parse_duration("300"), parse_duration("1h")
    (300.0, 0.2, 300.0, 3600.0)
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from strangler_proxy.config import Mode, ReadinessConfig
from strangler_proxy.control.readiness import Z_95, too_slow, wilson_upper
from strangler_proxy.errors import StranglerError
from strangler_proxy.routing.router import RouteState
from strangler_proxy.store.counts import VerdictCounts

REST = "rest"
ON_FAILURE = ("rollback", "pause")
DEFAULT_BAKE_S = 300.0
DEFAULT_MAX_WAIT_S = 1800.0
MAX_WAVES = 100

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*(s|m|h)?\s*$")
_UNITS = {None: 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}


class RolloutError(StranglerError):
    """A rollout was refused (bad waves, steps, target) or cannot do what was asked; nothing changed."""


class State(StrEnum):
    RUNNING = "running"  # a replica drives it
    PAUSED = "paused"  # waits for a person: resume or abort
    ROLLING_BACK = "rolling_back"  # a replica undoes its flips (after a failed gate, or an abort)
    COMPLETED = "completed"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"


ACTIVE_STATES = frozenset({State.RUNNING, State.PAUSED, State.ROLLING_BACK})


class Phase(StrEnum):
    APPLY = "apply"  # the step's flips are to be made (again: they are idempotent)
    BAKE = "bake"  # the flips are made; baking, then the gate


# ---------------------------------------------------------------- parsing


def parse_duration(text: str | float | int) -> float:
    """Seconds from ``300``, ``"30s"``, ``"5m"``, ``"1h"``, ``"0.2s"``.

    >>> parse_duration("soon")
    Traceback (most recent call last):
    ...
    strangler_proxy.control.rollouts.RolloutError: 'soon' is not a duration: seconds, or a number with s, m or h \
(30s, 5m, 1h)
    """
    if isinstance(text, int | float) and not isinstance(text, bool):
        if text < 0:
            raise RolloutError(f"{text!r} is not a duration: it is negative")
        return float(text)
    m = _DURATION_RE.match(str(text))
    if m is None:
        raise RolloutError(f"{text!r} is not a duration: seconds, or a number with s, m or h (30s, 5m, 1h)")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_target(text: str) -> RouteState:
    """``extracted`` or ``canary:P`` (0 < P <= 100).

    >>> parse_target("canary:25")
    RouteState(mode=<Mode.CANARY: 'canary'>, percent=25.0)
    """
    mode, sep, percent = text.strip().partition(":")
    if mode == Mode.EXTRACTED.value and not sep:
        return RouteState(Mode.EXTRACTED, 0.0)
    if mode == Mode.CANARY.value and sep:
        value = _percent(percent, "canary:P")
        return RouteState(Mode.CANARY, value)
    raise RolloutError(f"--to {text!r}: a rollout goes to 'extracted' or 'canary:P' (P a percent, e.g. canary:25)")


def _percent(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise RolloutError(f"{what}: {text!r} is not a percent") from None
    if not 0 < value <= 100 or not value.is_integer():
        raise RolloutError(f"{what}: {text!r} must be a whole percent 1..100")
    return value


def parse_waves(text: str, cells: Sequence[str]) -> tuple[tuple[str, ...], ...]:
    """Ordered waves of cells from ``"c1;c2,c3;rest"``: waves split by ``;``, cells by
    ``,``; ``rest`` is every cell no wave names (in the file's order).

    >>> parse_waves("c2; rest", ["c1", "c2", "c3"])
    (('c2',), ('c1', 'c3'))
    >>> parse_waves("c1;c1,c2", ["c1", "c2"])
    Traceback (most recent call last):
    ...
    strangler_proxy.control.rollouts.RolloutError: --waves: cell 'c1' is in wave 1 and wave 2; a cell moves once
    """
    if not cells:
        raise RolloutError("a rollout moves over cells, and the running config has no cells: section")
    raw = [[c.strip() for c in wave.split(",")] for wave in text.split(";")]
    if len(raw) > MAX_WAVES:
        raise RolloutError(f"--waves: {len(raw)} waves; at most {MAX_WAVES}")
    seen: dict[str, int] = {}
    rest_at: int | None = None
    for w, wave in enumerate(raw, start=1):
        if not any(wave) or "" in wave:
            raise RolloutError(f"--waves {text!r}: wave {w} is empty (or has an empty name); "
                               "waves are separated by ';', cells by ','")
        for cell in wave:
            if cell == REST:
                if rest_at is not None or len(wave) > 1:
                    raise RolloutError(f"--waves: 'rest' must be a wave of its own, once (wave {w})")
                rest_at = w
                continue
            if cell not in cells:
                raise RolloutError(f"--waves: no such cell {cell!r} (cells: {', '.join(cells)})")
            if cell in seen:
                raise RolloutError(f"--waves: cell {cell!r} is in wave {seen[cell]} and wave {w}; a cell moves once")
            seen[cell] = w
    rest = tuple(c for c in cells if c not in seen)
    if rest_at is not None and not rest:
        raise RolloutError("--waves: 'rest' names no cell: every cell is in a wave already")
    return tuple(rest if wave == [REST] else tuple(wave) for wave in raw)


def parse_steps(text: str, target: RouteState) -> tuple[float, ...]:
    """Canary percents inside each wave before the target: ``"5,25,100"``, increasing, and
    under the target's own percent when it is a canary.

    >>> parse_steps("5, 25", parse_target("canary:50")), parse_steps("", parse_target("extracted"))
    ((5.0, 25.0), ())
    """
    if not text.strip():
        return ()
    steps = tuple(_percent(p.strip(), "--steps") for p in text.split(","))
    if any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
        raise RolloutError(f"--steps {text!r}: the percents must increase")
    if target.mode is Mode.CANARY and steps[-1] >= target.percent:
        raise RolloutError(f"--steps {text!r}: every step must be under the target canary {target.percent:g}% "
                           "(the target is the wave's last step)")
    return steps


# ------------------------------------------------------------------- plan


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a plan: these cells go to this state."""

    index: int
    wave: int
    cells: tuple[str, ...]
    state: RouteState
    last_of_wave: bool

    def text(self) -> str:
        return f"{','.join(self.cells)}: {self.state.text()}"

    def as_json(self) -> dict[str, Any]:
        return {"index": self.index, "wave": self.wave + 1, "cells": list(self.cells),
                "mode": self.state.mode.value, "percent": self.state.percent}


@dataclass(frozen=True, slots=True)
class RolloutSpec:
    """What a person asked for, validated (:func:`parse_waves`, :func:`parse_steps`)."""

    name: str  # a route, or a GraphQL field Type.field
    target: RouteState
    waves: tuple[tuple[str, ...], ...]
    steps: tuple[float, ...]
    bake_s: float
    max_wait_s: float
    min_samples: int | None  # None: the route's (field's) readiness.min_samples
    on_failure: Literal["rollback", "pause"] | str
    reason: str = ""

    def __post_init__(self) -> None:
        if self.on_failure not in ON_FAILURE:
            raise RolloutError(f"--on-failure {self.on_failure!r}: rollback or pause")
        if self.bake_s < 0 or self.max_wait_s < 0:
            raise RolloutError("--bake and --max-wait cannot be negative")
        if self.min_samples is not None and self.min_samples < 1:
            raise RolloutError("--min-samples must be at least 1")

    def plan(self) -> tuple[Step, ...]:
        stages = [RouteState(Mode.CANARY, p) for p in self.steps] + [self.target]
        out: list[Step] = []
        for w, cells in enumerate(self.waves):
            for s, state in enumerate(stages):
                out.append(Step(len(out), w, cells, state, s == len(stages) - 1))
        return tuple(out)

    @property
    def cells(self) -> tuple[str, ...]:
        """Every cell the rollout moves, in the order it moves them."""
        return tuple(c for wave in self.waves for c in wave)

    def covers(self, cells: Sequence[str]) -> bool:
        """True when the waves move every one of ``cells`` (completion then moves the route itself)."""
        return set(cells) <= set(self.cells)

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "to": {"mode": self.target.mode.value, "percent": self.target.percent},
                "waves": [list(w) for w in self.waves], "steps": list(self.steps), "bake_s": self.bake_s,
                "max_wait_s": self.max_wait_s, "min_samples": self.min_samples, "on_failure": self.on_failure,
                "reason": self.reason}


@dataclass(frozen=True, slots=True)
class Before:
    """A cell's state before the rollout touched it; ``followed``: it had no override
    of its own (it followed the route), and undoing the rollout makes it follow again."""

    state: RouteState
    followed: bool

    def as_json(self) -> dict[str, Any]:
        return {"mode": self.state.mode.value, "percent": self.state.percent, "followed": self.followed}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Before:
        return cls(RouteState(Mode(data["mode"]), float(data["percent"])), bool(data["followed"]))


@dataclass(frozen=True, slots=True)
class Rollout:
    """A persisted rollout as a value (rollout_store.py reads and writes it)."""

    id: int
    spec: RolloutSpec
    state: State
    step: int  # index into spec.plan(); == len(plan): every step passed, completion next
    phase: Phase
    step_started_at: float | None  # epoch seconds: when the current step's flips were all made
    before: Mapping[str, Before]  # cell -> its state before this rollout's first flip of it
    global_before: RouteState  # the route's own state when the rollout started
    created_by: str
    message: str = ""
    gate: Mapping[str, Any] | None = None  # the last gate's figures, by cell
    version: int = 1
    lease_holder: str | None = None
    lease_expires_at: float | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    aborting: bool = False  # rolling back because a person aborted it (not a failed gate)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def who(self) -> str:
        """Who its flips are by, in the audit log."""
        return f"rollout:{self.id}"

    def current_step(self) -> Step | None:
        plan = self.spec.plan()
        return plan[self.step] if self.step < len(plan) else None


# ------------------------------------------------------------------- gate


@dataclass(frozen=True, slots=True)
class GateRules:
    """What a cell must show: the route's readiness rules, ``min_samples`` as the rollout says."""

    min_samples: int
    max_mismatch_rate: float
    max_error_rate: float
    latency_factor: float
    latency_slack_s: float = 0.010

    @classmethod
    def of(cls, readiness: ReadinessConfig, min_samples: int | None) -> GateRules:
        return cls(min_samples or readiness.min_samples, readiness.max_mismatch_rate, readiness.max_error_rate,
                   readiness.latency_factor, readiness.latency_slack_ms / 1000)


@dataclass(frozen=True, slots=True)
class CellFigures:
    """What the driver read for one cell since its step began."""

    cell: str
    counts: VerdictCounts
    legacy_p99_s: float | None
    candidate_p99_s: float | None
    compares: bool  # the mode mirrors to the other side (canary < 100 %, extracted with reverse_shadow)
    changed_by: str | None = None  # someone else changed the cell's state meanwhile: who, and to what
    guardrails: str | None = None  # the guardrails' state of route@cell on the driving replica


Verdict = Literal["pass", "wait", "fail"]


@dataclass(frozen=True, slots=True)
class CellGate:
    cell: str
    verdict: Verdict
    reasons: tuple[str, ...]
    figures: Mapping[str, Any]


def wilson_lower(k: int, n: int, z: float = Z_95) -> float:
    """Lower bound of the Wilson score interval (0.0 without trials).

    >>> round(wilson_lower(20, 20), 3), wilson_lower(0, 50)
    (0.839, 0.0)
    """
    if n <= 0 or k <= 0:
        return 0.0
    return 1.0 - wilson_upper(n - k, n, z)


def compares(mode: Mode, percent: float, reverse_shadow: bool) -> bool:
    """Whether a cell in this mode has comparisons to judge (else only what the candidate served).

    >>> compares(Mode.CANARY, 25, False), compares(Mode.EXTRACTED, 0, False), compares(Mode.EXTRACTED, 0, True)
    (True, False, True)
    """
    if mode is Mode.CANARY:
        return percent < 100
    return mode is Mode.SHADOW or (mode is Mode.EXTRACTED and reverse_shadow)


def judge_cell(f: CellFigures, rules: GateRules, *, overdue: bool = False) -> CellGate:
    """One cell's gate. Samples are compared results when the mode compares, else every
    request the candidate handled; below ``min_samples`` the cell waits (never a pass).
    Then it fails on a guardrail rollback, a change by someone else, a candidate error
    rate at or over the threshold, a mismatch rate whose Wilson *lower* bound is over the
    threshold, or a p99 over ``latency_factor`` x legacy's; it passes when the Wilson
    *upper* bound is under the threshold; in between it is not proven yet and waits --
    past the step's max wait an observed rate at or over the threshold fails.

    >>> rules = GateRules(20, 0.2, 0.1, 2.0)
    >>> judge_cell(CellFigures("c1", VerdictCounts(match=40), 0.01, 0.012, True), rules).verdict
    'pass'
    >>> judge_cell(CellFigures("c1", VerdictCounts(match=5), 0.01, 0.01, True), rules).reasons
    ('5/20 samples',)
    >>> judge_cell(CellFigures("c1", VerdictCounts(match=2, mismatch=20), 0.01, 0.01, True), rules).reasons
    ('mismatch rate 90.91% (lower bound 72.19%) > 20.00%',)
    """
    c = f.counts
    samples = c.compared if f.compares else c.handled
    error_rate = c.candidate_error / c.handled if c.handled else None
    mismatch_rate = c.mismatch / c.compared if c.compared else None
    upper = wilson_upper(c.mismatch, c.compared) if f.compares and c.compared else None
    lower = wilson_lower(c.mismatch, c.compared) if f.compares and c.compared else None
    ratio = f.candidate_p99_s / f.legacy_p99_s if f.legacy_p99_s and f.candidate_p99_s is not None else None
    figures: dict[str, Any] = {
        "samples": samples, "min_samples": rules.min_samples, "compared": c.compared, "handled": c.handled,
        "mismatches": c.mismatch, "mismatch_rate": _round(mismatch_rate), "mismatch_upper": _round(upper),
        "mismatch_lower": _round(lower), "max_mismatch_rate": rules.max_mismatch_rate,
        "errors": c.candidate_error, "error_rate": _round(error_rate), "max_error_rate": rules.max_error_rate,
        "legacy_p99_ms": _ms(f.legacy_p99_s), "candidate_p99_ms": _ms(f.candidate_p99_s),
        "latency_ratio": _round(ratio), "latency_factor": rules.latency_factor, "compares": f.compares,
        "guardrails": f.guardrails,
    }

    def verdict(v: Verdict, *reasons: str) -> CellGate:
        return CellGate(f.cell, v, reasons, figures | {"verdict": v, "reasons": list(reasons)})

    if f.changed_by is not None:
        return verdict("fail", f"changed meanwhile by {f.changed_by}")
    if f.guardrails == "rolling back":
        return verdict("fail", "the guardrails are rolling it back")
    if samples < rules.min_samples:
        return verdict("wait", f"{samples}/{rules.min_samples} samples")
    failed: list[str] = []
    if error_rate is not None and c.candidate_error and error_rate >= rules.max_error_rate:
        failed.append(f"candidate errors {error_rate:.2%} >= {rules.max_error_rate:.2%}")
    if lower is not None and mismatch_rate is not None and lower > rules.max_mismatch_rate:
        failed.append(f"mismatch rate {mismatch_rate:.2%} (lower bound {lower:.2%}) > {rules.max_mismatch_rate:.2%}")
    if ratio is not None and too_slow(f.legacy_p99_s or 0.0, f.candidate_p99_s or 0.0, rules.latency_factor,
                                      rules.latency_slack_s):
        failed.append(f"candidate p99 {ratio:.2f}x legacy's > {rules.latency_factor:g}x and "
                      f"+{_ms((f.candidate_p99_s or 0.0) - (f.legacy_p99_s or 0.0))} ms > "
                      f"+{rules.latency_slack_s * 1000:g} ms")
    if failed:
        return verdict("fail", *failed)
    if upper is not None and upper >= rules.max_mismatch_rate:
        assert mismatch_rate is not None
        if overdue and mismatch_rate >= rules.max_mismatch_rate:
            return verdict("fail", f"mismatch rate {mismatch_rate:.2%} >= {rules.max_mismatch_rate:.2%}, "
                                   "not proven under it within the max wait")
        return verdict("wait", f"mismatch upper bound {upper:.2%} not yet under {rules.max_mismatch_rate:.2%} "
                               f"({c.mismatch}/{c.compared})")
    return verdict("pass")


@dataclass(frozen=True, slots=True)
class GateDecision:
    verdict: Verdict
    cells: tuple[CellGate, ...]

    @property
    def summary(self) -> str:
        """One line: the cells that decided it and why."""
        deciding = [g for g in self.cells if g.verdict == self.verdict] if self.verdict != "pass" else []
        if not deciding:
            return "passed: " + ", ".join(g.cell for g in self.cells)
        return "; ".join(f"{g.cell}: {', '.join(g.reasons)}" for g in deciding)

    def figures(self) -> dict[str, Any]:
        return {g.cell: dict(g.figures) for g in self.cells}


def judge_wave(gates: Sequence[CellGate]) -> GateDecision:
    """A wave passes when every cell passes; any failing cell fails it; else it waits.

    >>> ok = CellGate("c1", "pass", (), {})
    >>> judge_wave([ok, CellGate("c2", "wait", ("3/20 samples",), {})]).summary
    'c2: 3/20 samples'
    """
    verdicts = {g.verdict for g in gates}
    verdict: Verdict = "fail" if "fail" in verdicts else "wait" if "wait" in verdicts else "pass"
    return GateDecision(verdict, tuple(gates))


# ------------------------------------------------------------ next action


@dataclass(frozen=True, slots=True)
class Action:
    """What the driver does next with a rollout."""

    kind: Literal["idle", "apply", "bake", "gate", "complete", "rollback"]
    step: Step | None = None
    reason: str = ""
    overdue: bool = False  # gate: the step has waited past its bake time plus max wait


def next_action(r: Rollout, now: float) -> Action:
    """From the persisted state and the clock: apply the step's flips, keep baking, ask
    the gate, complete, roll back -- or nothing (paused, finished).

    >>> spec = RolloutSpec("r", parse_target("extracted"), (("c1",), ("c2",)), (), 10, 60, None, "rollback")
    >>> r = Rollout(1, spec, State.RUNNING, 0, Phase.BAKE, 100.0, {}, RouteState(Mode.SHADOW, 0), "ops")
    >>> next_action(r, 105).kind, next_action(r, 111).kind, next_action(r, 171).overdue
    ('bake', 'gate', True)
    """
    if r.state is State.ROLLING_BACK:
        return Action("rollback", reason="aborted" if r.aborting else "a gate failed")
    if r.state is not State.RUNNING:
        return Action("idle", reason=r.state.value)
    step = r.current_step()
    if step is None:
        return Action("complete")
    if r.phase is Phase.APPLY or r.step_started_at is None:
        return Action("apply", step)
    baked = r.step_started_at + r.spec.bake_s
    if now < baked:
        return Action("bake", step, f"baking {step.text()}: {baked - now:.0f}s left")
    return Action("gate", step, overdue=now >= baked + r.spec.max_wait_s)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a gate decision does to the rollout: its next persisted state and a line why."""

    state: State
    step: int
    phase: Phase
    message: str
    event: str  # the history event's kind


def after_gate(r: Rollout, decision: GateDecision, overdue: bool) -> Outcome:
    """Passed: the next step. Failed: roll back, or pause (``--on-failure``). Still waiting
    past the max wait: pause and say why. Else: keep waiting.

    >>> spec = RolloutSpec("r", parse_target("extracted"), (("c1",),), (), 0, 60, None, "rollback")
    >>> r = Rollout(1, spec, State.RUNNING, 0, Phase.BAKE, 0.0, {}, RouteState(Mode.SHADOW, 0), "ops")
    >>> after_gate(r, judge_wave([CellGate("c1", "fail", ("boom",), {})]), False).state
    <State.ROLLING_BACK: 'rolling_back'>
    >>> after_gate(r, judge_wave([CellGate("c1", "wait", ("3/20 samples",), {})]), True).message
    'paused: waited 60s past the bake time without a decision (c1: 3/20 samples)'
    """
    step = r.current_step()
    assert step is not None
    if decision.verdict == "pass":
        return Outcome(State.RUNNING, r.step + 1, Phase.APPLY, f"step {step.index + 1} passed: {step.text()}",
                       "gate-passed")
    if decision.verdict == "fail":
        if r.spec.on_failure == "pause":
            return Outcome(State.PAUSED, r.step, Phase.BAKE, f"paused: step {step.index + 1} failed its gate "
                           f"({decision.summary})", "gate-failed")
        return Outcome(State.ROLLING_BACK, r.step, Phase.BAKE, f"rolling back: step {step.index + 1} failed its "
                       f"gate ({decision.summary})", "gate-failed")
    if overdue:
        return Outcome(State.PAUSED, r.step, Phase.BAKE, f"paused: waited {r.spec.max_wait_s:g}s past the bake "
                       f"time without a decision ({decision.summary})", "paused")
    return Outcome(State.RUNNING, r.step, Phase.BAKE, f"waiting: {decision.summary}", "waiting")


# --------------------------------------------------------------- flips


@dataclass(frozen=True, slots=True)
class Move:
    """What to do to one cell: flip it ``to`` (from ``expect``), nothing (already there), or
    leave it (someone else changed it)."""

    cell: str
    kind: Literal["flip", "done", "leave"]
    to: RouteState
    expect: RouteState | None = None
    note: str = ""


def apply_move(r: Rollout, step: Step, cell: str, current: RouteState) -> Move:
    """The step's flip of one cell. It is idempotent: a cell already in the step's state
    is done (a replica taking over redoes a step without flipping twice); a cell in a
    state this rollout did not set is left alone and stops the rollout.

    >>> spec = RolloutSpec("r", parse_target("extracted"), (("c1",),), (5.0,), 0, 60, None, "rollback")
    >>> before = {"c1": Before(RouteState(Mode.SHADOW, 0), True)}
    >>> r = Rollout(1, spec, State.RUNNING, 1, Phase.APPLY, None, before, RouteState(Mode.SHADOW, 0), "ops")
    >>> step = spec.plan()[1]
    >>> apply_move(r, step, "c1", RouteState(Mode.CANARY, 5)).kind, apply_move(r, step, "c1", step.state).kind
    ('flip', 'done')
    >>> apply_move(r, step, "c1", RouteState(Mode.LEGACY, 0)).kind
    'leave'
    """
    current = norm(current)
    if current == step.state:
        return Move(cell, "done", step.state)
    allowed = set_states(r.spec, cell, step.index - 1) | {norm(r.before[cell].state)}
    if current in allowed:
        return Move(cell, "flip", step.state, current)
    return Move(cell, "leave", step.state, note=f"{cell} is {current.text()}, a state this rollout did not set")


def set_states(spec: RolloutSpec, cell: str, upto: int) -> set[RouteState]:
    """Every state the plan's steps up to index ``upto`` (included) give ``cell``."""
    return {s.state for s in spec.plan()[: max(0, upto + 1)] if cell in s.cells}


def norm(state: RouteState) -> RouteState:
    """A state as the rollout compares it: a percent only in canary (a flip to another
    mode keeps the file's percent, which means nothing there).

    >>> norm(RouteState(Mode.EXTRACTED, 25.0)) == RouteState(Mode.EXTRACTED, 0.0)
    True
    """
    mode = Mode(state.mode)
    return RouteState(mode, float(state.percent) if mode is Mode.CANARY else 0.0)


def rollback_moves(r: Rollout, current: Mapping[str, RouteState], followed: RouteState) -> list[Move]:
    """Undo the rollout: every cell it flipped (those with a recorded ``before``), in
    reverse order, back to its state before -- or, if it followed the route then, to the
    route's state now (``followed``), so it follows it again. A cell someone else
    changed meanwhile is left as they set it (and one a reload removed: it has no state).

    >>> spec = RolloutSpec("r", parse_target("extracted"), (("c1",), ("c2", "c3")), (), 0, 60, None, "rollback")
    >>> shadow, ext = RouteState(Mode.SHADOW, 0), RouteState(Mode.EXTRACTED, 0)
    >>> before = {c: Before(shadow, True) for c in ("c1", "c2", "c3")}
    >>> r = Rollout(1, spec, State.ROLLING_BACK, 1, Phase.BAKE, 0.0, before, shadow, "ops")
    >>> [(m.cell, m.kind) for m in rollback_moves(r, {"c1": ext, "c2": ext, "c3": shadow}, shadow)]
    [('c3', 'done'), ('c2', 'flip'), ('c1', 'flip')]
    """
    touched = [c for c in r.spec.cells if c in r.before]
    upto = min(r.step, len(r.spec.plan()) - 1)
    moves: list[Move] = []
    for cell in reversed(touched):
        before = r.before[cell]
        to = norm(followed if before.followed else before.state)
        if cell not in current:
            moves.append(Move(cell, "leave", to, note=f"{cell} is no longer in the running config"))
            continue
        now = norm(current[cell])
        if now == to:
            moves.append(Move(cell, "done", to))
        elif now in set_states(r.spec, cell, upto):
            moves.append(Move(cell, "flip", to, now))
        else:
            moves.append(Move(cell, "leave", to, note=f"{cell} is {now.text()}: changed meanwhile, left as it is"))
    return moves


# ------------------------------------------------------------------ helpers


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


@dataclass(frozen=True, slots=True)
class EventDraft:
    """One line of a rollout's history, as the driver or an operator writes it."""

    kind: str
    message: str
    step: int | None = None
    details: Mapping[str, Any] | None = field(default=None)
