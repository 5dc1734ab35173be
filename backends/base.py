"""The contract every runtime implements: Backend (probe, capabilities, prepare) and Session (run).

A backend knows nothing about suites, recipes or stores. It receives an :class:`Artifact`
(a file in a format it declared it accepts), options validated against its own pydantic
model, and the batch size the case will run at; it returns a :class:`Session` that turns
host numpy inputs into host numpy outputs.
"""

from __future__ import annotations

import abc
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from costbench.backends.timing import DeviceTimer
from costbench.core.artifacts import Artifact, InputSpec, default_cache_dir


def import_runtime(module: str, pip_name: str | None = None) -> Any:
    """Import a runtime's Python package; on failure raise an ImportError that says what to install.

    A missing package gets ``"<module> is not installed: pip install <pip_name>"``; an installed one that
    fails to load (a missing shared library, an ABI mismatch) gets the error and a reinstall hint.
    """
    import importlib

    pip_name = pip_name or module
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            raise ImportError(f"{module} is not installed: pip install {pip_name}") from exc
        raise ImportError(
            f"{module} failed to import ({type(exc).__name__}: {exc}): pip install --force-reinstall {pip_name}"
        ) from exc
    except Exception as exc:  # a broken native library surfaces as ImportError or OSError
        raise ImportError(
            f"{module} failed to import ({type(exc).__name__}: {exc}): pip install --force-reinstall {pip_name}"
        ) from exc


@dataclass(frozen=True)
class Availability:
    """Whether a backend can run here and, if not, exactly why (and what to install)."""

    available: bool
    reason: str = ""
    versions: dict[str, str] = field(default_factory=dict)

    @classmethod
    def ok(cls, **versions: str) -> "Availability":
        return cls(True, "", dict(versions))

    @classmethod
    def missing(cls, reason: str) -> "Availability":
        return cls(False, reason, {})


@dataclass(frozen=True)
class Capabilities:
    """What a backend can run: devices, precisions and artifact formats, in order of preference."""

    devices: tuple[str, ...]
    precisions: tuple[str, ...]
    formats: tuple[str, ...]


class BackendOptions(BaseModel):
    """Options every backend accepts. Backends subclass this to add their own."""

    model_config = ConfigDict(extra="forbid")

    threads: int | None = Field(
        default=None, ge=1, description="Intra-op threads; None means the runtime's default (all cores)."
    )


@dataclass(frozen=True)
class TimingConvention:
    """What a timed region includes and which clock measured it; written into every result."""

    boundary: str = "host numpy inputs -> host numpy outputs (no device copies on CPU)"
    clock: str = "host time.perf_counter_ns"

    def as_dict(self) -> dict[str, str]:
        return {"boundary": self.boundary, "clock": self.clock}


class Session(abc.ABC):
    """A prepared model, ready to run at a fixed batch size."""

    timing: TimingConvention = TimingConvention()

    @abc.abstractmethod
    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run one query; inputs and outputs are host numpy arrays, outputs in model order."""

    def synchronize(self) -> None:
        """Wait for outstanding device work. CPU runtimes return synchronously, so nothing to do."""

    def device_timer(self) -> "DeviceTimer | None":
        """A device-clock timer for the timed region (CUDA events on a GPU), or None on host-only runtimes."""
        return None

    def fork(self) -> "Session":
        """A session for another thread to run concurrently with this one.

        The default shares this session, which is right for runtimes whose run() is thread-safe
        (ONNX Runtime, PyTorch inference). Runtimes with per-request state (OpenVINO infer
        requests) return a new request on the same compiled model.
        """
        return self

    def preferred_concurrency(self) -> int:
        """How many queries the runtime wants in flight for throughput (OpenVINO: its optimal request count)."""
        return 1

    def peak_device_memory(self) -> int | None:
        """Peak device memory in bytes since prepare, where the device reports it (None on CPU)."""
        return None

    def close(self) -> None:
        """Release runtime resources."""

    def info(self) -> dict[str, Any]:
        """Runtime details worth recording with the result (providers, compiled device, hints)."""
        return {}


class GenerativeSession(Session):
    """A prepared generative model: ``run`` is one forward pass over a batch of prompts (the next-token logits of
    each), and ``generate`` continues the prompts token by token.

    The timed region of generation is one ``generate`` call, from host token ids in to host token ids out. The
    session calls ``on_token()`` as soon as each decoding step's token is on the host (once per step for the
    whole batch), so the scenario stamps every token on its own clock: the first stamp gives the time to first
    token, the gaps between stamps the time per output token.
    """

    @abc.abstractmethod
    def generate(self, prompt_ids: np.ndarray, new_tokens: int, on_token: Callable[[], None]) -> np.ndarray:
        """Greedy-decode exactly ``new_tokens`` tokens after each row of ``prompt_ids`` (int64, batch x prompt
        length), end-of-sequence ignored; returns the generated ids (batch x ``new_tokens``)."""

    @staticmethod
    def prompt_batch(inputs: dict[str, np.ndarray], dtype: Any, backend: str) -> np.ndarray:
        """``inputs['input_ids']`` as a contiguous ``dtype`` array of batch x prompt length, or an error naming
        what is missing or misshapen (``backend`` names the session that asked)."""
        try:
            ids = inputs["input_ids"]
        except KeyError:
            raise KeyError(f"missing input 'input_ids'; the model takes ['input_ids'], got {sorted(inputs)}") from None
        ids = np.ascontiguousarray(ids, dtype=dtype)
        if ids.ndim != 2:
            raise ValueError(f"{backend} backend: token ids must be batch x prompt length, got shape {ids.shape}")
        return ids

    def engine(self) -> "GenerationEngine | None":
        """The session's continuous-batching engine, when it can hold several requests at once; else None (one
        slot: requests are served one ``generate`` call at a time)."""
        return None

    def position_logits(self, ids: np.ndarray) -> np.ndarray | None:
        """The logits at every position (batch x length x vocabulary) of one forward pass over ``ids``, or None
        where the runtime hands back only the last position's (perplexity then runs one pass per prefix)."""
        return None


class GenerationEngine(abc.ABC):
    """Several generation requests in flight at once, advanced together one engine step at a time (continuous
    batching). The serving scenario adds each request when it arrives, calls :meth:`step` in a loop and stamps
    each request's new tokens on the host clock when the step returns them. Greedy, end-of-sequence ignored,
    exactly the asked number of tokens per request, no KV cache shared between requests."""

    max_sequences: int  # how many sequences one step decodes at most; more requests wait in the engine's queue

    @abc.abstractmethod
    def add(self, request_id: int, prompt_ids: np.ndarray, new_tokens: int) -> None:
        """Queue a request: ``prompt_ids`` one row of int64 token ids, ``new_tokens`` to generate."""

    @abc.abstractmethod
    def step(self) -> dict[int, int]:
        """One engine step; returns, for each request that got tokens in it, how many are now on the host."""

    @abc.abstractmethod
    def busy(self) -> bool:
        """Whether any request added is not finished."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Drop every unfinished request, so the engine is empty (a trial that gave up)."""


class PerBatchSession(Session):
    """Several sessions of one model, one per batch size (rows), run by the leading dimension of the inputs."""

    def __init__(self, by_rows: dict[int, Session]):
        self._by_rows = by_rows
        self._first = by_rows[min(by_rows)]
        self.timing = self._first.timing

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run on the session prepared for this many rows; a size not prepared is an error naming those that are."""
        rows = len(next(iter(inputs.values())))
        try:
            session = self._by_rows[rows]
        except KeyError:
            raise ValueError(f"no session prepared for a batch of {rows}; prepared: {sorted(self._by_rows)}") from None
        return session.run(inputs)

    def synchronize(self) -> None:
        for session in self._by_rows.values():
            session.synchronize()

    def fork(self) -> "PerBatchSession":
        return PerBatchSession({rows: s.fork() for rows, s in self._by_rows.items()})

    def preferred_concurrency(self) -> int:
        return self._first.preferred_concurrency()

    def peak_device_memory(self) -> int | None:
        return self._first.peak_device_memory()

    def close(self) -> None:
        for session in self._by_rows.values():
            session.close()

    def info(self) -> dict[str, Any]:
        return {**self._first.info(), "batch_sizes_prepared": sorted(self._by_rows)}


def never_raises(probe: Callable[["Backend"], Availability]) -> Callable[["Backend"], Availability]:
    """Decorator for ``Backend.probe``: a probe never raises. An ImportError (from :func:`import_runtime`,
    which says what to install) becomes its message; anything else "<name> probe failed (...)"."""

    @functools.wraps(probe)
    def guarded(self: "Backend") -> Availability:
        try:
            return probe(self)
        except ImportError as exc:
            return Availability.missing(str(exc))
        except Exception as exc:
            return Availability.missing(f"{self.name} probe failed ({type(exc).__name__}: {exc})")

    return guarded


def ordered_inputs(inputs: dict[str, np.ndarray], plan: Sequence[tuple[str, Any]]) -> list[np.ndarray]:
    """What a session feeds its runtime, in ``plan`` order: (artifact input name, dtype to cast to, or None).

    Every session feeds through this, so a missing input gets the same KeyError everywhere, naming it
    and the inputs the model takes.
    """
    arrays = []
    for name, dtype in plan:
        try:
            array = inputs[name]
        except KeyError:
            raise KeyError(f"missing input {name!r}; the model takes {[n for n, _ in plan]}") from None
        arrays.append(array if dtype is None or array.dtype == dtype else array.astype(dtype))
    return arrays


def input_plan(specs: Sequence[InputSpec]) -> list[tuple[str, str]]:
    """The :func:`ordered_inputs` plan of a runtime that takes the artifact's inputs as declared."""
    return [(s.name, s.dtype) for s in specs]


class Backend(abc.ABC):
    """A runtime that can run artifacts. Registered through the ``costbench.backends`` entry points."""

    name: ClassVar[str]
    capabilities: ClassVar[Capabilities]
    Options: ClassVar[type[BackendOptions]] = BackendOptions

    @abc.abstractmethod
    def probe(self) -> Availability:
        """Check, without side effects, whether this backend can run here; never raises."""

    def probe_device(self, device: str) -> Availability:
        """Whether ``device`` (one of ``capabilities.devices``) is usable here; e.g. 'cuda' needs a visible GPU."""
        return Availability.ok()

    @abc.abstractmethod
    def prepare(self, artifact: Artifact, options: BackendOptions, batch_size: int, device: str = "cpu") -> Session:
        """Load/compile ``artifact`` into a session for ``batch_size`` on ``device``."""

    def prepare_batched(self, artifact: Artifact, options: BackendOptions, batch_size: int, max_batch: int,
                        device: str = "cpu") -> Session:
        """A session that runs any batch of 1..``max_batch`` queries of ``batch_size`` samples (dynamic batching).

        By default one prepared session per batch size, chosen by the inputs' leading dimension: right
        for runtimes that compile a static shape. A runtime whose artifact takes a dynamic batch axis
        overrides this with one session; one that cannot batch raises ValueError saying why.
        """
        if max_batch < 1:
            raise ValueError(f"{self.name} backend: max_batch must be >= 1, got {max_batch}")
        sessions: dict[int, Session] = {}
        try:
            for k in range(1, max_batch + 1):
                sessions[k * batch_size] = self.prepare(artifact, options, k * batch_size, device)
        except BaseException:
            for session in sessions.values():
                session.close()
            raise
        return PerBatchSession(sessions)

    def builds_for(self, options: BackendOptions, device: str) -> bool:
        """Whether :meth:`build_cache` has anything to build for these options on ``device`` (default: no).

        The harness then runs the hook in its build process and keys its build stamp on the backend's
        options, batch size and device as well as on the artifact.
        """
        return False

    def build_cache(self, artifact: Artifact, options: BackendOptions, batch_size: int, device: str,
                    cache_dir: Path) -> dict[str, Any] | None:
        """Build what ``prepare`` would otherwise build in the measured process (a TensorRT engine, an
        execution provider's engine cache, a compiler's on-disk cache), so ``load_time`` and ``peak_rss``
        do not contain it. Runs in the harness's build process, before the measured process starts; the
        measured process's ``prepare`` reuses what it left in ``cache_dir``.

        Returns facts to record (``what``, ``cached`` when nothing had to be built, ...), or None when there
        is nothing to build (the default). The harness times the call and reports it as ``backend_build_time``.
        """
        return None

    @staticmethod
    def cache_root(artifact: Artifact) -> Path:
        """The cache an artifact came from (``<cache>/artifacts/<key>/<file>``), else the default cache.

        Where ``prepare`` (which is not given the cache folder) and :meth:`build_cache` agree to keep
        what a backend builds.
        """
        if artifact.path.parent.parent.name == "artifacts":
            return artifact.path.parent.parent.parent
        return default_cache_dir()

    def parse_options(self, raw: dict[str, Any]) -> BackendOptions:
        """Validate suite options against this backend's Options model (raises pydantic.ValidationError)."""
        return self.Options.model_validate(raw)

    def own_options(self, options: BackendOptions) -> BackendOptions:
        """``options`` as this backend's Options model (a base BackendOptions is validated into it)."""
        return options if isinstance(options, self.Options) else self.Options.model_validate(options.model_dump())

    def check_request(self, artifact: Artifact, batch_size: int, device: str) -> None:
        """What every ``prepare`` checks first: a device family, an artifact format and a batch size it takes.

        Raises ValueError naming the backend, what was asked and what it supports.
        """
        if device.partition(":")[0] not in self.capabilities.devices:
            raise ValueError(f"{self.name} backend: device {device!r} is not supported; "
                             f"supported: {', '.join(self.capabilities.devices)}")
        if artifact.format not in self.capabilities.formats:
            raise ValueError(f"{self.name} backend: artifact format {artifact.format!r} is not supported; "
                             f"supported: {', '.join(self.capabilities.formats)}")
        if batch_size < 1:
            raise ValueError(f"{self.name} backend: batch_size must be >= 1, got {batch_size}")

    def accepts(self, formats: Sequence[str]) -> str | None:
        """The first of our preferred formats that a recipe can emit, or None."""
        for fmt in self.capabilities.formats:
            if fmt in formats:
                return fmt
        return None
