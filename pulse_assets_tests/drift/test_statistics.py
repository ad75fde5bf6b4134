"""Drift tests on real series: injected drift is found, null features are not (FDR)."""

import warnings
from datetime import date
from itertools import combinations

import numpy as np
import polars as pl
import pytest
from scipy import stats

from pulse_assets.config import DriftConfig
from pulse_assets.drift.episodes import current_episode
from pulse_assets.drift.statistics import (
    EXACT_MAX_PRODUCT,
    benjamini_hochberg,
    categorical_drift,
    detect_drift,
    ks_p_value,
    numeric_drift,
    persistent,
)

CONFIG = DriftConfig()


def test_ks_and_wasserstein_match_scipy():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=20_000), rng.normal(0.05, 1.2, size=15_000)
    statistic, p_value, psi, wasserstein = numeric_drift(a, b, 10)
    reference = stats.ks_2samp(a, b)  # scipy's default: asymptotic above 10,000 per sample
    assert statistic == pytest.approx(reference.statistic)
    assert p_value == pytest.approx(reference.pvalue, rel=1e-6)
    assert wasserstein == pytest.approx(stats.wasserstein_distance(a, b) / a.std(), rel=1e-9)
    assert psi > 0


@pytest.mark.parametrize(
    ("reference", "current"),
    [
        (np.repeat([1.0, 2.0, 3.0], [50, 30, 20]), np.repeat([2.0, 3.0, 4.0], [10, 60, 30])),
        (np.arange(30.0) % 7, np.arange(40.0) % 5),  # shared and unshared tied values
        (np.arange(20.0), np.arange(20.0)),  # identical samples
        (np.arange(20.0), np.arange(20.0) + 100),  # disjoint samples
    ],
)
def test_tied_samples_match_scipy(reference, current):
    """A value in both samples is merged twice; its CDF gap counts both samples' copies."""
    statistic, _, _, wasserstein = numeric_drift(reference, current, 4)
    assert statistic == pytest.approx(stats.ks_2samp(reference, current).statistic, abs=1e-12)
    expected = stats.wasserstein_distance(reference, current) / reference.std()
    assert wasserstein == pytest.approx(expected, rel=1e-12, abs=1e-12)


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


SMALL_SIZES = [
    (10, 10),
    (12, 9),
    (20, 15),
    (30, 30),
    (50, 40),
    (100, 80),
    (250, 1000),
    (1000, 2000),
]


@pytest.mark.parametrize(("n", "m"), SMALL_SIZES)
def test_small_samples_match_scipys_default_exact_p_value(n, m):
    """scipy's default (``method="auto"``) is exact for these sizes. Both sides count the
    same lattice paths for the same statistic, so only float rounding may differ: rel 1e-9.
    The asymptotic formula used before was up to 10x too small here (n = m = 10)."""
    rng = np.random.default_rng(n * m)
    checked = 0
    for shift in np.linspace(0.0, 3.0, 9):
        a, b = rng.normal(size=n), rng.normal(shift, size=m)
        statistic, p_value, _, _ = numeric_drift(a, b, 10)
        reference = stats.ks_2samp(a, b)
        assert statistic == pytest.approx(reference.statistic, abs=1e-12)
        assert p_value == pytest.approx(reference.pvalue, rel=1e-9, abs=1e-300), (n, m, shift)
        checked += reference.pvalue < 0.05
    assert checked >= 2  # the tail, where FDR decisions are made, is among the cases


def _permutation_p_value(a: np.ndarray, b: np.ndarray) -> float:
    """P(D >= observed) over every split of the pooled sample: the exact null distribution
    of the KS statistic for continuous data, computed without any KS formula."""
    pooled = np.sort(np.concatenate([a, b]))
    positions = np.arange(pooled.size)

    def statistic(in_a: np.ndarray) -> float:
        cdf_a = np.cumsum(in_a) / a.size
        cdf_b = np.cumsum(~in_a) / b.size
        return float(np.abs(cdf_a - cdf_b).max())

    observed = statistic(np.isin(pooled, a))
    splits = [np.isin(positions, chosen) for chosen in combinations(positions, a.size)]
    return float(np.mean([statistic(split) >= observed - 1e-12 for split in splits]))


@pytest.mark.parametrize(("n", "m", "shift"), [(6, 6, 1.5), (7, 5, 2.0), (8, 7, 1.0), (9, 6, 0.3)])
def test_small_sample_p_value_equals_the_permutation_distribution(n, m, shift):
    rng = np.random.default_rng(n + m)
    a, b = rng.normal(size=n), rng.normal(shift, size=m)
    _, p_value, _, _ = numeric_drift(a, b, 5)
    assert p_value == pytest.approx(_permutation_p_value(a, b), rel=1e-9)


def test_equal_sizes_with_p_near_one_fall_back_without_a_warning():
    """scipy's exact series for equal sizes rounds past 1 when D is one step (h = 1 of 200):
    ks_2samp then warns and uses the asymptotic formula; we use it silently, p = 1."""
    a = np.arange(200.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        statistic, p_value, _, _ = numeric_drift(a, a + 0.5, 5)
    assert statistic == pytest.approx(1 / 200)
    assert p_value == pytest.approx(1.0, abs=1e-12)


def _quantile_sample(size: int, shift: float) -> np.ndarray:
    """Normal quantiles at (i + 0.5) / size, shifted: a sample with no randomness in it."""
    return stats.norm.ppf((np.arange(size) + 0.5) / size) + shift


@pytest.mark.parametrize(("n", "m"), [(2001, 2001), (2001, 2000), (3000, 5000), (10_000, 10_000)])
def test_above_the_exact_limit_the_asymptotic_p_value_is_within_7_percent_of_scipys_default(n, m):
    """Where the project uses the asymptotic formula (n * m > EXACT_MAX_PRODUCT) but scipy's
    default is still exact (both sizes <= 10,000), the two differ by up to 7% relative for
    every p-value from 1e-6 to 0.99, most for sizes near the limit and equal sizes (on these
    samples: 5.3% at n = m = 2001, 4.3% at 2001/2000, 2.5% at n = m = 10,000, 0.7% at
    3,000/5,000; a finer sweep of the statistic found 6.5% at 2001/2000), largest near
    p = 1e-6. The asymptotic value is scipy's own ``method="asymp"``. Below 1e-6 the relative
    gap grows (x1000 at p = 1e-287), where no FDR decision depends on it."""
    assert n * m > EXACT_MAX_PRODUCT
    gaps = []
    for shift in np.linspace(0.01, 0.25, 25):
        a, b = _quantile_sample(n, 0.0), _quantile_sample(m, shift)
        exact = stats.ks_2samp(a, b)
        if not 1e-6 <= exact.pvalue <= 0.99:
            continue
        _, p_value, _, _ = numeric_drift(a, b, 10)
        assert p_value == pytest.approx(stats.ks_2samp(a, b, method="asymp").pvalue, rel=1e-9)
        gaps.append(abs(p_value - exact.pvalue) / exact.pvalue)
    assert len(gaps) >= 5
    assert max(gaps) <= 0.07
    assert max(gaps) > 1e-4  # a real difference, documented above, not the same formula


def test_large_samples_use_the_limiting_distribution_and_agree_with_scipy():
    for statistic in (0.001, 0.002, 0.004):
        exact = stats.kstwo.sf(statistic, 500_000)
        assert ks_p_value(statistic, 1_000_000, 1_000_000) == pytest.approx(
            exact, rel=5e-3, abs=1e-12
        )
