"""Keep the memory a process frees in its glibc heap, instead of handing it back to the kernel.

By default glibc serves a large block (128 KiB and up, a threshold it raises as it goes) with its own mmap and
unmaps it when freed, and it trims the top of the heap once enough is free there. A runtime that allocates a
query's activations afresh every query (PyTorch eager, through c10's CPU allocator) then gets new pages from
the kernel every query: each first touch is a page fault. Whether a launch lands in that state depends on
the order its first allocations happened in, so launches of one case disagree: EfficientNet-Lite0 on PyTorch
with one thread faulted about 4,500 pages a query in some launches (30 ms) and none in others (20 ms)
(results/reference/2026-12-05-amd-epyc-vnni-2vcpu/variance-causes/torch-ops/). A server that keeps its
memory (this setting, or jemalloc/tcmalloc through LD_PRELOAD, which the run records) runs at the fast one.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
from typing import Any

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
NEVER = 2**31 - 1  # mallopt takes a C int


def retain_freed_memory() -> dict[str, Any]:
    """Make glibc's malloc keep freed memory for reuse in this process: no block is served by its own mmap
    (M_MMAP_MAX = 0), and the heap is never trimmed (M_TRIM_THRESHOLD at its maximum). Returns what was set;
    raises RuntimeError where the C library is not glibc or refuses."""
    libc_name, version = platform.libc_ver()
    if libc_name != "glibc":
        raise RuntimeError(f"retain_memory needs glibc's malloc (mallopt); this process's C library is "
                           f"{libc_name or 'unknown'}: preload an allocator that keeps memory (jemalloc, tcmalloc) instead")
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    settings = {"M_MMAP_MAX": (M_MMAP_MAX, 0), "M_TRIM_THRESHOLD": (M_TRIM_THRESHOLD, NEVER)}
    for name, (param, value) in settings.items():
        if libc.mallopt(ctypes.c_int(param), ctypes.c_int(value)) != 1:
            raise RuntimeError(f"glibc {version} refused mallopt({name}, {value})")
    return {"allocator": f"glibc {version}", **{name: value for name, (_, value) in settings.items()}}
