"""The suite schema: TOML validated by pydantic, with errors that name the file, the key and what was expected.

It imports no registry (recipes, zoo models and backends are checked by name in :mod:`.suite`), so
every part of the harness can use these specs.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from costbench.core.artifacts import InputSpec


class SuiteError(ValueError):
    """A suite file is unusable; the message names the file, the key and what was expected."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputSpecModel(_Strict):
    """One model input as written in a suite: per-sample shape, the batch dimension is added in front."""

    name: str = Field(description="Input name as the model knows it.")
    shape: list[int] = Field(description="Per-sample shape, without the batch dimension, e.g. [3, 224, 224].")
    dtype: Literal["float32", "float16", "int64", "int32", "uint8", "int8", "bool"] = "float32"

    @field_validator("shape")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(d <= 0 for d in v):
            raise ValueError(f"every dimension must be a positive integer, got {v}")
        return v

    def to_spec(self) -> InputSpec:
        return InputSpec(self.name, tuple(self.shape), self.dtype)


class ModelSpec(_Strict):
    """A model to benchmark: a zoo name, or one the user brings (an ONNX file or a torch factory)."""

    id: str = Field(description="Zoo name (e.g. 'digits-cnn'), or your own name for a custom model.")
    source: Literal["zoo", "onnx", "torch", "tflite", "hf"] = Field("zoo", description="Where the model comes from.")
    path: Path | None = Field(None, description="source='onnx'/'tflite': the .onnx/.tflite file; source='hf': a local "
                              "Hugging Face causal-LM folder (relative to the suite file).")
    factory: str | None = Field(None, description="source='torch': 'package.module:function' returning an nn.Module.")
    inputs: list[InputSpecModel] | None = Field(None, description="Input specs; required for source='torch'.")
    data: Path | None = Field(None, description="Optional .npz of real samples keyed by input name (+ 'labels').")
    eval_samples: int | None = Field(None, ge=1, description="Cap on samples used for accuracy.")
    calibration_samples: int | None = Field(None, ge=1, description="Cap on samples used for calibration.")
    perplexity_text: Path | None = Field(
        None, description="A causal LM's plain-text file (relative to the suite file) to score perplexity on, "
        "tokenized by the model's own tokenizer; computed for source='hf' (real weights), skipped with the reason "
        "for the zoo's random-weight models.")
    perplexity_tokens: int = Field(255, ge=1, le=100_000, description="Cap on the text's tokens scored for "
                                   "perplexity (each backend that returns only the last position's logits runs one "
                                   "forward pass per token).")

    @model_validator(mode="after")
    def _source_fields(self) -> "ModelSpec":
        if self.source == "onnx" and self.path is None:
            raise ValueError("source='onnx' needs 'path' to the .onnx file")
        if self.source == "hf":
            if self.path is None:
                raise ValueError("source='hf' needs 'path' to a local Hugging Face model folder (config.json, "
                                 "safetensors weights, tokenizer.json); nothing is downloaded")
            if self.factory or self.inputs or self.data:
                raise ValueError("source='hf' takes 'path' (and 'perplexity_text'), not 'factory', 'inputs' or "
                                 "'data': the prompts come from the model's own tokenizer")
        if self.source == "tflite":
            if self.path is None:
                raise ValueError("source='tflite' needs 'path' to the .tflite file")
            if self.factory:
                raise ValueError("'factory' only applies to source='torch'")
        if self.source == "torch":
            if not self.factory or ":" not in self.factory:
                raise ValueError("source='torch' needs 'factory' as 'package.module:function'")
            if not self.inputs:
                raise ValueError("source='torch' needs 'inputs' (name, shape, dtype of each input)")
        if self.perplexity_text is not None and self.source not in ("hf", "zoo"):
            raise ValueError(f"'perplexity_text' applies to causal LMs only (source='hf' or a zoo causal LM), not "
                             f"source={self.source!r}")
        if self.source == "zoo" and (self.path or self.factory):
            raise ValueError("'path'/'factory' only apply to source='onnx'/'tflite'/'hf'/'torch'")
        return self


class _WithOptions(BaseModel):
    """A spec whose keys beyond its own fields are options for what it names (a recipe, a backend).

    They are validated by that recipe or backend once the registries are loaded (:mod:`.suite`).
    """

    model_config = ConfigDict(extra="allow")

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class VariantSpec(_WithOptions):
    """A variant: a name, the recipe that builds it, and that recipe's options (any other keys)."""

    name: str = Field(description="Label shown in results, e.g. 'int8' or 'int8-per-tensor'.")
    recipe: str | None = Field(None, description="Recipe name; defaults to the variant name.")

    @property
    def recipe_name(self) -> str:
        return self.recipe or self.name


class BackendSpec(_WithOptions):
    """A backend configuration: registered name, optional label, device, and backend options (other keys)."""

    name: str = Field(description="Registered backend name, e.g. 'onnxruntime'.")
    label: str | None = Field(None, description="Distinguishes two configs of one backend, e.g. 'openvino-tput'.")
    device: str = Field("cpu", description="Device to run on.")

    @property
    def display(self) -> str:
        return self.label or self.name


# A capacity search is many trials in one process and a single-stream case a few seconds in each: one suite can
# measure both, each replicated as its cost allows.
PROCESSES_OF_SCENARIO = ("Fresh processes for this scenario's cases (default: the suite's `processes`); precision "
                         "rounds and replacements of contended processes still follow the suite's settings.")


class _ScenarioLabel:
    """A scenario's label in results: its name, else its kind."""

    @property
    def label(self) -> str:
        return self.name or self.kind  # type: ignore[attr-defined]


class ScenarioSettings(_ScenarioLabel, _Strict):
    """The base of every scenario's settings model; each scenario's own lives beside it (``measure/scenarios/``)."""

    kind: str = Field(description="Registered scenario kind, e.g. 'single_stream'.")
    name: str | None = Field(None, description="Label shown in results; defaults to the kind.")
    processes: int | None = Field(None, ge=1, le=1000, description=PROCESSES_OF_SCENARIO)


class ScenarioSpec(_ScenarioLabel, _WithOptions):
    """A scenario as a suite writes it: its kind, an optional name, and that scenario's settings (other keys).

    The settings are validated by the scenario's own model once the registry is loaded
    (:mod:`costbench.harness.execute.load`).
    """

    kind: str = Field(description="Registered scenario kind, e.g. 'single_stream', 'offline', 'server'.")
    name: str | None = Field(None, description="Label shown in results; defaults to the kind.")
    processes: int | None = Field(None, ge=1, le=1000, description=PROCESSES_OF_SCENARIO)


class ExecutorSettings(_Strict):
    """The base of every executor's settings model; each executor's own lives beside it (``harness/executor*.py``)."""

    kind: str = Field("local", description="Registered executor kind, e.g. 'local' or 'ray'.")


class ExecutorSpec(_WithOptions):
    """Where the cases are measured: an executor kind and its settings (other keys).

    The settings are validated by the executor's own model once the registry is loaded (:mod:`.suite`).
    """

    kind: str = Field("local", description="'local' (default: a child process here), 'ray' (the nodes of a Ray "
                      "cluster), or a plugin's executor.")


# What a plain string in a suite's list stands for: variants = ["int8"] is variants = [{ name = "int8" }].
SHORTHAND_KEYS = {"variants": "name", "backends": "name", "models": "id", "scenarios": "kind"}


class Suite(_Strict):
    """A validated suite: the plan is the product models x variants x backends x scenarios x batch sizes."""

    name: str
    description: str = ""
    models: list[ModelSpec] = Field(min_length=1)
    variants: list[VariantSpec] = Field(min_length=1)
    backends: list[BackendSpec] = Field(min_length=1)
    scenarios: list[ScenarioSpec] = Field(default_factory=lambda: [ScenarioSpec(kind="single_stream")], min_length=1)
    batch_sizes: list[int] = Field(default_factory=lambda: [1], min_length=1)
    timeout_s: float = Field(600.0, gt=0, description="Per-case limit: build, load, accuracy and measurement.")
    accuracy: bool = Field(True, description="Measure accuracy against the fp32 reference in every case.")
    exclude: list[dict[str, Any]] = Field(default_factory=list, description="Cases to drop: tables of key = value (glob).")
    memory_limit_mb: float | None = Field(None, gt=0, description="Kill a case whose process tree's RSS exceeds this.")
    processes: int = Field(5, ge=1, le=1000, description=(
        "Fresh processes each case is measured in, interleaved with the other cases; the process is the unit of "
        "replication (intervals and compare's test are across processes). 5 is compare-grade where launches spread "
        "2% or less, 8 on a small shared VM (docs/replication.md); 1 gives the old single-process numbers, whose "
        "intervals ignore the variation between process launches."))
    precision: float | None = Field(None, gt=0, lt=1, description=(
        "Measure each case to this relative half-width of its headline's 95% interval across processes (e.g. "
        "0.05): after its first `processes` (at least 3), processes are added, one round at a time, until it is "
        "reached or `max_processes` is spent."))
    max_processes: int | None = Field(None, ge=1, le=1000, description=(
        "The most processes a case gets when `precision` is set (default: twice `processes`)."))
    remeasure_contended: bool = Field(True, description=(
        "Measure a case again in another process when others took over a tenth of the machine's CPU while one "
        "of its processes measured (that process is left out of the result either way, while two clean ones "
        "remain); at most `max_processes` with a precision, else twice `processes`."))
    pin_cpus: bool = Field(False, description=(
        "Give each measured process cores of its own (as many as its backend's `threads`) and keep the harness "
        "on the others, where the machine has cores to spare (see docs/replication.md)."))
    executor: ExecutorSpec | None = Field(None, description="Where cases are measured (default: here, one at a time).")
    source: Path | None = Field(None, exclude=True, description="The file this suite came from.")

    @field_validator("variants", "backends", "models", "scenarios", mode="before")
    @classmethod
    def _shorthand(cls, v: Any, info: ValidationInfo) -> Any:
        """A string in these lists names the entry: the table it stands for has it under this key."""
        key = SHORTHAND_KEYS[info.field_name]
        return [{key: x} if isinstance(x, str) else x for x in v] if isinstance(v, list) else v

    @field_validator("batch_sizes")
    @classmethod
    def _positive_batches(cls, v: list[int]) -> list[int]:
        if any(b < 1 for b in v):
            raise ValueError(f"batch sizes must be >= 1, got {v}")
        return v

    @field_validator("exclude")
    @classmethod
    def _exclude_keys(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        allowed = ("model", "variant", "backend", "device", "scenario", "batch_size")
        for i, table in enumerate(v):
            bad = sorted(set(table) - set(allowed))
            if bad or not table:
                raise ValueError(f"exclude[{i}]: keys {bad or '(none)'} are not among {', '.join(allowed)}")
        return v

    @model_validator(mode="after")
    def _precision_needs_replication(self) -> "Suite":
        if self.precision is not None and self.processes < 3:
            raise ValueError(f"precision = {self.precision:g} needs processes >= 3 (got {self.processes}): an "
                             "interval across 2 processes has one degree of freedom and decides nothing")
        for i, s in enumerate(self.scenarios):
            n = self.processes_of(s)
            if self.max_processes is not None and self.max_processes < n:
                where = "" if s.processes is None else f"scenarios[{i}] ({s.label}): "
                raise ValueError(f"{where}max_processes = {self.max_processes} is below processes = {n}")
        return self

    def processes_of(self, scenario: "ScenarioSpec") -> int:
        """How many fresh processes measure each case of ``scenario``: its own setting, else the suite's."""
        return scenario.processes or self.processes

    @model_validator(mode="after")
    def _unique_labels(self) -> "Suite":
        for what, labels in (
            ("models", [m.id for m in self.models]),
            ("variants", [v.name for v in self.variants]),
            ("backends", [b.display for b in self.backends]),
            ("scenarios", [s.label for s in self.scenarios]),
        ):
            dupes = sorted({x for x in labels if labels.count(x) > 1})
            if dupes:
                raise ValueError(f"{what}: duplicate names {dupes}; give each a distinct name/label")
        return self


def error_location(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith("function-after["):
            continue  # validator tags pydantic adds; not keys the user wrote
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _format_errors(path: Path, exc: ValidationError, data: dict[str, Any]) -> str:
    lines = [f"{path}: invalid suite ({exc.error_count()} problem{'s' if exc.error_count() > 1 else ''}):"]
    for err in exc.errors():
        got = f" (got {err['input']!r})" if err["type"] not in ("missing",) and not isinstance(err["input"], dict) else ""
        lines.append(f"  {error_location(tuple(err['loc']))}: {err['msg']}{got}")
    return "\n".join(lines)


def parse_schema(data: dict[str, Any], path: Path) -> Suite:
    """Validate a suite's structure (no registry is consulted) and resolve its paths against the file's folder.

    :func:`costbench.harness.execute.load.parse_suite` adds the checks that need the registries.
    """
    try:
        suite = Suite.model_validate(data)
    except ValidationError as exc:
        raise SuiteError(_format_errors(path, exc, data)) from None
    suite.source = path
    base = path.parent
    for m in suite.models:
        for attr in ("path", "data", "perplexity_text"):
            value = getattr(m, attr)
            if value is not None and not value.is_absolute():
                setattr(m, attr, (base / value).resolve())
    return suite


def read_suite_file(path: str | Path) -> tuple[dict[str, Any], Path]:
    """The TOML data of a suite file and its resolved path; every failure is a SuiteError naming the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SuiteError(f"{path}: suite file not found") from None
    except OSError as exc:
        raise SuiteError(f"{path}: cannot read suite file: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SuiteError(f"{path}: not valid TOML: {exc}") from None
    return data, path.resolve()
