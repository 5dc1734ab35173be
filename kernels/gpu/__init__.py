"""int8 GEMM on NVIDIA tensor cores, and ``Int8Linear`` on CUDA.

- :mod:`~costbench.kernels.gpu.triton_gemm`: Triton, int32 accumulate, fused dequantizing epilogue
  (``s_row ⊗ s_col``, bias, fp32/fp16/bf16 out), autotuned over Hopper tile configurations; also runs
  under Triton's interpreter (``TRITON_INTERPRET=1``) on CPU tensors.
- :mod:`~costbench.kernels.gpu.cuda_gemm` + ``int8_mma_gemm.cu``: CUDA C with ``mma.sync.m16n8k32``
  (s8·s8→s32) and a cp.async pipeline, built by nvcc for the device (sm_90a on Hopper), launched
  through PyCUDA or CuPy.
- :mod:`~costbench.kernels.gpu.linear`: ``CudaInt8Linear`` and the CUDA path of ``Int8Linear``.
- :mod:`~costbench.kernels.gpu.validate` / :mod:`~costbench.kernels.gpu.bench`: exactness checks and
  timings against ``torch._int_mm`` (cuBLASLt), fp16 GEMM and ``_int_mm`` + a separate dequantize.
- :mod:`~costbench.kernels.gpu.probe`: what is missing here (GPU, Triton, nvcc, PyCUDA, CuPy), and why.

Nothing here is imported eagerly: importing this package needs neither torch, Triton nor a GPU.
"""
