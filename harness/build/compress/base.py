"""Recipes: a typed, versioned config (what) mapped through a registry to a handler (how).

A recipe turns a :class:`ModelBundle` into an :class:`Artifact` in one of the formats it can
emit, and returns the provenance recorded with every result: method, bits, granularity,
calibration set and size, and whatever else decides how the variant behaves.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from costbench.core.artifacts import Artifact, ArtifactCache
from costbench.harness.build.zoo.base import ModelBundle


class RecipeNotApplicable(ValueError):
    """A recipe that cannot apply to this model (no student architecture, no labels, no calibration data...).

    The runner records the case as skipped with this message, not failed: nothing went wrong, the
    combination does not exist. Raise it only for facts about the model, never for a build that broke.
    """


class RecipeConfig(BaseModel):
    """Base for recipe configs: unknown keys are errors, so a typo in a suite never goes unnoticed."""

    model_config = ConfigDict(extra="forbid")


class Recipe(abc.ABC):
    """How to build one kind of variant."""

    name: ClassVar[str]
    version: ClassVar[int]  # bump when the handler's output changes; it is part of the cache key
    precision: ClassVar[str]  # "fp32", "int8", ...
    Config: ClassVar[type[RecipeConfig]] = RecipeConfig
    description: ClassVar[str] = ""

    @abc.abstractmethod
    def formats_for(self, source_kind: str) -> tuple[str, ...]:
        """Formats this recipe can emit for a model of ``source_kind`` (empty when it cannot apply)."""

    @abc.abstractmethod
    def build(self, bundle: ModelBundle, config: RecipeConfig, fmt: str, out_dir: Path, cache: ArtifactCache) -> dict[str, Any]:
        """Write the artifact file(s) for ``fmt`` into ``out_dir``; return provenance.

        ``cache`` lets a recipe reuse other artifacts (int8 starts from the fp32 ONNX export).
        """

    @abc.abstractmethod
    def filename(self, fmt: str) -> str:
        """The main file name written for ``fmt`` (model.onnx, model.xml, model.pt)."""

    def parse_config(self, raw: dict[str, Any]) -> RecipeConfig:
        return self.Config.model_validate(raw)

    def own_config(self, config: RecipeConfig) -> RecipeConfig:
        """``config`` as this recipe's Config model (a base RecipeConfig is validated into it)."""
        return config if isinstance(config, self.Config) else self.Config.model_validate(config.model_dump())

    def cache_material(self, bundle: ModelBundle, config: RecipeConfig) -> dict[str, Any]:
        """Everything that decides the artifact's bytes. Subclasses add library versions they depend on.

        A torch model's artifacts may be whole pickled modules, which name the module that defines their
        class: where that module is (the zoo's, or a user factory's) is part of the key, so moving it never
        serves a pickle that names the old place.
        """
        material = {
            "source": bundle.source_hash,
            "recipe": self.name,
            "version": self.version,
            "config": config.model_dump(mode="json"),
        }
        if bundle.module_factory is not None:
            material["torch_code"] = getattr(bundle.module_factory, "__module__", None)
        return material

    def cached_artifact(self, bundle: ModelBundle, config: RecipeConfig, fmt: str,
                        cache: ArtifactCache) -> Artifact | None:
        """The artifact if it is already in the cache, else None (nothing is built)."""
        return cache.lookup(self.cache_material(bundle, config), self.filename(fmt), fmt, bundle.inputs,
                            bundle.outputs)

    def artifact(self, bundle: ModelBundle, config: RecipeConfig, fmt: str, cache: ArtifactCache) -> Artifact:
        """The cached artifact for this recipe and config, built on a miss."""
        if fmt not in self.formats_for(bundle.source_kind):
            raise ValueError(f"recipe {self.name!r} cannot emit {fmt!r} for a {bundle.source_kind} model")
        art = cache.get_or_build(
            self.cache_material(bundle, config),
            self.filename(fmt),
            fmt,
            bundle.inputs,
            bundle.outputs,
            lambda out_dir: {
                "recipe": self.name,
                "recipe_version": self.version,
                "precision": self.precision,
                "config": config.model_dump(mode="json"),
                **self.build(bundle, config, fmt, out_dir, cache),
            },
        )
        return art
