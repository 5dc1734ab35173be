"""generate_server's capacity search on a session of known times, alone and beside two CPU hogs.

Per search: how long this process's threads waited for a CPU (cpu_wait_share) and the steal, whether the
result calls itself held up, the estimate and its interval, and the M/G/1 model on the trials' measured
times and on the times the session was built with. The session and spec are the capacity test's
(tests/harness/spinning_server.py; when this ran, they were written out here and in the test).
Usage: python busy.py SEED [SEED ...]
"""

import json
import multiprocessing
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "tests" / "harness"))
from spinning_server import capacity_search  # noqa: E402


def hog(on_s: float, off_s: float) -> None:
    """Spin for exponential spells (mean on_s), sleeping between them (mean off_s): a bursty neighbour."""
    rng = random.Random()
    while True:
        end = time.perf_counter() + rng.expovariate(1 / on_s)
        while time.perf_counter() < end:
            pass
        time.sleep(rng.expovariate(1 / off_s))


def search(seed: int) -> dict:
    """The capacity test's search (spinning_server.capacity_search), as one row."""
    r = capacity_search(seed)
    summary, get = r["summary"], r["scalars"].get
    return {"seed": seed, "cpu_wait_share": summary.get("cpu_wait_share"), "steal_share": summary.get("steal_share"),
            "held_up": summary.get("held_up"), "capacity_qps": get("capacity_qps"),
            "ci": [get("capacity_ci_low"), get("capacity_ci_high")], "model_on_measured": get("capacity_model_qps"),
            "model_on_built": r["model_on_built"], "trials": len(r["trials"]), "notes": r["notes"]}


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
