"""Drift tests on real series: injected drift is found, null features are not (FDR)."""

from datetime import date

import numpy as np
import polars as pl
import pytest
from scipy import stats

from pulse_assets.config import DriftConfig
from pulse_assets.drift.episodes import current_episode
from pulse_assets.drift.statistics import (
    benjamini_hochberg,
    categorical_drift,
    detect_drift,
    numeric_drift,
    persistent,
)

CONFIG = DriftConfig()


def test_ks_and_wasserstein_match_scipy():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=20_000), rng.normal(0.05, 1.2, size=15_000)
    statistic, p_value, psi, wasserstein = numeric_drift(a, b, 10)
    reference = stats.ks_2samp(a, b, method="asymp")
    assert statistic == pytest.approx(reference.statistic)
    assert p_value == pytest.approx(reference.pvalue, rel=1e-6)
    assert wasserstein == pytest.approx(stats.wasserstein_distance(a, b) / a.std(), rel=1e-9)
    assert psi > 0


def test_benjamini_hochberg_matches_scipy():
    p = np.random.default_rng(2).uniform(size=50) ** 2
    assert np.allclose(benjamini_hochberg(p), stats.false_discovery_control(p))


def test_shift_and_scale_of_a_real_series_is_detected(real_raw_frames):
    volume = real_raw_frames["market_prices"].select(
        "date", pl.col("volume").cast(pl.Float64).log().alias("log_volume")
    )
    reference = volume.filter(pl.col("date") < date(2016, 1, 1))
    recent = volume.filter(pl.col("date") >= date(2017, 6, 1))
    shifted = recent.with_columns((pl.col("log_volume") * 1.5 + 1.0).alias("log_volume"))
    same = detect_drift(
        reference, recent.with_columns(pl.col("log_volume")), ["log_volume"], CONFIG
    )[0]
    moved = detect_drift(reference, shifted, ["log_volume"], CONFIG)[0]
    assert moved.drifted and moved.q_value < 1e-10 and moved.wasserstein > CONFIG.min_wasserstein
    assert moved.statistic > same.statistic


def test_200_null_features_do_not_drift_under_fdr():
    rng = np.random.default_rng(3)
    columns = [f"f{i}" for i in range(200)]
    reference = pl.DataFrame({c: rng.normal(size=1_000) for c in columns})
    current = pl.DataFrame({c: rng.normal(size=250) for c in columns})
    results = detect_drift(reference, current, columns, CONFIG)
    raw_hits = sum(r.p_value < 0.05 for r in results)
    assert raw_hits > 0  # the plan's p < 0.05 rule would have flagged these
    assert not any(r.drifted for r in results)
    assert min(r.q_value for r in results) > CONFIG.fdr_q


def test_categorical_features_use_chi_square():
    reference = np.array(["a"] * 500 + ["b"] * 500)
    current = np.array(["a"] * 100 + ["b"] * 400)
    statistic, p_value, psi = categorical_drift(reference, current)
    table = np.array([[500, 500], [100, 400]])
    assert statistic == pytest.approx(stats.chi2_contingency(table)[0])
    assert p_value < 1e-10 and psi > 0.2


def test_too_few_values_are_reported_not_tested():
    reference = pl.DataFrame({"x": np.arange(100.0)})
    result = detect_drift(reference, pl.DataFrame({"x": [1.0, 2.0]}), ["x"], CONFIG)[0]
    assert not result.drifted and result.note.startswith("not tested: fewer than 10 values")


def test_a_missing_column_is_named():
    with pytest.raises(ValueError, match=r"column\(s\) \['y'\] missing"):
        detect_drift(pl.DataFrame({"x": [1.0]}), pl.DataFrame({"x": [1.0]}), ["y"], CONFIG)


def test_persistence_and_episodes():
    d = [date(2017, 1, n) for n in range(2, 8)]
    checks = [(d[0], set()), (d[1], {"a"}), (d[2], {"a", "b"}), (d[3], {"a"})]
    assert persistent([c[1] for c in checks], 3) == {"a"}
    episode = current_episode(checks, persistence=3)
    assert episode.start == d[1] and episode.features == ("a",) and episode.checks == 3
    assert current_episode(checks[:3], persistence=3) is None
    later = [*checks, (d[4], {"a"})]
    assert current_episode(later, persistence=3).start == d[1]  # same episode, same start
    broken = [*later, (d[5], {"c"})]
    assert current_episode(broken, persistence=1).start == d[5]  # a new episode


def test_large_samples_use_the_limiting_distribution_and_agree_with_scipy():
    from pulse_assets.drift.statistics import ks_p_value

    for statistic in (0.001, 0.002, 0.004):
        exact = stats.kstwo.sf(statistic, 500_000)
        assert ks_p_value(statistic, 1_000_000, 1_000_000) == pytest.approx(
            exact, rel=5e-3, abs=1e-12
        )
