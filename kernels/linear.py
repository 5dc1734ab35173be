"""``Int8Linear``: a drop-in for ``torch.nn.Linear`` that runs on the costbench int8 GEMM.

Weights are quantized once, symmetric per output channel (``quantize_symmetric_per_channel``),
and packed for this CPU. Activations are quantized on every call, per token (per row), to u8 with
a zero point; quantization, the exact int8 GEMM and the fp32 epilogue
``(q_x·q_w − zp ⊗ colsum) · s_x ⊗ s_w + bias`` run in one C call. Inference only: no gradients.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch import nn

from costbench.kernels import _gemm
from costbench.kernels.gemm import ISA_IDS, PackedWeight, best_isa, default_threads, use_openmp
from costbench.kernels.reference import quantize_symmetric_per_channel

_TORCH_OPENMP: str | None | bool = False  # False: not looked up yet


def torch_openmp_runtime() -> str | None:
    """The GNU OpenMP runtime (libgomp) torch runs its CPU operators on, once set with ``use_openmp``.

    Between two of its operators torch's OpenMP threads spin, waiting for the next; a GEMM on threads
    of its own then shares the cores with them. Running the GEMM on torch's team avoids that. Found in
    ``/proc/self/maps`` (Linux); None where there is no such runtime (then our own threads run).
    """
    global _TORCH_OPENMP
    if _TORCH_OPENMP is False:
        _TORCH_OPENMP = None
        try:
            with open("/proc/self/maps") as f:
                paths = sorted({ln.split()[-1] for ln in f if "libgomp" in ln and "/" in ln})
        except OSError:
            paths = []
        torch_dir = os.path.dirname(torch.__file__)
        for path in sorted(paths, key=lambda p: not p.startswith(torch_dir)):  # torch's own first
            try:
                use_openmp(path)
            except RuntimeError:
                continue
            _TORCH_OPENMP = path
            break
    return _TORCH_OPENMP


class Int8Linear(nn.Module):
    """``y = x·Wᵀ + b`` with int8 per-channel weights and dynamic per-token u8 activations.

    Build it with :meth:`from_linear`. ``threads`` is the most threads one call may use (default:
    all cores this process may run on). Pickles as the int8 weight and scales, and packs again on
    load for the CPU it lands on.
    """

    def __init__(self, in_features: int, out_features: int, w_q: np.ndarray, w_scale: np.ndarray,
                 bias: np.ndarray | None, *, isa: str | None = None, threads: int | None = None):
        super().__init__()
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.threads = threads
        self._setup(np.ascontiguousarray(w_q, dtype=np.int8), np.ascontiguousarray(w_scale, dtype=np.float32),
                    None if bias is None else np.ascontiguousarray(bias, dtype=np.float32), isa)

    def _setup(self, w_q: np.ndarray, w_scale: np.ndarray, bias: np.ndarray | None, isa: str | None) -> None:
        if w_q.shape != (self.out_features, self.in_features):
            raise ValueError(f"weight shape {w_q.shape} != ({self.out_features}, {self.in_features})")
        self.w_q = w_q  # (out, in), kept for pickling and inspection
        self.w_scale = w_scale
        self.bias_f32 = bias
        self.packed = PackedWeight.from_linear_weight(w_q, isa)

    @classmethod
    def from_linear(cls, linear: nn.Linear, *, isa: str | None = None, threads: int | None = None) -> "Int8Linear":
        """Quantize an ``nn.Linear``'s weight per output channel (symmetric int8) and pack it."""
        w = linear.weight.detach().to(torch.float32).cpu().numpy()
        w_q, w_scale = quantize_symmetric_per_channel(w, axis=0)
        bias = None if linear.bias is None else linear.bias.detach().to(torch.float32).cpu().numpy()
        return cls(linear.in_features, linear.out_features, w_q, w_scale, bias, isa=isa, threads=threads)

    @property
    def isa(self) -> str:
        return self.packed.isa

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"expected last dimension {self.in_features}, got {tuple(x.shape)}")
        if x.is_cuda:  # on an NVIDIA GPU: the Triton int8 GEMM (costbench.kernels.gpu.linear)
            from costbench.kernels.gpu.linear import forward_from_int8

            return forward_from_int8(self, x)
        lead = x.shape[:-1]
        x2 = x.detach().reshape(-1, self.in_features)
        if x2.dtype != torch.float32 or x2.device.type != "cpu":
            x2 = x2.to(device="cpu", dtype=torch.float32)
        if not x2.is_contiguous():
            x2 = x2.contiguous()
        m = x2.shape[0]
        y = torch.empty((m, self.out_features), dtype=torch.float32)
        # costbench.kernels.gemm.int8_linear without its argument checks (every operand here is already
        # float32, contiguous and of the right length): the same C call, a few microseconds less per layer
        pw = self.packed
        _gemm.linear(ISA_IDS[pw.isa], x2.numpy(), m, pw.k, pw.k, pw.data, pw.n, pw.colsum, self.w_scale,
                     self.bias_f32, y.numpy(), self.threads or default_threads(), None, None,
                     torch_openmp_runtime() is not None)
        y = y.view(*lead, self.out_features)
        return y if x.dtype == torch.float32 else y.to(x.dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias_f32 is not None}, isa={self.isa}, threads={self.threads or 'all'}")

    # Pickle the int8 weight, not the packed bytes: the layout depends on the CPU that loads it.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("packed", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.packed = PackedWeight.from_linear_weight(self.w_q, None)


def swap_linear_layers(module: nn.Module, *, isa: str | None = None, threads: int | None = None,
                       min_features: int = 1) -> list[str]:
    """Replace every ``nn.Linear`` inside ``module`` (in place) by an :class:`Int8Linear`.

    Layers with fewer than ``min_features`` input or output features stay fp32. Returns the
    qualified names of the layers swapped. ``module`` itself, if a Linear, is not replaced (the
    caller holds the reference); wrap it in a container first.
    """
    isa = isa or best_isa()
    swapped: list[str] = []
    for name, child in list(module.named_modules()):
        for attr, sub in list(child.named_children()):
            if type(sub) is nn.Linear and min(sub.in_features, sub.out_features) >= min_features:
                setattr(child, attr, Int8Linear.from_linear(sub, isa=isa, threads=threads))
                swapped.append(f"{name}.{attr}" if name else attr)
    return swapped
