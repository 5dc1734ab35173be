"""OpenVINO GenAI for generative models: ``openvino_genai.LLMPipeline`` as users call it, on the CPU.

It loads an OpenVINO LLM folder (:data:`~costbench.core.artifacts.FORMAT_OPENVINO_LLM`: a stateful
``openvino_model.xml``, the tokenizer and detokenizer models, the config files), fp32 or with NNCF-compressed
int8/int4 weights.

- **generate** hands the pipeline the prompt's token ids as an ``openvino_genai.TokenizedInputs`` (ids and an
  all-ones attention mask, both ``openvino.Tensor``), so no tokenizing happens in the timed region, and gets
  token ids back (``EncodedResults``): nothing is detokenized either. Decoding is greedy with exactly the asked
  number of tokens (``max_new_tokens = min_new_tokens = N``, ``ignore_eos = True``). A ``StreamerBase``
  subclass gets each step's token from the pipeline (``write``) as soon as it is sampled on the host and calls
  ``on_token`` there. LLMPipeline streams only a single sequence, so the session takes a batch of 1.
- **run** (the next-token logits, for parity) cannot come from LLMPipeline, which returns token ids and at most
  one log-probability per token. The session compiles the same IR with ``openvino.Core`` on the same device and
  settings (on first use, so a measurement that never asks for logits never holds the second copy) and runs
  one forward pass over the prompt: the model is stateful, so its KV-cache state is reset before every call.
- **serving with continuous batching** (opt-in: ``max_num_seqs``): the session is a ``ContinuousBatchingPipeline``
  instead (paged attention, prefix caching off so requests never share KV cache, the KV cache grown as needed) and
  offers it as a :class:`~costbench.backends.base.GenerationEngine`: ``add_request`` with the token ids, ``step``,
  and each request's new tokens read from its ``GenerationHandle`` after the step. ``generate`` then runs one
  request through the same engine, stamping each token when its step returns, so the warm-up, the probe and
  ``generate`` measure the pipeline that serves. Its scheduler is the vLLM-style one by default, the only one that
  reads ``max_num_seqs`` (with ``dynamic_split_fuse``, GenAI's own default, a step's running batch is bounded by
  ``max_num_batched_tokens`` alone: measured, 23 sequences in a step with ``max_num_seqs = 4``).
- **precision**: OpenVINO's CPU plugin runs an fp32 model in bf16 on CPUs with AMX/avx512_bf16 unless told
  otherwise, so ``INFERENCE_PRECISION_HINT`` is f32 by default, and the KV cache is kept in the same precision
  (the CPU plugin's own default is u8 on x86). Both are recorded in ``info()``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
from pydantic import Field, model_validator

from costbench.backends.base import (Availability, Backend, BackendOptions, Capabilities, GenerationEngine,
                                     GenerativeSession, TimingConvention, import_runtime, never_raises)
from costbench.core.artifacts import FORMAT_OPENVINO_LLM, Artifact

_TOKENIZER_FILES = ("openvino_tokenizer.xml", "openvino_detokenizer.xml")


class OpenVinoGenAIOptions(BackendOptions):
    """Options for the openvino-genai backend."""

    inference_precision: Literal["f32", "bf16", "f16"] = Field(
        "f32", description="INFERENCE_PRECISION_HINT: the precision the CPU plugin computes in. f32 by default, "
        "because on CPUs with AMX/avx512_bf16 OpenVINO would otherwise silently run an fp32 model in bf16. "
        "Weight-compressed models keep their int8/int4 weights either way.")
    kv_cache_precision: Literal["same", "f32", "bf16", "f16", "u8"] = Field(
        "same", description="KV_CACHE_PRECISION: 'same' keeps the KV cache in inference_precision (the CPU "
        "plugin's own default on x86 is u8, a lossy cache that would change greedy continuations); or name one.")
    dynamic_quantization_group_size: int | None = Field(
        None, ge=0, description="DYNAMIC_QUANTIZATION_GROUP_SIZE: on int8/int4 weight-compressed models the CPU plugin "
        "quantizes activations to int8 on the fly in groups of this many (its default, unset here, is on); 0 turns "
        "it off, so the arithmetic is weight-only as the recipe says.")
    attention_backend: Literal["PA", "SDPA"] = Field(
        "PA", description="ATTENTION_BACKEND of LLMPipeline: 'PA' (paged attention, the continuous-batching "
        "scheduler LLMPipeline uses by default on the CPU) or 'SDPA' (the stateful model's own KV-cache state).")
    max_num_seqs: int | None = Field(
        None, ge=1, description="Serve with continuous batching: a ContinuousBatchingPipeline holding at most this "
        "many requests in its running batch (SchedulerConfig.max_num_seqs), which generate_server drives as one "
        "server holding several requests. None (the default): LLMPipeline, one request at a time.")
    max_num_batched_tokens: int = Field(
        256, ge=1, description="Continuous batching only: the most tokens one step processes "
        "(SchedulerConfig.max_num_batched_tokens). Without dynamic_split_fuse a whole prompt goes in one step, so "
        "no prompt may be longer.")
    dynamic_split_fuse: bool = Field(
        False, description="Continuous batching only: OpenVINO GenAI's default scheduler (prompt chunks and "
        "decoding tokens share a step). It ignores max_num_seqs: its running batch is bounded by "
        "max_num_batched_tokens alone (one token per decoding sequence). False: the vLLM-style scheduler, "
        "where max_num_seqs bounds the running batch and a step is either whole prompts or one token for each "
        "running sequence.")

    @model_validator(mode="after")
    def _batched_tokens_hold_the_sequences(self) -> "OpenVinoGenAIOptions":
        if self.max_num_seqs is not None and not self.dynamic_split_fuse \
                and self.max_num_batched_tokens < self.max_num_seqs:
            raise ValueError(f"max_num_batched_tokens ({self.max_num_batched_tokens}) must be at least max_num_seqs "
                             f"({self.max_num_seqs}): a decoding step gives each running sequence one token")
        return self


class OpenVinoGenAISession(GenerativeSession):
    """An ``LLMPipeline`` for generation, and the same IR compiled by ``openvino.Core`` for next-token logits."""

    timing = TimingConvention(
        boundary="host int64 token ids in (openvino.Tensor, TokenizedInputs) -> LLMPipeline.generate (prefill, then "
                 "one step per token) -> host token ids out (EncodedResults); each token stamped when the pipeline "
                 "hands it to the streamer (StreamerBase.write)",
        clock="host time.perf_counter_ns")

    def __init__(self, pipeline: Any, model_xml: Path, properties: dict[str, Any], options: OpenVinoGenAIOptions,
                 batch_size: int, engine: "OpenVinoGenAIEngine | None" = None):
        import openvino as ov
        import openvino_genai

        self._ov = ov
        self._genai = openvino_genai
        self._pipeline = pipeline
        self._model_xml = model_xml
        self._properties = properties
        self._options = options
        self._batch_size = batch_size
        self._request: Any = None  # the forward pass for run(), compiled on first use
        self._engine = engine  # a ContinuousBatchingPipeline (then ``pipeline`` is None), or None

    def engine(self) -> "OpenVinoGenAIEngine | None":
        return self._engine

    def _forward_request(self) -> Any:
        if self._request is None:
            core = self._ov.Core()
            core_properties = {k: v for k, v in self._properties.items() if k != "ATTENTION_BACKEND"}
            self._request = core.compile_model(str(self._model_xml), "CPU", core_properties).create_infer_request()
        return self._request

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The next-token logits (batch x vocabulary, float32) after each prompt in ``inputs['input_ids']``."""
        ids = self.prompt_batch(inputs, np.int64, "openvino-genai")
        rows, length = ids.shape
        request = self._forward_request()
        request.reset_state()  # stateful model: every call starts from an empty KV cache
        out = request.infer({"input_ids": ids, "attention_mask": np.ones_like(ids),
                             "position_ids": np.broadcast_to(np.arange(length, dtype=np.int64), (rows, length)).copy(),
                             "beam_idx": np.arange(rows, dtype=np.int32)})
        logits = out["logits"]
        return [np.asarray(logits[:, -1, :], dtype=np.float32).copy()]

    def generate(self, prompt_ids: np.ndarray, new_tokens: int, on_token: Callable[[], None]) -> np.ndarray:
        """Greedy ``new_tokens`` after the prompt (one row); ``on_token`` is called once per step, the token on the
        host."""
        if new_tokens < 1:
            raise ValueError(f"openvino-genai backend: new_tokens must be >= 1, got {new_tokens}")
        ids = np.ascontiguousarray(prompt_ids, dtype=np.int64)
        if ids.ndim != 2 or ids.shape[0] != 1:
            raise ValueError(f"openvino-genai backend: LLMPipeline streams one sequence at a time, so generate takes "
                             f"a batch of 1 prompt (1 x length); got shape {ids.shape}")
        ov, genai = self._ov, self._genai
        if self._engine is not None:
            return self._engine.generate_one(ids, new_tokens, on_token)
        config = _greedy(self._pipeline.get_generation_config(), new_tokens)
        streamer = _make_stamper(genai, on_token)
        inputs = genai.TokenizedInputs(ov.Tensor(ids), ov.Tensor(np.ones_like(ids)))
        result = self._pipeline.generate(inputs, config, streamer)
        tokens = np.asarray(result.tokens, dtype=np.int64)
        if streamer.steps != new_tokens or tokens.shape != (1, new_tokens):
            raise RuntimeError(f"openvino-genai backend: generate produced {streamer.steps} streamed steps and tokens "
                               f"of shape {tokens.shape}, asked for {new_tokens}")
        return tokens

    def close(self) -> None:
        self._pipeline = None
        self._engine = None
        self._request = None

    def info(self) -> dict[str, Any]:
        import openvino_genai

        serving: dict[str, Any] = {"pipeline": "LLMPipeline", "serving": "one request at a time"}
        if self._engine is not None:
            serving = {"pipeline": "ContinuousBatchingPipeline", "serving": "continuous batching",
                       **self._engine.scheduler}
        return {"device": "CPU", "threads": self._options.threads, **serving,
                "inference_precision": self._properties["INFERENCE_PRECISION_HINT"],
                "kv_cache_precision": self._properties["KV_CACHE_PRECISION"],
                "attention_backend": self._properties["ATTENTION_BACKEND"],
                "dynamic_quantization_group_size": self._properties.get("DYNAMIC_QUANTIZATION_GROUP_SIZE",
                                                                        "plugin default"),
                "logits": "openvino.Core compile of the same IR (state reset per call), compiled on first run()",
                "openvino": self._ov.__version__, "openvino_genai": openvino_genai.__version__}


def _greedy(config: Any, new_tokens: int) -> Any:
    """``config`` set to greedy decoding of exactly ``new_tokens`` tokens, end-of-sequence ignored."""
    config.max_new_tokens = new_tokens
    config.min_new_tokens = new_tokens
    config.ignore_eos = True
    config.do_sample = False
    config.num_beams = 1
    return config


_SOLO_REQUEST = 2**62  # generate()'s own request id in the engine


class OpenVinoGenAIEngine(GenerationEngine):
    """A ``ContinuousBatchingPipeline`` as a :class:`GenerationEngine`: requests added by token ids, advanced by
    ``step()``, each request's new tokens read from its ``GenerationHandle`` after every step."""

    def __init__(self, pipeline: Any, scheduler: dict[str, Any]):
        import openvino as ov
        import openvino_genai

        self._ov, self._genai = ov, openvino_genai
        self._pipeline = pipeline
        self.scheduler = scheduler
        self.max_sequences = int(scheduler["max_running_sequences"])
        self._whole_prompts = not scheduler["dynamic_split_fuse"]
        self._max_tokens = int(scheduler["max_num_batched_tokens"])
        self._handles: dict[int, tuple[Any, int]] = {}  # request id -> (handle, tokens asked)
        self._counts: dict[int, int] = {}  # request id -> tokens read so far

    def add(self, request_id: int, prompt_ids: np.ndarray, new_tokens: int) -> None:
        if request_id in self._handles:
            raise ValueError(f"openvino-genai engine: request {request_id} is already in flight")
        ids = np.ascontiguousarray(prompt_ids, dtype=np.int64).reshape(1, -1)
        if self._whole_prompts and ids.shape[1] > self._max_tokens:
            raise ValueError(f"openvino-genai engine: a prompt of {ids.shape[1]} tokens is longer than "
                             f"max_num_batched_tokens ({self._max_tokens}), which must hold a whole prompt without "
                             "dynamic_split_fuse; raise it")
        config = _greedy(self._pipeline.get_config(), new_tokens)
        self._handles[request_id] = (self._pipeline.add_request(request_id, self._ov.Tensor(ids), config), new_tokens)
        self._counts[request_id] = 0

    def step(self) -> dict[int, int]:
        self._pipeline.step()
        status = self._genai.GenerationStatus
        got: dict[int, int] = {}
        for rid, (handle, asked) in list(self._handles.items()):
            if handle.can_read():
                new = sum(len(out.generated_ids) for out in handle.read().values())
                if new:
                    got[rid] = new
                    self._counts[rid] += new
            state = handle.get_status()
            if state == status.RUNNING:
                continue
            if state != status.FINISHED or self._counts[rid] != asked:
                # IGNORED: the scheduler could not fit it (KV cache); anything else is not a greedy run to the end
                raise RuntimeError(f"openvino-genai engine: request {rid} ended {state.name} after "
                                   f"{self._counts[rid]} of {asked} tokens")
            del self._handles[rid], self._counts[rid]
        return got

    def busy(self) -> bool:
        return bool(self._handles) or self._pipeline.has_non_finished_requests()

    def abort(self) -> None:
        for handle, _ in self._handles.values():
            handle.cancel()
        self._handles.clear()
        self._counts.clear()
        while self._pipeline.has_non_finished_requests():  # let the scheduler drop what was cancelled
            self._pipeline.step()

    def generate_one(self, ids: np.ndarray, new_tokens: int, on_token: Callable[[], None]) -> np.ndarray:
        """One request alone through the engine (``generate``), ``on_token`` once per token as its step returns."""
        if self._handles:
            raise RuntimeError("openvino-genai engine: generate() while serving other requests")
        rid = _SOLO_REQUEST  # an id the scenario never gives (its ids count up from 0; the pipeline takes only unsigned ones)
        self.add(rid, ids, new_tokens)
        handle = self._handles[rid][0]
        tokens: list[int] = []
        while rid in self._handles:
            self._pipeline.step()
            if handle.can_read():
                for out in handle.read().values():
                    for token in out.generated_ids:
                        tokens.append(int(token))
                        on_token()
            state = handle.get_status()
            if state != self._genai.GenerationStatus.RUNNING:
                del self._handles[rid], self._counts[rid]
                if state != self._genai.GenerationStatus.FINISHED:
                    raise RuntimeError(f"openvino-genai engine: the request ended {state.name} after {len(tokens)} "
                                       f"of {new_tokens} tokens")
        if len(tokens) != new_tokens:
            raise RuntimeError(f"openvino-genai engine: generate produced {len(tokens)} tokens, asked for {new_tokens}")
        return np.asarray(tokens, dtype=np.int64)[None, :]


def _make_stamper(genai: Any, on_token: Callable[[], None]) -> Any:
    """A ``StreamerBase`` that calls ``on_token`` for every token the pipeline writes and counts them."""

    class Stamper(genai.StreamerBase):
        def __init__(self) -> None:
            super().__init__()
            self.steps = 0

        def write(self, token: Any) -> Any:
            # one step's token (an int), or several at once (a list) where a pipeline emits them together
            count = 1 if isinstance(token, int) else len(token)
            for _ in range(count):
                self.steps += 1
                on_token()
            return genai.StreamingStatus.RUNNING

        def end(self) -> None:
            """Nothing to flush: every step's token was stamped in ``write``."""

    return Stamper()


class OpenVinoGenAIBackend(Backend):
    """OpenVINO GenAI's ``LLMPipeline`` for OpenVINO LLM folders, on the CPU."""

    name = "openvino-genai"
    capabilities = Capabilities(devices=("cpu",), precisions=("fp32", "bf16", "int8", "int4"),
                                formats=(FORMAT_OPENVINO_LLM,))
    Options = OpenVinoGenAIOptions

    @never_raises
    def probe(self) -> Availability:
        """Available when openvino and openvino_genai import (openvino_tokenizers is loaded by the pipeline)."""
        ov = import_runtime("openvino")
        genai = import_runtime("openvino_genai", "openvino-genai")
        tokenizers = import_runtime("openvino_tokenizers", "openvino-tokenizers")
        return Availability.ok(openvino=ov.__version__, openvino_genai=genai.__version__,
                               openvino_tokenizers=getattr(tokenizers, "__version__", "?"))

    def prepare(self, artifact: Artifact, options: BackendOptions, batch_size: int,
                device: str = "cpu") -> OpenVinoGenAISession:
        """``LLMPipeline(folder, "CPU", properties)``: threads, precision, KV-cache precision, attention backend."""
        self.check_request(artifact, batch_size, device)
        opts: OpenVinoGenAIOptions = self.own_options(options)
        if batch_size != 1:
            raise ValueError(f"openvino-genai backend: LLMPipeline streams one sequence at a time; batch size "
                             f"{batch_size} is not supported (use 1)")
        folder = artifact.directory
        missing = [n for n in (artifact.path.name, *_TOKENIZER_FILES) if not (folder / n).exists()]
        if missing:
            raise FileNotFoundError(f"openvino-genai backend: {folder} lacks {missing}; an OpenVINO LLM folder has "
                                    f"openvino_model.xml, openvino_tokenizer.xml and openvino_detokenizer.xml")
        genai = import_runtime("openvino_genai", "openvino-genai")
        properties: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": opts.inference_precision,
            "KV_CACHE_PRECISION": opts.inference_precision if opts.kv_cache_precision == "same"
            else opts.kv_cache_precision,
            "ATTENTION_BACKEND": opts.attention_backend,
        }
        if opts.threads is not None:
            properties["INFERENCE_NUM_THREADS"] = opts.threads
        if opts.dynamic_quantization_group_size is not None:
            properties["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = opts.dynamic_quantization_group_size
        if opts.max_num_seqs is None:
            pipeline = genai.LLMPipeline(str(folder), "CPU", **properties)
            return OpenVinoGenAISession(pipeline, artifact.path, properties, opts, batch_size)
        if opts.attention_backend != "PA":
            raise ValueError(f"openvino-genai backend: max_num_seqs (continuous batching) needs attention_backend "
                             f"'PA' (paged attention); got {opts.attention_backend!r}")
        scheduler = genai.SchedulerConfig()
        scheduler.max_num_seqs = opts.max_num_seqs
        scheduler.max_num_batched_tokens = opts.max_num_batched_tokens
        scheduler.enable_prefix_caching = False  # requests must not reuse each other's KV cache
        scheduler.dynamic_split_fuse = opts.dynamic_split_fuse
        scheduler.cache_size = 0  # with num_kv_blocks = 0: the KV cache grows as requests need it
        # The scheduler (continuous_batching/scheduler.hpp) reads max_num_seqs only in its vLLM-style prompt
        # phase; with dynamic_split_fuse a step takes decoding sequences until max_num_batched_tokens is spent.
        most = opts.max_num_batched_tokens if opts.dynamic_split_fuse else opts.max_num_seqs
        facts = {"max_num_seqs": scheduler.max_num_seqs, "max_num_batched_tokens": scheduler.max_num_batched_tokens,
                 "enable_prefix_caching": False, "dynamic_split_fuse": opts.dynamic_split_fuse,
                 "max_running_sequences": most, "kv_cache": "grown as needed"}
        cb_properties = {k: v for k, v in properties.items() if k != "ATTENTION_BACKEND"}
        engine = OpenVinoGenAIEngine(genai.ContinuousBatchingPipeline(str(folder), scheduler, "CPU", cb_properties),
                                     facts)
        return OpenVinoGenAISession(None, artifact.path, properties, opts, batch_size, engine)
