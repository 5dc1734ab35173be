"""The shared vocabulary: plain data and pure functions that every layer may use and that import nothing of ours.

Artifacts and their input specs, format names, the artifact cache and cache folder (:mod:`.artifacts`),
and the statistics with one declared definition each (:mod:`.stats`). Backends, kernels and the
harness all build on these; nothing here imports ``costbench.backends``, ``costbench.kernels`` or
``costbench.harness``.
"""
