"""Build the C int8 GEMM extension; all package metadata lives in pyproject.toml.

The extension is compiled for the baseline x86-64 target: the AVX2 and AVX512-VNNI code paths
carry their own per-function ``target`` attributes and are chosen at run time by CPU features,
so one build runs on any x86-64 CPU (no -march=native). On other architectures (arm64 Linux,
Apple silicon) the same source builds with only its portable path (see ``CB_X86`` in gemm.c).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "costbench.kernels._gemm",
            sources=["kernels/csrc/gemm.c"],
            extra_compile_args=["-O3", "-std=gnu11", "-pthread", "-Wno-unused-function"],
            extra_link_args=["-pthread"],
        )
    ]
)
