"""TensorRT: engines built from the ONNX artifacts, cached by content hash, run with ``execute_async_v3``.

Precision comes from the artifact (docs/architecture.md: TensorRT accepts symmetric int8 only):

- ``typing = "strong"`` (the default where TensorRT has ``STRONGLY_TYPED`` networks, 9.x+, and the
  only mode in 11.x): the ONNX types decide. The fp32 artifact builds an fp32 engine (TF32 where
  TensorRT allows it), the fp16 recipe's ONNX an fp16 engine, and an int8 Q/DQ artifact
  (explicit quantization; the implicit calibrator is deprecated) runs int8 where the Q/DQ pairs
  are and the artifact's float type elsewhere.
- ``typing = "weak"`` (TensorRT ≤ 10): the builder may pick kernels by speed; ``fp16 = true``
  sets ``BuilderFlag.FP16`` and a Q/DQ model sets ``BuilderFlag.INT8``.

An int8 artifact must be symmetric (zero points 0, int8): the ``int8`` recipe with
``activation_symmetric = true``. Asymmetric uint8 Q/DQ models are refused before building, with
that instruction.

Engines are cached in the artifact cache (``tensorrt-engine`` artifacts) keyed by the ONNX file's
hash, TensorRT's version, the GPU and compute capability, the build options and the batch size
(the optimization profile is fixed at that batch). The harness builds them in its build process
(:meth:`TensorRTBackend.build_cache`), so an engine build is never in the measured process's
``load_time`` or ``peak_rss``; ``prepare`` deserializes the cached engine, and builds one itself only when
called outside the harness with a cold cache (the session's info then says so). The session records the
engine's size, build time (None when cached), where it was built, and the device memory TensorRT asked for. Device buffers come from
PyTorch (a CUDA build of torch is required); launches go to PyTorch's current stream.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from costbench.backends.base import (Availability, Backend, BackendOptions, Capabilities, Session, TimingConvention,
                                     never_raises, ordered_inputs)
from costbench.core.artifacts import FORMAT_ONNX, Artifact, ArtifactCache, file_sha256

FORMAT_TRT_ENGINE = "tensorrt-engine"
ENGINE_FILE = "model.engine"
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


class TensorRTOptions(BackendOptions):
    """Options for the tensorrt backend (``threads`` does not apply and is ignored)."""

    typing: Literal["strong", "weak"] = Field(
        "strong", description="'strong': the ONNX types decide every layer's precision (STRONGLY_TYPED network); "
        "'weak' (TensorRT <= 10): the builder may use faster precisions the flags allow.",
    )
    fp16: bool = Field(False, description="typing='weak' only: allow fp16 kernels (BuilderFlag.FP16).")
    workspace_mb: int = Field(2048, ge=16, description="Builder workspace memory-pool limit, MiB.")
    optimization_level: int | None = Field(
        None, ge=0, le=5, description="builder_optimization_level (TensorRT default 3; higher builds longer)."
    )
    engine_cache_dir: str | None = Field(
        None, description="Where built engines are cached; default: the artifact cache the ONNX file came from.",
    )


def _cuda_wheel_suffix() -> str:
    """The CUDA major version of the TensorRT wheel to suggest: torch's, else 12."""
    try:
        import torch

        if torch.version.cuda:
            return torch.version.cuda.split(".")[0]
    except Exception:  # no torch, or one that fails to load: only the install hint depends on it
        pass
    return "12"


def _import_trt() -> Any:
    try:
        import tensorrt
    except ModuleNotFoundError as exc:
        if exc.name == "tensorrt" or (exc.name or "").startswith("tensorrt"):
            raise ImportError(f"tensorrt is not installed: pip install tensorrt-cu{_cuda_wheel_suffix()}") from exc
        raise ImportError(f"tensorrt failed to import ({type(exc).__name__}: {exc})") from exc
    except Exception as exc:  # a missing libnvinfer, a CUDA mismatch
        raise ImportError(f"tensorrt failed to import ({type(exc).__name__}: {exc}): "
                          f"pip install --force-reinstall tensorrt-cu{_cuda_wheel_suffix()}") from exc
    return tensorrt


def qdq_report(onnx_path: Path) -> dict[str, Any]:
    """Q/DQ nodes of an ONNX model and whether TensorRT can take them (symmetric int8: zero points 0, int8)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path), load_external_data=False)
    inits = {t.name: t for t in model.graph.initializer}
    constants = {o: n for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    nodes = [n for n in model.graph.node if n.op_type in QDQ_OPS]
    problems: list[str] = []
    int32_bias = 0  # DequantizeLinear of an int32 bias (zero point 0): symmetric, left to TensorRT's parser
    for node in nodes:
        if len(node.input) < 3 or not node.input[2]:
            continue  # no zero point: 0
        zp_name = node.input[2]
        if zp_name in inits:
            zp = numpy_helper.to_array(inits[zp_name])
        elif zp_name in constants:
            zp = numpy_helper.to_array(constants[zp_name].attribute[0].t)
        else:
            problems.append(f"{node.name or node.op_type}: zero point {zp_name!r} is computed, not a constant")
            continue
        if zp.dtype == np.int32 and node.op_type == "DequantizeLinear" and not np.any(zp):
            int32_bias += 1
        elif zp.dtype != np.int8:
            problems.append(f"{node.name or node.op_type}: {zp.dtype} zero point (TensorRT needs int8)")
        elif np.any(zp != 0):
            problems.append(f"{node.name or node.op_type}: non-zero zero point (TensorRT needs symmetric)")
    return {"qdq_nodes": len(nodes), "int32_bias_dequantize": int32_bias, "problems": problems}


def _trt_to_torch_dtype(trt: Any, dtype: Any) -> Any:
    import torch

    table = {"FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16, "INT8": torch.int8,
             "INT32": torch.int32, "INT64": torch.int64, "BOOL": torch.bool, "UINT8": torch.uint8}
    name = getattr(dtype, "name", str(dtype).rsplit(".", 1)[-1])
    if name not in table:
        raise TypeError(f"TensorRT I/O type {name} has no torch equivalent here")
    return table[name]


class TensorRTSession(Session):
    """A deserialized engine with static device buffers at one batch size."""

    timing = TimingConvention(
        boundary="host numpy inputs -> host-to-device copy -> execute_async_v3 -> device-to-host copy -> "
                 "host numpy outputs",
        clock="host time.perf_counter_ns (CUDA events recorded around the same region as the device clock)",
    )

    def __init__(self, trt: Any, engine_bytes: bytes, artifact: Artifact, batch_size: int, device: str,
                 engine_info: dict[str, Any]):
        import torch

        self._torch = torch
        self._trt = trt
        self._device = torch.device(device)
        self._batch_size = batch_size
        self._info = engine_info
        torch.cuda.set_device(self._device)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(engine_bytes)
        if self._engine is None:
            raise RuntimeError("TensorRT could not deserialize the engine (built by another TensorRT version or GPU?)")
        self._context = self._engine.create_execution_context()
        # A stream of our own: enqueueV3 on the legacy default stream makes TensorRT add
        # stream synchronizations of its own (it warns so), which would be timed with the model.
        self._stream = torch.cuda.Stream(self._device)
        torch.cuda.reset_peak_memory_stats(self._device)
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._outputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(artifact.inputs) != len(inputs):
            raise ValueError(f"the engine has inputs {inputs}, the artifact declares {[s.name for s in artifact.inputs]}")
        # Pair artifact inputs with engine inputs by name, else by position (as the ORT backend does).
        self._feeds: list[tuple[str, str, Any]] = []
        for i, spec in enumerate(artifact.inputs):
            engine_name = spec.name if spec.name in inputs else inputs[i]
            shape = spec.batched(batch_size)
            self._context.set_input_shape(engine_name, shape)
            buf = torch.empty(shape, dtype=_trt_to_torch_dtype(trt, self._engine.get_tensor_dtype(engine_name)),
                              device=self._device)
            self._context.set_tensor_address(engine_name, buf.data_ptr())
            self._feeds.append((spec.name, engine_name, buf))
        self._plan = [(spec.name, None) for spec in artifact.inputs]  # no numpy cast: torch casts to the buffer's dtype
        self._out_bufs = []
        for name in self._outputs:
            shape = tuple(self._context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise RuntimeError(f"output {name} has an unresolved shape {shape} after setting input shapes")
            buf = torch.empty(shape, dtype=_trt_to_torch_dtype(trt, self._engine.get_tensor_dtype(name)),
                              device=self._device)
            self._context.set_tensor_address(name, buf.data_ptr())
            self._out_bufs.append(buf)

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        torch = self._torch
        arrays = ordered_inputs(inputs, self._plan)
        with torch.cuda.stream(self._stream):  # copies, inference and read-back all on our stream, in order
            for (_, _, buf), array in zip(self._feeds, arrays):
                buf.copy_(torch.from_numpy(np.ascontiguousarray(array)).to(buf.dtype))
            if not self._context.execute_async_v3(self._stream.cuda_stream):
                raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT log on stderr)")
            return [b.cpu().numpy() for b in self._out_bufs]  # .cpu() waits for the stream

    def synchronize(self) -> None:
        self._torch.cuda.synchronize(self._device)

    def device_timer(self):
        from costbench.backends.timing import CudaEventTimer

        return CudaEventTimer(stream=self._stream)  # the events bracket the work on the session's stream

    def peak_device_memory(self) -> int | None:
        """Torch-allocated I/O buffers at peak, plus the activation memory TensorRT's context holds."""
        engine = self._engine
        context_bytes = getattr(engine, "device_memory_size_v2", None) or getattr(engine, "device_memory_size", 0)
        return int(self._torch.cuda.max_memory_allocated(self._device)) + int(context_bytes or 0)

    def close(self) -> None:
        self._context = self._engine = self._runtime = None
        self._feeds, self._out_bufs = [], []

    def info(self) -> dict[str, Any]:
        torch = self._torch
        return {**self._info, "device": str(self._device), "gpu": torch.cuda.get_device_name(self._device),
                "batch_size": self._batch_size, "outputs": self._outputs,
                "peak_device_memory_note": "torch-allocated I/O buffers + the engine's context device memory"}


class TensorRTBackend(Backend):
    """NVIDIA TensorRT on a CUDA GPU, from ONNX artifacts (fp32, fp16, symmetric int8 Q/DQ)."""

    name = "tensorrt"
    capabilities = Capabilities(devices=("cuda",), precisions=("fp32", "fp16", "int8"), formats=(FORMAT_ONNX,))
    Options = TensorRTOptions

    @never_raises
    def probe(self) -> Availability:
        """Available when tensorrt imports and torch is a CUDA build (device buffers); the GPU is probe_device's."""
        trt = _import_trt()
        try:
            import torch
        except ImportError:
            return Availability.missing("torch is not installed: pip install torch (a CUDA build)")
        if torch.version.cuda is None:
            return Availability.missing(f"torch {torch.__version__} is a CPU-only build; the tensorrt backend "
                                        "allocates device buffers through torch: install a CUDA build of torch")
        return Availability.ok(tensorrt=trt.__version__, torch_cuda=torch.version.cuda)

    def probe_device(self, device: str) -> Availability:
        """'cuda' or 'cuda:N' with a visible GPU."""
        if device.partition(":")[0] != "cuda":
            return Availability.missing(f"tensorrt runs on CUDA GPUs, not {device!r}")
        from costbench.kernels.gpu.probe import torch_cuda_reason

        why = torch_cuda_reason(int(device.partition(":")[2] or 0))
        if why:
            return Availability.missing(why)
        import torch

        return Availability.ok(gpu=torch.cuda.get_device_name(int(device.partition(":")[2] or 0)))

    def _cache(self, artifact: Artifact, opts: TensorRTOptions) -> ArtifactCache:
        if opts.engine_cache_dir:
            return ArtifactCache(Path(opts.engine_cache_dir).expanduser())
        # An artifact from the cache lives at <cache>/artifacts/<key>/model.onnx: engines go beside it.
        return ArtifactCache(self.cache_root(artifact))

    def builds_for(self, options: BackendOptions, device: str) -> bool:
        """Always: every case needs an engine for its ONNX file, batch size and GPU."""
        return True

    def build_cache(self, artifact: Artifact, options: BackendOptions, batch_size: int, device: str,
                    cache_dir: Path) -> dict[str, Any] | None:
        """Build the engine into the engine cache (in the harness's build process); a cached one is kept."""
        trt, opts, material, gpu = self._engine_request(artifact, options, batch_size, device)
        engine = self._cache(artifact, opts).get_or_build(
            material, ENGINE_FILE, FORMAT_TRT_ENGINE, artifact.inputs, artifact.outputs,
            self._engine_builder(trt, artifact, opts, batch_size, gpu))
        return {"what": "TensorRT engine", "engine_key": engine.key, "engine_size_bytes": engine.size_bytes,
                "cached": engine.cached, "engine_build_s": engine.build_time_s}

    def _engine_request(self, artifact: Artifact, options: BackendOptions, batch_size: int,
                        device: str) -> tuple[Any, TensorRTOptions, dict[str, Any], str]:
        """Checks shared by prepare and build_cache; (tensorrt, options, engine material, GPU name)."""
        self.check_request(artifact, batch_size, device)
        opts: TensorRTOptions = self.own_options(options)
        usable = self.probe()
        if not usable.available:
            raise RuntimeError(f"tensorrt backend: {usable.reason}")
        usable = self.probe_device(device)
        if not usable.available:
            raise RuntimeError(f"tensorrt backend: {usable.reason}")
        trt = _import_trt()
        import torch

        index = int(device.partition(":")[2] or 0)
        gpu = torch.cuda.get_device_name(index)
        capability = tuple(torch.cuda.get_device_capability(index))
        return trt, opts, self.engine_material(trt.__version__, artifact, opts, batch_size, gpu, capability), gpu

    def _engine_builder(self, trt: Any, artifact: Artifact, opts: TensorRTOptions, batch_size: int, gpu: str):
        def build(out_dir: Path) -> dict[str, Any]:
            data, built = self.build_engine(trt, artifact, opts, batch_size)
            (out_dir / ENGINE_FILE).write_bytes(data)
            return {**built, "tensorrt": trt.__version__, "gpu": gpu, "onnx_artifact": artifact.key}

        return build

    def engine_material(self, trt_version: str, artifact: Artifact, opts: TensorRTOptions, batch_size: int,
                        gpu: str, capability: tuple[int, int]) -> dict[str, Any]:
        """Everything that decides an engine's bytes: the ONNX file, TensorRT, the GPU, the options, the batch."""
        return {
            "onnx_sha256": file_sha256(artifact.path),
            "tensorrt": trt_version,
            "gpu": gpu,
            "compute_capability": list(capability),
            "typing": opts.typing,
            "fp16": opts.fp16,
            "workspace_mb": opts.workspace_mb,
            "optimization_level": opts.optimization_level,
            "batch_size": batch_size,
            "inputs": [[s.name, list(s.shape), s.dtype] for s in artifact.inputs],
        }

    def build_engine(self, trt: Any, artifact: Artifact, opts: TensorRTOptions, batch_size: int) -> tuple[bytes, dict]:
        """Parse the ONNX file and build a serialized engine; returns (bytes, build facts)."""
        qdq = qdq_report(artifact.path)
        if qdq["problems"]:
            raise ValueError(
                f"TensorRT accepts only symmetric int8 Q/DQ (zero point 0, int8); {artifact.path} has "
                f"{len(qdq['problems'])} incompatible node(s), e.g. {qdq['problems'][0]}. Build the variant with "
                "symmetric activations: { recipe = \"int8\", activation_symmetric = true }"
            )
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        flags = 0
        strongly = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
        if opts.typing == "strong":
            if strongly is None:
                raise ValueError(f"TensorRT {trt.__version__} has no strongly typed networks: set typing = \"weak\"")
            flags |= 1 << int(strongly)
        explicit = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
        if explicit is not None and int(trt.__version__.split(".")[0]) < 10:
            flags |= 1 << int(explicit)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(artifact.path)):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            hint = (f" (the model has {qdq['int32_bias_dequantize']} int32 bias DequantizeLinear node(s), which "
                    "TensorRT's ONNX parser has rejected in several releases: build the int8 variant with "
                    "quantize_bias = false, the default with activation_symmetric = true)"
                    if qdq["int32_bias_dequantize"] else "")
            raise RuntimeError(f"TensorRT could not parse {artifact.path}: " + "; ".join(errors[:5]) + hint)
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, opts.workspace_mb << 20)
        if opts.optimization_level is not None:
            config.builder_optimization_level = opts.optimization_level
        flags_set = []
        if opts.typing == "weak":
            if not hasattr(trt.BuilderFlag, "INT8"):  # TensorRT 11 dropped weak typing's precision flags
                raise ValueError(f"TensorRT {trt.__version__} has no weakly typed precision flags "
                                 "(BuilderFlag.FP16/INT8): set typing = \"strong\"")
            if opts.fp16:
                config.set_flag(trt.BuilderFlag.FP16)
                flags_set.append("FP16")
            if qdq["qdq_nodes"]:
                config.set_flag(trt.BuilderFlag.INT8)
                flags_set.append("INT8")
        elif opts.fp16:
            raise ValueError("fp16 = true applies to typing = \"weak\"; with strong typing use the fp16 recipe's ONNX")
        profile = builder.create_optimization_profile()
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            spec = next((s for s in artifact.inputs if s.name == tensor.name), artifact.inputs[i])
            shape = spec.batched(batch_size)
            profile.set_shape(tensor.name, shape, shape, shape)
        config.add_optimization_profile(profile)
        t0 = time.perf_counter()
        serialized = builder.build_serialized_network(network, config)
        build_s = time.perf_counter() - t0
        if serialized is None:
            raise RuntimeError("TensorRT failed to build the engine (see the TensorRT log on stderr)")
        data = bytes(memoryview(serialized))
        return data, {"typing": opts.typing, "builder_flags": flags_set, "qdq_nodes": qdq["qdq_nodes"],
                      "engine_build_s": build_s, "network_layers": network.num_layers}

    def prepare(self, artifact: Artifact, options: BackendOptions, batch_size: int, device: str = "cuda") -> Session:
        """Deserialize the engine the build process built for this artifact and batch size (built here only when
        the cache lacks it, e.g. called outside the harness), then a session on ``device``."""
        trt, opts, material, gpu = self._engine_request(artifact, options, batch_size, device)
        cache = self._cache(artifact, opts)
        engine_artifact = cache.lookup(material, ENGINE_FILE, FORMAT_TRT_ENGINE, artifact.inputs, artifact.outputs)
        built_in = "build process (cached)"
        if engine_artifact is None:
            engine_artifact = cache.get_or_build(material, ENGINE_FILE, FORMAT_TRT_ENGINE, artifact.inputs,
                                                 artifact.outputs, self._engine_builder(trt, artifact, opts,
                                                                                         batch_size, gpu))
            built_in = "this process (no prebuilt engine: its build is in load_time)"
        info = {
            "tensorrt": trt.__version__,
            "engine_key": engine_artifact.key,
            "engine_size_bytes": engine_artifact.size_bytes,
            "engine_build_s": engine_artifact.build_time_s or engine_artifact.provenance.get("engine_build_s"),
            "engine_cached": engine_artifact.cached,
            "engine_built_in": built_in,
            **{k: v for k, v in engine_artifact.provenance.items() if k in ("typing", "builder_flags", "qdq_nodes")},
        }
        return TensorRTSession(trt, engine_artifact.path.read_bytes(), artifact, batch_size, device, info)
