"""LiteRT (TensorFlow Lite's runtime) running ``.tflite`` flatbuffers on the CPU, through the ``ai-edge-litert`` wheel.

No TensorFlow is needed: ``ai_edge_litert.interpreter.Interpreter`` is the LiteRT C++ interpreter
with its Python bindings. By default the XNNPACK delegate takes every op it supports (as on
Android); ``kernels = "builtin"`` runs LiteRT's own optimised kernels without any delegate and
``kernels = "reference"`` its reference kernels (slow; for checking numbers, not for speed).

The file handling is :mod:`costbench.core.tflite_files`, which the LiteRT recipes share: the session is
its :class:`~costbench.core.tflite_files.TFLiteRunner`, which resizes the inputs to the case's batch
(``resize_tensor_input`` + ``allocate_tensors``; a graph that bakes its batch into a reshape refuses,
and the error says so). Fully quantized models take and give int8/uint8 tensors: the runner quantizes
float inputs with the model's own scale and zero point and dequantizes its outputs, inside the timed
region (the timing convention says so), so every backend hands the harness the same float outputs.

``ai_edge_litert`` is imported inside functions: loading the backend registry stays cheap.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from costbench.backends.base import (Availability, Backend, BackendOptions, Capabilities, Session, TimingConvention,
                                     never_raises)
from costbench.core.artifacts import FORMAT_TFLITE, Artifact
from costbench.core.tflite_files import INSTALL_HINT, KERNELS, TFLiteRunner, import_interpreter, litert_version

QUANTIZING_BOUNDARY = ("host numpy float inputs -> quantized to the model's integer input type with its own scale "
                       "and zero point -> invoke -> integer outputs dequantized to float32 host numpy; quantize, "
                       "copies and dequantize are inside the timed region (no device copies on CPU)")


class LiteRTOptions(BackendOptions):
    """Options for the litert backend: the interpreter's threads (``threads``) and which kernels run the ops.

    ``threads = None`` means every core this process may use, as for the other CPU backends: LiteRT's
    own default (``num_threads=None``) is one thread for its kernels and XNNPACK alike.
    """

    kernels: Literal["xnnpack", "builtin", "reference"] = Field(
        "xnnpack", description="'xnnpack': the XNNPACK delegate takes the ops it supports (LiteRT's default on CPU); "
        "'builtin': LiteRT's optimised kernels, no delegate; 'reference': LiteRT's reference kernels, no delegate.")


class LiteRTSession(Session):
    """A :class:`TFLiteRunner` on the artifact, its inputs resized to the case's batch, with its timing convention."""

    def __init__(self, artifact: Artifact, batch_size: int, opts: LiteRTOptions):
        self._artifact = artifact
        self._batch_size = batch_size
        self._opts = opts
        self._runner = TFLiteRunner(artifact.path, artifact.inputs, batch_size, opts.kernels, opts.threads)
        # Float models time exactly what every backend times; quantized I/O says where its conversions happen.
        self.timing = TimingConvention(boundary=QUANTIZING_BOUNDARY) if self._runner.quantizing else TimingConvention()

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Set every input (quantized when the model's is integer and the artifact's float), invoke, read outputs."""
        return self._runner.run(inputs)

    def fork(self) -> "LiteRTSession":
        """A new interpreter on the same file: an Interpreter runs one invoke at a time."""
        return LiteRTSession(self._artifact, self._batch_size, self._opts)

    def close(self) -> None:
        """Drop the interpreter so its arena can be freed."""
        self._runner.close()

    def info(self) -> dict[str, Any]:
        """Runtime version, kernels and how many XNNPACK partitions, threads, batch, resized or not, quantized I/O."""
        runner = self._runner
        ops = runner.ops()
        return {
            "runtime": "LiteRT interpreter (ai_edge_litert.interpreter)",
            "ai_edge_litert": litert_version(),
            "device": "cpu",
            "kernels": self._opts.kernels,
            "delegate": "XNNPACK" if "DELEGATE" in ops else "none",
            # The op list keeps the nodes a delegate replaced, so only the delegate's own nodes can be counted.
            "delegated_partitions": ops.count("DELEGATE"),
            "threads": runner.threads,
            "batch_size": self._batch_size,
            "resized_inputs": runner.resized,
            "quantized_inputs": {n: {"dtype": dt.name, "scale": q[0], "zero_point": q[1]}
                                 for n, (_, dt, q) in zip(runner.names, runner.inputs) if q is not None},
            "quantized_outputs": sum(q is not None for _, q in runner.outputs),
        }


class LiteRTBackend(Backend):
    """LiteRT on the CPU: XNNPACK delegate by default, or LiteRT's builtin/reference kernels; fp32, fp16 and int8 models."""

    name = "litert"
    capabilities = Capabilities(devices=("cpu",), precisions=("fp32", "fp16", "int8"), formats=(FORMAT_TFLITE,))
    Options = LiteRTOptions

    @never_raises
    def probe(self) -> Availability:
        """Available when ``ai_edge_litert.interpreter`` imports and has the Interpreter and its op resolvers."""
        lib = import_interpreter()
        missing = [name for name in ("Interpreter", "OpResolverType") if not hasattr(lib, name)]
        missing += [f"OpResolverType.{r}" for r in KERNELS.values()
                    if hasattr(lib, "OpResolverType") and not hasattr(lib.OpResolverType, r)]
        if missing:
            return Availability.missing(f"ai-edge-litert {litert_version()} lacks {', '.join(missing)}; "
                                        f"costbench needs the version its extra pins: {INSTALL_HINT}")
        return Availability.ok(ai_edge_litert=litert_version())

    def prepare(self, artifact: Artifact, options: BackendOptions, batch_size: int, device: str = "cpu") -> Session:
        """Load the flatbuffer, resize its inputs to ``batch_size`` and allocate; clear errors naming the file."""
        self.check_request(artifact, batch_size, device)
        opts: LiteRTOptions = self.own_options(options)
        return LiteRTSession(artifact, batch_size, opts)
