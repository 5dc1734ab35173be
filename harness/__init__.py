"""Everything between a suite file and a stored result.

``load_results`` and ``list_runs`` are imported lazily: they pull in pandas and DuckDB, which
planning and the per-case worker do not need.
"""

if __name__ != "costbench.harness":  # imported by its bare name from a checkout: costbench/_checkout.py
    from costbench._checkout import step_aside

    step_aside(__name__, __file__)

__all__ = ["load_results", "list_runs"]


def __getattr__(name: str):
    if name in __all__:
        from costbench.harness.results import store

        return getattr(store, name)
    raise AttributeError(f"module 'costbench.harness' has no attribute {name!r}")
