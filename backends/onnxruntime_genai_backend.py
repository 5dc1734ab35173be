"""ONNX Runtime GenAI for generative models: its ``Generator`` loop as users call it, on the CPU.

It loads a folder written by ONNX Runtime GenAI's model builder (:data:`~costbench.core.artifacts.FORMAT_ORT_GENAI`:
``genai_config.json``, ``model.onnx`` + data, tokenizer files) with ``og.Model(og.Config(folder))``. The thread
count goes in through the config: ``Config.overlay`` sets the decoder's ``session_options`` (``intra_op_num_threads``,
``inter_op_num_threads`` = 1, and ONNX Runtime's ``session.intra_op.allow_spinning`` config entry), so the file in
the cache is never rewritten.

``generate`` feeds token ids, never text (tokenizing is the client's work and stays outside the timed region):
``GeneratorParams.set_search_options(max_length = min_length = prompt + new_tokens, do_sample = False)`` makes
the search greedy and exactly ``new_tokens`` long, because ``min_length`` masks the end-of-sequence logit until
that length (as Transformers' ``min_new_tokens`` does). ``append_tokens`` runs the prefill; each
``generate_next_token`` picks the next token (from the prefill's logits first, then after one decoder step) and
``get_next_tokens`` returns it to the host, where the session calls ``on_token``.

``run`` returns the next-token logits of each prompt (``append_tokens`` then ``get_logits``) for parity.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import numpy as np
from pydantic import Field

from costbench.backends.base import (Availability, Backend, BackendOptions, Capabilities, GenerativeSession,
                                     TimingConvention, import_runtime, never_raises)
from costbench.core.artifacts import FORMAT_ORT_GENAI, Artifact

PIP_NAME = "onnxruntime-genai"
MAX_SEQUENCES = 32  # onnxruntime-genai 0.18 refuses a Generator over more sequences ("batch_size ... in [1, 32]")


class OnnxRuntimeGenAIOptions(BackendOptions):
    """Options for the onnxruntime-genai backend; ``threads`` sets the decoder session's intra_op_num_threads."""

    spinning: bool = Field(
        True, description="Let ONNX Runtime's intra-op worker threads spin while waiting for work (its default, "
        "session.intra_op.allow_spinning = 1): lower latency per step, but the threads burn CPU between ops, which "
        "a machine shared with other work pays for. False makes them sleep.")
    share_kv_buffer: bool = Field(
        True, description="past_present_share_buffer: one KV-cache buffer preallocated for prompt + new tokens and "
        "updated in place (the builder's default for the CPU), or a new present tensor per step (False).")


class OnnxRuntimeGenAISession(GenerativeSession):
    """An ``og.Model``: ``run`` is the prefill's next-token logits, ``generate`` greedy decoding with stamped tokens."""

    timing = TimingConvention(
        boundary="host int64 token ids in -> og.Generator (params, KV buffer, append_tokens = prefill, then "
                 "generate_next_token per token) -> host token ids out; each token stamped when get_next_tokens "
                 "has it on the host",
        clock="host time.perf_counter_ns")

    def __init__(self, og: Any, model: Any, options: OnnxRuntimeGenAIOptions, genai_config: dict[str, Any],
                 overlay: dict[str, Any]):
        self._og = og
        self._model = model
        self._options = options
        self._genai_config = genai_config
        self._overlay = overlay
        self._context = int(genai_config["model"]["context_length"])

    def _generator(self, prompt_ids: np.ndarray, length: int, min_length: int) -> Any:
        """A greedy generator over ``prompt_ids`` (int32, batch x prompt) with the prompt appended (prefill run)."""
        if prompt_ids.ndim != 2 or prompt_ids.shape[1] < 1:
            raise ValueError(f"onnxruntime-genai backend: token ids must be batch x prompt length, got shape "
                             f"{prompt_ids.shape}")
        if prompt_ids.shape[0] > MAX_SEQUENCES:
            raise ValueError(f"onnxruntime-genai backend: a batch of {prompt_ids.shape[0]} prompts; onnxruntime-genai "
                             f"{self._og.__version__} generates at most {MAX_SEQUENCES} sequences at once")
        if length > self._context:
            raise ValueError(f"onnxruntime-genai backend: prompt + new tokens = {length} exceeds the model's "
                             f"context_length {self._context} (genai_config.json)")
        params = self._og.GeneratorParams(self._model)
        params.set_search_options(max_length=length, min_length=min_length, batch_size=int(prompt_ids.shape[0]),
                                  do_sample=False, num_beams=1,
                                  past_present_share_buffer=self._options.share_kv_buffer)
        generator = self._og.Generator(self._model, params)
        generator.append_tokens(prompt_ids)
        return generator

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The next-token logits (batch x vocabulary, float32) after each prompt in ``inputs['input_ids']`` (a batch
        over the generator's limit runs in slices of :data:`MAX_SEQUENCES` prompts)."""
        ids = self.prompt_batch(inputs, np.int32, "onnxruntime-genai")
        parts = []
        for start in range(0, ids.shape[0], MAX_SEQUENCES):
            rows = ids[start:start + MAX_SEQUENCES]
            generator = self._generator(rows, rows.shape[1] + 1, 0)
            parts.append(np.asarray(generator.get_logits(), dtype=np.float32).reshape(rows.shape[0], -1))
            del generator
        return [np.concatenate(parts)]

    def generate(self, prompt_ids: np.ndarray, new_tokens: int, on_token: Callable[[], None]) -> np.ndarray:
        """Greedy ``new_tokens`` after each prompt row; ``on_token`` is called once per step, the token on the host."""
        if new_tokens < 1:
            raise ValueError(f"onnxruntime-genai backend: new_tokens must be >= 1, got {new_tokens}")
        ids = np.ascontiguousarray(prompt_ids, dtype=np.int32)
        length = ids.shape[1] + new_tokens
        generator = self._generator(ids, length, length)
        out = np.empty((ids.shape[0], new_tokens), dtype=np.int64)
        for step in range(new_tokens):
            generator.generate_next_token()
            out[:, step] = generator.get_next_tokens()
            on_token()
        if not generator.is_done():
            raise RuntimeError(f"onnxruntime-genai backend: the generator is not done after {new_tokens} tokens "
                               f"(max_length {length})")
        return out

    def close(self) -> None:
        self._model = None

    def info(self) -> dict[str, Any]:
        decoder = self._genai_config["model"]["decoder"]
        return {"device": "cpu", "onnxruntime_genai": self._og.__version__, "model_type": self._model.type,
                "threads": self._options.threads, "spinning": self._options.spinning,
                "share_kv_buffer": self._options.share_kv_buffer, "session_options": self._overlay,
                "model_file": decoder.get("filename"), "context_length": self._context}


class OnnxRuntimeGenAIBackend(Backend):
    """ONNX Runtime GenAI's ``Generator`` over a model-builder folder, on the CPU execution provider."""

    name = "onnxruntime-genai"
    capabilities = Capabilities(devices=("cpu",), precisions=("fp32", "int8", "int4"), formats=(FORMAT_ORT_GENAI,))
    Options = OnnxRuntimeGenAIOptions

    @never_raises
    def probe(self) -> Availability:
        """Available when onnxruntime_genai imports; reports its version and ONNX Runtime's."""
        og = import_runtime("onnxruntime_genai", PIP_NAME)
        ort = import_runtime("onnxruntime")
        return Availability.ok(onnxruntime_genai=og.__version__, onnxruntime=ort.__version__)

    def prepare(self, artifact: Artifact, options: BackendOptions, batch_size: int,
                device: str = "cpu") -> OnnxRuntimeGenAISession:
        """``og.Model`` over the folder, its decoder session given the thread settings through ``Config.overlay``."""
        self.check_request(artifact, batch_size, device)
        opts: OnnxRuntimeGenAIOptions = self.own_options(options)
        og = import_runtime("onnxruntime_genai", PIP_NAME)
        folder = artifact.directory
        config_file = folder / "genai_config.json"
        if not config_file.exists():
            raise FileNotFoundError(f"onnxruntime-genai backend: {folder} has no genai_config.json (not a folder "
                                    "written by ONNX Runtime GenAI's model builder)")
        genai_config = json.loads(config_file.read_text())
        session_options: dict[str, Any] = {"session.intra_op.allow_spinning": "1" if opts.spinning else "0"}
        if opts.threads is not None:
            session_options.update(intra_op_num_threads=opts.threads, inter_op_num_threads=1)
        overlay = {"model": {"decoder": {"session_options": session_options}}}
        config = og.Config(str(folder))
        config.clear_providers()  # the CPU execution provider
        config.overlay(json.dumps(overlay))
        model = og.Model(config)
        return OnnxRuntimeGenAISession(og, model, opts, genai_config, session_options)
