"""The pure rules of rollouts: parsing, the plan, the next action, the gate, the rollback order."""

from __future__ import annotations

import pytest

from strangler_proxy.config import Mode
from strangler_proxy.control import rollouts
from strangler_proxy.control.rollouts import (
    Before,
    CellFigures,
    CellGate,
    GateRules,
    Phase,
    Rollout,
    RolloutError,
    RolloutSpec,
    State,
    after_gate,
    apply_move,
    judge_cell,
    judge_wave,
    next_action,
    parse_duration,
    parse_steps,
    parse_target,
    parse_waves,
    rollback_moves,
)
from strangler_proxy.routing.router import RouteState
from strangler_proxy.store.counts import VerdictCounts

CELLS = ["c1", "c2", "c3", "c4"]
SHADOW, EXTRACTED = RouteState(Mode.SHADOW, 0.0), RouteState(Mode.EXTRACTED, 0.0)
RULES = GateRules(min_samples=20, max_mismatch_rate=0.05, max_error_rate=0.05, latency_factor=2.0)


def spec(waves: str = "c1;c2,c3;rest", steps: str = "", to: str = "extracted", on_failure: str = "rollback",
         bake_s: float = 10, max_wait_s: float = 60) -> RolloutSpec:
    target = parse_target(to)
    return RolloutSpec("ratings", target, parse_waves(waves, CELLS), parse_steps(steps, target), bake_s, max_wait_s,
                       None, on_failure)


def rollout(s: RolloutSpec, *, state: State = State.RUNNING, step: int = 0, phase: Phase = Phase.BAKE,
            started: float | None = 100.0, before: dict[str, Before] | None = None) -> Rollout:
    return Rollout(7, s, state, step, phase, started, before or {}, SHADOW, "ops")


def test_the_doctests_pass() -> None:
    import doctest

    from strangler_proxy.control import rollout_driver

    for module in (rollouts, rollout_driver):
        failed, attempted = doctest.testmod(module)
        assert failed == 0 and attempted > 0, module.__name__


@pytest.mark.parametrize(("text", "seconds"), [("300", 300), ("30s", 30), ("5m", 300), ("1h", 3600),
                                               ("0.2s", 0.2), (" 2 m ", 120), (45, 45)])
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "5 minutes", "-3s", "1d", "m", -1])
def test_bad_durations_are_refused(bad: str | int) -> None:
    with pytest.raises(RolloutError):
        parse_duration(bad)


def test_waves_resolve_rest_to_every_cell_not_named_in_file_order() -> None:
    assert parse_waves("c3;rest", CELLS) == (("c3",), ("c1", "c2", "c4"))
    assert parse_waves("rest;c2", CELLS) == (("c1", "c3", "c4"), ("c2",))
    assert parse_waves(" c1 ; c2 , c3 ", CELLS) == (("c1",), ("c2", "c3"))  # a partial rollout: c4 stays


@pytest.mark.parametrize(("text", "says"), [
    ("c1;c9", "no such cell 'c9'"),
    ("c1;c2,c1", "cell 'c1' is in wave 1 and wave 2"),
    ("c1;;c2", "wave 2 is empty"),
    ("c1;", "wave 2 is empty"),
    ("c1,,c2", "wave 1 is empty"),
    ("c1;rest;rest", "'rest' must be a wave of its own, once"),
    ("c1,rest", "'rest' must be a wave of its own"),
    ("c1,c2,c3,c4;rest", "'rest' names no cell"),
])
def test_bad_waves_are_refused_with_a_clear_error(text: str, says: str) -> None:
    with pytest.raises(RolloutError, match=says.replace("(", r"\(")):
        parse_waves(text, CELLS)


def test_waves_need_cells() -> None:
    with pytest.raises(RolloutError, match="no cells: section"):
        parse_waves("c1", [])


def test_targets_and_steps() -> None:
    assert parse_target("extracted") == EXTRACTED
    assert parse_target("canary:25") == RouteState(Mode.CANARY, 25.0)
    for bad in ("shadow", "canary", "canary:0", "canary:101", "canary:x", "extracted:5", "canary:2.5"):
        with pytest.raises(RolloutError):
            parse_target(bad)
    assert parse_steps("5,25,100", EXTRACTED) == (5.0, 25.0, 100.0)
    for bad, target in (("25,5", EXTRACTED), ("5,5", EXTRACTED), ("5,50", parse_target("canary:50")),
                        ("0", EXTRACTED), ("x", EXTRACTED)):
        with pytest.raises(RolloutError):
            parse_steps(bad, target)
    with pytest.raises(RolloutError, match="--on-failure"):
        spec(on_failure="retry")


def test_the_plan_runs_every_percent_step_then_the_target_wave_by_wave() -> None:
    plan = spec("c2;rest", steps="5,25", to="canary:50").plan()
    assert [(s.wave, s.cells, s.state.text(), s.last_of_wave) for s in plan] == [
        (0, ("c2",), "canary 5%", False), (0, ("c2",), "canary 25%", False), (0, ("c2",), "canary 50%", True),
        (1, ("c1", "c3", "c4"), "canary 5%", False), (1, ("c1", "c3", "c4"), "canary 25%", False),
        (1, ("c1", "c3", "c4"), "canary 50%", True),
    ]
    assert [s.index for s in plan] == list(range(6))
    assert spec("c1;c2").covers(CELLS) is False and spec("c1;rest").covers(CELLS) is True


def test_next_action_follows_the_persisted_state_and_the_clock() -> None:
    s = spec(bake_s=10, max_wait_s=60)
    assert next_action(rollout(s, phase=Phase.APPLY, started=None), 0).kind == "apply"
    assert next_action(rollout(s, started=100), 105).kind == "bake"
    gate = next_action(rollout(s, started=100), 110)
    assert (gate.kind, gate.overdue, gate.step.index if gate.step else None) == ("gate", False, 0)
    assert next_action(rollout(s, started=100), 170).overdue is True
    assert next_action(rollout(s, step=len(s.plan())), 0).kind == "complete"
    assert next_action(rollout(s, state=State.PAUSED), 500).kind == "idle"
    assert next_action(rollout(s, state=State.ROLLING_BACK), 0).kind == "rollback"
    for done in (State.COMPLETED, State.ROLLED_BACK, State.ABORTED):
        assert next_action(rollout(s, state=done), 0).kind == "idle"


def figures(cell: str = "c1", *, compares: bool = True, changed_by: str | None = None, guardrails: str | None = None,
            legacy: float | None = 0.01, candidate: float | None = 0.011, **counts: int) -> CellFigures:
    return CellFigures(cell, VerdictCounts(**counts), legacy, candidate, compares, changed_by, guardrails)


def test_too_little_traffic_is_never_a_pass() -> None:
    gate = judge_cell(figures(match=19), RULES)
    assert (gate.verdict, gate.reasons) == ("wait", ("19/20 samples",))
    # Served traffic is no comparison: in canary it does not count towards the samples.
    assert judge_cell(figures(match=5, served=500), RULES).verdict == "wait"
    # Extracted without reverse shadow compares nothing: every request the candidate handled counts.
    assert judge_cell(figures(compares=False, served=25, legacy=None), RULES).verdict == "pass"


def test_a_clean_run_passes_only_once_the_upper_bound_is_under_the_threshold() -> None:
    # 0 mismatches in 40: the upper bound is 8.8 %, over 5 %: not proven yet -- it waits.
    unproven = judge_cell(figures(match=40), RULES)
    assert unproven.verdict == "wait" and "upper bound" in unproven.reasons[0]
    assert judge_cell(figures(match=80), RULES).verdict == "pass"  # upper bound 4.6 %
    assert judge_cell(figures(match=80), RULES).figures["mismatch_upper"] < 0.05


def test_the_gate_fails_on_mismatches_errors_latency_guardrails_and_changes_by_others() -> None:
    assert judge_cell(figures(match=20, mismatch=20), RULES).verdict == "fail"
    errors = judge_cell(figures(match=90, candidate_error=10), RULES)
    assert errors.verdict == "fail" and errors.reasons[0].startswith("candidate errors 10.00%")
    slow = judge_cell(figures(match=200, legacy=0.01, candidate=0.05), RULES)
    assert slow.verdict == "fail" and "5.00x legacy's" in slow.reasons[0]
    assert judge_cell(figures(match=200, guardrails="rolling back"), RULES).verdict == "fail"
    assert judge_cell(figures(match=2, changed_by="ops (now shadow)"), RULES).reasons == (
        "changed meanwhile by ops (now shadow)",)
    # A rate over the threshold that is not proven over it yet waits -- and fails past the max wait.
    borderline = figures(match=95, mismatch=6)
    assert judge_cell(borderline, RULES).verdict == "wait"
    assert judge_cell(borderline, RULES, overdue=True).verdict == "fail"
    # A cell that looks fine but has too few samples to prove it is never failed for waiting.
    assert judge_cell(figures(match=40), RULES, overdue=True).verdict == "wait"


def test_a_wave_waits_for_its_slowest_cell_and_fails_on_any() -> None:
    ok, slow = judge_cell(figures("c1", match=80), RULES), judge_cell(figures("c2", match=3), RULES)
    bad = judge_cell(figures("c3", match=10, mismatch=30), RULES)
    assert judge_wave([ok, ok]).verdict == "pass"
    assert judge_wave([ok, slow]).verdict == "wait"
    assert judge_wave([ok, slow, bad]).verdict == "fail"
    assert judge_wave([ok, slow, bad]).summary.startswith("c3: mismatch rate")


def test_after_a_gate_pass_moves_on_fail_rolls_back_or_pauses_and_overdue_waiting_pauses() -> None:
    s = spec()
    r = rollout(s, step=1)
    passed = after_gate(r, judge_wave([CellGate("c2", "pass", (), {})]), False)
    assert (passed.state, passed.step, passed.phase) == (State.RUNNING, 2, Phase.APPLY)
    failed = judge_wave([CellGate("c2", "fail", ("boom",), {})])
    assert after_gate(r, failed, False).state is State.ROLLING_BACK
    assert after_gate(rollout(spec(on_failure="pause"), step=1), failed, False).state is State.PAUSED
    waiting = judge_wave([CellGate("c2", "wait", ("3/20 samples",), {})])
    assert after_gate(r, waiting, False).event == "waiting"
    paused = after_gate(r, waiting, True)
    assert paused.state is State.PAUSED and "3/20 samples" in paused.message and "60s" in paused.message


def test_applying_a_step_is_idempotent_and_leaves_a_cell_someone_else_changed() -> None:
    s = spec("c1;rest", steps="10")
    before = {"c1": Before(SHADOW, True)}
    r = rollout(s, step=1, phase=Phase.APPLY, before=before)
    step = s.plan()[1]  # c1: extracted
    assert apply_move(r, step, "c1", RouteState(Mode.CANARY, 10)).kind == "flip"
    assert apply_move(r, step, "c1", SHADOW).kind == "flip"  # crashed before step 1 took hold
    assert apply_move(r, step, "c1", RouteState(Mode.EXTRACTED, 25.0)).kind == "done"  # the file's percent: ignored
    assert apply_move(r, step, "c1", RouteState(Mode.LEGACY, 0)).kind == "leave"


def test_a_rollback_undoes_every_flipped_cell_in_reverse_order_to_its_state_before() -> None:
    s = spec("c1;c2,c3;rest", steps="50")
    canary = RouteState(Mode.CANARY, 50.0)
    before = {"c1": Before(SHADOW, True), "c2": Before(RouteState(Mode.LEGACY, 0), False), "c3": Before(SHADOW, True)}
    r = rollout(s, state=State.ROLLING_BACK, step=2, before=before)  # wave 2's first step failed
    moves = rollback_moves(r, {"c1": EXTRACTED, "c2": canary, "c3": canary}, followed=SHADOW)
    assert [(m.cell, m.kind, m.to.text()) for m in moves] == [
        ("c3", "flip", "shadow"), ("c2", "flip", "legacy"), ("c1", "flip", "shadow")]
    # A cell that follows the route goes back to whatever the route is now; a cell changed by
    # someone else is left as they set it; one already back is done.
    moves = rollback_moves(r, {"c1": EXTRACTED, "c2": RouteState(Mode.LEGACY, 0), "c3": RouteState(Mode.LEGACY, 0)},
                           followed=RouteState(Mode.CANARY, 5))
    assert [(m.cell, m.kind, m.to.text()) for m in moves] == [
        ("c3", "leave", "canary 5%"), ("c2", "done", "legacy"), ("c1", "flip", "canary 5%")]
