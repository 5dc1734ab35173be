"""Custom int8 GEMM kernels and their exact integer reference.

The kernels themselves (CPU C/AVX2, Triton, CUDA C) build on :mod:`costbench.kernels.reference`,
the contract every implementation is validated against.
"""

from costbench.kernels.reference import int8_gemm_reference, quantize_symmetric_per_channel

__all__ = ["int8_gemm_reference", "quantize_symmetric_per_channel"]
