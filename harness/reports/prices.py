"""The price table: hourly price per machine type, which machine each environment ran on, cost per inference.

The table is ``prices.toml`` (shipped) with the user's ``--prices`` file laid over it. A machine type is
a ``[machines."cloud/type"]`` row, or one size of a ``[families."cloud/family"]`` entry, which the loader
expands into one row per size (the clouds price a family linearly in vCPUs).

A run's machine type is what ``[assign]`` or ``--machine-type`` says; failing that, it is inferred
from the run's fingerprint (:func:`infer_machine`: GPU model, count and memory; CPU model, or vendor
and ISA generation, or architecture; logical cores against the type's vCPUs), and the report says it
was inferred, how sure the inference is, what else fits, and how to override it.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

MACHINE_KEYS = {"hourly", "vcpus", "memory_gib", "gpu", "description", "energy_included", "cpu_vendor", "cpu_models",
                "isa", "arch", "source", "region", "as_of", "approximate"}
# A family has the machine keys that all its sizes share, and how to name, size and price each.
FAMILY_KEYS = (MACHINE_KEYS - {"vcpus", "memory_gib"}) | {"name", "vcpus", "memory_gib_per_vcpu", "hourly_vcpus"}
TOP_KEYS = {"currency", "as_of", "energy_price_per_kwh", "assign", "machines", "families"}
ARCHES = ("x86_64", "aarch64")


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
    cpu_vendor: str = ""  # "Intel", "AMD", "AWS" (Graviton): for inferring the type from a fingerprint
    cpu_models: tuple[str, ...] = ()  # CPU model strings the provider sells this type with (as /proc/cpuinfo names them)
    isa: tuple[str, ...] = ()  # ISA flags its CPU has ("avx512f") or lacks ("!avx512f"), as the fingerprint names them
    source: str = ""  # where the price comes from
    region: str = ""  # the region the price is for
    as_of: str = ""  # when the price was read
    approximate: bool = False  # remembered or estimated, not copied from the source
    arch: str = ""  # "x86_64" or "aarch64"; "" means x86_64 for an Intel or AMD CPU
    family: str = ""  # the [families] entry it was expanded from ("" for a [machines] row)

    @property
    def cloud(self) -> str:
        return self.name.split("/", 1)[0] if "/" in self.name else ""

    @property
    def architecture(self) -> str:
        return self.arch or ("x86_64" if self.cpu_vendor in ("Intel", "AMD") else "")


@dataclass
class PriceTable:
    """Machine types with hourly prices, and which environment or run ran on which type."""

    currency: str = "USD"
    as_of: str = ""
    energy_price_per_kwh: float = 0.0
    machines: dict[str, Machine] = field(default_factory=dict)
    assign: dict[str, str] = field(default_factory=dict)  # env_id / run_id (or prefix) -> machine type
    sources: list[str] = field(default_factory=list)
    families: dict[str, dict[str, Any]] = field(default_factory=dict)  # raw [families] entries, merged per file

    def machine(self, name: str, where: str = "") -> Machine:
        """The machine type called ``name``; unknown names list the closest known ones."""
        if name in self.machines:
            return self.machines[name]
        close = difflib.get_close_matches(name, list(self.machines), n=4, cutoff=0.4)
        known = ", ".join(sorted(self.machines)[:8])
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known types: {known}, … (`costbench prices`)"
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


# --- Reading price files ---------------------------------------------------------------------------------

def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise PriceError(f"{what} must be a list of strings (got {value!r})")
    return tuple(value)


def _common(entry: dict[str, Any], what: str) -> dict[str, Any]:
    """The keys a machine row and a family share, checked and typed for ``Machine``."""
    out: dict[str, Any] = {}
    hourly = entry.get("hourly")
    if not _number(hourly) or hourly < 0:
        raise PriceError(f"{what}.hourly must be a price per hour >= 0 (got {hourly!r})")
    out["hourly"] = float(hourly)
    for key in ("gpu", "description", "cpu_vendor", "source", "region", "as_of"):
        if key in entry:
            if not isinstance(entry[key], str):
                raise PriceError(f"{what}.{key} must be a string (got {entry[key]!r})")
            out[key] = entry[key]
    for key in ("energy_included", "approximate"):
        if key in entry:
            if not isinstance(entry[key], bool):
                raise PriceError(f"{what}.{key} must be true or false (got {entry[key]!r})")
            out[key] = entry[key]
    for key in ("cpu_models", "isa"):
        if key in entry:
            out[key] = _strings(entry[key], f"{what}.{key}")
    if "arch" in entry:
        if entry["arch"] not in ARCHES:
            raise PriceError(f"{what}.arch must be one of {', '.join(ARCHES)} (got {entry['arch']!r})")
        out["arch"] = entry["arch"]
    return out


def _machine_row(name: str, entry: Any, where: str) -> Machine:
    what = f"{where}: machines.{name!r}"
    if not isinstance(entry, dict):
        raise PriceError(f"{what} must be a table with at least `hourly`")
    bad = set(entry) - MACHINE_KEYS
    if bad:
        raise PriceError(f"{what}: unknown key(s) {', '.join(sorted(bad))}; expected {', '.join(sorted(MACHINE_KEYS))}")
    vcpus, memory = entry.get("vcpus"), entry.get("memory_gib")
    if vcpus is not None and (not isinstance(vcpus, int) or isinstance(vcpus, bool) or vcpus < 1):
        raise PriceError(f"{what}.vcpus must be a whole number >= 1 (got {vcpus!r})")
    if memory is not None and (not _number(memory) or memory <= 0):
        raise PriceError(f"{what}.memory_gib must be a number > 0 (got {memory!r})")
    return Machine(name=name, vcpus=vcpus, memory_gib=memory, **_common(entry, what))


def aws_size(vcpus: int) -> str:
    """AWS's size word for a vCPU count: 1 medium, 2 large, 4 xlarge, 4N Nxlarge."""
    if vcpus == 1:
        return "medium"
    if vcpus == 2:
        return "large"
    if vcpus == 4:
        return "xlarge"
    if vcpus % 4 == 0:
        return f"{vcpus // 4}xlarge"
    raise ValueError(f"AWS names no size with {vcpus} vCPUs (1, 2, 4 or a multiple of 4)")


def expand_family(key: str, entry: dict[str, Any], where: str) -> list[Machine]:
    """One machine row per size of a ``[families]`` entry, priced pro rata from the size it quotes."""
    what = f"{where}: families.{key!r}"
    bad = set(entry) - FAMILY_KEYS
    if bad:
        raise PriceError(f"{what}: unknown key(s) {', '.join(sorted(bad))}; expected {', '.join(sorted(FAMILY_KEYS))}")
    pattern = entry.get("name")
    if not isinstance(pattern, str) or not ("{vcpus}" in pattern or "{aws_size}" in pattern):
        raise PriceError(f"{what}.name must name each size with {{vcpus}} or {{aws_size}}, e.g. "
                         f"\"aws/m7a.{{aws_size}}\" or \"gcp/n2-standard-{{vcpus}}\" (got {pattern!r})")
    sizes = entry.get("vcpus")
    if (not isinstance(sizes, list) or not sizes
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in sizes)):
        raise PriceError(f"{what}.vcpus must be a list of the sizes sold, in vCPUs, e.g. [2, 4, 8] (got {sizes!r})")
    per = entry.get("hourly_vcpus", min(sizes))
    if not isinstance(per, int) or isinstance(per, bool) or per < 1:
        raise PriceError(f"{what}.hourly_vcpus must be the vCPUs of the size `hourly` prices (got {per!r})")
    ratio = entry.get("memory_gib_per_vcpu")
    if ratio is not None and (not _number(ratio) or ratio <= 0):
        raise PriceError(f"{what}.memory_gib_per_vcpu must be a number > 0 (got {ratio!r})")
    common = _common(entry, what)
    hourly = common.pop("hourly")
    rows = []
    for v in sizes:
        try:
            size = aws_size(v) if "{aws_size}" in pattern else ""
            name = pattern.replace("{vcpus}", str(v)).replace("{aws_size}", size)
        except ValueError as exc:
            raise PriceError(f"{what}.vcpus: {exc}") from None
        rows.append(Machine(name=name, hourly=round(hourly * v / per, 6), vcpus=v,
                            memory_gib=ratio * v if ratio else None, family=key, **common))
    return rows


def _parse(data: dict[str, Any], where: str, base: PriceTable) -> PriceTable:
    unknown = set(data) - TOP_KEYS
    if unknown:
        raise PriceError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; expected {', '.join(sorted(TOP_KEYS))}")
    machines = dict(base.machines)
    families = dict(base.families)
    for key, entry in (data.get("families") or {}).items():
        if not isinstance(entry, dict):
            raise PriceError(f"{where}: families.{key!r} must be a table (name, vcpus, hourly, ...)")
        # A family the defaults have is merged key by key, so `hourly` alone reprices every size.
        merged = {**families.get(key, {}), **entry}
        rows = expand_family(key, merged, where)
        families[key] = merged
        machines = {n: m for n, m in machines.items() if m.family != key}
        for m in rows:
            if m.name not in machines or machines[m.name].family:  # a [machines] row of that name wins
                machines[m.name] = m
    for name, entry in (data.get("machines") or {}).items():
        machines[name] = _machine_row(name, entry, where)
    energy = data.get("energy_price_per_kwh", base.energy_price_per_kwh)
    if not _number(energy) or energy < 0:
        raise PriceError(f"{where}: energy_price_per_kwh must be a number >= 0 (got {energy!r})")
    assign = data.get("assign") or {}
    if not isinstance(assign, dict):
        raise PriceError(f"{where}: [assign] must be a table of \"ENV_ID or RUN_ID\" = \"MACHINE TYPE\"")
    table = PriceTable(currency=str(data.get("currency", base.currency)), as_of=str(data.get("as_of", base.as_of)),
                       energy_price_per_kwh=float(energy), machines=machines,
                       assign={**base.assign, **{str(k): str(v) for k, v in assign.items()}},
                       sources=[*base.sources, where], families=families)
    for key, name in table.assign.items():
        table.machine(name, f"{where}: [assign] {key!r}: ")
    return table


def load_prices(path: Path | None = None) -> PriceTable:
    """The shipped defaults, with the user's price file (if any) laid over them."""
    table = _parse(tomllib.loads(default_prices_text()), "costbench default prices", PriceTable())
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise PriceError(f"{path}: no such price file (start from `costbench prices --toml > {path}`)")
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


# --- Choosing rows for `costbench prices` ------------------------------------------------------------------

def select_machines(table: PriceTable, cloud: str | None = None, vcpus: int | None = None, cpu: str | None = None,
                    gpu: str | None = None) -> list[Machine]:
    """The table's machine types that pass every filter given, by cloud, then kind (CPU, GPU), then price.

    ``cpu``: "arm" (aarch64), else a word in the CPU's vendor or description ("amd", "intel", "graviton").
    ``gpu``: "none" (CPU types only), "any", else words all in the GPU ("H100", "A100 80").
    """
    out = []
    for m in table.machines.values():
        if cloud and m.cloud.lower() != cloud.lower():
            continue
        if vcpus is not None and m.vcpus != vcpus:
            continue
        if cpu:
            word = cpu.lower()
            if word == "arm":
                if m.architecture != "aarch64":
                    continue
            elif word not in f"{m.cpu_vendor} {m.description} {' '.join(m.cpu_models)}".lower():
                continue
        if gpu:
            word = gpu.lower()
            if (word == "none" and m.gpu) or (word == "any" and not m.gpu):
                continue
            if word not in ("none", "any") and not (m.gpu and _names_gpu(m.gpu, gpu)):
                continue
        out.append(m)
    return sorted(out, key=lambda m: (m.cloud, bool(m.gpu), m.family, m.hourly, m.name))


# --- Inferring the machine type from a fingerprint ---------------------------------------------------------

GPU_SPEC = re.compile(r"^\s*(\d+)\s*x\s+(?:NVIDIA\s+)?(.+?)\s+(\d+(?:\.\d+)?)\s*GB\s*$", re.IGNORECASE)
MEMORY_TOLERANCE = 0.10  # a GPU's reported memory against the type's nominal GB
MEMORY_NOTE = 0.15  # a host's visible memory within this of a type's is evidence for it; further, the page says so

# How sure an inference is, strongest first.
BY_GPU = "GPU model, count and memory"
BY_GPU_SHARE = "GPU model and memory; a share of a type with more of them"
BY_MODEL = "exact CPU model"
BY_ISA = "vendor and ISA generation only"
BY_ARCH = "architecture only"

# What the int8 ISA flags of the fingerprint say about a CPU's generation (for the page; the table's `isa`
# lists are what matching uses).
GENERATIONS = (
    ("AMD", ("avx512_vnni", "avx_vnni"), "Zen 5"),
    ("AMD", ("avx512_vnni", "!avx_vnni"), "Zen 4"),
    ("AMD", ("avx2", "!avx512f"), "Zen 1-3"),
    ("Intel", ("amx_tile",), "Sapphire/Emerald/Granite Rapids"),
    ("Intel", ("avx512_vnni", "!amx_tile"), "Cascade Lake or Ice Lake"),
    ("Intel", ("avx512f", "!avx512_vnni"), "Skylake"),
    ("Intel", ("avx2", "!avx512f"), "no AVX-512: Haswell to Broadwell, or a client CPU"),
)


@dataclass(frozen=True)
class MachineGuess:
    """A machine type inferred from a fingerprint, or why none could be.

    ``options`` are every type that fits as well as the pick (the pick first); ``confidence`` is one of
    BY_GPU, BY_GPU_SHARE, BY_MODEL, BY_ISA, BY_ARCH; ``size_note`` says how the vCPU or GPU count was matched
    when not exactly.
    """

    machine: Machine | None
    evidence: str
    options: tuple[Machine, ...] = ()
    confidence: str = ""
    size_note: str = ""

    @property
    def alternatives(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.options if self.machine is None or m.name != self.machine.name)

    def price_range(self) -> tuple[float, float] | None:
        prices = [m.hourly for m in self.options]
        return (min(prices), max(prices)) if prices else None

    def describe(self, env_id: str, currency: str = "USD") -> str:
        """The report's sentence: the cost basis and how sure it is, or exactly why there is none and how to
        supply one."""
        env = env_id[:12]
        if self.machine is None:
            return (f"No price for env {env}: {self.evidence}; to price it, pass --machine-type {env}=TYPE with a type "
                    f"from `costbench prices`, or add [assign] \"{env}\" = \"TYPE\" to a --prices file (with "
                    f"[machines.\"TYPE\"] hourly = PRICE there for a machine the table lacks).")
        m = self.machine
        where = " ".join(x for x in (f"on-demand in {m.region}" if m.region else "list price",
                                     f"as of {m.as_of}" if m.as_of else "") if x)
        text = (f"Machine type of env {env} inferred as {m.name} ({m.hourly:g} {currency}/h) with confidence "
                f"'{self.confidence}', from {self.evidence}. Price: {where}"
                f"{', approximate (check it)' if m.approximate else ''}.")
        if self.size_note:
            text += f" {self.size_note}."
        others = [o for o in self.options if o.name != m.name]
        if others:
            lo, hi = self.price_range()
            clouds = ", ".join(sorted({o.cloud for o in self.options if o.cloud}))
            names = ", ".join(o.name for o in others[:5]) + (", …" if len(others) > 5 else "")
            text += (f" {len(others)} other type(s) fit as well ({names}); all {len(self.options)} cost "
                     f"{lo:g}–{hi:g} {currency}/h across {clouds}.")
        return (text + f" It is an inference, not a record; override with --machine-type {env}=TYPE, "
                "or [assign] in a price file.")


def _gpu_memory_gib(text: str) -> float | None:
    m = re.match(r"\s*(\d+(?:\.\d+)?)\s*(MiB|GiB|GB|MB)?", str(text or ""))
    if not m:
        return None
    v = float(m.group(1))
    return v / 1024 if (m.group(2) or "MiB") in ("MiB", "MB") else v


def _names_gpu(name: str, model: str) -> bool:
    """Every word of ``model`` ("H100 NVL") is a word of the GPU's name, so an L4 is not an L40S."""
    name = name.upper()
    return all(re.search(rf"(?<![A-Z0-9]){re.escape(tok)}(?![A-Z0-9])", name) for tok in model.upper().split())


def _gpu_model_fits(spec: tuple[int, str, float], gpus: list[dict[str, Any]]) -> bool:
    """Every GPU of the fingerprint is the type's model with its memory (the count is checked apart)."""
    _, model, gb = spec
    for g in gpus:
        if not _names_gpu(str(g.get("name", "")), model):
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
    return bool(cpu) and any(_plain(c) in _plain(cpu) for c in machine.cpu_models)


def _vendor(cpu: str) -> str:
    low = cpu.lower()
    return "Intel" if "intel" in low or "xeon" in low else "AMD" if "amd" in low or "epyc" in low else ""


def _arch(key: dict[str, Any]) -> str:
    machine = str(key.get("machine") or "").lower()
    return "aarch64" if machine in ("aarch64", "arm64") else "x86_64" if machine in ("x86_64", "amd64") else ""


def _flag_checks(flags: Iterable[str], isa: dict[str, Any]) -> list[bool]:
    """For each flag the fingerprint records, whether the CPU agrees ("!f": lacks f); unrecorded flags are unknown."""
    out = []
    for f in flags:
        name, want = (f[1:], False) if f.startswith("!") else (f, True)
        if name in isa:
            out.append(bool(isa[name]) == want)
    return out


def _isa_fits(machine: Machine, isa: dict[str, Any]) -> bool:
    """The fingerprint records at least one of the type's ISA flags, and agrees with every one it records."""
    checks = _flag_checks(machine.isa, isa)
    return bool(checks) and all(checks)


def _isa_text(flags: Iterable[str]) -> str:
    return ", ".join(f"no {f[1:]}" if f.startswith("!") else f for f in flags)


def cpu_generation(key: dict[str, Any]) -> str:
    """'Zen 4', 'Sapphire/Emerald/Granite Rapids', ... from the fingerprint's vendor and ISA flags; '' if unknown."""
    vendor, isa = _vendor(str(key.get("cpu_model") or "")), key.get("isa") or {}
    for v, flags, label in GENERATIONS:
        checks = _flag_checks(flags, isa)
        if v == vendor and len(checks) == len(flags) and all(checks):
            return label
    return ""


def _mem_gap(memory: float | None, m: Machine) -> float | None:
    return abs(memory - m.memory_gib) / m.memory_gib if memory and m.memory_gib else None


def _rank(cands: list[Machine], memory: float | None, first: Any = None) -> list[Machine]:
    """Best first: ``first(m)`` (a sort key; lower is better) if given; then a type whose memory is the machine's
    (within MEMORY_NOTE), closest first; then a firm price over an approximate one; then the cheapest."""
    def key(m: Machine) -> tuple:
        gap = _mem_gap(memory, m)
        close = gap is not None and gap <= MEMORY_NOTE
        return (first(m) if first else 0, not close, gap if close else 0.0, m.approximate, m.hourly, m.name)

    return sorted(cands, key=key)


def _memory_note(memory: float | None, m: Machine) -> str:
    gap = _mem_gap(memory, m)
    if gap is None or gap <= MEMORY_NOTE:
        return ""
    return (f"; this machine has {memory:.1f} GiB of memory and the type {m.memory_gib:g} GiB, so the price is for "
            "its CPUs, not its memory")


def _infer_gpu(cpu: str, cores: Any, gpus: list[dict[str, Any]], memory: float | None,
               machines: list[Machine]) -> MachineGuess:
    names = [str(g.get("name", "GPU")) for g in gpus]
    what = ", ".join(f"{names.count(n)}× {n} ({gpus[names.index(n)].get('memory', '?')})"
                     for n in dict.fromkeys(names))
    same = [(m, spec) for m in machines if (spec := _gpu_spec(m)) and _gpu_model_fits(spec, gpus)]
    vendor = _vendor(cpu)

    def host(m: Machine) -> tuple:
        # The host CPU breaks ties between types with the same GPUs: its model, its vendor, its core count.
        return (not _sold_with(m, cpu), not (vendor and m.cpu_vendor == vendor), m.vcpus != cores)

    exact = [m for m, spec in same if spec[0] == len(gpus)]
    if exact:
        ranked = _rank(exact, memory, host)
        best = ranked[0]
        evidence = f"GPUs {what}" + (f" and CPU '{cpu}'" if _sold_with(best, cpu) else "")
        return MachineGuess(best, evidence, tuple(ranked), BY_GPU)
    larger = [(m, spec) for m, spec in same if spec[0] > len(gpus)]
    if not larger:
        priced = sorted({spec[1] for m in machines if (spec := _gpu_spec(m))})
        counts = sorted({spec[0] for m, spec in same})
        why = (f"the price table has {' or '.join(map(str, counts))} of them to a type, fewer than this machine's "
               f"{len(gpus)}" if same else f"priced GPUs: {', '.join(priced) or 'none'}")
        return MachineGuess(None, f"no machine type in the price table has {what} ({why})")
    # No type has this many of these GPUs: price this machine's share of the smallest type that has more. That
    # is what it costs when the type's GPUs each serve a replica, as inference is deployed; the page says so.
    fewest = min(spec[0] for _, spec in larger)
    ranked = _rank([m for m, spec in larger if spec[0] == fewest], None, host)
    n = len(gpus)
    shares = tuple(replace(m, name=f"{m.name} ×{n}/{fewest}", hourly=round(m.hourly * n / fewest, 6),
                           vcpus=None, memory_gib=None, gpu=f"{n}x {_gpu_spec(m)[1]} {_gpu_spec(m)[2]:g} GB",
                           description=f"{n} of the {fewest} GPUs of {m.name}") for m in ranked)
    return MachineGuess(shares[0], f"GPUs {what}", shares, BY_GPU_SHARE,
                        f"No type in the table has {n} of these GPUs; priced as {n}/{fewest} of {ranked[0].name} "
                        f"({ranked[0].hourly:g}/h), the cost when each of its {fewest} GPUs serves a replica")


def infer_machine(env: dict[str, Any] | None, table: PriceTable) -> MachineGuess:
    """The table's machine type that this fingerprint matches, and how sure that is.

    A GPU machine: by GPU model, count and memory (ties broken by the host CPU). A CPU machine, strongest
    evidence first: a CPU model string a type is sold with; else the CPU vendor and the ISA flags of its
    generation; else (Arm, whose fingerprint names neither) the architecture. Logical cores must equal the
    type's vCPUs; where no type of that evidence has that many, the smallest larger size is taken, and said.
    Among equals: the type whose memory is the machine's, then a firm price, then the cheapest.
    """
    key = (env or {}).get("key") or {}
    recorded = (env or {}).get("recorded") or {}
    if not key:
        return MachineGuess(None, "the run has no fingerprint")
    cpu = str(key.get("cpu_model") or "")
    cores = key.get("logical_cores")
    gpus = key.get("gpus") or []
    mem_bytes = recorded.get("memory_bytes")
    memory = mem_bytes / 2**30 if _number(mem_bytes) and mem_bytes > 0 else None
    machines = list(table.machines.values())
    if gpus:
        return _infer_gpu(cpu, cores, gpus, memory, machines)
    if not isinstance(cores, int) or cores < 1:
        return MachineGuess(None, f"the fingerprint of CPU '{cpu or 'unknown'}' records no logical core count")
    isa = key.get("isa") or {}
    arch, vendor = _arch(key), _vendor(cpu)
    mac = str(recorded.get("os", "")).lower().startswith(("macos", "darwin"))
    cpu_types = [m for m in machines if not m.gpu]
    tiers: list[tuple[str, list[Machine], str]] = []
    by_model = [m for m in cpu_types if _sold_with(m, cpu)]
    if by_model:
        tiers.append((BY_MODEL, by_model, f"CPU '{cpu}' (the model the table lists for "
                                          f"{len({m.family or m.name for m in by_model})} family(ies))"))
    if vendor:
        fit = [m for m in cpu_types if m.cpu_vendor == vendor and _isa_fits(m, isa)]
        gen = cpu_generation(key)
        if fit:
            # {isa}: the flags of the type picked, filled in below
            tiers.append((BY_ISA, fit, f"CPU '{cpu}' (vendor {vendor} with {{isa}}{': ' + gen if gen else ''})"))
    if arch == "aarch64" and not mac:
        # The fingerprint names no Arm CPU model or flags (its ISA flags are x86's): any Arm type fits.
        arm = [m for m in cpu_types if m.architecture == "aarch64" and all(_flag_checks(m.isa, isa))]
        if arm:
            tiers.append((BY_ARCH, arm, f"the architecture, aarch64 (the fingerprint names no Arm CPU model or "
                                        f"ISA flags, so every Arm type fits)"))
    if not tiers:
        why = ("it is a Mac, and no cloud in the table sells its CPU" if mac else
               f"no machine type in the price table matches CPU '{cpu or 'unknown'}' ({cores} logical cores) by "
               "model, or by vendor and ISA flags")
        return MachineGuess(None, why)
    for confidence, cands, how in tiers:
        exact = [m for m in cands if m.vcpus == cores]
        if exact:
            ranked = _rank(exact, memory)
            best = ranked[0]
            evidence = (how.replace("{isa}", _isa_text(best.isa)) + f" and {cores} logical cores = its {best.vcpus} "
                        "vCPUs" + _memory_note(memory, best))
            return MachineGuess(best, evidence, tuple(ranked), confidence)
    # No type of any evidence has this many vCPUs: the smallest larger size of each family of the strongest
    # evidence that has one, the machine one would rent to get these cores.
    for confidence, cands, how in tiers:
        larger: dict[str, Machine] = {}
        for m in cands:
            fam = m.family or m.name
            if m.vcpus and m.vcpus > cores and (fam not in larger or m.vcpus < larger[fam].vcpus):
                larger[fam] = m
        if larger:
            ranked = _rank(list(larger.values()), None, lambda m: m.vcpus)
            best = ranked[0]
            pro_rata = best.hourly * cores / best.vcpus
            evidence = how.replace("{isa}", _isa_text(best.isa)) + f" and {cores} logical cores"
            return MachineGuess(best, evidence + _memory_note(memory, best), tuple(ranked),
                                confidence, f"No type of that evidence has {cores} vCPUs; priced as the smallest "
                                            f"larger size, {best.name} ({best.vcpus} vCPUs), the machine one would "
                                            f"rent for {cores} cores (pro rata it would be {pro_rata:.4g}/h)")
    confidence, cands, how = tiers[0]
    biggest = max(cands, key=lambda m: m.vcpus or 0)
    how = how.replace("{isa}", _isa_text(biggest.isa))
    return MachineGuess(None, f"{how} fits types up to {biggest.name} ({biggest.vcpus} vCPUs), but this machine has "
                              f"{cores} logical cores")
