"""generate_server's capacity search on a session of known times, alone and beside two CPU hogs.

Per search: how long this process's threads waited for a CPU (cpu_wait_share) and the steal, whether the
result calls itself held up, the estimate and its interval, and the M/G/1 model on the trials' measured
times and on the times the session was built with. The session and spec are the capacity test's
(tests/harness/test_generate_server.py). Usage: python busy.py SEED [SEED ...]
"""

import json
import multiprocessing
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "tests" / "harness"))
from test_generate_server import DATA, Spinning  # noqa: E402

from costbench.harness.measure.scenarios.generate_server import GenerateServer, GenerateServerSpec, _Requests  # noqa: E402


def hog(on_s: float, off_s: float) -> None:
    """Spin for exponential spells (mean on_s), sleeping between them (mean off_s): a bursty neighbour."""
    rng = random.Random()
    while True:
        end = time.perf_counter() + rng.expovariate(1 / on_s)
        while time.perf_counter() < end:
            pass
        time.sleep(rng.expovariate(1 / off_s))


def search(seed: int) -> dict:
    spec = GenerateServerSpec(ttft_slo_ms=5, tpot_slo_ms=0.5, prompt_tokens=32, prompt_tokens_min=8,
                              output_tokens=6, output_tokens_min=3, min_count=3000, search_budget_s=40,
                              seed=seed)
    scenario = GenerateServer(spec)
    r = scenario.run(Spinning(0.3, 0.005, 0.1), DATA, 1)
    prompt, output = scenario._lengths(20_000, seed)
    built = _Requests([], prefill_ns=list((0.3 + 0.005 * prompt) * 1e6),
                      duration_ns=list((0.3 + 0.005 * prompt + 0.1 * (output - 1)) * 1e6),
                      tpot_ns=[0.1e6] * len(prompt))
    summary = r.details["search_summary"]
    get = lambda k: r.scalars.get(k, (None,))[0]  # noqa: E731
    return {"seed": seed, "cpu_wait_share": summary.get("cpu_wait_share"), "steal_share": summary.get("steal_share"),
            "held_up": summary.get("held_up"), "capacity_qps": get("capacity_qps"),
            "ci": [get("capacity_ci_low"), get("capacity_ci_high")], "model_on_measured": get("capacity_model_qps"),
            "model_on_built": scenario.model_capacity(built, queries=100_000, seed=seed),
            "trials": len(r.details["search"]), "notes": r.notes}


if __name__ == "__main__":
    for seed in map(int, sys.argv[1:]):
        for beside in ("alone", "two CPU hogs"):
            hogs = []
            if beside != "alone":
                hogs = [multiprocessing.Process(target=hog, args=(0.05, 0.3), daemon=True) for _ in range(2)]
                for h in hogs:
                    h.start()
            try:
                row = search(seed)
            finally:
                for h in hogs:
                    h.terminate()
                    h.join()
            row["beside"] = beside
            m, c = row["model_on_measured"], row["capacity_qps"]
            row["estimate_over_model"] = c / m if c and m else None
            print(json.dumps(row), flush=True)
