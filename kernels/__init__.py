"""Custom int8 GEMM kernels and their exact integer reference.

- :mod:`costbench.kernels.reference`: numpy int64 matmul, the contract every kernel is validated against.
- :mod:`costbench.kernels.gemm`: the C kernels (AMX, AVX512-VNNI, AVX2, portable C; chosen at run
  time), :class:`PackedWeight`, the raw GEMM and the fused epilogue.
- :mod:`costbench.kernels.linear`: :class:`Int8Linear`, a drop-in for ``torch.nn.Linear``.
- :mod:`costbench.kernels.validate` / :mod:`costbench.kernels.bench`: ``costbench kernels validate|bench``.

Only the reference is imported eagerly; the rest loads on first use (torch and the C extension are
not needed to import this package).
"""

from __future__ import annotations

if __name__ != "costbench.kernels":  # imported by its bare name from a checkout: costbench/_checkout.py
    from costbench._checkout import step_aside

    step_aside(__name__, __file__)

from typing import Any

from costbench.kernels.reference import int8_gemm_reference, quantize_symmetric_per_channel

_LAZY = {
    "PackedWeight": "costbench.kernels.gemm",
    "int8_gemm": "costbench.kernels.gemm",
    "int8_gemm_fused": "costbench.kernels.gemm",
    "int8_linear": "costbench.kernels.gemm",
    "quantize_per_token": "costbench.kernels.gemm",
    "supported_isas": "costbench.kernels.gemm",
    "best_isa": "costbench.kernels.gemm",
    "peak_gops": "costbench.kernels.gemm",
    "Int8Linear": "costbench.kernels.linear",
    "swap_linear_layers": "costbench.kernels.linear",
}

__all__ = ["int8_gemm_reference", "quantize_symmetric_per_channel", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
