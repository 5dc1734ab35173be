"""The pilot for costbench ab's looks and test, from the same ten trials as ../power-ab/pilot.py
(../yardstick/runs.tar.xz, measured before ../power-ab/ and before ../power-ab-3/, the confirmatory run).
Processes are drawn from the pilot's own per-process residuals (log p50 less its case-trial side's median: heavy
tails kept), as in ../power-ab/pilot.py, and a +10% change is planted in NEW's.
(1) The two-look rule of ../power-ab/ (5 pairs, then 15; q < 0.001 a look) with Welch's t on the per-process log
medians (costbench compare's test) against Yuen's trimmed t and a rank test: power and A/A false alarms.
(2) Welch's t with other looks (Bonferroni over them, 0.002 in all): power, mean pairs a case, A/A false alarms,
on the pilot's spread and on a spread a quarter wider (../power-ab/'s day was noisier than the pilot's).
Run from the repository root: python results/reference/2026-12-05-amd-epyc-vnni-2vcpu/power-ab-robust/pilot.py"""
import io
import json
import math
import tarfile
from pathlib import Path

import numpy as np
from scipy import stats
from scipy.special import stdtr, stdtrit

HERE = Path(__file__).parent
ALPHA, THRESHOLD, FIRST, SECOND = 0.001, 0.05, 5, 15  # costbench ab's defaults: 5 pairs, then up to 3x


def residual_pool() -> np.ndarray:
    runs = {}
    with tarfile.open(HERE.parent / "yardstick" / "runs.tar.xz") as tar:
        for m in tar.getmembers():
            if m.name.endswith(".jsonl"):
                lines = [json.loads(line) for line in io.TextIOWrapper(tar.extractfile(m))]
                runs[lines[0]["run_id"]] = lines
    res = []
    for lines in runs.values():
        per_case = {}
        for r in lines[1:]:
            if r.get("type") == "case" and r["status"] == "ok":
                v = next(x["value"] for x in r["metrics"] if x["metric"] == "latency_p50")
                per_case.setdefault(r["case"]["backend"], []).append(math.log(v))
        for vals in per_case.values():
            if len(vals) >= 5:
                res += list(np.array(vals) - np.median(vals))
    return np.array(res)


def welch(a, b):
    """(log ratio, low, high, p): Welch's t on log values (costbench.core.stats.compare_processes)."""
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    d = b.mean() - a.mean()
    half = stdtrit(df, 0.975) * se
    return d, d - half, d + half, float(2 * stdtr(df, -abs(d) / se))


def yuen(a, b, trim):
    """(log ratio, low, high, p): Yuen's trimmed t (trimmed means, winsorized variances, Welch's df)."""
    def parts(x):
        x = np.sort(x)
        g = int(math.floor(trim * x.size))
        h = x.size - 2 * g
        w = np.concatenate([np.full(g, x[g]), x[g:x.size - g], np.full(g, x[x.size - g - 1])])
        return x[g:x.size - g].mean(), (x.size - 1) * w.var(ddof=1) / (h * (h - 1)), h
    ma, da, ha = parts(a)
    mb, db, hb = parts(b)
    se = math.sqrt(da + db)
    df = (da + db) ** 2 / (da**2 / (ha - 1) + db**2 / (hb - 1))
    d = mb - ma
    half = stdtrit(df, 0.975) * se
    return d, d - half, d + half, float(2 * stdtr(df, -abs(d) / se))


def ranks(a, b):
    """(log ratio of medians, Hodges-Lehmann-free interval: none, so the second look is never asked, p): Mann-Whitney."""
    d = np.median(b) - np.median(a)
    return d, -np.inf, np.inf, float(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)


TESTS = {
    "Welch (compare's)": (welch, welch),
    "Yuen 20% at both looks": (lambda a, b: yuen(a, b, 0.2), lambda a, b: yuen(a, b, 0.2)),
    "Welch, then Yuen 20%": (welch, lambda a, b: yuen(a, b, 0.2)),
    "Yuen 10% at both looks": (lambda a, b: yuen(a, b, 0.1), lambda a, b: yuen(a, b, 0.1)),
    "Welch, then Mann-Whitney": (welch, ranks),
}


def procedure(first, second, base, new) -> bool:
    """Whether the two-look rule calls a change: a look calls at p < ALPHA with the ratio beyond THRESHOLD; the
    second look comes when the first neither called nor held the interval within +-THRESHOLD."""
    lim = math.log(1 + THRESHOLD)
    d, lo, hi, p = first(base[:FIRST], new[:FIRST])
    if p < ALPHA and abs(d) >= lim:
        return True
    if -lim < lo and hi < lim:
        return False
    d, lo, hi, p = second(base, new)
    return p < ALPHA and abs(d) >= lim


def looks_rule(looks, alpha, base, new) -> tuple[bool, int]:
    """(called, pairs measured) for Welch's t at each of ``looks`` (pairs) in turn, as costbench ab decides."""
    lim = math.log(1 + THRESHOLD)
    for n in looks:
        d, lo, hi, p = welch(base[:n], new[:n])
        if p < alpha and abs(d) >= lim:
            return True, n
        if -lim < lo and hi < lim:
            return False, n
    return False, looks[-1]


def main() -> None:
    pool = residual_pool()
    print(f"pool: {pool.size} processes, sd {pool.std(ddof=1):.3f}, 90/95/99th percentile "
          + "/".join(f"{np.percentile(pool, q):.3f}" for q in (90, 95, 99)))
    rng = np.random.default_rng(20261206)
    n_power, n_null = 4000, 20000
    for name, (first, second) in TESTS.items():
        power = sum(procedure(first, second, rng.choice(pool, SECOND), rng.choice(pool, SECOND) + math.log(1.10))
                    for _ in range(n_power)) / n_power
        false = sum(procedure(first, second, rng.choice(pool, SECOND), rng.choice(pool, SECOND))
                    for _ in range(n_null))
        print(f"{name:26s}  +10% called {power:6.1%} of {n_power:,}   A/A flagged {false} of {n_null:,} "
              f"({false / n_null:.4%}; two looks at {ALPHA:g}: at most {2 * ALPHA:.2%})")
    print("(2) Welch's t, looks at these pairs, 0.002 over them:")
    for scale in (1.0, 1.25):
        for looks in ((5, 15), (5, 25), (5, 15, 25), (5, 10, 20, 30)):
            alpha = 0.002 / len(looks)
            power = [looks_rule(looks, alpha, scale * rng.choice(pool, looks[-1]),
                                scale * rng.choice(pool, looks[-1]) + math.log(1.10)) for _ in range(n_power)]
            null = [looks_rule(looks, alpha, scale * rng.choice(pool, looks[-1]), scale * rng.choice(pool, looks[-1]))
                    for _ in range(n_null)]
            print(f"    spread x{scale:<4} looks {str(looks):15s} +10% called {np.mean([c for c, _ in power]):6.1%}, "
                  f"{np.mean([n for _, n in power]):4.1f} pairs on average; A/A flagged {sum(c for c, _ in null)} of "
                  f"{n_null:,}, {np.mean([n for _, n in null]):4.1f} pairs")


if __name__ == "__main__":
    main()
