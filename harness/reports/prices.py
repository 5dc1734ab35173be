"""The price table: hourly price per machine type, which machine each environment ran on, cost per inference."""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

MACHINE_KEYS = {"hourly", "vcpus", "memory_gib", "gpu", "description", "energy_included"}
TOP_KEYS = {"currency", "as_of", "energy_price_per_kwh", "assign", "machines"}


class PriceError(ValueError):
    """A price file or machine-type assignment that cannot be used."""


@dataclass(frozen=True)
class Machine:
    """One machine type and what an hour of it costs."""

    name: str
    hourly: float
    vcpus: int | None = None
    memory_gib: float | None = None
    gpu: str = ""
    description: str = ""
    energy_included: bool = True  # cloud prices include power; your own hardware may not


@dataclass
class PriceTable:
    """Machine types with hourly prices, and which environment or run ran on which type."""

    currency: str = "USD"
    as_of: str = ""
    energy_price_per_kwh: float = 0.0
    machines: dict[str, Machine] = field(default_factory=dict)
    assign: dict[str, str] = field(default_factory=dict)  # env_id / run_id (or prefix) -> machine type
    sources: list[str] = field(default_factory=list)

    def machine(self, name: str, where: str = "") -> Machine:
        """The machine type called ``name``; unknown names list the closest known ones."""
        if name in self.machines:
            return self.machines[name]
        close = difflib.get_close_matches(name, list(self.machines), n=4, cutoff=0.4)
        known = ", ".join(sorted(self.machines)[:8])
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known types: {known}, …"
        raise PriceError(f"{where}unknown machine type {name!r}{hint} (add it under [machines.\"{name}\"] in a price file)")

    def machine_for(self, env_id: str, run_id: str) -> Machine | None:
        """The machine a run ran on: an assignment to its run id wins over one to its env id; prefixes allowed."""
        for ref in (run_id, env_id):
            for key, name in self.assign.items():
                if ref and (ref == key or ref.startswith(key)):
                    return self.machine(name, f"[assign] {key!r}: ")
        return None

    def with_assignments(self, items: Iterable[str], runs: list[tuple[str, str]]) -> "PriceTable":
        """Apply ``--machine-type`` options: ``TYPE`` for every unassigned run, or ``ENV_OR_RUN=TYPE``."""
        table = replace(self, assign=dict(self.assign))
        bare = []
        for item in items:
            ref, sep, name = item.rpartition("=")
            self.machine(name.strip(), f"--machine-type {item!r}: ")
            if not sep:
                bare.append(name.strip())
                continue
            ref = ref.strip()
            if not any(r.startswith(ref) or e.startswith(ref) for r, e in runs):
                known = sorted({e for _, e in runs})
                raise PriceError(f"--machine-type {item!r}: {ref!r} is neither an env_id nor a run id of this "
                                 f"report (env_ids: {', '.join(known)})")
            table.assign[ref] = name.strip()
        if len(bare) > 1:
            raise PriceError(f"--machine-type: one bare TYPE at most (got {', '.join(bare)}); use ENV_ID=TYPE for each")
        for name in bare:
            # A bare type covers every run that nothing else places.
            for run_id, env_id in runs:
                if table.machine_for(env_id, run_id) is None:
                    table.assign[run_id] = name
        return table


def default_prices_text() -> str:
    """The price table shipped with costbench (TOML), for users to copy and edit."""
    return resources.files("costbench.harness.reports").joinpath("prices.toml").read_text(encoding="utf-8")


def _parse(data: dict[str, Any], where: str, base: PriceTable) -> PriceTable:
    unknown = set(data) - TOP_KEYS
    if unknown:
        raise PriceError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; expected {', '.join(sorted(TOP_KEYS))}")
    machines = dict(base.machines)
    for name, entry in (data.get("machines") or {}).items():
        if not isinstance(entry, dict):
            raise PriceError(f"{where}: machines.{name!r} must be a table with at least `hourly`")
        bad = set(entry) - MACHINE_KEYS
        if bad:
            raise PriceError(f"{where}: machines.{name!r}: unknown key(s) {', '.join(sorted(bad))}; "
                             f"expected {', '.join(sorted(MACHINE_KEYS))}")
        hourly = entry.get("hourly")
        if not isinstance(hourly, (int, float)) or isinstance(hourly, bool) or hourly < 0:
            raise PriceError(f"{where}: machines.{name!r}.hourly must be a price per hour >= 0 (got {hourly!r})")
        machines[name] = Machine(name=name, hourly=float(hourly), vcpus=entry.get("vcpus"),
                                 memory_gib=entry.get("memory_gib"), gpu=str(entry.get("gpu", "")),
                                 description=str(entry.get("description", "")),
                                 energy_included=bool(entry.get("energy_included", True)))
    energy = data.get("energy_price_per_kwh", base.energy_price_per_kwh)
    if not isinstance(energy, (int, float)) or energy < 0:
        raise PriceError(f"{where}: energy_price_per_kwh must be a number >= 0 (got {energy!r})")
    table = PriceTable(currency=str(data.get("currency", base.currency)), as_of=str(data.get("as_of", base.as_of)),
                       energy_price_per_kwh=float(energy), machines=machines,
                       assign={**base.assign, **{str(k): str(v) for k, v in (data.get("assign") or {}).items()}},
                       sources=[*base.sources, where])
    for key, name in table.assign.items():
        table.machine(name, f"{where}: [assign] {key!r}: ")
    return table


def load_prices(path: Path | None = None) -> PriceTable:
    """The shipped defaults, with the user's price file (if any) laid over them."""
    table = _parse(tomllib.loads(default_prices_text()), "costbench default prices", PriceTable())
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise PriceError(f"{path}: no such price file (start from `costbench prices > {path}`)")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise PriceError(f"{path}: not valid TOML: {exc}") from None
        table = _parse(data, str(path), table)
    return table


def cost_per_million(hourly: float | None, throughput: float | None) -> float | None:
    """Machine cost of a million inferences: hourly price / (3600 s × inferences per second) × 1e6."""
    if hourly is None or not throughput or throughput <= 0:
        return None
    return hourly / (3600.0 * throughput) * 1e6


def energy_cost_per_million(power_w: float | None, throughput: float | None, price_per_kwh: float) -> float | None:
    """Energy cost of a million inferences from measured power: (W / inferences per second) J each, in kWh."""
    if power_w is None or not throughput or throughput <= 0 or price_per_kwh <= 0:
        return None
    return power_w / throughput * 1e6 / 3.6e6 * price_per_kwh
