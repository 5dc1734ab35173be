"""Nearest-rank percentiles and bootstrap intervals against hand-computed values."""

import numpy as np
import pytest

from costbench.core.stats import bootstrap_ci, paired_median_ratio, percentile, ratio_of_medians_ci, summarize


@pytest.mark.parametrize("p, expected", [(5, 15), (30, 20), (40, 20), (50, 35), (100, 50), (0, 15)])
def test_nearest_rank_textbook_example(p, expected):
    # The classic nearest-rank example: ranks ceil(p/100 * 5) of the sorted list.
    assert percentile([40, 15, 35, 20, 50], p) == expected


def test_percentile_is_always_an_observed_sample(rng):
    x = rng.exponential(size=101)
    for p in (1, 50, 90, 99, 99.9):
        assert percentile(x, p) in x
    # 101 samples: p50 is rank 51, p99 is rank ceil(99.99) = 100.
    s = np.sort(x)
    assert percentile(x, 50) == s[50]
    assert percentile(x, 99) == s[99]


def test_median_of_even_count_is_lower_middle():
    assert percentile([1, 2, 3, 4], 50) == 2


def test_percentile_rejects_bad_input():
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_bootstrap_two_point_hand_computed():
    # Resampling [1, 2] twice: the nearest-rank median of two draws is their minimum, which is 1
    # with probability 3/4 and 2 with probability 1/4; both tails of a 95% interval are populated.
    assert bootstrap_ci([1.0, 2.0], 50) == (1.0, 2.0)


def test_bootstrap_constant_and_single():
    assert bootstrap_ci([3.0] * 50) == (3.0, 3.0)
    assert bootstrap_ci([7.0]) == (7.0, 7.0)


def test_bootstrap_is_deterministic_and_brackets_median(rng):
    x = rng.normal(10, 1, size=500)
    lo, hi = bootstrap_ci(x)
    assert (lo, hi) == bootstrap_ci(x)
    assert lo <= percentile(x, 50) <= hi
    assert hi - lo < 0.5  # the median of 500 N(10,1) samples is known to about +-0.1


@pytest.mark.parametrize("p", [50, 90, 99])
def test_exact_bootstrap_matches_a_large_monte_carlo_bootstrap(p, rng):
    """The closed form is what resampling converges to: compare with 20 000 resamples, ends within a few ranks."""
    x = np.round(rng.lognormal(0.0, 0.3, size=300), 3)  # rounded: ties, as real timer samples have
    k = int(np.ceil(p / 100 * x.size))
    stats = np.sort(np.sort(x[rng.integers(0, x.size, size=(20_000, x.size))], axis=1)[:, k - 1])
    mc_lo, mc_hi = stats[int(np.ceil(0.025 * stats.size)) - 1], stats[int(np.ceil(0.975 * stats.size)) - 1]
    lo, hi = bootstrap_ci(x, p)
    xs = np.sort(x)
    rank = lambda v: np.searchsorted(xs, v)  # noqa: E731 - position among the sorted samples
    assert abs(rank(lo) - rank(mc_lo)) <= 3 and abs(rank(hi) - rank(mc_hi)) <= 3, (lo, hi, mc_lo, mc_hi)
    assert lo <= percentile(x, p) <= hi


def test_exact_ratio_of_medians_interval_matches_a_large_monte_carlo_bootstrap(rng):
    base = np.round(rng.lognormal(0.0, 0.2, size=250), 3)
    new = np.round(rng.lognormal(0.05, 0.2, size=180), 3)
    draws = 20_000
    mb = np.sort(base[rng.integers(0, base.size, size=(draws, base.size))], axis=1)[:, int(np.ceil(base.size / 2)) - 1]
    mn = np.sort(new[rng.integers(0, new.size, size=(draws, new.size))], axis=1)[:, int(np.ceil(new.size / 2)) - 1]
    ratios = np.sort(mn / mb)
    mc = ratios[int(np.ceil(0.025 * draws)) - 1], ratios[int(np.ceil(0.975 * draws)) - 1]
    lo, hi = ratio_of_medians_ci(base, new)
    # Monte Carlo error of a 2.5% quantile from 20 000 draws: about 0.5% of the ratio here.
    assert lo == pytest.approx(mc[0], rel=0.01) and hi == pytest.approx(mc[1], rel=0.01), ((lo, hi), mc)
    assert lo <= percentile(new, 50) / percentile(base, 50) <= hi
    assert ratio_of_medians_ci([2.0] * 9, [3.0] * 4) == pytest.approx((1.5, 1.5))


def test_paired_ratio_cancels_a_slow_spell_both_sides_shared(rng):
    # Each round's machine speed drifts (a shared factor from 1x to 2x, spread evenly and in a random order); NEW is
    # 10% slower in every round. Drawn uniformly instead, about 1 seed in 100 bunched the factors so that the
    # unpaired interval did not reach below 1.0 (seeds 131, 160, 217, 259 of 400).
    drift = rng.permutation(np.linspace(1.0, 2.0, 15))
    base = 1e-3 * drift
    new = 1.1e-3 * drift * (1.0 + rng.uniform(-1e-3, 1e-3, size=15))
    r, lo, hi = paired_median_ratio(base, new)
    assert 1.098 < lo <= r <= hi < 1.102, (r, lo, hi)
    ulo, uhi = ratio_of_medians_ci(base, new)  # unpaired, the drift widens the interval past both 1.0 and 1.2
    assert ulo < 1.0 and uhi > 1.2, (ulo, uhi)


def test_paired_ratio_is_the_median_of_the_pair_ratios_with_its_bootstrap_interval(rng):
    base = rng.uniform(1.0, 2.0, size=11)
    new = base * rng.uniform(0.8, 1.3, size=11)
    r, lo, hi = paired_median_ratio(base, new)
    assert r == percentile(new / base, 50)
    assert (lo, hi) == bootstrap_ci(new / base)
    with pytest.raises(ValueError, match="as many values a side"):
        paired_median_ratio(base, new[:-1])


def test_exact_bootstrap_hand_computed_three_points():
    # n=3, median rank k=2: P(T* <= 1) = P(Bin(3, 1/3) >= 2) = 7/27 ≈ 0.26, P(T* <= 2) = P(Bin(3, 2/3) >= 2) = 20/27.
    # 0.025 is reached at 1; 0.975 only at 3.
    assert bootstrap_ci([2.0, 1.0, 3.0], 50) == (1.0, 3.0)
    assert bootstrap_ci([2.0, 1.0, 3.0], 50, confidence=0.4) == (2.0, 2.0)  # ends at 0.3 and 0.7: both at 2
    assert bootstrap_ci([2.0, 1.0, 3.0], 50, confidence=0.5) == (1.0, 3.0)  # 0.25 <= 7/27; 0.75 > 20/27


def test_summarize_fields():
    s = summarize([1.0, 2.0, 3.0, 4.0, 100.0])
    assert s.count == 5 and s.min == 1 and s.max == 100
    assert s.p50 == 3 and s.p90 == 100 and s.p99 == 100
    assert s.mean == pytest.approx(22.0)
    assert s.std == pytest.approx(np.std([1, 2, 3, 4, 100], ddof=1))
    assert s.cv == pytest.approx(s.std / 22.0)
    assert s.p50_ci_low <= s.p50 <= s.p50_ci_high


def test_benjamini_hochberg_hand_computed():
    from costbench.core.stats import benjamini_hochberg

    # m=4: raw*m/rank = [0.04, 0.04, 0.04, 0.8] for sorted p = [0.01, 0.02, 0.03, 0.8]; monotone from the top.
    q = benjamini_hochberg([0.03, 0.8, 0.01, 0.02])
    assert q == pytest.approx([0.04, 0.8, 0.04, 0.04])
    assert benjamini_hochberg([]).size == 0
    assert benjamini_hochberg([0.9, 0.9]) == pytest.approx([0.9, 0.9])


def test_compare_samples_detects_a_real_shift_and_not_noise(rng):
    from costbench.core.stats import compare_samples

    base = rng.normal(1.0, 0.02, size=300)
    slower = rng.normal(1.1, 0.02, size=300)
    c = compare_samples(base, slower)
    assert c.p_value < 1e-10
    assert c.ratio_ci_low <= c.ratio <= c.ratio_ci_high
    assert 1.08 < c.ratio_ci_low and c.ratio_ci_high < 1.12
    same = compare_samples(base, rng.permutation(base))
    assert same.ratio == 1.0 and same.p_value > 0.5


def test_mann_whitney_matches_hand_computed_exact_value():
    from costbench.core.stats import mann_whitney_p

    # Every NEW value above every BASE value, n=m=3: U=0 is the most extreme of C(6,3)=20 orderings;
    # two-sided exact p = 2/20.
    assert mann_whitney_p([1, 2, 3], [4, 5, 6]) == pytest.approx(0.1)
    assert mann_whitney_p([2.0, 2.0], [2.0, 2.0]) == 1.0


# --- Processes as replicates: checked against simulations with a known truth ---------------------------

from costbench.core.stats import (  # noqa: E402
    across_processes, between_process_share, bootstrap_ci as _within_ci, compare_processes, variance_ratio_p,
)


def _processes(rng, k, mu=np.log(2.0), sigma_between=0.05, sigma_within=0.1, n=200, shift=0.0):
    """k processes: each draws a log-median offset N(0, sigma_between²) for its life, then n lognormal samples."""
    return [np.exp(mu + shift + rng.normal(0, sigma_between) + rng.normal(0, sigma_within, n)) for _ in range(k)]


@pytest.mark.parametrize("k", [3, 5, 10])
def test_across_process_interval_covers_the_truth_95_percent(rng, k):
    """The truth is exp(mu), the geometric mean of process medians over all launches; 2000 simulated runs."""
    trials, hits, within_hits = 2000, 0, 0
    for _ in range(trials):
        procs = _processes(rng, k)
        a = across_processes([np.median(p) for p in procs])
        hits += a.ci_low <= 2.0 <= a.ci_high
        if len(procs) == 5:
            lo, hi = _within_ci(np.concatenate(procs))  # the old interval: samples as if independent
            within_hits += lo <= 2.0 <= hi
    # Binomial(2000, 0.95) has sd 0.0049: 0.93..0.97 is four of them either side.
    assert 0.93 <= hits / trials <= 0.97, hits / trials
    if k == 5:
        assert within_hits / trials < 0.5  # why: the within-process interval ignores the process draw


def test_across_processes_is_the_geometric_mean_and_rejects_too_few():
    a = across_processes([1.0, 4.0])
    assert a.center == pytest.approx(2.0) and a.ci_low < 2.0 < a.ci_high and a.processes == 2
    with pytest.raises(ValueError, match="at least 2 processes"):
        across_processes([1.0])
    with pytest.raises(ValueError, match="positive"):
        across_processes([1.0, 0.0])


def test_compare_processes_false_alarms_at_the_nominal_rate_and_finds_a_10_percent_shift(rng):
    """A/A: p < 0.05 in about 5% of 4000 simulated pairs (5 processes a side); a 10% shift with a 1.5% process
    spread (plus the medians' own noise) is called at the gate's rule, p < 0.002 and ratio >= 1.05, in >= 90%
    of 500 (theory: about 99%)."""
    trials = 4000
    false = sum(compare_processes([np.median(p) for p in _processes(rng, 5, sigma_between=0.03)],
                                  [np.median(p) for p in _processes(rng, 5, sigma_between=0.03)]).p_value < 0.05
                for _ in range(trials))
    assert 0.035 <= false / trials <= 0.065, false / trials  # Welch is close to exact here; sd of the rate 0.0034
    found = 0
    for _ in range(500):
        c = compare_processes([np.median(p) for p in _processes(rng, 5, sigma_between=0.015)],
                              [np.median(p) for p in _processes(rng, 5, sigma_between=0.015, shift=np.log(1.1))])
        found += c.p_value < 0.002 and c.ratio >= 1.05
    assert found / 500 >= 0.9, found / 500


def test_between_process_share_recovers_a_known_split(rng):
    """Equal between- and within-process variance (share 0.5) over 60 processes; none between gives about 0."""
    half = between_process_share(_processes(rng, 60, sigma_between=0.1, sigma_within=0.1, n=400))
    assert 0.3 <= half <= 0.7, half
    none = between_process_share(_processes(rng, 60, sigma_between=0.0, sigma_within=0.1, n=400))
    assert none <= 0.05, none
    assert np.isnan(between_process_share(_processes(rng, 1)))


def test_variance_ratio_p_matches_the_f_distribution(rng):
    from scipy import stats

    a, b = rng.normal(size=5), 3 * rng.normal(size=7)
    f = a.var(ddof=1) / b.var(ddof=1)
    expected = 2 * min(stats.f.cdf(f, 4, 6), stats.f.sf(f, 4, 6))
    assert variance_ratio_p(a, b) == pytest.approx(expected, rel=1e-9)
