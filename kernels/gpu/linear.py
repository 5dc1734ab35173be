"""``Int8Linear`` on CUDA: per-token symmetric int8 activations, per-channel int8 weights, the Triton GEMM.

``y = x·Wᵀ + b`` as two launches: :func:`triton_gemm.quantize_rows` (``s_x = max|x_row| / 127``,
``q_x = round(x / s_x)``), then :func:`triton_gemm.int8_gemm_fused` with ``s_row = s_x``,
``s_col = s_w`` and the bias, written in the input's dtype (fp32, fp16 or bf16). The weight is
``nn.Linear``'s (out × in) int8 matrix, which is already the K-major operand the kernel wants.

Activations are symmetric s8 here (the CPU kernel uses asymmetric u8 with a zero point): int8
tensor-core instructions take s8·s8, and a per-row scale keeps outliers in one token from
flattening the others.

:class:`CudaInt8Linear` is a module of its own (buffers move with ``.to``); :func:`forward_from_int8`
serves ``costbench.kernels.linear.Int8Linear`` when its input is on a CUDA device, uploading that
module's int8 weight once per device.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
import torch
from torch import nn

from costbench.kernels.reference import quantize_symmetric_per_channel

_OUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _gemm_module():
    from costbench.kernels.gpu import triton_gemm

    return triton_gemm


def int8_linear(x: torch.Tensor, w_q: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor | None,
                kernels: Any = None) -> torch.Tensor:
    """``x·Wᵀ + b`` for ``x`` (..., K) float, ``w_q`` (N, K) int8, ``w_scale`` (N,) and ``bias`` (N,) float32."""
    tg = kernels or _gemm_module()
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    out_dtype = x.dtype if x.dtype in _OUT_DTYPES else torch.float32
    q, s = tg.quantize_rows(x2)
    y = tg.int8_gemm_fused(q, w_q, s, w_scale, bias, out_dtype=out_dtype)
    return y.reshape(*lead, w_q.shape[0])


class CudaInt8Linear(nn.Module):
    """A drop-in for ``nn.Linear`` on a CUDA device (inference only), built with :meth:`from_linear`."""

    def __init__(self, w_q: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        if w_q.dtype != torch.int8 or w_q.ndim != 2:
            raise TypeError(f"w_q must be a 2-D int8 tensor, got {w_q.dtype} {tuple(w_q.shape)}")
        self.out_features, self.in_features = w_q.shape
        self.register_buffer("w_q", w_q.contiguous())
        self.register_buffer("w_scale", w_scale.to(torch.float32).contiguous())
        self.register_buffer("bias", None if bias is None else bias.to(torch.float32).contiguous())

    @classmethod
    def from_linear(cls, linear: nn.Linear, device: Any = None) -> "CudaInt8Linear":
        """Quantize ``linear``'s weight symmetric per output channel (as the CPU Int8Linear does)."""
        w = linear.weight.detach().to(torch.float32).cpu().numpy()
        w_q, w_scale = quantize_symmetric_per_channel(w, axis=0)
        bias = None if linear.bias is None else linear.bias.detach().to(torch.float32).cpu()
        device = device if device is not None else linear.weight.device
        return cls(torch.from_numpy(w_q), torch.from_numpy(w_scale), bias).to(device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"expected last dimension {self.in_features}, got {tuple(x.shape)}")
        return int8_linear(x, self.w_q, self.w_scale, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, kernel=triton int8 (per-token s8 x per-channel s8)")


def swap_linear_layers(module: nn.Module, device: Any = None, min_features: int = 1) -> list[str]:
    """Replace every ``nn.Linear`` inside ``module`` (in place) by a :class:`CudaInt8Linear`; returns their names."""
    swapped: list[str] = []
    for name, child in list(module.named_modules()):
        for attr, sub in list(child.named_children()):
            if type(sub) is nn.Linear and min(sub.in_features, sub.out_features) >= min_features:
                setattr(child, attr, CudaInt8Linear.from_linear(sub, device))
                swapped.append(f"{name}.{attr}" if name else attr)
    return swapped


# Device copies of a CPU Int8Linear's weights, per module and device; weak, so they go with the module.
_UPLOADED: "weakref.WeakKeyDictionary[nn.Module, dict[str, tuple]]" = weakref.WeakKeyDictionary()


def forward_from_int8(module: nn.Module, x: torch.Tensor, kernels: Any = None) -> torch.Tensor:
    """``costbench.kernels.linear.Int8Linear.forward`` for an input on a CUDA device.

    Uses the module's int8 weight (``w_q``, out × in), per-channel scales (``w_scale``) and fp32
    bias (``bias_f32``), numpy arrays on the host, copied to ``x``'s device on first use.
    """
    per_device = _UPLOADED.setdefault(module, {})
    key = str(x.device)
    if key not in per_device:
        w_q = torch.from_numpy(np.ascontiguousarray(module.w_q)).to(x.device)
        w_scale = torch.from_numpy(np.ascontiguousarray(module.w_scale, dtype=np.float32)).to(x.device)
        bias = None if module.bias_f32 is None else torch.from_numpy(module.bias_f32).to(x.device)
        per_device[key] = (w_q, w_scale, bias)
    w_q, w_scale, bias = per_device[key]
    return int8_linear(x.detach(), w_q, w_scale, bias, kernels)
