"""From a suite file to run files: loading it against the registries (:mod:`.load`), planning its cases
(:mod:`.plan`), the runner (:mod:`.runner`) and the executors that get cases measured (:mod:`.executor`,
:mod:`.ray`, found through :mod:`.registry`).
"""
