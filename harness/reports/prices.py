"""The price table: hourly price per machine type, which machine each environment ran on, cost per inference.

A run's machine type is what ``[assign]`` or ``--machine-type`` says; failing that, it is inferred
from the run's fingerprint (:func:`infer_machine`: GPU model, count and memory; CPU model, or vendor
and ISA; logical cores against the type's vCPUs) when exactly the table's entries support it, and
the report says it was inferred, from what, and how to override it.
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

MACHINE_KEYS = {"hourly", "vcpus", "memory_gib", "gpu", "description", "energy_included", "cpu_vendor", "cpu_models",
                "isa", "source"}
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
    cpu_vendor: str = ""  # "Intel", "AMD": for inferring the type from a fingerprint
    cpu_models: tuple[str, ...] = ()  # CPU model strings the provider sells this type with (as /proc/cpuinfo names them)
    isa: tuple[str, ...] = ()  # ISA flags its CPU has ("avx512f") or lacks ("!avx512f"), as the fingerprint names them
    source: str = ""  # where the price comes from


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
                                 energy_included=bool(entry.get("energy_included", True)),
                                 cpu_vendor=str(entry.get("cpu_vendor", "")),
                                 cpu_models=tuple(str(x) for x in entry.get("cpu_models", ())),
                                 isa=tuple(str(x) for x in entry.get("isa", ())), source=str(entry.get("source", "")))
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


# --- Inferring the machine type from a fingerprint ---------------------------------------------------------

GPU_SPEC = re.compile(r"^\s*(\d+)\s*x\s+(?:NVIDIA\s+)?(.+?)\s+(\d+(?:\.\d+)?)\s*GB\s*$", re.IGNORECASE)
MEMORY_TOLERANCE = 0.10  # a GPU's reported memory against the type's nominal GB
MEMORY_NOTE = 0.15  # a host's visible memory this far from the type's is said on the page


@dataclass(frozen=True)
class MachineGuess:
    """A machine type inferred from a fingerprint (or why none could be): the type, what it rests on, what else fits."""

    machine: Machine | None
    evidence: str
    alternatives: tuple[str, ...] = ()

    def describe(self, env_id: str, currency: str = "USD") -> str:
        """One sentence for the report."""
        override = f"override with --machine-type {env_id[:12]}=TYPE, or [assign] in a price file"
        if self.machine is None:
            return f"No price for env {env_id[:12]}: {self.evidence} ({override})."
        also = f" Also fits: {', '.join(self.alternatives)}." if self.alternatives else ""
        return (f"Machine type of env {env_id[:12]} inferred as {self.machine.name} ({self.machine.hourly:g} {currency}/h), "
                f"from {self.evidence}.{also} It is an inference, not a record; {override}.")


def _gpu_memory_gib(text: str) -> float | None:
    m = re.match(r"\s*(\d+(?:\.\d+)?)\s*(MiB|GiB|GB|MB)?", str(text or ""))
    if not m:
        return None
    v = float(m.group(1))
    return v / 1024 if (m.group(2) or "MiB") in ("MiB", "MB") else v


def _gpu_fits(spec: tuple[int, str, float], gpus: list[dict[str, Any]]) -> bool:
    count, model, gb = spec
    if count != len(gpus):
        return False
    for g in gpus:
        name = str(g.get("name", "")).upper()
        if not all(re.search(rf"(?<![A-Z0-9]){re.escape(tok)}(?![A-Z0-9])", name) for tok in model.upper().split()):
            return False
        mem = _gpu_memory_gib(g.get("memory", ""))
        if mem is not None and abs(mem - gb) > MEMORY_TOLERANCE * gb:
            return False
    return True


def _gpu_spec(machine: Machine) -> tuple[int, str, float] | None:
    m = GPU_SPEC.match(machine.gpu or "")
    return None if not m else (int(m.group(1)), m.group(2), float(m.group(3)))


def _plain(cpu: str) -> str:
    """A CPU model string without trademark marks and extra spaces, lower case: 'intel xeon platinum 8488c'."""
    return " ".join(re.sub(r"\((?:R|TM)\)", " ", cpu, flags=re.IGNORECASE).lower().split())


def _sold_with(machine: Machine, cpu: str) -> bool:
    return any(_plain(c) in _plain(cpu) for c in machine.cpu_models)


def _vendor(cpu: str) -> str:
    low = cpu.lower()
    return "Intel" if "intel" in low or "xeon" in low else "AMD" if "amd" in low or "epyc" in low else ""


def _isa_fits(machine: Machine, isa: dict[str, Any]) -> bool:
    if not machine.isa or not isa:
        return False
    return all((not isa.get(f[1:])) if f.startswith("!") else bool(isa.get(f)) for f in machine.isa)


def _isa_text(machine: Machine) -> str:
    return ", ".join(f"no {f[1:]}" if f.startswith("!") else f for f in machine.isa)


def _pick(cands: list[Machine], memory_gib: float | None) -> tuple[Machine, tuple[str, ...]]:
    """The closest in memory (then the cheapest), and the others that fit as well."""
    def key(m: Machine) -> tuple:
        gap = abs(math.log(memory_gib / m.memory_gib)) if memory_gib and m.memory_gib else 0.0
        return (round(gap, 6), m.hourly, m.name)

    ranked = sorted(cands, key=key)
    return ranked[0], tuple(m.name for m in ranked[1:])


def infer_machine(env: dict[str, Any] | None, table: PriceTable) -> MachineGuess:
    """The table's machine type that this fingerprint matches, from its GPUs (model, count, memory) or its CPU
    (a model string the type is sold with, else vendor and ISA flags) and logical cores = the type's vCPUs."""
    key = (env or {}).get("key") or {}
    recorded = (env or {}).get("recorded") or {}
    if not key:
        return MachineGuess(None, "the run has no fingerprint")
    cpu = str(key.get("cpu_model") or "")
    cores = key.get("logical_cores")
    gpus = key.get("gpus") or []
    mem_bytes = recorded.get("memory_bytes")
    memory = mem_bytes / 2**30 if isinstance(mem_bytes, (int, float)) and mem_bytes > 0 else None
    machines = list(table.machines.values())
    if gpus:
        names = [str(g.get("name", "GPU")) for g in gpus]
        what = ", ".join(f"{names.count(n)}× {n} ({gpus[names.index(n)].get('memory', '?')})"
                         for n in dict.fromkeys(names))
        cands = [m for m in machines if (spec := _gpu_spec(m)) and _gpu_fits(spec, gpus)]
        if not cands:
            priced = sorted({m.gpu for m in machines if m.gpu})
            return MachineGuess(None, f"no machine type in the price table has {what} (priced GPUs: "
                                      f"{'; '.join(priced) or 'none'})")
        same_cpu = [m for m in cands if _sold_with(m, cpu)] or \
                   [m for m in cands if m.cpu_vendor and m.cpu_vendor == _vendor(cpu)]
        best, others = _pick(same_cpu or cands, None)
        evidence = f"GPUs {what}" + (f" and CPU '{cpu}'" if same_cpu else "")
        return MachineGuess(best, evidence, others)
    by_model = [m for m in machines if not m.gpu and _sold_with(m, cpu)]
    if by_model:
        family, how = by_model, f"CPU '{cpu}' (the model listed for {len(by_model)} machine type(s) of the table)"
    else:
        vendor = _vendor(cpu)
        family = [m for m in machines if not m.gpu and vendor and m.cpu_vendor == vendor
                  and _isa_fits(m, key.get("isa") or {})]
        how = (f"CPU '{cpu}' (vendor {vendor} with {_isa_text(family[0])})" if family else "")
    if not family:
        return MachineGuess(None, f"no machine type in the price table matches CPU '{cpu or 'unknown'}' "
                                  f"({cores} logical cores) by model, or by vendor and ISA flags")
    sized = [m for m in family if m.vcpus == cores]
    if not sized:
        sizes = ", ".join(f"{m.name} ({m.vcpus} vCPUs)" for m in sorted(family, key=lambda m: (m.vcpus or 0, m.name)))
        return MachineGuess(None, f"{how} fits {sizes}, but this machine has {cores} logical cores and the table "
                                  f"has no size with {cores} vCPUs")
    best, others = _pick(sized, memory)
    evidence = f"{how} and {cores} logical cores = its {best.vcpus} vCPUs"
    if memory and best.memory_gib and abs(memory - best.memory_gib) > MEMORY_NOTE * best.memory_gib:
        evidence += (f"; this machine has {memory:.1f} GiB of memory and the type {best.memory_gib:g} GiB, so the "
                     "price is for its CPUs, not its memory")
    return MachineGuess(best, evidence, others)
