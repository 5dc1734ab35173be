"""Why a case does not run, in two kinds: combinations that can never run, and cases the user can fix.

A variant whose file format its backend does not load, or a recipe that does not apply to the model,
can never run anywhere: it is not a result, so tables and reports count it in one line per model
instead of listing it. A case skipped because a package or a GPU is missing stays listed with its
reason, since the user can act on it. The planner words the first kind with these functions and
every reader tells the kinds apart with :func:`can_never_run`, so the two never drift apart.
"""

from __future__ import annotations

from collections.abc import Iterable

_FORMAT_MISMATCH = " comes as "
_NOT_APPLICABLE = " does not apply to this model"
_NOT_GENERATIVE = " generates tokens; this model is not a causal language model"


def format_mismatch(recipe: str, formats: Iterable[str], backend: str, loads: Iterable[str]) -> str:
    """The reason for a variant whose formats the backend does not load."""
    return f"variant built by {recipe!r}{_FORMAT_MISMATCH}{'/'.join(formats)}; backend {backend} loads {'/'.join(loads)}"


def not_applicable(recipe: str) -> str:
    """The reason for a recipe that emits nothing for this kind of model."""
    return f"recipe {recipe!r}{_NOT_APPLICABLE}"


def not_generative(scenario: str) -> str:
    """The reason for a token-generating scenario on a model that does not generate."""
    return f"scenario {scenario!r}{_NOT_GENERATIVE}"


def can_never_run(reason: str | None) -> bool:
    """Whether a skip reason says the combination can never run (as opposed to a fixable cause)."""
    return bool(reason) and any(marker in reason for marker in (_FORMAT_MISMATCH, _NOT_APPLICABLE, _NOT_GENERATIVE))


def never_run_note(count: int, combinations: Iterable[str]) -> str:
    """The one line that stands for a model's combinations that can never run."""
    shown = list(combinations)
    listed = ", ".join(shown[:6]) + (f", and {len(shown) - 6} more" if len(shown) > 6 else "")
    return (f"{count} combination(s) can never run (the variant's format is not one the backend loads, or the "
            f"recipe or scenario does not apply to the model), not listed: {listed}")
