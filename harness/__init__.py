"""Everything between a suite file and a stored result."""

from costbench.harness.store import list_runs, load_results

__all__ = ["load_results", "list_runs"]
