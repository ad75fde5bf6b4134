"""The rule loop across rounds, strictly after the fact, on real SQLite repositories: what a
round learns from comes from before it, rules activate from the round on, are retired when
they stop helping, and their gain is measured only on days after activation."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from pulse_assets.config import RuleEvaluationConfig, RulesConfig, SymbolicRulesConfig
from pulse_assets.rules.evaluation import block_bootstrap_counts, evaluate_rules, rule_arrays
from pulse_assets.rules.impact import post_activation_gains, rule_impact, summary_lines
from pulse_assets.rules.language import condition_expr, parse
from pulse_assets.rules.repository import RuleRepository
from pulse_assets.rules.rounds import (
    Candidate,
    RoundRun,
    correct,
    decide_round,
    empty_state,
    judge_candidates,
    known_rows,
    round_slices,
    run_round,
)
from pulse_assets.storage.sql import connect
from pulse_assets_tests.rules.rounds_data import (
    FEATURES,
    LABEL,
    config,
    history,
    month,
    months,
)

WALK = months(month(2016, 1), 6)


def repository(tmp_path, name: str = "rules.db") -> RuleRepository:
    return RuleRepository(connect(f"sqlite:///{tmp_path / name}"))


def walk(
    frame: pl.DataFrame,
    repo: RuleRepository,
    windows,
    settings: RulesConfig | None = None,
    **evaluation,
) -> list[RoundRun]:
    state, runs = empty_state(), []
    for window in windows:
        run = run_round(
            frame, FEATURES, window, state, repo, settings or config(**evaluation), [LABEL], {}, "r"
        )
        runs.append(run)
        state = run.state
    return runs


@pytest.fixture(scope="module")
def walked(real_raw_frames, tmp_path_factory):
    """Six monthly rounds of 2016: the busy_z overshoot lasts, the calm_z one stops on
    2016-01-01, the first round's start."""
    tmp = tmp_path_factory.mktemp("walk")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("OPENAI_API_KEY", raising=False)
        frame = history(real_raw_frames)
        repo = repository(tmp)
        runs = walk(frame, repo, WALK, retire_after_days=20)
    states = pl.concat([run.state for run in runs])
    features = frame.select("date", *FEATURES)
    impact = pl.concat(
        [
            rule_impact(frame, features, run.state, w, [LABEL])
            for run, w in zip(runs, WALK, strict=True)
        ]
    )
    return {"frame": frame, "repo": repo, "runs": runs, "states": states, "impact": impact}


def rules_on(states: pl.DataFrame, feature: str, status: str) -> pl.DataFrame:
    return states.filter(
        (pl.col("status") == status) & pl.col("definition").str.contains(f"{feature} ")
    )


def test_known_rows_stop_before_the_last_day_whose_actual_resolves_in_the_round(real_raw_frames):
    frame = history(real_raw_frames)
    window = month(2016, 7)
    rows = known_rows(frame, window, config(), [LABEL])
    trading = frame.filter(pl.col("date") < window.start).get_column("date")
    assert rows.get_column("date").max() == trading.sort()[-2]  # June 29, not June 30
    assert rows.get_column("date").min() >= window.start - timedelta(days=730)
    slices = round_slices(frame, window, config(), [LABEL])
    assert slices.mining.get_column("date").max() < slices.acceptance.get_column("date").min()
    assert slices.mining.height == int(rows.height * 0.6)


def test_planted_rules_activate_from_the_round_and_the_one_that_stops_retires(walked):
    states, repo = walked["states"], walked["repo"]
    first = WALK[0].key
    busy = rules_on(states, "busy_z", "activated")
    calm = rules_on(states, "calm_z", "activated")
    assert busy.height == 1 and calm.height == 1, states.filter(pl.col("status") == "activated")
    assert busy.item(0, "round") == first and calm.item(0, "round") == first
    for rules in (busy, calm):  # both lower the overshoot, and were accepted before the round
        assert parse(rules.item(0, "definition")).sign() == -1
        assert rules.item(0, "test_last") < WALK[0].start and rules.item(0, "gain") > 0
        assert rules.item(0, "p_adjusted") < 0.05
    calm_id, busy_id = calm.item(0, "rule_id"), busy.item(0, "rule_id")
    retired = states.filter((pl.col("status") == "retired") & (pl.col("rule_id") == calm_id))
    assert retired.height == 1, "the calm_z rule must retire once its pattern is gone"
    assert retired.item(0, "round") in {w.key for w in WALK[2:4]}
    assert retired.item(0, "reason").startswith("retired: no longer lowers the RMSE")
    assert retired.item(0, "test_first") >= WALK[0].start  # judged on post-activation days only
    last = walked["runs"][-1].decision.in_force()
    assert [a.entry.rule_id for a in last] == [busy_id]
    events = repo.events(calm_id)
    assert [e["to_status"] for e in events][-2:] == ["active", "retired"]
    assert events[-1]["reason"].startswith(f"round {retired.item(0, 'round')}: retired:")
    assert repo.get(busy_id).status == "active"
    ledger = walked["runs"][-1].state.filter(pl.col("rule_id") == calm_id)
    assert ledger.get_column("status").to_list() == ["retired_earlier"]


def test_the_gain_is_measured_only_after_activation(walked):
    """The calm_z rule helped on every day that chose it and on none after: its reported gain
    is negative. The busy_z rule keeps helping: its gain and interval are above zero."""
    states, impact, frame = walked["states"], walked["impact"], walked["frame"]
    gains = post_activation_gains(
        impact, states, frame.select("date", *FEATURES), [LABEL], RuleEvaluationConfig()
    )
    by_id = {g.subject: g for g in gains}
    calm = rules_on(states, "calm_z", "activated").row(0, named=True)
    busy = rules_on(states, "busy_z", "activated").row(0, named=True)
    retired_on = states.filter(
        (pl.col("status") == "retired") & (pl.col("rule_id") == calm["rule_id"])
    ).item(0, "date")
    calm_gain, busy_gain = by_id[calm["rule_id"]], by_id[busy["rule_id"]]
    assert calm["gain"] > 0 and calm_gain.gain is not None and calm_gain.gain < 0
    assert calm_gain.ci_high is not None and calm_gain.ci_high < calm["ci_low"]
    assert calm_gain.first is not None and calm_gain.last is not None
    assert calm_gain.first >= WALK[0].start and calm_gain.last < retired_on
    in_force_days = impact.filter(
        pl.col("active_rule_ids").str.contains(calm["rule_id"])
        & pl.col(f"actual_{LABEL}").is_not_null()
    )
    assert calm_gain.days == in_force_days.height
    assert busy_gain.ci_low is not None and busy_gain.ci_low > 0
    lines = summary_lines([w.key for w in WALK], states, gains, 0.95)
    assert f"activated in {WALK[0].key}: {calm['rule_id']}" in "\n".join(lines)
    assert any(line.startswith(f"  retired in {retired_on}") for line in lines)


def test_post_activation_gains_ignore_days_before_activation():
    """A rule that would have cut the error before it was active, and changes nothing after:
    its gain is exactly zero, by hand."""
    days = [date(2016, 1, 4) + timedelta(days=n) for n in range(40)]
    actual = np.full(40, 0.01)
    forecast = np.where(np.arange(40) < 20, 0.03, 0.01)  # wrong before, right after
    impact = pl.DataFrame(
        {
            "date": days,
            "round": ["2016-01-01"] * 20 + ["2016-02-01"] * 20,
            "active_rule_ids": [""] * 20 + ["r1"] * 20,
            "rules_fired": 0,
            f"forecast_{LABEL}": forecast,
            f"adjusted_{LABEL}": forecast,
            f"actual_{LABEL}": actual,
        }
    )
    states = pl.DataFrame(
        {
            "round": ["2016-02-01"],
            "rule_id": ["r1"],
            "status": ["activated"],
            "definition": [f"IF x > 0 THEN {LABEL} -= 0.02"],
            "activated_round": ["2016-02-01"],
        }
    )
    features = pl.DataFrame({"date": days, "x": np.where(np.arange(40) < 20, 1.0, -1.0)})
    gains = post_activation_gains(impact, states, features, [LABEL], RuleEvaluationConfig())
    rule = next(g for g in gains if g.subject == "r1")
    assert rule.days == 20 and rule.first == days[20]
    assert rule.gain == 0.0 and rule.ci_low == 0.0 and rule.ci_high == 0.0
    together = next(g for g in gains if g.subject == "rules in force")
    assert together.days == 20 and together.gain == 0.0


def comparable(run: RoundRun) -> tuple:
    """What a round decided, without the repository's random rule ids."""
    state = run.state.drop("rule_id").sort("definition", "status")
    judged = sorted(
        (j.candidate.rule.canonical(), j.accepted, j.test.p_value if j.test else None)
        for j in run.decision.judged
    )
    created = sorted(r.definition for r in run.proposal.created) if run.proposal else []
    return state.rows(), judged, created, run.decision.outcome


def test_no_day_at_or_after_the_round_start_reaches_the_round(
    real_raw_frames, tmp_path, monkeypatch
):
    """Tamper with everything dated at or after R's start, and with the actual of the last day
    before R (it resolves on R's first trading day): round R mines, accepts, retires and selects
    the same. Tampering with a day before R changes the outcome, so the comparison can fail."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    frame = history(real_raw_frames)
    rounds = [month(2016, 6), month(2016, 7)]
    start = rounds[1].start
    last_before = frame.filter(pl.col("date") < start).get_column("date").max()
    rng = np.random.default_rng(9)
    noise = {c: rng.normal(size=frame.height) for c in [*FEATURES, "forecast", "actual"]}
    after = pl.col("date") >= start
    tampered = frame.with_columns(
        *[pl.when(after).then(pl.Series(noise[c])).otherwise(pl.col(c)).alias(c) for c in FEATURES],
        pl.when(after)
        .then(pl.Series(noise["forecast"]))
        .otherwise(pl.col(f"forecast_{LABEL}"))
        .alias(f"forecast_{LABEL}"),
        pl.when(after | (pl.col("date") == last_before))
        .then(pl.Series(noise["actual"]))
        .otherwise(pl.col(f"actual_{LABEL}"))
        .alias(f"actual_{LABEL}"),
    ).with_columns(
        (pl.col(f"forecast_{LABEL}") - pl.col(f"actual_{LABEL}")).alias(f"error_{LABEL}")
    )
    plain = walk(frame, repository(tmp_path, "a.db"), rounds)
    changed = walk(tampered, repository(tmp_path, "b.db"), rounds)
    assert plain[1].decision.in_force(), "the round must have rules in force to compare"
    assert comparable(plain[1]) == comparable(changed[1])
    assert comparable(plain[0]) == comparable(changed[0])

    acceptance_day = round_slices(frame, rounds[1], config(), [LABEL]).acceptance.item(-1, "date")
    earlier = frame.with_columns(
        pl.when(pl.col("date") == acceptance_day)
        .then(pl.col(f"actual_{LABEL}") + 0.05)
        .otherwise(pl.col(f"actual_{LABEL}"))
        .alias(f"actual_{LABEL}")
    ).with_columns(
        (pl.col(f"forecast_{LABEL}") - pl.col(f"actual_{LABEL}")).alias(f"error_{LABEL}")
    )
    control = walk(earlier, repository(tmp_path, "c.db"), rounds)
    assert comparable(control[1]) != comparable(plain[1])


P_VALUES = [0.01, 0.04, 0.03, 0.005, 0.2, 0.0125]


@pytest.mark.parametrize(
    ("method", "adjusted", "rejected"),
    [
        # Holm by hand: sorted 0.005 0.01 0.0125 0.03 0.04 0.2 times 6 5 4 3 2 1 = 0.03 0.05
        # 0.05 0.09 0.08 0.2, running max: 0.03 0.05 0.05 0.09 0.09 0.2
        ("holm", [0.05, 0.09, 0.09, 0.03, 0.2, 0.05], [True, False, False, True, False, True]),
        # BH by hand: p * 6 / rank = 0.03 0.03 0.025 0.045 0.048 0.2, running min from the
        # largest rank down: 0.025 0.025 0.025 0.045 0.048 0.2
        ("fdr_bh", [0.025, 0.048, 0.045, 0.025, 0.2, 0.025], [True, True, True, True, False, True]),
    ],
)
def test_the_correction_agrees_with_statsmodels_and_by_hand(method, adjusted, rejected):
    reject, corrected = correct(P_VALUES, RuleEvaluationConfig(correction=method, alpha=0.05))
    reference_reject, reference, _, _ = multipletests(P_VALUES, alpha=0.05, method=method)
    assert np.allclose(corrected, reference) and (reject == reference_reject).all()
    assert np.allclose(corrected, adjusted) and reject.tolist() == rejected


def test_judged_p_values_match_a_plain_bootstrap_loop_and_statsmodels(real_raw_frames):
    frame = history(real_raw_frames)
    acceptance = round_slices(frame, month(2016, 1), config(), [LABEL]).acceptance
    rng = np.random.default_rng(3)
    texts = [f"IF busy_z >= 0.8 THEN {LABEL} -= 0.005", f"IF calm_z >= 1 THEN {LABEL} -= 0.005"]
    texts += [f"IF noise_feature > {q:.3f} THEN {LABEL} += 0.001" for q in rng.normal(size=25)]
    candidates = [Candidate(f"r{i}", 1, "manual", parse(t)) for i, t in enumerate(texts)]
    settings = RuleEvaluationConfig(resamples=300, seed=4)
    judged = judge_candidates(acceptance, candidates, settings)
    counts = block_bootstrap_counts(acceptance.height, 300, settings.block_days, 4)
    actual = acceptance[f"actual_{LABEL}"].to_numpy()
    base = acceptance[f"forecast_{LABEL}"].to_numpy()
    p_values = []
    for candidate in candidates:
        rule = candidate.rule
        mask = acceptance.select(condition_expr(rule)).to_series().to_numpy()
        value = float(rule.canonical().split()[-1])  # every rule here adjusts by a number
        changed = base - value if rule.adjustment.op == "-=" else base + value
        adjusted = np.where(mask, changed, base)
        gains = []
        for b in range(300):
            w = counts[b]
            gains.append(
                np.sqrt((w * (base - actual) ** 2).sum() / len(actual))
                - np.sqrt((w * (adjusted - actual) ** 2).sum() / len(actual))
            )
        point = np.sqrt(((base - actual) ** 2).mean()) - np.sqrt(((adjusted - actual) ** 2).mean())
        spread = np.std(gains, ddof=1)  # 0 for a rule that never fires: it gains nothing
        p_values.append(stats.norm.sf(point / spread) if spread > 0 else float(point <= 0))
    reject, reference, _, _ = multipletests(p_values, alpha=0.05, method="holm")
    assert [j.test.p_value for j in judged if j.test] == pytest.approx(p_values)
    assert [j.test.p_adjusted for j in judged if j.test] == pytest.approx(list(reference))
    assert [j.accepted for j in judged] == list(reject)
    assert [j.accepted for j in judged][:2] == [True, True] and not any(
        j.accepted for j in judged[2:]
    )


def test_nan_and_inf_adjustments_are_skipped_alike_in_evaluation_and_application():
    days = [date(2016, 3, 1) + timedelta(days=n) for n in range(8)]
    frame = pl.DataFrame(
        {
            "date": days,
            "in_sample": False,
            "model_version": "1",
            f"forecast_{LABEL}": [0.01] * 8,
            f"actual_{LABEL}": [0.012] * 8,
            f"error_{LABEL}": [-0.002] * 8,
        }
    )
    features = pl.DataFrame(
        {
            "date": days,
            "divisor": [1.0, 0.0, 2.0, 0.0, 1.0, -1.0, 4.0, 1.0],
            "level": [1.0, 1.0, float("nan"), 3.0, -1.0, 2.0, 2.0, 5.0],
        }
    )
    text = f"IF level > 0 THEN {LABEL} *= (1 / divisor)"
    rule = parse(text)
    joined = frame.join(features, on="date")
    (score,) = evaluate_rules(joined, [rule], resamples=100)
    adjusted, fired = rule_arrays(joined, [rule]).apply(joined[f"forecast_{LABEL}"].to_numpy())
    # fires where level > 0 (NaN is not > 0) and 1 / divisor is finite
    assert fired[0].tolist() == [True, False, False, False, False, True, True, True]
    state = pl.DataFrame(
        {"round": "2016-03-01", "rule_id": "r", "status": "active", "order": 0, "definition": text}
    )
    window = month(2016, 3)
    applied = rule_impact(frame, features, state, window, [LABEL])
    assert applied["rules_fired"].to_list() == fired[0].astype(int).tolist()
    assert score.fired_rows == int(applied["rules_fired"].sum())
    assert np.allclose(applied[f"adjusted_{LABEL}"].to_numpy(), adjusted[0])
    assert applied[f"adjusted_{LABEL}"].is_finite().all()
    assert applied.columns == [
        "date",
        "round",
        "active_rule_ids",
        "rules_fired",
        f"forecast_{LABEL}",
        f"adjusted_{LABEL}",
        f"actual_{LABEL}",
    ]


def test_rounds_with_no_candidate_and_rules_that_never_fire_say_so(
    real_raw_frames, tmp_path, monkeypatch
):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    quiet = history(real_raw_frames, persistent=0.0, fading=0.0)
    repo = repository(tmp_path)
    (first,) = walk(quiet, repo, [month(2014, 1)])
    assert first.decision.outcome.startswith(
        "no candidate: no retrodiction day known before 2014-01-01 in the last 730 days"
    )
    (noise,) = walk(quiet, repo, [month(2016, 1)])
    assert noise.decision.judged and not any(j.accepted for j in noise.decision.judged)
    assert " 0 accepted (holm, alpha 0.05; smallest adjusted p " in noise.decision.outcome
    assert set(noise.state["status"]) == {"rejected"}
    strict = config().model_copy(
        update={"symbolic": SymbolicRulesConfig(max_pair_features=0, min_support=5000)}
    )
    (none,) = walk(quiet, repo, [month(2016, 1)], strict)
    assert not none.decision.judged and none.state.height == 0
    assert none.decision.outcome.startswith(
        "no candidate: 0 error pattern(s) passed the FDR control on the 301 mining days"
    )
    assert "LLM step: skipped: OPENAI_API_KEY is not set" in none.decision.outcome
    assert none.decision.outcome.endswith("0 rule(s) in force in 2016-01-01")

    state = pl.DataFrame(
        {
            "round": "2016-01-01",
            "rule_id": "never",
            "status": "active",
            "order": 0,
            "definition": f"IF busy_z > 100 THEN {LABEL} *= 2",
        }
    )
    applied = rule_impact(quiet, quiet.select("date", *FEATURES), state, month(2016, 1), [LABEL])
    assert applied.height > 15 and (applied["active_rule_ids"] == "never").all()
    assert (applied["rules_fired"] == 0).all()
    assert (applied[f"adjusted_{LABEL}"] == applied[f"forecast_{LABEL}"]).all()


def test_a_round_run_again_decides_the_same_and_its_audit_says_how(
    real_raw_frames, tmp_path, monkeypatch
):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    frame = history(real_raw_frames)
    repo = repository(tmp_path)
    once = walk(frame, repo, [month(2016, 1)])[0]
    again = walk(frame, repo, [month(2016, 1)])[0]
    assert once.state.sort("rule_id").rows() == again.state.sort("rule_id").rows()
    active = once.decision.activated[0].entry.rule_id
    statuses = [e["to_status"] for e in repo.events(active)]
    # the second run found it active, took it back to draft and through the tests again
    assert statuses == ["draft", "evaluated", "accepted", "active", "retired", "draft"] + [
        "evaluated",
        "accepted",
        "active",
    ]
    reasons = [e["reason"] for e in repo.events(active)]
    assert reasons[4] == reasons[5] and "proposed again" in reasons[4]


def test_the_llm_hears_the_rounds_patterns_and_how_earlier_rules_did(
    real_raw_frames, tmp_path, monkeypatch
):
    import json

    from pulse_assets.config import LLMRulesConfig
    from pulse_assets_tests.http_server import Reply, scripted_server
    from pulse_assets_tests.rules.test_llm import completion, structured

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    frame = history(real_raw_frames)
    repo = repository(tmp_path)
    runs = walk(frame, repo, months(month(2016, 1), 3), retire_after_days=20)
    previous = runs[-1].state
    assert (previous["status"] == "retired").any(), "a retired rule must be in the history"
    retired = previous.filter(pl.col("status") == "retired").row(0, named=True)

    llm_rule = f"IF noise_feature > 1.5 THEN {LABEL} *= 1.05"
    reply = Reply(body=completion(structured(llm_rule, f"IF unknown_x > 1 THEN {LABEL} *= 2")))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with scripted_server([reply]) as (url, script):
        settings = RulesConfig(
            symbolic=SymbolicRulesConfig(max_pair_features=0),
            llm=LLMRulesConfig(base_url=f"{url}/v1", max_requests=1, timeout_s=5, max_retries=0),
            evaluation=RuleEvaluationConfig(resamples=300),
        )
        run = run_round(
            frame, FEATURES, month(2016, 4), previous, repo, settings, [LABEL], {"type": "gru"}, "r"
        )
    data = json.loads(
        script.requests[0]["body"]["messages"][1]["content"].removeprefix("DATA (JSON):\n")
    )
    assert data["round"] == "2016-04-01" and data["model"]["type"] == "gru"
    assert any(p["condition"].startswith("busy_z >=") for p in data["error_patterns"])
    earlier = {e["rule"]: e for e in data["earlier_rules"]}
    assert earlier[retired["definition"]]["status"] == "retired"
    assert earlier[retired["definition"]]["outcome"] == retired["reason"]
    assert earlier[retired["definition"]]["retired_round"] == retired["round"]
    assert any(e["status"] == "in force" for e in earlier.values())
    tested = {j.candidate.rule.canonical(): j for j in run.decision.judged}
    assert parse(llm_rule).canonical() in tested and tested[parse(llm_rule).canonical()].test
    assert run.proposal is not None and len(run.proposal.rejected) == 1
    assert run.proposal.llm.status.startswith("1 valid and 1 invalid rule(s)")


def test_a_retired_rule_proposed_again_waits_until_its_acceptance_days_follow_retirement(
    real_raw_frames,
):
    frame = history(real_raw_frames)
    window = month(2016, 7)
    slices = round_slices(frame, window, config(), [LABEL])
    first = slices.acceptance.item(0, "date")
    rule = parse(f"IF busy_z >= 0.8 THEN {LABEL} -= 0.005")
    candidates = [Candidate("again", 1, "symbolic", rule), Candidate("fresh", 1, "symbolic", rule)]
    retired = {"again": first + timedelta(days=1), "fresh": first - timedelta(days=1)}
    decision = decide_round(
        slices, window, candidates, [], RuleEvaluationConfig(resamples=200), [LABEL], "", retired
    )
    judged = {j.candidate.rule_id: j for j in decision.judged}
    assert judged["again"].test is None and not judged["again"].accepted
    assert judged["again"].reason.startswith(f"not tested: retired on {retired['again']}")
    assert judged["fresh"].test is not None and judged["fresh"].accepted
    assert "1 candidate(s) not tested: retired on" in decision.outcome
