"""A generative session of known times, and generate_server's capacity search on it in a process of its own.

``Spinning`` spins ``prefill_ms + per_prompt_ms * prompt length`` before its first token and ``tpot_ms`` before
each next one: a one-slot server of those times is an M/G/1 queue whose capacity the model computes exactly.

:func:`capacity_search` runs the capacity test's search and returns the search's answer, its trials and the
queue model on the times the session was built with; the test runs it in a process of its own (own_process.py).
"""

from __future__ import annotations

import time

import numpy as np

from costbench.backends.base import GenerativeSession
from costbench.harness.build.zoo.base import SampleSet
from costbench.harness.measure.scenarios.generate_server import GenerateServer, GenerateServerSpec, _Requests

DATA = SampleSet({"input_ids": np.arange(4096, dtype=np.int64).reshape(64, 64) % 1000})


class Spinning(GenerativeSession):
    """Known times: the prefill grows with the prompt, every next token costs ``tpot_ms``."""

    def __init__(self, prefill_ms: float, per_prompt_ms: float, tpot_ms: float):
        self.prefill_ns, self.per_prompt_ns, self.tpot_ns = prefill_ms * 1e6, per_prompt_ms * 1e6, tpot_ms * 1e6

    @staticmethod
    def _spin(ns: float) -> None:
        end = time.perf_counter_ns() + int(ns)
        while time.perf_counter_ns() < end:
            pass

    def run(self, inputs):
        return []

    def generate(self, prompt_ids, new_tokens, on_token):
        self._spin(self.prefill_ns + self.per_prompt_ns * prompt_ids.shape[1])
        on_token()
        for _ in range(new_tokens - 1):
            self._spin(self.tpot_ns)
            on_token()
        return np.zeros((prompt_ids.shape[0], new_tokens), dtype=np.int64)


# The capacity test's server: prefill 0.3 ms + 5 us a prompt token, 0.1 ms a next token, one slot.
PREFILL_MS, PER_PROMPT_MS, TPOT_MS = 0.3, 0.005, 0.1


def capacity_search(seed: int) -> dict:
    """The search on the spinning session, and the queue model on the times it was built with."""
    # 3000 requests a trial: a p99 from a few hundred queued requests is its 3rd-highest value, and the median
    # of that statistic lies below the true p99, so a search on such trials overestimates the capacity (by
    # 14-17% at 300 requests here, trials starting from the steady-state backlog or not; 3-5% at 1000).
    spec = GenerateServerSpec(ttft_slo_ms=5, tpot_slo_ms=0.5, prompt_tokens=32, prompt_tokens_min=8,
                              output_tokens=6, output_tokens_min=3, min_count=3000, search_budget_s=40, seed=seed)
    scenario = GenerateServer(spec)
    r = scenario.run(Spinning(PREFILL_MS, PER_PROMPT_MS, TPOT_MS), DATA, 1)
    # The model on the exact service times: every length combination, uniform, as the scenario draws them.
    prompt, output = scenario._lengths(20_000, seed)
    prefill = (PREFILL_MS + PER_PROMPT_MS * prompt) * 1e6
    built = _Requests([], prefill_ns=list(prefill), duration_ns=list(prefill + TPOT_MS * (output - 1) * 1e6),
                      tpot_ns=[TPOT_MS * 1e6] * len(prompt))
    return {"seed": seed, "scalars": {k: v[0] for k, v in r.scalars.items()}, "trials": r.details["search"],
            "summary": r.details["search_summary"], "notes": r.notes,
            "model_on_built": scenario.model_capacity(built, queries=100_000, seed=seed)}
