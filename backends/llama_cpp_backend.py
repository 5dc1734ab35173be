"""llama.cpp for generative models, through llama-cpp-python's ``Llama`` on the CPU.

It loads one GGUF file (:data:`~costbench.core.artifacts.FORMAT_GGUF`: F32, BF16, Q8_0 or Q4_K_M, written by the
recipes). ``threads`` sets both of llama.cpp's thread counts (``n_threads`` for decoding, ``n_threads_batch`` for
the prefill); left unset, llama-cpp-python's defaults apply (half the logical CPUs for decoding, all for the
prefill), and ``info`` records them.

``generate`` feeds token ids, never text: ``Llama.eval`` runs the prompt (the prefill), then a sampler chain of
llama.cpp's own (a logit bias of -inf on the end-of-sequence token, then greedy) picks each token with
``llama_sampler_sample``; the token is on the host there, the session calls ``on_token``, and ``Llama.eval`` runs it
through the model for the next step. Masking EOS is what Transformers' ``min_new_tokens`` and ONNX Runtime GenAI's
``min_length`` do, so every runtime generates exactly ``new_tokens`` and the same greedy tokens.

Every request starts from an empty KV cache: ``Llama.reset`` and ``llama_memory_clear`` before each prompt.
llama-cpp-python's own ``Llama.generate`` would instead keep the cache of a prompt sharing a prefix with the last
one and skip that part of the prefill, which no other runtime here does.

``run`` returns the next-token logits of each prompt (the prefill's last row, ``llama_get_logits_ith(ctx, -1)``)
for parity. The KV cache is F32 by default (llama.cpp's own default is F16), as the other runtimes keep theirs
for an fp32 model; ``kv_cache = "f16"`` gives llama.cpp's default.

``repack`` is llama.cpp's ``use_extra_bufts``: weights copied at load into the layouts of its CPU-specific kernels
(its AMX tiles, its repacked Q4_0/IQ4_NL). It is on by default, but off where this build of llama.cpp has its AMX
matrix multiply: that kernel crashed the test suite (SIGSEGV in ``ggml_backend_amx_mul_mat``, on an Intel Xeon
with AMX, with the Q8_0 files of the tiny test models; llama.cpp issue 20824 reports the same crash, machine-
dependent, with Q4_K_M). ``info`` records which applied; ``repack = true`` asks for it anyway.
"""

from __future__ import annotations

import contextlib
import ctypes
from typing import Any, Callable, Iterator, Literal

import numpy as np
from pydantic import Field

from costbench.backends.base import (Availability, Backend, BackendOptions, Capabilities, GenerativeSession,
                                     TimingConvention, import_runtime, never_raises)
from costbench.core.artifacts import FORMAT_GGUF, Artifact

PIP_NAME = "llama-cpp-python"
# PyPI has only llama-cpp-python's source for Linux: pip compiles llama.cpp for the machine it runs on.
INSTALL_NOTE = ("pip install -c constraints/cpu.txt -e '.[genai]' (llama-cpp-python==0.3.36 has no Linux wheel: pip "
                "builds it from source with a C/C++ compiler and CMake, about 5 minutes on 2 cores)")
KV_TYPES = {"f32": 0, "f16": 1}  # ggml_type of the KV cache (GGML_TYPE_F32, GGML_TYPE_F16)
# The KV cache is allocated for the whole context at load: a model trained on a long context (128k) would take
# gigabytes for requests that use a few hundred positions, so the default context stops here.
DEFAULT_CONTEXT_CAP = 4096


class LlamaCppOptions(BackendOptions):
    """Options for the llama-cpp backend; ``threads`` sets llama.cpp's n_threads and n_threads_batch."""

    context: int | None = Field(
        None, ge=1, description="llama.cpp's context size (n_ctx): the most prompt + new tokens a request may hold "
        "(llama.cpp rounds it up to a multiple of 256). None: the model's trained context (its GGUF context_length), "
        f"at most {DEFAULT_CONTEXT_CAP}. The KV cache is allocated for it at load.")
    kv_cache: Literal["f32", "f16"] = Field(
        "f32", description="KV cache type: f32, as the other runtimes keep it for an fp32 model, or f16, "
        "llama.cpp's default.")
    repack: bool | None = Field(
        None, description="llama.cpp's use_extra_bufts (weights repacked at load for its CPU-specific kernels). None: "
        "on, except where this build has llama.cpp's AMX matrix multiply (AMX_INT8 = 1 in its system info), which "
        "crashes on some machines (llama.cpp issue 20824).")


class LlamaCppSession(GenerativeSession):
    """A ``Llama`` over a GGUF file: ``run`` is the prefill's next-token logits, ``generate`` greedy decoding."""

    timing = TimingConvention(
        boundary="host token ids in -> Llama.reset + KV cache cleared, Llama.eval(prompt) = prefill, then per token "
                 "llama_sampler_sample (greedy, EOS masked) and Llama.eval(token) -> host token ids out; each token "
                 "stamped when the sampler returns it",
        clock="host time.perf_counter_ns")

    def __init__(self, lc: Any, llm: Any, options: LlamaCppOptions, path: str, repack: bool):
        self._lc = lc
        self._llm = llm
        self._options = options
        self._path = path
        self._repack = repack
        self._n_vocab = int(llm.n_vocab())
        self._context = int(llm.n_ctx())
        self._eos = int(lc.llama_vocab_eos(lc.llama_model_get_vocab(llm.model)))
        self._sampler = self._greedy_without_eos()

    def _greedy_without_eos(self) -> Any:
        """llama.cpp's sampler chain: EOS's logit biased to -inf, then the argmax."""
        lc = self._lc
        chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
        if self._eos >= 0:
            bias = (lc.llama_logit_bias * 1)()
            bias[0].token, bias[0].bias = self._eos, float("-inf")
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_logit_bias(self._n_vocab, 1, bias))
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_greedy())
        return chain

    def _prefill(self, prompt: np.ndarray, new_tokens: int) -> None:
        """An empty KV cache, then the prompt through the model (its last logits ready to sample)."""
        if prompt.ndim != 1 or prompt.size < 1:
            raise ValueError(f"llama-cpp backend: a prompt must be a non-empty row of token ids, got shape {prompt.shape}")
        if prompt.size + new_tokens > self._context:
            raise ValueError(f"llama-cpp backend: prompt {prompt.size} + new tokens {new_tokens} exceeds the context "
                             f"n_ctx = {self._context} (backend option 'context')")
        llm = self._llm
        llm.reset()
        memory = self._lc.llama_get_memory(llm.ctx)
        if memory is not None:
            self._lc.llama_memory_clear(memory, True)
        llm.eval(prompt.tolist())

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The next-token logits (batch x vocabulary, float32) after each prompt in ``inputs['input_ids']``, one
        prompt at a time."""
        ids = self.prompt_batch(inputs, np.int64, "llama-cpp")
        out = np.empty((ids.shape[0], self._n_vocab), dtype=np.float32)
        for row in range(ids.shape[0]):
            self._prefill(ids[row], 0)
            logits = self._lc.llama_get_logits_ith(self._llm.ctx, -1)
            out[row] = np.ctypeslib.as_array(logits, shape=(self._n_vocab,))
        return [out]

    def generate(self, prompt_ids: np.ndarray, new_tokens: int, on_token: Callable[[], None]) -> np.ndarray:
        """Greedy ``new_tokens`` after the prompt (one row); ``on_token`` is called once per step, the token on the
        host."""
        if new_tokens < 1:
            raise ValueError(f"llama-cpp backend: new_tokens must be >= 1, got {new_tokens}")
        ids = np.asarray(prompt_ids, dtype=np.int64)
        if ids.ndim != 2 or ids.shape[0] != 1:
            raise ValueError(f"llama-cpp backend: one prompt per request (llama-cpp-python's Llama decodes one "
                             f"sequence), got token ids of shape {ids.shape}")
        lc, llm = self._lc, self._llm
        self._prefill(ids[0], new_tokens)
        out = np.empty((1, new_tokens), dtype=np.int64)
        for step in range(new_tokens):
            token = lc.llama_sampler_sample(self._sampler, llm.ctx, -1)
            out[0, step] = token
            on_token()
            if step + 1 < new_tokens:
                llm.eval([token])
        return out

    def close(self) -> None:
        if self._sampler is not None:
            self._lc.llama_sampler_free(self._sampler)
            self._sampler = None
        if self._llm is not None:
            self._llm.close()
            self._llm = None

    def info(self) -> dict[str, Any]:
        llm = self._llm
        return {"device": "cpu", "llama_cpp_python": self._lc.__version__, "model_file": self._path,
                "n_threads": llm.n_threads if llm else None, "n_threads_batch": llm.n_threads_batch if llm else None,
                "threads_option": self._options.threads, "n_ctx": self._context,
                "context_option": self._options.context, "kv_cache": self._options.kv_cache,
                "repack": self._repack, "repack_option": self._options.repack,
                "eos_masked": self._eos, "system_info": self._lc.llama_print_system_info().decode().strip()}


class LlamaCppBackend(Backend):
    """llama.cpp through llama-cpp-python's ``Llama``, on the CPU."""

    name = "llama-cpp"
    capabilities = Capabilities(devices=("cpu",), precisions=("fp32", "bf16", "int8", "int4"), formats=(FORMAT_GGUF,))
    Options = LlamaCppOptions

    @never_raises
    def probe(self) -> Availability:
        """Available when llama_cpp imports; reports llama-cpp-python's version."""
        lc = _import_llama_cpp()
        return Availability.ok(llama_cpp_python=lc.__version__)

    def prepare(self, artifact: Artifact, options: BackendOptions, batch_size: int,
                device: str = "cpu") -> LlamaCppSession:
        """``Llama`` over the GGUF file with the thread counts, context and KV cache type; one sequence per request."""
        self.check_request(artifact, batch_size, device)
        if batch_size != 1:
            raise ValueError(f"llama-cpp backend: batch_size {batch_size}; llama-cpp-python's Llama decodes one "
                             "sequence at a time, so only batch_size 1 is measured")
        opts: LlamaCppOptions = self.own_options(options)
        lc = _import_llama_cpp()
        if not artifact.path.exists():
            raise FileNotFoundError(f"llama-cpp backend: no GGUF file at {artifact.path}")
        context = opts.context or min(_trained_context(artifact.path), DEFAULT_CONTEXT_CAP)
        repack = opts.repack if opts.repack is not None else not has_amx_matmul(lc)
        with _model_params(lc, use_extra_bufts=repack):
            llm = lc.Llama(model_path=str(artifact.path), n_ctx=context, n_threads=opts.threads,
                           n_threads_batch=opts.threads, type_k=KV_TYPES[opts.kv_cache],
                           type_v=KV_TYPES[opts.kv_cache], logits_all=False, verbose=False)
        return LlamaCppSession(lc, llm, opts, str(artifact.path), repack)


def has_amx_matmul(lc: Any) -> bool:
    """Whether this build of llama.cpp has its AMX matrix multiply: ``AMX_INT8 = 1`` in its own system info (set
    when llama.cpp was compiled for a CPU with AMX-INT8, as pip's source build for this machine is)."""
    return "AMX_INT8 = 1" in lc.llama_print_system_info().decode()


@contextlib.contextmanager
def _model_params(lc: Any, **fields: Any) -> Iterator[None]:
    """``Llama`` builds its ``llama_model_params`` from ``llama_model_default_params()`` and takes no argument for
    some of its fields (``use_extra_bufts``): while the block runs, that function returns the defaults with
    ``fields`` set."""
    low = lc.llama_cpp
    default = low.llama_model_default_params
    for name in fields:
        if not hasattr(default(), name):
            raise RuntimeError(f"llama-cpp backend: llama-cpp-python {lc.__version__} has no llama_model_params field "
                               f"{name!r}")

    def with_fields() -> Any:
        params = default()
        for name, value in fields.items():
            setattr(params, name, value)
        return params

    low.llama_model_default_params = with_fields
    try:
        yield
    finally:
        low.llama_model_default_params = default


def _trained_context(path: Any) -> int:
    """The GGUF file's ``<architecture>.context_length``, read from its header."""
    gguf = import_runtime("gguf")
    reader = gguf.GGUFReader(str(path))
    arch_field = reader.get_field("general.architecture")
    field = reader.get_field(f"{arch_field.contents()}.context_length") if arch_field else None
    if field is None:
        raise ValueError(f"llama-cpp backend: {path} has no <architecture>.context_length; set the backend option "
                         "'context'")
    return int(field.contents())


def _import_llama_cpp() -> Any:
    """llama_cpp, or an ImportError that says how to install it here."""
    try:
        return import_runtime("llama_cpp", PIP_NAME)
    except ImportError as exc:
        raise ImportError(f"{exc}; with costbench: {INSTALL_NOTE}") from exc
