"""Change points: found where the step is, not where there is only noise; deterministic; env-aware; BH-corrected."""

import numpy as np

from costbench.harness.reports.changepoints import Point, detect, mark_unstable
from synth_runs import latency_samples


def history(medians, envs=None, spreads=None, n=150):
    envs = envs or ["e1"] * len(medians)
    spreads = spreads or [0.02] * len(medians)
    pts = []
    for i, (m, e, s) in enumerate(zip(medians, envs, spreads)):
        x = latency_samples(m, n, s, seed=100 + i)
        pts.append(Point(index=i, run_id=f"r{i}", created=f"2026-01-{i + 1:02d}", commit=f"c{i}", env_id=e,
                         value=float(np.median(x)), samples=x))
    return pts


def test_a_step_is_found_between_last_good_and_first_bad():
    pts = history([1.0, 1.01, 0.99, 1.0, 1.15, 1.16, 1.14, 1.15])
    (cps,) = detect([pts])
    assert len(cps) == 1
    c = cps[0]
    assert (c.last_good.run_id, c.first_bad.run_id) == ("r3", "r4")
    assert c.verdict == "regressed" and c.still_present
    assert c.ci_low < c.ratio < c.ci_high and abs(c.ratio - 1.15) < 0.02
    assert c.q_value < 0.002


def test_noise_and_small_drift_give_nothing():
    (cps,) = detect([history([1.0, 1.01, 0.99, 1.0, 1.02, 0.99, 1.01])])
    assert cps == []


def test_deterministic_and_two_steps():
    meds = [1.0, 1.0, 1.3, 1.3, 1.3, 0.9, 0.9]
    a = [(c.first_bad.run_id, c.verdict, c.ratio, c.q_value) for c in detect([history(meds)])[0]]
    b = [(c.first_bad.run_id, c.verdict, c.ratio, c.q_value) for c in detect([history(meds)])[0]]
    assert a == b
    assert [(r, v) for r, v, *_ in a] == [("r2", "regressed"), ("r5", "improved")]


def test_unstable_run_is_marked_and_not_a_regression():
    pts = history([1.0, 1.0, 1.0, 1.4, 1.0, 1.0], spreads=[0.02, 0.02, 0.02, 0.5, 0.02, 0.02])
    (cps,) = detect([pts])
    assert cps == []
    assert pts[3].unstable and "unstable" in pts[3].note and not any(p.unstable for p in pts if p.run_id != "r3")


def test_environment_change_is_not_a_change_point():
    pts = history([1.0, 1.0, 1.0, 1.5, 1.5, 1.5], envs=["e1"] * 3 + ["e2"] * 3)
    (cps,) = detect([pts])
    assert cps == []  # results from different environments are not compared


def test_throughput_direction():
    pts = history([100.0, 100.0, 100.0, 80.0, 80.0, 80.0])
    (cps,) = detect([pts], higher_is_better=[True])
    assert [c.verdict for c in cps] == ["regressed"]


def test_benjamini_hochberg_across_series_can_drop_a_marginal_step():
    # One clear step and many flat series: the clear one survives correction.
    flat = [history([1.0] * 6) for _ in range(10)]
    step = history([1.0, 1.0, 1.0, 1.2, 1.2, 1.2])
    out = detect([*flat, step])
    assert all(c == [] for c in out[:-1]) and len(out[-1]) == 1


def test_mark_unstable_needs_a_history():
    pts = history([1.0], spreads=[0.5])
    mark_unstable(pts, 0.05)
    assert not pts[0].unstable


def replicated_history(rng, medians, between=0.03, processes=5, drift=0.0, n=200):
    """Runs of ``processes`` processes each: a launch offset N(0, between²) per process, a run offset N(0, drift²)."""
    pts = []
    for i, m in enumerate(medians):
        run = np.exp(rng.normal(0.0, drift)) if drift else 1.0
        procs = [latency_samples(m * run * np.exp(rng.normal(0.0, between)), n, 0.02, seed=int(rng.integers(2**31)))
                 for _ in range(processes)]
        values = np.array([np.median(p) for p in procs])
        pts.append(Point(index=i, run_id=f"r{i}", created=f"2026-01-{i + 1:02d}", commit=f"c{i}", env_id="e1",
                         value=float(np.exp(np.log(values).mean())), samples=np.concatenate(procs),
                         process_values=values))
    return pts


def test_per_run_summaries_find_a_real_step_and_ignore_launch_noise(rng):
    """Launch-to-launch noise of 3% in every run: no change point in a flat history (pooled samples would see
    many), and a 20% step is found between the right runs, tested at the run level."""
    flat = replicated_history(rng, [1.0] * 8)
    step = replicated_history(rng, [1.0] * 4 + [1.2] * 4)
    flat_cps, step_cps = detect([flat, step])
    assert flat_cps == []
    (c,) = step_cps
    assert (c.last_good.run_id, c.first_bad.run_id) == ("r3", "r4") and c.method == "runs"
    assert c.verdict == "regressed" and c.ci_low < c.ratio < c.ci_high and 1.1 < c.ratio < 1.3


def test_a_run_whose_processes_disagree_is_unstable_not_a_change(rng):
    pts = replicated_history(rng, [1.0] * 8, between=0.01)
    wild = replicated_history(rng, [1.0], between=0.4)[0]
    wild.index, wild.run_id = 5, "r5"
    pts[5] = wild
    (cps,) = detect([pts])
    assert pts[5].unstable and "processes disagree" in pts[5].note
    assert not any(p.unstable for i, p in enumerate(pts) if i != 5)
    assert cps == []
