"""ONNX Runtime with the CPU execution provider, and on NVIDIA GPUs the CUDA and TensorRT providers.

On ``device = "cuda"`` the ``provider`` option picks ``CUDAExecutionProvider`` (default) or
``TensorrtExecutionProvider``; both need the GPU build (``onnxruntime-gpu``), and a session that
silently fell back to the CPU is refused. The timed region then includes ONNX Runtime's own copies
to and from the device (inputs and outputs stay host numpy arrays).

onnxruntime is imported inside the methods so that loading the registry stays cheap.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from costbench.backends.base import (Availability, Backend, BackendOptions, Capabilities, Session, TimingConvention,
                                     import_runtime, never_raises, ordered_inputs)
from costbench.core.artifacts import FORMAT_ONNX, Artifact

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
    provider: Literal["cuda", "tensorrt"] = Field(
        default="cuda", description="device='cuda' only: CUDAExecutionProvider or TensorrtExecutionProvider "
        "(which falls back to CUDA, then CPU, for nodes TensorRT cannot take).",
    )
    trt_fp16: bool = Field(default=False, description="provider='tensorrt': allow fp16 kernels (trt_fp16_enable).")
    trt_engine_cache_dir: str | None = Field(
        default=None, description="provider='tensorrt': cache built engines here (trt_engine_cache_enable).",
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
        providers = gpu_providers(opts, device) if device != "cpu" else [_CPU_PROVIDER]
        # A path (not bytes) lets ONNX Runtime find external-data files next to the model.
        session = ort.InferenceSession(str(artifact.path), so, providers=providers)
        if device == "cpu":
            return OnnxRuntimeSession(session, artifact, batch_size, opts)
        wanted = _GPU_PROVIDERS[opts.provider]
        if session.get_providers()[0] != wanted:
            raise RuntimeError(f"onnxruntime backend: asked for {wanted}, the session runs on "
                               f"{session.get_providers()} (missing CUDA/TensorRT libraries?)")
        return OnnxRuntimeGpuSession(session, artifact, batch_size, opts)


def gpu_providers(opts: OnnxRuntimeOptions, device: str) -> list:
    """The provider list for a GPU session: the chosen provider with its options, then CUDA, then CPU."""
    index = int(device.partition(":")[2] or 0)
    cuda = (_GPU_PROVIDERS["cuda"], {"device_id": index})
    if opts.provider == "cuda":
        return [cuda, _CPU_PROVIDER]
    trt_options: dict[str, Any] = {"device_id": index, "trt_fp16_enable": opts.trt_fp16}
    if opts.trt_engine_cache_dir:
        trt_options.update(trt_engine_cache_enable=True, trt_engine_cache_path=opts.trt_engine_cache_dir)
    return [(_GPU_PROVIDERS["tensorrt"], trt_options), cuda, _CPU_PROVIDER]


class OnnxRuntimeGpuSession(OnnxRuntimeSession):
    """An InferenceSession on the CUDA or TensorRT provider; host numpy in and out, copies included."""

    timing = TimingConvention(
        boundary="host numpy inputs -> ONNX Runtime copies to the device -> run -> copies back -> host numpy outputs",
        clock="host time.perf_counter_ns (run() returns after the outputs are on the host)",
    )
