"""OpenVINO on the CPU plugin: IR (preferred) or ONNX, reshaped to a static batch and compiled.

openvino is imported inside the methods so that loading the registry stays cheap.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from costbench.backends.base import (Availability, Backend, BackendOptions, Capabilities, Session, import_runtime,
                                     never_raises, ordered_inputs)
from costbench.core.artifacts import FORMAT_ONNX, FORMAT_OPENVINO, Artifact

_OV_DEVICE = {"cpu": "CPU"}


class OpenVinoOptions(BackendOptions):
    """Options for the openvino backend; ``threads`` sets INFERENCE_NUM_THREADS."""

    hint: Literal["latency", "throughput"] = Field(
        default="latency", description="PERFORMANCE_HINT: tune streams/threads for one request or for many."
    )
    num_streams: int | None = Field(
        default=None, ge=1, description="NUM_STREAMS; None lets the hint decide. The plugin caps it at the core count."
    )
    inference_precision: Literal["f32", "bf16", "f16", "plugin-default"] = Field(
        default="f32",
        description="INFERENCE_PRECISION_HINT for the ops that are not quantized. 'f32' by default so an fp32 "
        "variant means fp32 on every backend: the plugin's own default is bf16 on CPUs with avx512_bf16/AMX, "
        "which silently changes accuracy and speed. 'plugin-default' keeps whatever the plugin picks.",
    )


def _import_ov() -> Any:
    """Import openvino, turning a failure into an ImportError whose message says what to do."""
    return import_runtime("openvino")


def _bind_inputs(artifact: Artifact, model_inputs: list[Any]) -> list[int]:
    """For each artifact input, the index of its model input: by tensor name, else by position."""
    if len(artifact.inputs) != len(model_inputs):
        names = [p.get_any_name() for p in model_inputs]
        raise ValueError(
            f"{artifact.path}: the model has {len(model_inputs)} inputs {names}, "
            f"the artifact declares {len(artifact.inputs)} {[s.name for s in artifact.inputs]}"
        )
    bound = []
    for i, spec in enumerate(artifact.inputs):
        by_name = [j for j, port in enumerate(model_inputs) if spec.name in port.get_names()]
        bound.append(by_name[0] if by_name else i)
    return bound


def _plain(value: Any) -> Any:
    """An OpenVINO property value as a JSON-friendly scalar (enums and element types become strings)."""
    if isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "get_type_name"):  # openvino.Type
        return value.get_type_name()
    if hasattr(value, "name"):  # pybind enums
        return value.name
    return str(value)


def _bound_infer(request: Any) -> Any:
    """The compiled binding's InferRequest.infer (a base class of openvino.InferRequest), if there is one."""
    for base in type(request).__mro__[1:]:
        if base.__module__.startswith("openvino._pyopenvino") and "infer" in base.__dict__:
            return base.__dict__["infer"]
    return None


# Input tensors kept per session: the harness rotates 8 batches, concurrency forks keep their own.
_SHARED_TENSOR_CACHE = 32


class OpenVinoSession(Session):
    """One compiled model and one synchronous InferRequest at a static batch size."""

    def __init__(self, compiled: Any, artifact: Artifact, batch_size: int, ov: Any):
        self._ov = ov
        self._artifact = artifact
        self._compiled = compiled
        self._request = compiled.create_infer_request()
        self._batch_size = batch_size
        binding = _bind_inputs(artifact, list(compiled.inputs))
        # (artifact name, numpy dtype the compiled input expects), and the compiled input indices
        self._plan = [(spec.name, compiled.inputs[idx].get_element_type().to_dtype())
                      for spec, idx in zip(artifact.inputs, binding)]
        self._indices = list(binding)
        self._n_outputs = len(compiled.outputs)
        self._tensors: dict[int, tuple[np.ndarray, Any]] = {}  # id(array) -> (array, its shared ov.Tensor)
        self._fresh: list[np.ndarray] = []
        self._bound_infer = _bound_infer(self._request)

    def fork(self) -> "OpenVinoSession":
        """A new InferRequest on the same compiled model: requests are not thread-safe, compiled models are."""
        return OpenVinoSession(self._compiled, self._artifact, self._batch_size, self._ov)

    def preferred_concurrency(self) -> int:
        """OPTIMAL_NUMBER_OF_INFER_REQUESTS of the compiled model (1 under the latency hint)."""
        return int(self._compiled.get_property(self._ov.properties.optimal_number_of_infer_requests))

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run one query; outputs are copied, because OpenVINO reuses its output buffers between calls."""
        request = self._request
        fresh = []  # arrays made for this call (a dtype cast): kept alive while the request may read them
        for (name, _), idx, array in zip(self._plan, self._indices, ordered_inputs(inputs, self._plan)):
            if array is inputs[name] and array.flags.c_contiguous:
                request.set_input_tensor(idx, self._shared_tensor(array))
            else:
                array = np.ascontiguousarray(array)
                fresh.append(array)
                request.set_input_tensor(idx, self._ov.Tensor(array, shared_memory=True))
        self._fresh = fresh
        # The binding's own synchronous infer, on the tensors just set: it runs on this thread, as
        # benchmark_app's sync API does, without InferRequest.infer's Python layer (which dispatches the
        # inputs again and wraps the results). start_async + wait would add a hand-over to a runtime thread.
        # Digits CNN, interleaved in one process: 58 us a call before, 34 us this way, 51 us with start_async.
        self._sync_infer(request)
        return [request.get_output_tensor(i).data.copy() for i in range(self._n_outputs)]

    def _sync_infer(self, request: Any) -> None:
        if self._bound_infer is not None:
            self._bound_infer(request, {}, True, False)  # (inputs: none new, share_outputs, decode_strings)
        else:  # a binding without that signature: the runtime's async pair, same work, one more hand-over
            request.start_async()
            request.wait()

    def _shared_tensor(self, array: np.ndarray) -> Any:
        """An ov.Tensor over the caller's ``array`` (no copy), made once per array the caller keeps feeding.

        The cache holds the array itself, so its id cannot be reused by another object while it is cached,
        and an array changed in place is seen, since the tensor shares its memory. The harness rotates a
        few batches it owns, so the cache holds those; it is cleared when a caller feeds many arrays.
        """
        hit = self._tensors.get(id(array))
        if hit is not None and hit[0] is array:
            return hit[1]
        if len(self._tensors) >= _SHARED_TENSOR_CACHE:
            self._tensors.clear()
        tensor = self._ov.Tensor(array, shared_memory=True)
        self._tensors[id(array)] = (array, tensor)
        return tensor

    def close(self) -> None:
        """Drop the request and the compiled model so the plugin frees its memory and threads."""
        self._request = None
        self._compiled = None
        self._tensors.clear()
        self._fresh = []

    def info(self) -> dict[str, Any]:
        """The compiled model's actual properties, which may differ from what was asked for."""
        props = self._ov.properties
        hint = props.hint
        info = {
            "device": "CPU",
            "batch_size": self._batch_size,
        }
        for key in (
            hint.performance_mode,
            props.streams.num,
            props.inference_num_threads,
            hint.inference_precision,
            props.optimal_number_of_infer_requests,
        ):
            info[str(key)] = _plain(self._compiled.get_property(key))
        info["EXECUTION_DEVICES"] = list(self._compiled.get_property(props.execution_devices))
        return info


class OpenVinoBackend(Backend):
    """OpenVINO on the CPU plugin, compiling a static-shape model per batch size."""

    name = "openvino"
    capabilities = Capabilities(devices=("cpu",), precisions=("fp32", "int8"), formats=(FORMAT_OPENVINO, FORMAT_ONNX))
    Options = OpenVinoOptions

    @never_raises
    def probe(self) -> Availability:
        """Available when openvino imports and its Core lists a CPU device; reports version and devices."""
        ov = _import_ov()
        devices = list(ov.Core().available_devices)
        if "CPU" not in devices:
            return Availability.missing(
                f"openvino {ov.get_version()} found no CPU device (devices: {', '.join(devices) or 'none'})"
            )
        return Availability.ok(openvino=ov.get_version(), devices=",".join(devices))

    def prepare(self, artifact: Artifact, options: BackendOptions, batch_size: int, device: str = "cpu") -> Session:
        """Read the model, reshape every input to its static batched shape, compile for the CPU."""
        self.check_request(artifact, batch_size, device)
        opts: OpenVinoOptions = self.own_options(options)
        ov = _import_ov()
        props = ov.properties
        hint = props.hint

        core = ov.Core()
        model = core.read_model(str(artifact.path))
        # Static shapes compile to the fastest CPU kernels; a dynamic batch would pay for generality.
        binding = _bind_inputs(artifact, list(model.inputs))
        model.reshape(
            {idx: ov.PartialShape(list(spec.batched(batch_size))) for spec, idx in zip(artifact.inputs, binding)}
        )

        config: dict[str, Any] = {
            hint.performance_mode: {
                "latency": hint.PerformanceMode.LATENCY,
                "throughput": hint.PerformanceMode.THROUGHPUT,
            }[opts.hint],
        }
        if opts.threads is not None:
            config[props.inference_num_threads] = opts.threads
        if opts.num_streams is not None:
            config[props.streams.num] = opts.num_streams
        if opts.inference_precision != "plugin-default":
            config[hint.inference_precision] = {"f32": ov.Type.f32, "bf16": ov.Type.bf16, "f16": ov.Type.f16}[
                opts.inference_precision
            ]
        compiled = core.compile_model(model, _OV_DEVICE[device], config)
        return OpenVinoSession(compiled, artifact, batch_size, ov)
