"""PyTorch + Hugging Face Transformers for generative models: ``model.generate`` as users call it.

It loads a causal-LM folder (:data:`~costbench.core.artifacts.FORMAT_HF_CAUSAL_LM`): fp32 safetensors, or a
weight-only quantized variant whose folder carries torchao's quantized state dict
(``torchao-weights.pt``, written by the ``int8-weight-only``/``int4-weight-only`` recipes). Generation is
greedy with exactly the asked number of new tokens (``min_new_tokens = max_new_tokens``, so the end-of-
sequence token never stops it), through ``generate``'s streamer hook: Transformers hands the streamer each
step's token as soon as it is chosen, and the session stamps it there (after copying it to the host on a GPU,
as a streaming server must before it can send it).

The KV cache is Transformers' static cache by default (``cache = "static"``: preallocated for prompt plus
new tokens, no reallocation while decoding), or its dynamic one. torch is imported inside the methods so
that loading the registry stays cheap.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Literal

import numpy as np
from pydantic import Field

from costbench.backends.base import (Availability, Backend, BackendOptions, Capabilities, GenerativeSession,
                                     TimingConvention, import_runtime, never_raises)
from costbench.core.artifacts import FORMAT_HF_CAUSAL_LM, HF_TORCHAO_RECIPE, HF_TORCHAO_WEIGHTS, Artifact


class TransformersOptions(BackendOptions):
    """Options for the transformers backend."""

    cache: Literal["static", "dynamic"] = Field(
        "static", description="KV cache: Transformers' static cache (preallocated for prompt + new tokens) or its "
        "dynamic one (grows each step).")
    compile: bool = Field(
        False, description="torch.compile the model's forward (fullgraph, with the static cache). Compiling happens "
        "on the first call of each prompt shape, so in the untimed warm-up and parity passes, never in a timed "
        "request.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Compute dtype: 'auto' computes in the dtype the folder's weights are stored in (the "
        "fp16/bf16 recipes store half-precision weights); a named dtype converts them on load. bf16/fp16 compute "
        "is fast where the hardware has it (a GPU; a CPU with avx512_bf16/AMX) and emulated, slow, elsewhere.")


class TransformersSession(GenerativeSession):
    """A causal LM in eval mode: ``run`` is one forward pass (last position's logits), ``generate`` greedy decoding."""

    timing = TimingConvention(
        boundary="host int64 token ids in -> model.generate (prefill, then one step per token) -> host token ids "
                 "out; each token stamped when its step's id is on the host (streamer)",
        clock="host time.perf_counter_ns")

    def __init__(self, model: Any, device: str, options: TransformersOptions, quantization: dict[str, Any] | None):
        import torch

        self._torch = torch
        self._model = model
        self._device = torch.device(device)
        self._options = options
        self._quantization = quantization
        self._eos = model.generation_config.eos_token_id
        if isinstance(self._eos, list):
            self._eos = self._eos[0]

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The next-token logits (batch x vocabulary, float32) after each prompt in ``inputs['input_ids']``."""
        torch = self._torch
        ids = self.prompt_batch(inputs, np.int64, "transformers")
        with torch.inference_mode():
            logits = self._model(input_ids=torch.from_numpy(ids).to(self._device), use_cache=False).logits[:, -1, :]
            return [logits.float().cpu().numpy()]

    def position_logits(self, ids: np.ndarray) -> np.ndarray:
        """Every position's logits (batch x length x vocabulary, float32) of one forward pass over ``ids``."""
        torch = self._torch
        with torch.inference_mode():
            logits = self._model(input_ids=torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int64)).to(self._device),
                                 use_cache=False).logits
            return logits.float().cpu().numpy()

    def synchronize(self) -> None:
        if self._device.type == "cuda":
            self._torch.cuda.synchronize(self._device)

    def generate(self, prompt_ids: np.ndarray, new_tokens: int, on_token: Callable[[], None]) -> np.ndarray:
        """Greedy ``new_tokens`` after each prompt row; ``on_token`` is called once per step, the token on the host."""
        torch = self._torch
        if new_tokens < 1:
            raise ValueError(f"transformers backend: new_tokens must be >= 1, got {new_tokens}")
        ids = torch.from_numpy(np.ascontiguousarray(prompt_ids, dtype=np.int64)).to(self._device)
        streamer = _Stamper(on_token, on_gpu=self._device.type == "cuda")
        extra = {"cache_implementation": "static"} if self._options.cache == "static" else {}
        with torch.inference_mode():
            out = self._model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                                       min_new_tokens=new_tokens, do_sample=False, num_beams=1, streamer=streamer,
                                       pad_token_id=self._eos, temperature=None, top_p=None, top_k=None, **extra)
        if streamer.steps != new_tokens:
            raise RuntimeError(f"transformers backend: generate produced {streamer.steps} token steps, asked for "
                               f"{new_tokens}")
        return out[:, ids.shape[1]:].cpu().numpy()

    def peak_device_memory(self) -> int | None:
        if self._device.type != "cuda":
            return None
        return int(self._torch.cuda.max_memory_allocated(self._device))

    def close(self) -> None:
        self._model = None

    def info(self) -> dict[str, Any]:
        import transformers

        return {"device": str(self._device), "threads": self._torch.get_num_threads(), "cache": self._options.cache,
                "compile": self._options.compile, "dtype": str(self._model.dtype).replace("torch.", ""), "transformers": transformers.__version__, "torch": self._torch.__version__,
                "weights": self._quantization or "fp32 safetensors"}


class _Stamper:
    """A Transformers streamer that calls ``on_token`` for every generated step (the prompt's put is skipped)."""

    def __init__(self, on_token: Callable[[], None], on_gpu: bool):
        self._on_token = on_token
        self._on_gpu = on_gpu
        self._prompt_seen = False
        self.steps = 0

    def put(self, value: Any) -> None:
        if not self._prompt_seen:  # generate first hands over the prompt itself
            self._prompt_seen = True
            return
        if self._on_gpu:
            value.cpu()  # the token reaches the host before it counts as emitted
        self.steps += 1
        self._on_token()

    def end(self) -> None:
        """Nothing to flush: every step's token was stamped in ``put``."""


class TransformersBackend(Backend):
    """PyTorch + Transformers ``generate`` for causal-LM folders, on the CPU or a CUDA GPU."""

    name = "transformers"
    capabilities = Capabilities(devices=("cpu", "cuda"), precisions=("fp32", "bf16", "fp16", "int8", "int4"),
                                formats=(FORMAT_HF_CAUSAL_LM,))
    Options = TransformersOptions

    @never_raises
    def probe(self) -> Availability:
        """Available when torch and transformers import; reports both versions."""
        torch = import_runtime("torch")
        transformers = import_runtime("transformers")
        return Availability.ok(torch=torch.__version__, transformers=transformers.__version__)

    def probe_device(self, device: str) -> Availability:
        """'cpu' always; 'cuda' only with a CUDA build of torch and a visible GPU."""
        if device == "cpu":
            return Availability.ok()
        try:
            import torch
        except ImportError as exc:
            return Availability.missing(f"torch failed to import: {exc}")
        if not torch.cuda.is_available():
            return Availability.missing(f"no CUDA device is visible to torch {torch.__version__}")
        return Availability.ok(gpu=torch.cuda.get_device_name(int(device.partition(":")[2] or 0)))

    def prepare(self, artifact: Artifact, options: BackendOptions, batch_size: int,
                device: str = "cpu") -> TransformersSession:
        """Load the folder (and a quantized state dict where there is one) in eval mode on ``device``."""
        self.check_request(artifact, batch_size, device)
        opts: TransformersOptions = self.own_options(options)
        if device != "cpu":
            usable = self.probe_device(device)
            if not usable.available:
                raise RuntimeError(f"transformers backend: {usable.reason}")
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        if opts.threads is not None:  # each case has its own process: nothing to restore
            torch.set_num_threads(opts.threads)
        folder = artifact.directory
        dtype = "auto" if opts.dtype == "auto" else getattr(torch, opts.dtype)
        quantized = folder / HF_TORCHAO_WEIGHTS
        quantization = None
        if quantized.exists():
            # torchao's tensor subclasses are pickled objects: the state dict is loaded with weights_only=False,
            # which is safe here because costbench's own recipe wrote it into the content-addressed cache.
            import_runtime("torchao")
            model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(folder)), dtype=torch.float32)
            model.load_state_dict(torch.load(quantized, weights_only=False, map_location="cpu"), assign=True)
            recipe_file = folder / HF_TORCHAO_RECIPE
            quantization = json.loads(recipe_file.read_text()) if recipe_file.exists() else {"method": "torchao"}
            if opts.dtype not in ("auto", "float32"):
                raise ValueError(f"transformers backend: dtype={opts.dtype!r} applies to fp32 weights; this artifact "
                                 f"is weight-only quantized ({quantization.get('method')})")
        else:
            model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype)
        model = model.to(device).eval()
        if opts.compile:
            if opts.cache != "static":
                raise ValueError("transformers backend: compile needs cache = 'static' (a dynamic cache changes shape "
                                 "every step, so the compiled graph would be retraced each token)")
            model.forward = torch.compile(model.forward, fullgraph=True)
        if device != "cpu":
            torch.cuda.reset_peak_memory_stats(torch.device(device))
        return TransformersSession(model, device, opts, quantization)
