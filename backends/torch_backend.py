"""PyTorch, eager or ``torch.compile``, on the CPU (the reference every other backend is compared against) and CUDA.

Precision comes from the artifact: fp32, or the fp16/bf16 recipes' half-precision modules (which
compute in half precision on a GPU). On CUDA, the ``cuda_graph`` option replays a captured graph
and ``compile`` wraps the module in ``torch.compile`` first.

``torch.compile`` with inductor: the harness's build process compiles the module once at the case's
batch size and device (:meth:`TorchBackend.build_cache`), which fills inductor's on-disk caches (FX
graph cache, AOTAutograd cache, the generated Triton/C++ kernels) under
``<cache>/torchinductor`` (``TORCHINDUCTOR_CACHE_DIR``, unless already set). ``prepare`` in the measured
process compiles on one batch of zeros, so the compile is in ``load_time`` and not in the first inference;
with the warm cache that is Dynamo's tracing and guards plus loading the cached graph and kernels, not
inductor's code generation and compilation. What a cross-process cache cannot carry stays in the measured
process: Dynamo tracing, and CUDA graph capture for the ``reduce-overhead``/``max-autotune`` modes. The
session's info has the compile time and inductor's cache hits and misses.

torch is imported inside the methods so that loading the registry stays cheap.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from costbench.backends.base import (Availability, Backend, BackendOptions, Capabilities, Session, TimingConvention,
                                     input_plan, ordered_inputs)
from costbench.backends.glibc_heap import retain_freed_memory
from costbench.core.artifacts import FORMAT_TORCH, Artifact


class TorchOptions(BackendOptions):
    """Options for the torch backend."""

    interop_threads: int | None = Field(
        default=None,
        ge=1,
        description="Inter-op threads (torch.set_num_interop_threads); None keeps torch's default. "
        "torch accepts this once per process, before any parallel work.",
    )
    retain_memory: bool = Field(
        default=False,
        description="Keep memory the model frees in the process's glibc heap (no mmap for large blocks, no "
        "trimming), so each query reuses the last one's pages instead of faulting fresh ones from the kernel. "
        "PyTorch eager allocates a query's activations afresh; with glibc's defaults some launches fault "
        "thousands of pages a query and run 1.5x slower than others (backends/glibc_heap.py).",
    )
    cuda_graph: bool = Field(
        default=False,
        description="device='cuda' only: capture the forward pass once as a CUDA graph and replay it, "
        "removing per-kernel launch overhead (inputs are copied into static device buffers).",
    )
    compile: bool = Field(
        default=False, description="Wrap the module in torch.compile (dynamic=False). Inductor's caches are warmed "
        "in the build process; the measured process compiles (from them) in prepare, so in load_time.",
    )
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = Field(
        default="default", description="torch.compile mode (inductor only); 'reduce-overhead' and 'max-autotune' "
        "use CUDA graphs themselves (inductor's triton.cudagraphs).",
    )
    compile_backend: str = Field(
        default="inductor", description="torch.compile backend ('inductor'; 'eager'/'aot_eager' trace without codegen).",
    )


def _missing_reason(exc: ImportError) -> str:
    if isinstance(exc, ModuleNotFoundError) and exc.name == "torch":
        return "torch is not installed: pip install torch"
    # Installed but broken (a missing shared library, an ABI mismatch): reinstalling is the fix.
    return f"torch failed to import ({type(exc).__name__}: {exc}): pip install --force-reinstall torch"


class TorchSession(Session):
    """An eval-mode nn.Module fed through torch.from_numpy (zero-copy) under inference_mode."""

    mode = "eager"  # or the torch.compile settings, set by prepare
    compiled: dict[str, Any] = {}  # compile time and inductor cache hits, set by prepare
    heap: dict[str, Any] | None = None  # what retain_memory set, set by prepare

    def __init__(self, module: Any, artifact: Artifact, batch_size: int):
        import torch

        self._torch = torch
        self._module = module
        self._plan = input_plan(artifact.inputs)
        self._batch_size = batch_size

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run the module on ``inputs`` (keyed by artifact input name); outputs as numpy, in model order."""
        torch = self._torch
        args = [torch.from_numpy(a) for a in ordered_inputs(inputs, self._plan)]
        with torch.inference_mode():
            out = self._module(*args)
        return _to_numpy_list(out, torch)

    def close(self) -> None:
        """Drop the module so its weights can be freed."""
        self._module = None

    def info(self) -> dict[str, Any]:
        """Thread settings actually in effect and the execution mode."""
        return {
            "mode": self.mode,
            **({"compile": self.compiled} if self.compiled else {}),
            "device": "cpu",
            "threads": self._torch.get_num_threads(),
            "interop_threads": self._torch.get_num_interop_threads(),
            "batch_size": self._batch_size,
            **({"retain_memory": self.heap} if self.heap else {}),
        }


class TorchCudaSession(Session):
    """The module on a CUDA device: host numpy -> device buffers -> forward -> host numpy.

    The timed region includes both copies (the convention says so); CUDA events around it give
    the device-side time as well. With ``cuda_graph`` the forward is captured once on static
    buffers and replayed.
    """

    timing = TimingConvention(
        boundary="host numpy inputs -> host-to-device copy -> forward -> device-to-host copy -> host numpy outputs",
        clock="host time.perf_counter_ns (CUDA events recorded around the same region as the device clock)",
    )
    mode = "eager"  # or the torch.compile settings, set by prepare
    compiled: dict[str, Any] = {}  # compile time and inductor cache hits, set by prepare
    heap: dict[str, Any] | None = None  # what retain_memory set, set by prepare

    def __init__(self, module: Any, artifact: Artifact, batch_size: int, device: str, cuda_graph: bool):
        import torch

        self._torch = torch
        self._device = torch.device(device)
        self._module = module.to(self._device)
        self._plan = input_plan(artifact.inputs)
        self._batch_size = batch_size
        self._static = [torch.zeros(spec.batched(batch_size), dtype=getattr(torch, spec.dtype), device=self._device)
                        for spec in artifact.inputs]
        self._graph = None
        self._static_out = None
        torch.cuda.reset_peak_memory_stats(self._device)
        if cuda_graph:
            self._capture()

    def _capture(self) -> None:
        torch = self._torch
        # Warm up on a side stream first, as torch.cuda.graphs requires, so lazy init is not captured.
        side = torch.cuda.Stream(self._device)
        side.wait_stream(torch.cuda.current_stream(self._device))
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(3):
                self._module(*self._static)
        torch.cuda.current_stream(self._device).wait_stream(side)
        self._graph = torch.cuda.CUDAGraph()
        # Capture on our side stream: graph()'s own default stream is made once on the *current*
        # device, which is not self._device for 'cuda:N'.
        with torch.cuda.graph(self._graph, stream=side), torch.inference_mode():
            self._static_out = self._module(*self._static)

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        torch = self._torch
        for buf, array in zip(self._static, ordered_inputs(inputs, self._plan)):
            buf.copy_(torch.from_numpy(np.ascontiguousarray(array)), non_blocking=False)
        with torch.inference_mode():
            if self._graph is not None:
                self._graph.replay()
                out = self._static_out
            else:
                out = self._module(*self._static)
        return _to_numpy_list(out, torch)  # .cpu() waits for the device

    def synchronize(self) -> None:
        self._torch.cuda.synchronize(self._device)

    def device_timer(self):
        from costbench.backends.timing import CudaEventTimer

        return CudaEventTimer()

    def peak_device_memory(self) -> int | None:
        return int(self._torch.cuda.max_memory_allocated(self._device))

    def close(self) -> None:
        self._graph = self._static_out = self._module = None
        self._static = []

    def info(self) -> dict[str, Any]:
        torch = self._torch
        return {"mode": self.mode + (" + CUDA graph" if self._graph is not None else ""),
                **({"compile": self.compiled} if self.compiled else {}),
                **({"retain_memory": self.heap} if self.heap else {}), "device": str(self._device),
                "gpu": torch.cuda.get_device_name(self._device), "cuda": torch.version.cuda,
                "batch_size": self._batch_size}


def _to_numpy_list(out: Any, torch: Any) -> list[np.ndarray]:
    """Flatten a tensor, a (nested) tuple/list of tensors, or a dict of them into numpy arrays."""
    if isinstance(out, torch.Tensor):
        return [out.detach().cpu().numpy()]
    if isinstance(out, (tuple, list)):
        return [a for item in out for a in _to_numpy_list(item, torch)]
    if isinstance(out, dict):  # includes transformers' ModelOutput, which keeps insertion order
        return [a for item in out.values() for a in _to_numpy_list(item, torch)]
    raise TypeError(
        f"model returned {type(out).__name__}; the torch backend handles a tensor, "
        "a tuple/list of tensors or a dict of tensors"
    )


INDUCTOR_COUNTERS = (("inductor", "fxgraph_cache_hit"), ("inductor", "fxgraph_cache_miss"),
                     ("aot_autograd", "autograd_cache_hit"), ("aot_autograd", "autograd_cache_miss"))


def inductor_cache_dir(root: Any) -> str:
    """Where inductor keeps its caches for this cache root: ``$TORCHINDUCTOR_CACHE_DIR`` when set, else
    ``<root>/torchinductor`` (then exported, so this process and its children agree)."""
    import os

    return os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(root / "torchinductor"))


def _cache_counters(torch: Any) -> dict[str, int]:
    from torch._dynamo.utils import counters

    return {name: int(counters[group][name]) for group, name in INDUCTOR_COUNTERS}


def compile_now(module: Any, artifact: Artifact, batch_size: int, device: str) -> dict[str, Any]:
    """Run a ``torch.compile``d module once on zeros at the case's input shapes, so it compiles now (not in the
    first timed inference); returns the compile time and inductor's cache hits and misses during it."""
    import time

    import torch

    before = _cache_counters(torch)
    zeros = [torch.zeros(spec.batched(batch_size), dtype=getattr(torch, spec.dtype), device=device)
             for spec in artifact.inputs]
    t0 = time.perf_counter()
    with torch.inference_mode():  # as the session runs: inference mode is part of Dynamo's guards
        module(*zeros)
    if device != "cpu":
        torch.cuda.synchronize(torch.device(device))
    after = _cache_counters(torch)
    return {"compile_s": time.perf_counter() - t0, **{k: after[k] - before[k] for k in after}}


class TorchBackend(Backend):
    """PyTorch eager mode on the CPU, loading a whole pickled nn.Module."""

    name = "torch"
    capabilities = Capabilities(devices=("cpu", "cuda"), precisions=("fp32", "fp16", "bf16"), formats=(FORMAT_TORCH,))
    Options = TorchOptions

    def probe_device(self, device: str) -> Availability:
        """'cpu' always; 'cuda' (or 'cuda:N') only with a CUDA build of torch and a visible GPU."""
        if device == "cpu":
            return Availability.ok()
        try:
            import torch
        except ImportError as exc:
            return Availability.missing(_missing_reason(exc))
        if torch.version.cuda is None:
            return Availability.missing(f"torch {torch.__version__} is a CPU-only build; install a CUDA build of torch")
        if not torch.cuda.is_available():
            return Availability.missing("no CUDA device is visible (torch.cuda.is_available() is False)")
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            return Availability.missing(f"{device}: only {torch.cuda.device_count()} CUDA device(s) visible")
        return Availability.ok(gpu=torch.cuda.get_device_name(index))

    def probe(self) -> Availability:
        """Available when torch imports; reports its version."""
        try:
            import torch
        except ImportError as exc:
            return Availability.missing(_missing_reason(exc))
        except Exception as exc:  # a probe never raises
            return Availability.missing(f"torch failed to import ({type(exc).__name__}: {exc})")
        return Availability.ok(torch=torch.__version__)

    def prepare(self, artifact: Artifact, options: BackendOptions, batch_size: int, device: str = "cpu") -> Session:
        """Load the pickled module, put it in eval mode and apply the thread settings."""
        self.check_request(artifact, batch_size, device)
        opts: TorchOptions = self.own_options(options)

        import torch

        # Every case runs in its own child process, so process-global thread settings
        # affect only this case and need no restoring.
        if opts.threads is not None:
            torch.set_num_threads(opts.threads)
        if opts.interop_threads is not None and opts.interop_threads != torch.get_num_interop_threads():
            try:
                torch.set_num_interop_threads(opts.interop_threads)
            except RuntimeError as exc:
                raise RuntimeError(
                    f"torch backend: cannot set interop_threads={opts.interop_threads}: torch allows it once per "
                    f"process, before any parallel work, and this process already uses "
                    f"{torch.get_num_interop_threads()} ({exc})"
                ) from exc

        if device != "cpu":
            usable = self.probe_device(device)
            if not usable.available:
                raise RuntimeError(f"torch backend: {usable.reason}")
        elif opts.cuda_graph:
            raise ValueError("torch backend: cuda_graph applies to device='cuda' only")

        # Before the model allocates anything, so its blocks land in a heap that keeps them.
        heap = retain_freed_memory() if opts.retain_memory else None
        module = self._load_module(artifact)
        mode = "eager"
        compiled: dict[str, Any] = {}
        if opts.compile:
            module = self._compile(module, opts, artifact, device)
            compiled = compile_now(module, artifact, batch_size, device)
            mode = f"torch.compile(backend={opts.compile_backend}, mode={opts.compile_mode})"
        session = (TorchCudaSession(module, artifact, batch_size, device, opts.cuda_graph) if device != "cpu"
                   else TorchSession(module, artifact, batch_size))
        session.mode = mode
        session.compiled = compiled
        session.heap = heap
        return session

    def builds_for(self, options: BackendOptions, device: str) -> bool:
        """With ``compile`` and inductor: its on-disk caches are warmed in the build process."""
        opts: TorchOptions = self.own_options(options)
        return opts.compile and opts.compile_backend == "inductor"

    def build_cache(self, artifact: Artifact, options: BackendOptions, batch_size: int, device: str,
                    cache_dir: Any) -> dict[str, Any] | None:
        """Compile the module once at this batch size and device, filling inductor's on-disk caches."""
        opts: TorchOptions = self.own_options(options)
        if not self.builds_for(opts, device):
            return None
        self.check_request(artifact, batch_size, device)
        if device != "cpu":
            usable = self.probe_device(device)
            if not usable.available:
                raise RuntimeError(f"torch backend: {usable.reason}")
        module = self._compile(self._load_module(artifact), opts, artifact, device)
        facts = compile_now(module, artifact, batch_size, device)
        return {"what": "torch.compile: inductor's FX graph, AOTAutograd and kernel caches",
                "cache_dir": inductor_cache_dir(self.cache_root(artifact)),
                "cached": facts["fxgraph_cache_miss"] == 0 and facts["fxgraph_cache_hit"] > 0, **facts}

    def _load_module(self, artifact: Artifact) -> Any:
        import torch

        # Pickled whole modules need full unpickling; artifacts come from our own cache.
        module = torch.load(artifact.path, weights_only=False, map_location="cpu")
        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"{artifact.path} holds a {type(module).__name__}, not a torch.nn.Module")
        return module.eval()

    def _compile(self, module: Any, opts: TorchOptions, artifact: Artifact, device: str) -> Any:
        """``torch.compile(module)`` on ``device``, with inductor's caches where the build process left them."""
        import torch

        # Both modes turn on inductor's triton.cudagraphs (torch._inductor.list_mode_options).
        if opts.cuda_graph and opts.compile_mode in ("reduce-overhead", "max-autotune"):
            raise ValueError(f"torch backend: compile_mode={opts.compile_mode!r} captures CUDA graphs itself; "
                             "drop cuda_graph or pick another compile_mode (e.g. 'max-autotune-no-cudagraphs')")
        inductor = opts.compile_backend == "inductor"
        mode_arg = opts.compile_mode if inductor and opts.compile_mode != "default" else None
        if not inductor and opts.compile_mode != "default":
            raise ValueError(f"torch backend: compile_mode applies to the inductor backend, not {opts.compile_backend!r}")
        if inductor:
            inductor_cache_dir(self.cache_root(artifact))
        if device != "cpu":
            module = module.to(torch.device(device))
        return torch.compile(module, backend=opts.compile_backend, mode=mode_arg, dynamic=False)
