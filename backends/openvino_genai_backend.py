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
- **precision**: OpenVINO's CPU plugin runs an fp32 model in bf16 on CPUs with AMX/avx512_bf16 unless told
  otherwise, so ``INFERENCE_PRECISION_HINT`` is f32 by default, and the KV cache is kept in the same precision
  (the CPU plugin's own default is u8 on x86). Both are recorded in ``info()``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
from pydantic import Field

from costbench.backends.base import (Availability, Backend, BackendOptions, Capabilities, GenerativeSession,
                                     TimingConvention, import_runtime, never_raises)
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


class OpenVinoGenAISession(GenerativeSession):
    """An ``LLMPipeline`` for generation, and the same IR compiled by ``openvino.Core`` for next-token logits."""

    timing = TimingConvention(
        boundary="host int64 token ids in (openvino.Tensor, TokenizedInputs) -> LLMPipeline.generate (prefill, then "
                 "one step per token) -> host token ids out (EncodedResults); each token stamped when the pipeline "
                 "hands it to the streamer (StreamerBase.write)",
        clock="host time.perf_counter_ns")

    def __init__(self, pipeline: Any, model_xml: Path, properties: dict[str, Any], options: OpenVinoGenAIOptions,
                 batch_size: int):
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
        config = self._pipeline.get_generation_config()
        config.max_new_tokens = new_tokens
        config.min_new_tokens = new_tokens
        config.ignore_eos = True
        config.do_sample = False
        config.num_beams = 1
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
        self._request = None

    def info(self) -> dict[str, Any]:
        import openvino_genai

        return {"device": "CPU", "threads": self._options.threads,
                "inference_precision": self._properties["INFERENCE_PRECISION_HINT"],
                "kv_cache_precision": self._properties["KV_CACHE_PRECISION"],
                "attention_backend": self._properties["ATTENTION_BACKEND"],
                "dynamic_quantization_group_size": self._properties.get("DYNAMIC_QUANTIZATION_GROUP_SIZE",
                                                                        "plugin default"),
                "logits": "openvino.Core compile of the same IR (state reset per call), compiled on first run()",
                "openvino": self._ov.__version__, "openvino_genai": openvino_genai.__version__}


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
        pipeline = genai.LLMPipeline(str(folder), "CPU", **properties)
        return OpenVinoGenAISession(pipeline, artifact.path, properties, opts, batch_size)
