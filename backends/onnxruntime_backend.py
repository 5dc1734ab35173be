"""ONNX Runtime with the CPU execution provider, and on NVIDIA GPUs the CUDA and TensorRT providers.

On ``device = "cuda"`` the ``provider`` option picks ``CUDAExecutionProvider`` (default) or
``TensorrtExecutionProvider``; both need the GPU build (``onnxruntime-gpu``), and a session that
silently fell back to the CPU is refused.

On CUDA, with a CUDA build of torch (as the other NVIDIA backends), the session runs on a stream of its
own: a ``torch.cuda.Stream`` handed to the provider as ``user_compute_stream``; inputs are copied into
device buffers on that stream, bound with I/O binding (``bind_input``/``bind_output`` on device
pointers, ``run_with_iobinding``), and outputs copied back on it. CUDA events recorded on that stream
around the same region give ``device_latency_*`` as for the torch and TensorRT sessions. (A dedicated
stream, not torch's default one: ONNX Runtime reads a 0 handle as "no user stream".) Without a CUDA
torch the session falls back to ``run()`` with host arrays and no device timer, and says so in its info.

With the TensorRT provider, ONNX Runtime builds TensorRT engines when the session first sees an input
shape. The harness builds them in its build process (:meth:`OnnxRuntimeBackend.build_cache`: one run at
the case's batch size with the engine cache on), into a folder keyed by the ONNX file, ONNX Runtime's
and TensorRT's versions, the TensorRT options and the batch size; the measured process's session loads
the engines from there instead of building them.

onnxruntime is imported inside the methods so that loading the registry stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from costbench.backends.base import (Availability, Backend, BackendOptions, Capabilities, Session, TimingConvention,
                                     import_runtime, never_raises, ordered_inputs)
from costbench.core.artifacts import FORMAT_ONNX, Artifact, content_key, file_sha256

_CPU_PROVIDER = "CPUExecutionProvider"
_GPU_PROVIDERS = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}

_OPT_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}
_EXEC_MODES = {"sequential": "ORT_SEQUENTIAL", "parallel": "ORT_PARALLEL"}

# ONNX Runtime reports input types as strings; bfloat16 has no numpy dtype and is left uncast.
_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(int16)": np.int16,
    "tensor(uint16)": np.uint16,
    "tensor(int32)": np.int32,
    "tensor(uint32)": np.uint32,
    "tensor(int64)": np.int64,
    "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
}


_ALLOW_SPINNING = "session.intra_op.allow_spinning"


def _spinning(so: Any) -> bool:
    """Whether the intra-op threads spin: the session's entry, else ONNX Runtime's default (they do)."""
    try:
        return so.get_session_config_entry(_ALLOW_SPINNING) != "0"
    except RuntimeError:  # never set on these options (a session built elsewhere, e.g. the GPU paths)
        return True


class OnnxRuntimeOptions(BackendOptions):
    """Options for the onnxruntime backend; ``threads`` sets intra_op_num_threads."""

    inter_op_threads: int | None = Field(
        default=None, ge=1, description="inter_op_num_threads; only used with execution_mode='parallel'."
    )
    graph_optimization: Literal["disable", "basic", "extended", "all"] = Field(
        default="all", description="Graph optimization level (GraphOptimizationLevel.ORT_*)."
    )
    execution_mode: Literal["sequential", "parallel"] = Field(
        default="sequential", description="Run independent graph branches one at a time or in parallel."
    )
    spinning: bool = Field(
        default=True, description="session.intra_op.allow_spinning: the intra-op threads spin while they wait "
        "for work (ONNX Runtime's default) or sleep. Spinning threads hold their cores between operators and "
        "between queries, where the harness and the OS also want them on a small machine.",
    )
    provider: Literal["cuda", "tensorrt"] = Field(
        default="cuda", description="device='cuda' only: CUDAExecutionProvider or TensorrtExecutionProvider "
        "(which falls back to CUDA, then CPU, for nodes TensorRT cannot take).",
    )
    trt_fp16: bool = Field(default=False, description="provider='tensorrt': allow fp16 kernels (trt_fp16_enable).")
    trt_engine_cache_dir: str | None = Field(
        default=None, description="provider='tensorrt': where the engine cache (trt_engine_cache_enable) goes; "
        "default: the artifact cache. The harness fills it in its build process.",
    )


def _import_ort() -> Any:
    """Import onnxruntime, turning a failure into an ImportError whose message says what to do."""
    return import_runtime("onnxruntime")


def _bind_inputs(artifact: Artifact, model_names: list[str]) -> list[tuple[str, int]]:
    """Pair each artifact input with a model input: by name, else by position."""
    if len(artifact.inputs) != len(model_names):
        raise ValueError(
            f"{artifact.path}: the model has {len(model_names)} inputs {model_names}, "
            f"the artifact declares {len(artifact.inputs)} {[s.name for s in artifact.inputs]}"
        )
    return [
        (spec.name, model_names.index(spec.name) if spec.name in model_names else i)
        for i, spec in enumerate(artifact.inputs)
    ]


class OnnxRuntimeSession(Session):
    """An InferenceSession on the CPU provider, fed by input name."""

    def __init__(self, session: Any, artifact: Artifact, batch_size: int, options: OnnxRuntimeOptions):
        self._session = session
        self._options = options
        self._batch_size = batch_size
        model_inputs = session.get_inputs()
        binding = _bind_inputs(artifact, [i.name for i in model_inputs])
        # (artifact name, dtype ORT expects or None when numpy cannot express it), and the ORT input names
        self._plan = [(name, _ORT_DTYPES.get(model_inputs[idx].type)) for name, idx in binding]
        self._ort_names = [model_inputs[idx].name for _, idx in binding]

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run one query; inputs keyed by artifact input name, outputs in model order."""
        return self._session.run(None, dict(zip(self._ort_names, ordered_inputs(inputs, self._plan))))

    def close(self) -> None:
        """Drop the InferenceSession so its arena and threads are released."""
        self._session = None

    def info(self) -> dict[str, Any]:
        """Providers actually used and the session settings as ONNX Runtime holds them."""
        so = self._session.get_session_options()
        return {
            "providers": list(self._session.get_providers()),
            "graph_optimization_level": so.graph_optimization_level.name,
            "execution_mode": so.execution_mode.name,
            # 0 means ONNX Runtime chose (one per physical core for intra-op).
            "intra_op_num_threads": so.intra_op_num_threads,
            "inter_op_num_threads": so.inter_op_num_threads,
            "allow_spinning": _spinning(so),
            "batch_size": self._batch_size,
        }


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime on the CPU execution provider; runs fp32 and int8 (QDQ or QOperator) ONNX models."""

    name = "onnxruntime"
    capabilities = Capabilities(devices=("cpu", "cuda"), precisions=("fp32", "fp16", "int8"), formats=(FORMAT_ONNX,))
    Options = OnnxRuntimeOptions

    def probe_device(self, device: str) -> Availability:
        """'cpu' always; 'cuda' needs the GPU build (CUDAExecutionProvider offered) and a visible GPU."""
        if device == "cpu":
            return Availability.ok()
        try:
            ort = _import_ort()
            providers = list(ort.get_available_providers())
        except ImportError as exc:
            return Availability.missing(str(exc))
        if _GPU_PROVIDERS["cuda"] not in providers:
            return Availability.missing(f"onnxruntime {ort.__version__} is the CPU build: pip install onnxruntime-gpu")
        from costbench.kernels.gpu.probe import torch_cuda_reason

        index = int(device.partition(":")[2] or 0)
        why = torch_cuda_reason(index)
        try:
            import torch

            cuda_torch = torch.version.cuda is not None
        except ImportError:
            cuda_torch = False
        if why and cuda_torch:  # a CUDA torch that sees no GPU speaks for the machine; a CPU torch cannot tell
            return Availability.missing(why)
        return Availability.ok(providers=",".join(p for p in providers if p in _GPU_PROVIDERS.values()))

    @never_raises
    def probe(self) -> Availability:
        """Available when onnxruntime imports and offers the CPU provider; lists every provider it offers."""
        ort = _import_ort()
        providers = list(ort.get_available_providers())
        if _CPU_PROVIDER not in providers:
            return Availability.missing(
                f"onnxruntime {ort.__version__} offers no {_CPU_PROVIDER} (providers: {', '.join(providers)})"
            )
        return Availability.ok(onnxruntime=ort.__version__, providers=",".join(providers))

    def prepare(self, artifact: Artifact, options: BackendOptions, batch_size: int, device: str = "cpu") -> Session:
        """Create an InferenceSession (CPU provider, or CUDA/TensorRT on 'cuda') with the requested settings."""
        self.check_request(artifact, batch_size, device)
        opts: OnnxRuntimeOptions = self.own_options(options)
        gpu_only = {"provider", "trt_fp16", "trt_engine_cache_dir"} & opts.model_fields_set
        if device == "cpu" and gpu_only:
            raise ValueError(f"onnxruntime backend: {', '.join(sorted(gpu_only))} apply to device='cuda' only")
        if device != "cpu":
            usable = self.probe_device(device)
            if not usable.available:
                raise RuntimeError(f"onnxruntime backend: {usable.reason}")
        ort = _import_ort()

        so = ort.SessionOptions()
        if opts.threads is not None:
            so.intra_op_num_threads = opts.threads
        if opts.inter_op_threads is not None:
            so.inter_op_num_threads = opts.inter_op_threads
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _OPT_LEVELS[opts.graph_optimization])
        so.execution_mode = getattr(ort.ExecutionMode, _EXEC_MODES[opts.execution_mode])
        so.add_session_config_entry(_ALLOW_SPINNING, "1" if opts.spinning else "0")
        if device == "cpu":
            # A path (not bytes) lets ONNX Runtime find external-data files next to the model.
            session = ort.InferenceSession(str(artifact.path), so, providers=[_CPU_PROVIDER])
            return OnnxRuntimeSession(session, artifact, batch_size, opts)
        stream, why_not = device_stream(device)
        engines = self.engine_cache_dir(artifact, opts, batch_size) if opts.provider == "tensorrt" else None
        providers = gpu_providers(opts, device, engines, None if stream is None else stream.cuda_stream)
        session = ort.InferenceSession(str(artifact.path), so, providers=providers)
        wanted = _GPU_PROVIDERS[opts.provider]
        if session.get_providers()[0] != wanted:
            raise RuntimeError(f"onnxruntime backend: asked for {wanted}, the session runs on "
                               f"{session.get_providers()} (missing CUDA/TensorRT libraries?)")
        if stream is None:
            return OnnxRuntimeGpuHostSession(session, artifact, batch_size, opts, why_not, engines)
        return OnnxRuntimeGpuSession(session, artifact, batch_size, opts, device, stream, engines)

    def prepare_batched(self, artifact: Artifact, options: BackendOptions, batch_size: int, max_batch: int,
                        device: str = "cpu") -> Session:
        """On the CPU one session serves every batch size when the ONNX graph's batch axis is dynamic; a graph
        that fixes it cannot batch (ValueError). On a GPU, one session per batch size (their buffers are bound)."""
        if device != "cpu":
            return super().prepare_batched(artifact, options, batch_size, max_batch, device)
        session = self.prepare(artifact, options, batch_size, device)
        fixed = {i.name: i.shape[0] for i in session._session.get_inputs() if i.shape and isinstance(i.shape[0], int)}
        if fixed and max_batch > 1:
            session.close()
            raise ValueError(f"onnxruntime backend: cannot batch up to {max_batch} queries: the ONNX graph "
                             f"{artifact.path.name} fixes the batch dimension of {fixed}; export it with a dynamic "
                             "batch axis")
        return session

    def builds_for(self, options: BackendOptions, device: str) -> bool:
        """The TensorRT provider on CUDA: its engines are built in the build process."""
        return device != "cpu" and self.own_options(options).provider == "tensorrt"

    def build_cache(self, artifact: Artifact, options: BackendOptions, batch_size: int, device: str,
                    cache_dir: Path) -> dict[str, Any] | None:
        """Fill the TensorRT provider's engine cache: a session with the cache on, run once at ``batch_size``."""
        if not self.builds_for(options, device):
            return None
        opts: OnnxRuntimeOptions = self.own_options(options)
        engines = self.engine_cache_dir(artifact, opts, batch_size)
        before = sorted(p.name for p in engines.glob("*")) if engines.is_dir() else []
        session = self.prepare(artifact, opts, batch_size, device)
        try:
            session.run(zero_inputs(artifact, batch_size))
            session.synchronize()
        finally:
            session.close()
        after = sorted(p.name for p in engines.glob("*"))
        return {"what": "ONNX Runtime TensorRT provider engine cache", "engine_cache_dir": str(engines),
                "files": after, "cached": bool(before) and before == after}

    def engine_cache_dir(self, artifact: Artifact, opts: "OnnxRuntimeOptions", batch_size: int) -> Path:
        """The TensorRT provider's engine cache for this artifact, ONNX Runtime and TensorRT versions, the
        TensorRT options and the batch size (ONNX Runtime names its files by graph and compute capability only)."""
        from importlib import metadata

        ort = _import_ort()
        try:
            trt_version = metadata.version("tensorrt")
        except metadata.PackageNotFoundError:
            trt_version = "system"
        root = Path(opts.trt_engine_cache_dir).expanduser() if opts.trt_engine_cache_dir else \
            self.cache_root(artifact) / "ort-tensorrt-engines"
        key = content_key({"onnx_sha256": file_sha256(artifact.path), "onnxruntime": ort.__version__,
                           "tensorrt": trt_version, "trt_fp16": opts.trt_fp16, "batch_size": batch_size})
        path = root / key
        path.mkdir(parents=True, exist_ok=True)
        return path


def gpu_providers(opts: OnnxRuntimeOptions, device: str, engine_cache: Path | str | None = None,
                  stream: int | None = None) -> list:
    """The provider list for a GPU session: the chosen provider with its options, then CUDA, then CPU.

    ``engine_cache``: the TensorRT provider's engine cache folder (else ``trt_engine_cache_dir``, else none).
    ``stream``: a CUDA stream handle (not 0) both providers compute on (``user_compute_stream``, which also
    sets ``has_user_compute_stream``), so CUDA events on it time the session's work.
    """
    index = int(device.partition(":")[2] or 0)
    on_stream = {} if not stream else {"user_compute_stream": str(int(stream))}
    cuda = (_GPU_PROVIDERS["cuda"], {"device_id": index, **on_stream})
    if opts.provider == "cuda":
        return [cuda, _CPU_PROVIDER]
    trt_options: dict[str, Any] = {"device_id": index, "trt_fp16_enable": opts.trt_fp16, **on_stream}
    cache = engine_cache or opts.trt_engine_cache_dir
    if cache:
        trt_options.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(cache))
    return [(_GPU_PROVIDERS["tensorrt"], trt_options), cuda, _CPU_PROVIDER]


def device_stream(device: str) -> tuple[Any, str]:
    """(a new ``torch.cuda.Stream`` on ``device``, "") when torch is a CUDA build that sees it, else (None, why not)."""
    try:
        import torch
    except ImportError:
        return None, "torch is not installed (device buffers and CUDA events come from a CUDA build of torch)"
    if torch.version.cuda is None or not torch.cuda.is_available():
        return None, (f"torch {torch.__version__} has no usable CUDA (device buffers and CUDA events come from a "
                      "CUDA build of torch)")
    dev = torch.device(device)
    return torch.cuda.Stream(dev), ""


def zero_inputs(artifact: Artifact, batch_size: int) -> dict[str, np.ndarray]:
    """Zeros of every artifact input at ``batch_size`` (what a build-time run feeds)."""
    return {s.name: np.zeros(s.batched(batch_size), dtype=s.dtype) for s in artifact.inputs}


# ONNX type -> torch dtype name, for device buffers; and the element type I/O binding takes for each
# (a numpy type, or the ONNX enum where numpy has none: bfloat16 is TensorProto.BFLOAT16 = 16).
_TORCH_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(bfloat16)": "bfloat16",
                 "tensor(double)": "float64", "tensor(int8)": "int8", "tensor(uint8)": "uint8",
                 "tensor(int16)": "int16", "tensor(int32)": "int32", "tensor(int64)": "int64",
                 "tensor(bool)": "bool"}
_ONNX_BFLOAT16 = 16


def binding_element_type(ort_type: str) -> Any:
    """What ``IOBinding.bind_input``/``bind_output`` take as element type for an ONNX type string."""
    if ort_type == "tensor(bfloat16)":
        return _ONNX_BFLOAT16
    if ort_type not in _ORT_DTYPES:
        raise TypeError(f"ONNX type {ort_type} cannot be bound to a device buffer here")
    return _ORT_DTYPES[ort_type]


def torch_dtype(torch: Any, ort_type: str) -> Any:
    """The torch dtype of a device buffer for an ONNX type string."""
    if ort_type not in _TORCH_DTYPES:
        raise TypeError(f"ONNX type {ort_type} has no torch dtype here")
    return getattr(torch, _TORCH_DTYPES[ort_type])


class OnnxRuntimeGpuHostSession(OnnxRuntimeSession):
    """The CUDA or TensorRT provider fed host arrays through ``run()`` (no CUDA torch here for device buffers)."""

    timing = TimingConvention(
        boundary="host numpy inputs -> ONNX Runtime copies to the device -> run -> copies back -> host numpy outputs",
        clock="host time.perf_counter_ns (run() returns after the outputs are on the host)",
    )

    def __init__(self, session: Any, artifact: Artifact, batch_size: int, options: OnnxRuntimeOptions,
                 why_no_device_timer: str, engine_cache: Path | None = None):
        super().__init__(session, artifact, batch_size, options)
        self._why_no_device_timer = why_no_device_timer
        self._engine_cache = engine_cache

    def info(self) -> dict[str, Any]:
        return {**super().info(), "io": "run() with host arrays", "device_timer": f"none: {self._why_no_device_timer}",
                **({"trt_engine_cache": str(self._engine_cache)} if self._engine_cache else {})}


class OnnxRuntimeGpuSession(OnnxRuntimeSession):
    """The CUDA or TensorRT provider on a stream of its own, with device buffers bound by I/O binding.

    Per query, all on the session's stream: copy each host input into its device buffer, run with the
    binding, copy each output back. Output buffers are allocated at the first run, from the shapes and
    types ONNX Runtime produced then (the batch size is fixed per session), and bound from then on.
    """

    timing = TimingConvention(
        boundary="host numpy inputs -> host-to-device copy (session stream) -> run_with_iobinding on device "
                 "buffers -> device-to-host copy -> host numpy outputs",
        clock="host time.perf_counter_ns (CUDA events recorded on the session's stream around the same region "
              "as the device clock)",
    )

    def __init__(self, session: Any, artifact: Artifact, batch_size: int, options: OnnxRuntimeOptions, device: str,
                 stream: Any, engine_cache: Path | None = None):
        import torch

        super().__init__(session, artifact, batch_size, options)
        self._torch = torch
        self._device = torch.device(device)
        self._index = self._device.index or 0
        self._stream = stream
        self._engine_cache = engine_cache
        torch.cuda.reset_peak_memory_stats(self._device)
        model_inputs = {i.name: i for i in session.get_inputs()}
        self._inputs = []  # (ORT name, device buffer, element type)
        for name, spec in zip(self._ort_names, artifact.inputs):
            ort_type = model_inputs[name].type
            buf = torch.empty(spec.batched(batch_size), dtype=torch_dtype(torch, ort_type), device=self._device)
            self._inputs.append((name, buf, binding_element_type(ort_type)))
        self._output_names = [o.name for o in session.get_outputs()]
        self._outputs: list[Any] | None = None  # device buffers, from the first run
        self._binding = session.io_binding()
        for name, buf, etype in self._inputs:
            self._binding.bind_input(name, "cuda", self._index, etype, tuple(buf.shape), buf.data_ptr())
        for name in self._output_names:
            self._binding.bind_output(name, "cuda", self._index)  # ONNX Runtime allocates, first run only

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        torch = self._torch
        arrays = ordered_inputs(inputs, self._plan)
        with torch.cuda.stream(self._stream):
            for (_, buf, _), array in zip(self._inputs, arrays):
                buf.copy_(torch.from_numpy(np.ascontiguousarray(array)).to(buf.dtype))
            self._session.run_with_iobinding(self._binding)
            if self._outputs is None:
                return self._bind_outputs()
            return [b.cpu().numpy() for b in self._outputs]  # .cpu() waits for the stream

    def _bind_outputs(self) -> list[np.ndarray]:
        """After the first run: device buffers of the shapes and types produced, bound for every later run."""
        torch = self._torch
        host = list(self._binding.copy_outputs_to_cpu())
        produced = self._binding.get_outputs()
        self._outputs = []
        self._binding.clear_binding_outputs()
        for name, value in zip(self._output_names, produced):
            ort_type = value.data_type()
            buf = torch.empty(tuple(value.shape()), dtype=torch_dtype(torch, ort_type), device=self._device)
            self._binding.bind_output(name, "cuda", self._index, binding_element_type(ort_type), tuple(buf.shape),
                                      buf.data_ptr())
            self._outputs.append(buf)
        return host

    def synchronize(self) -> None:
        self._torch.cuda.synchronize(self._device)

    def device_timer(self):
        from costbench.backends.timing import CudaEventTimer

        return CudaEventTimer(stream=self._stream)  # the events bracket the work on the session's stream

    def peak_device_memory(self) -> int | None:
        """Torch-allocated I/O buffers at peak (ONNX Runtime's own arena is not in it)."""
        return int(self._torch.cuda.max_memory_allocated(self._device))

    def close(self) -> None:
        self._binding = None
        self._inputs, self._outputs = [], None
        super().close()

    def info(self) -> dict[str, Any]:
        return {**super().info(), "io": "I/O binding on device buffers (torch), on the session's own stream",
                "device_timer": "CUDA events on the session's stream (user_compute_stream)",
                "device": str(self._device), "peak_device_memory_note": "torch-allocated I/O buffers only",
                **({"trt_engine_cache": str(self._engine_cache)} if self._engine_cache else {})}
