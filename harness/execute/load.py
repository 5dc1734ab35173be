"""Loading a suite: its schema (:mod:`.suite_schema`), then what only the registries can tell.

The schema imports no registry, so the zoo, the recipes and the scenarios can all use its specs. Here,
above them, the names a suite uses are checked against the registries that were loaded: that its
models, recipes, backends, scenarios and the executor exist, and that their options and settings are valid. Errors name the file and the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from costbench.backends.registry import load_registry
from costbench.harness.build.compress.registry import get_recipe
from costbench.harness.build.zoo.registry import zoo_names
from costbench.harness.execute.registry import parse_executor_settings
from costbench.harness.measure.scenarios.registry import parse_settings
from costbench.harness.results.rounds import headline
from costbench.harness.suite.schema import (ExecutorSpec, ModelSpec, ScenarioSpec, Suite, SuiteError, error_location,
                                            parse_schema, read_suite_file)

__all__ = ["ModelSpec", "Suite", "SuiteError", "check_names", "load_suite", "parse_suite"]


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite file; every failure is a SuiteError naming the file and the key."""
    data, resolved = read_suite_file(path)
    return parse_suite(data, resolved)


def parse_suite(data: dict[str, Any], path: Path) -> Suite:
    """Validate a suite's data structure and everything it names; raise SuiteError listing every problem."""
    suite = parse_schema(data, path)
    problems = check_names(suite)
    if problems:
        raise SuiteError("\n".join([f"{path}: invalid suite ({len(problems)} problem{'s' if len(problems) > 1 else ''}):",
                                    *(f"  {p}" for p in problems)]))
    return suite


def _hf_problem(name: str, folder: Path) -> str:
    """What a causal-LM folder lacks, or '' (read before any case starts, so the error names the suite key)."""
    from costbench.harness.build.zoo.causal_lm import check_folder

    try:
        check_folder(name, folder)
    except (OSError, ValueError) as exc:
        return str(exc)
    return ""


def _perplexity_problem(m: ModelSpec) -> str:
    """Why a model's perplexity text cannot be used, or '' (a missing or empty file, a model that is no causal LM)."""
    from costbench.harness.build.perplexity import check_text
    from costbench.harness.build.zoo.base import SOURCE_HF
    from costbench.harness.build.zoo.registry import source_kind

    assert m.perplexity_text is not None
    if m.source == "zoo" and m.id in zoo_names() and source_kind(m) != SOURCE_HF:
        return f"model {m.id!r} is not a causal LM; perplexity applies to generative models only"
    try:
        check_text(m.id, m.perplexity_text)
    except (OSError, ValueError) as exc:
        return str(exc)
    return ""


def check_names(suite: Suite) -> list[str]:
    """Check what the schema cannot: that models, recipes and backends exist and their options are valid."""
    problems: list[str] = []
    known_models = zoo_names()
    for i, m in enumerate(suite.models):
        if m.source == "zoo" and m.id not in known_models:
            problems.append(f"models[{i}].id: unknown model {m.id!r}; the zoo has {', '.join(known_models)} "
                            "(or set source = 'onnx' / 'torch' to bring your own)")
        if m.source == "onnx" and m.path is not None:
            problem = _onnx_problem(m.path)
            if problem:
                problems.append(f"models[{i}].path: {problem}")
        if m.source == "hf" and m.path is not None:
            problem = _hf_problem(m.id, m.path)
            if problem:
                problems.append(f"models[{i}].path: {problem}")
        if m.perplexity_text is not None:
            problem = _perplexity_problem(m)
            if problem:
                problems.append(f"models[{i}].perplexity_text: {problem}")
        if m.data is not None and not m.data.exists():
            problems.append(f"models[{i}].data: {m.data} does not exist")
    for i, v in enumerate(suite.variants):
        try:
            recipe = get_recipe(v.recipe_name)
        except KeyError as exc:
            problems.append(f"variants[{i}].{'recipe' if v.recipe else 'name'}: {exc.args[0]}")
            continue
        try:
            recipe.parse_config(v.options)
        except ValidationError as exc:
            problems += [f"variants[{i}].{error_location(tuple(e['loc']))}: {e['msg']}" for e in exc.errors()]
    registry = load_registry()
    for i, b in enumerate(suite.backends):
        entry = registry.get(b.name)
        if entry is None:
            problems.append(f"backends[{i}].name: unknown backend {b.name!r}; registered: {', '.join(registry)}")
            continue
        if entry.backend is None:
            continue  # import failed: the plan records every case on it as skipped, with the import error
        try:
            entry.backend.parse_options(b.options)
        except ValidationError as exc:
            problems += [f"backends[{i}].{error_location(tuple(e['loc']))}: {e['msg']}" for e in exc.errors()]
    problems += _check_scenarios(suite)
    problems += _check_executor(suite)
    return problems


def _check_executor(suite: Suite) -> list[str]:
    """The executor section names a registered executor and its settings are valid; it then holds them resolved."""
    if suite.executor is None:
        return []
    try:
        settings = parse_executor_settings(suite.executor)
    except KeyError as exc:
        return [f"executor.kind: {exc.args[0]}"]
    except ValidationError as exc:
        return [f"executor.{error_location(tuple(e['loc']))}: {e['msg']}" for e in exc.errors()]
    suite.executor = ExecutorSpec.model_validate(settings.model_dump(mode="json"))
    return []


def _check_scenarios(suite: Suite) -> list[str]:
    """Each scenario's kind is registered and its settings valid; each spec then holds its resolved settings."""
    problems: list[str] = []
    for i, s in enumerate(suite.scenarios):
        try:
            settings = parse_settings(s.model_dump(mode="json"))
        except KeyError as exc:
            problems.append(f"scenarios[{i}].kind: {exc.args[0]}")
            continue
        except ValidationError as exc:
            for e in exc.errors():
                got = "" if e["type"] == "missing" or isinstance(e["input"], dict) else f" (got {e['input']!r})"
                problems.append(f"scenarios[{i}].{error_location(tuple(e['loc']))}: {e['msg']}{got}")
            continue
        # Every default written out, so the run header records what was measured, not only what was asked.
        suite.scenarios[i] = ScenarioSpec.model_validate(settings.model_dump(mode="json"))
        if suite.precision is not None and s.processes is not None and s.processes < 3 \
                and headline({"scenario_spec": {"kind": s.kind}}) is not None:
            problems.append(f"scenarios[{i}].processes: {s.processes} is below 3, and the suite asks a precision of "
                            f"{suite.precision:g} of this scenario's headline across processes (an interval across "
                            "fewer than 3 decides nothing); a capacity search has no such headline")
    return problems




def _onnx_problem(path: Path) -> str | None:
    """Why ``path`` is not a usable ONNX model, or None. Checked by path so large models stay on disk."""
    if not path.exists():
        return f"{path} does not exist"
    import onnx

    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:  # onnx raises several unrelated types for a damaged file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"{path} is not a valid ONNX model: {first}"
    return None
