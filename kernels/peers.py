"""Every int8 GEMM reachable here, behind one small interface, for ``validate`` and ``bench``.

A peer is prepared once per weight matrix ``B`` (K×N int8), as a deployed model would be (weights
constant, packed or folded at load), and returns a callable on the activations. Integer peers
take int8/uint8 ``A`` and return int32; float peers (the dynamic-quantization paths that users
actually call) take float32 ``A`` and return float32.
"""

from __future__ import annotations

import abc
import os
import tempfile
from dataclasses import dataclass
from typing import Callable

import numpy as np

from costbench.kernels import gemm


@dataclass
class Prepared:
    """A peer ready to run on one weight matrix: ``run(a)`` and what it expects."""

    run: Callable[[np.ndarray], np.ndarray]
    note: str = ""


class Peer(abc.ABC):
    """One int8 GEMM implementation."""

    name: str
    kind: str  # "int32": int8/uint8 in, int32 out; "float": float32 in and out (quantizes A itself)
    a_types: tuple[str, ...] = ("s8", "u8")  # activation types it takes (int32 peers)
    weight_range: tuple[int, int] = (-128, 127)  # weights it represents losslessly
    ours: bool = False
    requires: tuple[str, ...] = ()  # modules it imports; a missing one makes it unavailable

    def available(self) -> str | None:
        """None when it can run here, else why not (by default: whether ``requires`` import)."""
        import importlib

        for module in self.requires:
            try:
                importlib.import_module(module)
            except ImportError:
                return f"{module.split('.')[0]} is not installed"
        return None

    @abc.abstractmethod
    def prepare(self, b: np.ndarray, a_type: str, threads: int) -> Prepared:
        """Fold/pack ``b`` (K×N int8) for activations of ``a_type`` ("s8", "u8" or "f32")."""


class Ours(Peer):
    """costbench's kernel on one code path.

    ``exact_required``: ``validate`` fails if it is ever inexact (every path but an inexact one on the full range).
    ``seven_bit``: activations in [0, 127] only, the range where avx2-saturating's pair sums fit int16.
    """

    kind = "int32"
    ours = True

    def __init__(self, isa: str, seven_bit: bool = False):
        self.isa = isa
        self.seven_bit = seven_bit
        self.exact_required = seven_bit or isa not in gemm.INEXACT_ISAS
        self.name = f"costbench {isa}" + (", A in [0, 127]" if seven_bit else "")
        if seven_bit:
            self.a_types = ("u7",)

    def available(self) -> str | None:
        isas = gemm.supported_isas() + gemm.inexact_isas()
        return None if self.isa in isas else f"this CPU cannot run the {self.isa} path (it runs {', '.join(isas)})"

    def prepare(self, b, a_type, threads):
        pw = gemm.PackedWeight.pack(b, self.isa)
        outs: dict[int, np.ndarray] = {}

        def run(a):
            # One output buffer per row count, reused, as ONNX Runtime serves its outputs from its arena: a fresh
            # array per call comes from malloc, and in this process, after the other peers had run, it cost page
            # faults at times (10-30 a call at M = 2048, counted with getrusage), so the time was partly the
            # allocator's.
            out = outs.get(a.shape[0])
            if out is None:
                out = outs[a.shape[0]] = gemm.aligned_array((a.shape[0], pw.n), np.int32)  # as the arena's
            return gemm.int8_gemm(a, pw, threads=threads, out=out)

        return Prepared(run, "output buffer reused across calls")


def _onnx_model(nodes, inputs, outputs, initializers, opset=17):
    from onnx import helper

    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _ort_session(model_bytes: bytes, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


class OrtMatMulInteger(Peer):
    """ONNX Runtime ``MatMulInteger`` with B a constant initializer (so MLAS prepacks it)."""

    name = "onnxruntime MatMulInteger"
    kind = "int32"

    requires = ("onnxruntime",)

    def prepare(self, b, a_type, threads):
        from onnx import TensorProto, helper, numpy_helper

        k, n = b.shape
        t = TensorProto.UINT8 if a_type == "u8" else TensorProto.INT8
        model = _onnx_model(
            [helper.make_node("MatMulInteger", ["A", "B"], ["Y"])],
            [helper.make_tensor_value_info("A", t, [None, k])],
            [helper.make_tensor_value_info("Y", TensorProto.INT32, [None, n])],
            [numpy_helper.from_array(np.ascontiguousarray(b), "B")],
        )
        sess = _ort_session(model.SerializeToString(), threads)
        return Prepared(lambda a: sess.run(None, {"A": a})[0])


class OrtDynamicMatMul(Peer):
    """ONNX Runtime's dynamic quantization of a float MatMul (``quantize_dynamic``, QInt8 weights, full range)."""

    name = "onnxruntime quantize_dynamic MatMul"
    kind = "float"
    weight_range = (-127, 127)  # symmetric int8 weights: -128 is not representable

    requires = ("onnxruntime.quantization",)

    def prepare(self, b, a_type, threads):
        import onnx
        from onnx import TensorProto, helper, numpy_helper
        from onnxruntime.quantization import QuantType, quantize_dynamic

        k, n = b.shape
        model = _onnx_model(
            [helper.make_node("MatMul", ["A", "W"], ["Y"])],
            [helper.make_tensor_value_info("A", TensorProto.FLOAT, [None, k])],
            [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, n])],
            [numpy_helper.from_array(b.astype(np.float32), "W")],
        )
        with tempfile.TemporaryDirectory() as tmp:
            src, dst = os.path.join(tmp, "f.onnx"), os.path.join(tmp, "q.onnx")
            onnx.save(model, src)
            quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=False, reduce_range=False)
            ops = sorted({node.op_type for node in onnx.load(dst).graph.node})
            with open(dst, "rb") as f:
                sess = _ort_session(f.read(), threads)
        return Prepared(lambda a: sess.run(None, {"A": a})[0], note="graph: " + "+".join(ops))


class TorchIntMM(Peer):
    """``torch._int_mm`` on the CPU (s8 × s8 → int32)."""

    name = "torch _int_mm"
    kind = "int32"
    a_types = ("s8",)

    requires = ("torch",)

    def available(self):
        if why := super().available():
            return why
        import torch

        return None if hasattr(torch, "_int_mm") else "this torch has no _int_mm"

    def prepare(self, b, a_type, threads):
        import torch

        torch.set_num_threads(threads)
        tb = torch.from_numpy(np.ascontiguousarray(b))

        def run(a):
            return torch._int_mm(torch.from_numpy(a), tb).numpy()

        return Prepared(run)


class TorchDynamicLinear(Peer):
    """PyTorch's dynamic int8 Linear (``quantized::linear_dynamic``, what ``quantize_dynamic`` installs)."""

    kind = "float"

    def __init__(self, engine: str, reduce_range: bool):
        self.engine = engine
        self.reduce_range = reduce_range
        self.name = f"torch linear_dynamic {engine}" + (" reduce_range" if reduce_range else "")

    requires = ("torch",)

    def available(self):
        if why := super().available():
            return why
        import torch

        if self.engine not in torch.backends.quantized.supported_engines:
            return f"quantized engine {self.engine} is not in this torch build"
        return None

    def prepare(self, b, a_type, threads):
        import torch

        torch.set_num_threads(threads)
        torch.backends.quantized.engine = self.engine
        w = torch.from_numpy(np.ascontiguousarray(b.T).astype(np.float32))  # (N, K), the Linear layout
        qw = torch.quantize_per_tensor(w, 1.0, 0, torch.qint8)
        packed = torch.ops.quantized.linear_prepack(qw, None)
        engine, rr = self.engine, self.reduce_range

        def run(a):
            torch.backends.quantized.engine = engine
            return torch.ops.quantized.linear_dynamic(torch.from_numpy(a), packed, rr).numpy()

        return Prepared(run)


class OpenVinoInt8MatMul(Peer):
    """OpenVINO CPU: integer activations and weights through Convert+Multiply dequantization into MatMul,
    which its low-precision transformations turn into an int8 MatMul."""

    kind = "int32"  # integer inputs; the output is fp32 holding the integer result

    def __init__(self, dynamic_quantization: bool = True):
        # The CPU plugin treats int8 weights behind Convert+Multiply as compressed weights and, by
        # default, re-quantizes the activations dynamically in groups; 0 turns that off.
        self.dynamic_quantization = dynamic_quantization
        self.name = "openvino int8 MatMul" + ("" if dynamic_quantization else " DYNAMIC_QUANTIZATION_GROUP_SIZE=0")

    requires = ("openvino",)

    def prepare(self, b, a_type, threads):
        import openvino as ov
        import openvino.opset13 as ops

        k, n = b.shape
        et = ov.Type.u8 if a_type == "u8" else ov.Type.i8
        a_param = ops.parameter([-1, k], et, name="A")
        a_f = ops.multiply(ops.convert(a_param, ov.Type.f32), ops.constant(np.float32(1.0)))
        w = ops.constant(np.ascontiguousarray(b.T))  # (N, K) int8
        w_f = ops.multiply(ops.convert(w, ov.Type.f32), ops.constant(np.ones((n, 1), np.float32)))
        y = ops.matmul(a_f, w_f, transpose_a=False, transpose_b=True)
        model = ov.Model([y], [a_param], "int8_matmul")
        core = ov.Core()
        config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1}
        if not self.dynamic_quantization:
            config["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = 0
        compiled = core.compile_model(model, "CPU", config)
        precisions = sorted({
            f'{op.get_rt_info()["layerType"].astype(str)} {op.get_rt_info()["runtimePrecision"].astype(str)}'
            for op in compiled.get_runtime_model().get_ops()
            if op.get_rt_info()["layerType"].astype(str) in ("FullyConnected", "MatMul")
        })
        request = compiled.create_infer_request()

        def run(a):
            return request.infer({0: a})[0].copy()

        return Prepared(run, note="runtime: " + (", ".join(precisions) or "?"))


class TorchFp32(Peer):
    """fp32 GEMM of the same shape (torch.matmul, oneDNN/MKL): the float baseline, not validated."""

    name = "torch fp32 matmul"
    kind = "float"

    requires = ("torch",)

    def prepare(self, b, a_type, threads):
        import torch

        torch.set_num_threads(threads)
        tb = torch.from_numpy(b.astype(np.float32))
        return Prepared(lambda a: torch.matmul(torch.from_numpy(a), tb).numpy())


def our_peers() -> list[Peer]:
    """costbench's kernel on every exact path, fastest first, then each inexact path on the full range and on the
    range where it is exact; a path this CPU cannot run says so when checked."""
    order = ("amx", "avx512vnni", "avx2", "generic")
    exact = [Ours(isa) for isa in sorted(set(gemm.ISA_IDS) - set(gemm.INEXACT_ISAS), key=order.index)]
    return exact + [p for isa in gemm.INEXACT_ISAS for p in (Ours(isa), Ours(isa, seven_bit=True))]


def vendor_peers() -> list[Peer]:
    """Every vendor int8 GEMM costbench knows (availability is checked by the caller)."""
    return [
        OrtMatMulInteger(),
        OrtDynamicMatMul(),
        TorchIntMM(),
        TorchDynamicLinear("x86", False),
        TorchDynamicLinear("x86", True),
        TorchDynamicLinear("fbgemm", False),
        TorchDynamicLinear("onednn", False),
        OpenVinoInt8MatMul(dynamic_quantization=True),
        OpenVinoInt8MatMul(dynamic_quantization=False),
    ]
