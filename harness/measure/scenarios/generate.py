"""Generative scenarios: prompts in, tokens out, every token stamped.

- ``generate`` (single-stream): one request at a time (a request is the case's batch of prompts, usually 1),
  each waiting for the previous. Its headline is the time per output token (TPOT); time to first token
  (TTFT), every inter-token gap, the request latency and the output-token throughput are reported beside it.
- ``generate_offline``: the same loop read for throughput: a batch of prompts generated together, back to
  back; its headline is output tokens per second over the wall time (every sequence of the batch counted).

Timed region (one per request): :meth:`GenerativeSession.generate`, host token ids in, host token ids out,
greedy, exactly ``output_tokens`` new tokens (end-of-sequence ignored), on the host clock. The session calls
back once per decoding step as soon as that step's token is on the host; the scenario stamps it. So:

- TTFT = first stamp - request start (token ids in; the prefill pass, whose last logits give the first token);
- TPOT = (last stamp - first stamp) / (output_tokens - 1): the mean of the request's inter-token gaps;
- request latency = request start to ``generate``'s return.

Prompts are ``prompt_tokens`` long, cut from the model's token stream (the bundle's evaluation prompts,
concatenated), a different window for each request, rotating through :data:`ROTATE` sets. Prompts are
token ids: tokenizing text is the client's work and not in the region.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from costbench.backends.base import GenerativeSession, Session
from costbench.core.metrics import (GENERATE, GENERATE_OFFLINE, INTER_TOKEN, OUTPUT_TOKEN_THROUGHPUT, REQUEST_LATENCY,
                                    TPOT, TTFT)
from costbench.harness.build.zoo.base import SampleSet
from costbench.harness.measure.scenarios.base import ROTATE, Scenario, ScenarioResult, clock
from costbench.harness.suite.schema import ScenarioSettings


class _GenerateSettings(ScenarioSettings):
    """Prompt and output lengths, warm-up and the stopping rule, counted in requests."""

    prompt_tokens: int = Field(128, ge=1, description="Tokens in each prompt.")
    output_tokens: int = Field(64, ge=2, description="Tokens generated per request (end-of-sequence ignored); "
                               "at least 2, so a time per output token exists.")
    warmup_count: int = Field(1, ge=0, description="Untimed requests before measuring.")
    min_count: int = Field(5, ge=1, description="Measure at least this many requests...")
    min_duration_s: float = Field(0.0, ge=0, description="...and for at least this long.")
    max_duration_s: float = Field(300.0, gt=0, description="Stop here even if min_count is not met (the result is "
                                  "then marked invalid).")

    @model_validator(mode="after")
    def _durations(self) -> "_GenerateSettings":
        if self.min_duration_s > self.max_duration_s:
            raise ValueError(f"min_duration_s={self.min_duration_s} is above max_duration_s={self.max_duration_s}")
        return self


class GenerateSpec(_GenerateSettings):
    """One request at a time: TTFT, TPOT, inter-token gaps and request latency."""

    kind: Literal["generate"] = "generate"


class GenerateOfflineSpec(_GenerateSettings):
    """Batches of prompts generated together, back to back: output tokens per second."""

    kind: Literal["generate_offline"] = "generate_offline"


def prompt_sets(data: SampleSet, batch_size: int, prompt_tokens: int) -> list[np.ndarray]:
    """:data:`ROTATE` batches of ``batch_size`` prompts of ``prompt_tokens`` ids, consecutive windows of the
    evaluation prompts' token stream (repeated where it is shorter than what is asked)."""
    try:
        stream = np.asarray(data.inputs["input_ids"], dtype=np.int64).reshape(-1)
    except KeyError:
        raise ValueError(f"a generate scenario needs prompts under 'input_ids'; the model's data has "
                         f"{sorted(data.inputs)}") from None
    windows = np.resize(stream, ROTATE * batch_size * prompt_tokens)
    return [w.reshape(batch_size, prompt_tokens) for w in windows.reshape(ROTATE, batch_size * prompt_tokens)]


class _GenerateLoop(Scenario):
    """Requests one after another, each a ``generate`` call whose tokens are stamped as they arrive."""

    needs_generative: ClassVar[bool] = True
    primary: ClassVar[str]  # the catalogue series the loop's samples_ns hold

    def run(self, session: Session, data: SampleSet, batch_size: int) -> ScenarioResult:
        s = self.spec
        assert isinstance(s, _GenerateSettings)
        if not isinstance(session, GenerativeSession):
            raise TypeError(f"scenario {self.kind!r} needs a generative session (a causal-LM model on a backend that "
                            f"generates, e.g. transformers); got {type(session).__name__}")
        prompts = prompt_sets(data, batch_size, s.prompt_tokens)
        n = s.output_tokens
        for i in range(s.warmup_count):
            session.generate(prompts[i % len(prompts)], n, lambda: None)
        series: dict[str, list[int]] = {TTFT.name: [], TPOT.name: [], INTER_TOKEN.name: [], REQUEST_LATENCY.name: []}
        min_ns, max_ns = int(s.min_duration_s * 1e9), int(s.max_duration_s * 1e9)
        start = clock()
        end = start
        requests = 0
        valid = False
        while True:
            stamps: list[int] = []
            stamp = stamps.append
            t0 = clock()
            session.generate(prompts[requests % len(prompts)], n, lambda: stamp(clock()))
            end = clock()
            if len(stamps) != n:
                raise RuntimeError(f"the session stamped {len(stamps)} tokens for a request of {n}")
            gaps = np.diff(stamps)
            series[TTFT.name].append(stamps[0] - t0)
            series[TPOT.name].append(int(round((stamps[-1] - stamps[0]) / (n - 1))))
            series[INTER_TOKEN.name].extend(int(g) for g in gaps)
            series[REQUEST_LATENCY.name].append(end - t0)
            requests += 1
            elapsed = end - start
            if requests >= s.min_count and elapsed >= min_ns:
                valid = True
                break
            if elapsed >= max_ns:
                break
        wall = end - start
        notes = [] if valid else [f"stopped at max_duration_s={s.max_duration_s} with {requests} of "
                                  f"min_count={s.min_count} requests"]
        samples = series.pop(self.primary)
        result = ScenarioResult(self.kind, batch_size, samples, wall, valid, notes, series)
        result.scalars[OUTPUT_TOKEN_THROUGHPUT] = (batch_size * n * requests / (wall / 1e9), "tokens/s")
        result.scalars["input_token_throughput"] = (batch_size * s.prompt_tokens * requests / (wall / 1e9), "tokens/s")
        result.scalars["prompt_tokens"] = (float(s.prompt_tokens), "tokens")
        result.scalars["output_tokens"] = (float(n), "tokens")
        return result


class Generate(_GenerateLoop):
    """One request at a time: the time per output token leads, TTFT beside it."""

    Settings = GenerateSpec
    kind = GENERATE
    primary = TPOT.name


class GenerateOffline(_GenerateLoop):
    """Batches of prompts back to back: output tokens per second leads."""

    Settings = GenerateOfflineSpec
    kind = GENERATE_OFFLINE
    primary = REQUEST_LATENCY.name
