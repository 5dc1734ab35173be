"""Inferring a run's machine type from its fingerprint, with fingerprints of known machines (issue 13)."""

import pytest

from costbench.harness.reports.prices import infer_machine, load_prices

SPR = {"avx2": True, "avx512f": True, "avx512_vnni": True, "avx512_bf16": True, "amx_tile": True}
ZEN3 = {"avx2": True, "fma": True, "avx512f": False, "avx512_vnni": False, "amx_tile": False}
ZEN4 = {"avx2": True, "avx512f": True, "avx512_vnni": True, "amx_tile": False}


def env(cpu, cores, memory_gib, isa, gpus=()):
    """A fingerprint shaped like ``costbench.harness.machine.env.fingerprint()`` (the parts inference reads)."""
    return {"key": {"cpu_model": cpu, "logical_cores": cores, "physical_cores": cores, "isa": isa, "gpus": list(gpus)},
            "recorded": {"memory_bytes": int(memory_gib * 2**30)}}


@pytest.fixture(scope="module")
def table():
    return load_prices()


def test_sapphire_rapids_2_vcpu_is_a_c7i_large(table):
    g = infer_machine(env("Intel(R) Xeon(R) Platinum 8488C", 2, 3.7, SPR), table)
    assert g.machine.name == "aws/c7i.large" and g.machine.hourly == 0.08925
    assert "CPU 'Intel(R) Xeon(R) Platinum 8488C'" in g.evidence and "2 logical cores = its 2 vCPUs" in g.evidence
    assert "memory" not in g.evidence  # 3.7 GiB visible of the type's 4 GiB: nothing to say
    text = g.describe("0123456789abcdef")
    assert "inferred as aws/c7i.large (0.08925 USD/h)" in text and "--machine-type 0123456789ab=TYPE" in text


def test_same_cpu_more_memory_picks_the_closer_type_and_a_memory_gap_is_said(table):
    # 4 vCPUs of the same CPU: c7i.xlarge has 8 GiB, m7i.xlarge 16 GiB; 15.4 GiB visible is an m7i.
    g = infer_machine(env("Intel(R) Xeon(R) Platinum 8488C", 4, 15.4, SPR), table)
    assert g.machine.name == "aws/m7i.xlarge" and "aws/c7i.xlarge" in g.alternatives
    # The dev VMs: 2 vCPUs of a Sapphire Rapids with 23 GiB; priced as c7i.large, and the page says the memory differs.
    g = infer_machine(env("Intel(R) Xeon(R) Platinum 8488C", 2, 23.0, SPR), table)
    assert g.machine.name == "aws/c7i.large" and "23.0 GiB of memory and the type 4 GiB" in g.evidence


def test_amd_epyc_avx2_only_vm_by_vendor_and_isa(table):
    # This session's machine: `costbench env` shows "AMD EPYC", 2 cores, AVX2 without AVX-512 (Zen 1-3).
    g = infer_machine(env("AMD EPYC", 2, 23.5, ZEN3), table)
    assert g.machine.name == "aws/c6a.large" and g.machine.hourly == 0.0765
    assert "vendor AMD with avx2, no avx512f" in g.evidence and "price is for its CPUs, not its memory" in g.evidence
    # The same CPU with AVX-512 is a Zen 4: no 2-vCPU Zen 4 in the table, and the page says so.
    g = infer_machine(env("AMD EPYC", 2, 4, ZEN4), table)
    assert g.machine is None and "aws/c7a.xlarge (4 vCPUs)" in g.evidence and "no size with 2 vCPUs" in g.evidence
    assert g.describe("feedbeef").startswith("No price for env feedbeef: ")


def test_epyc_by_model_name(table):
    assert infer_machine(env("AMD EPYC 7R13 Processor", 4, 7.6, ZEN3), table).machine.name == "aws/c6a.xlarge"
    assert infer_machine(env("AMD EPYC 7B13", 4, 15.6, ZEN3), table).machine.name == "gcp/c2d-standard-4"


def test_h100_box_by_gpu_model_count_and_memory(table):
    h100 = {"name": "NVIDIA H100 80GB HBM3", "memory": "81559 MiB", "driver": "550.54"}
    g = infer_machine(env("AMD EPYC 7R13 Processor", 192, 2000, ZEN3, [h100] * 8), table)
    assert g.machine.name == "aws/p5.48xlarge" and "8× NVIDIA H100 80GB HBM3" in g.evidence
    # One H100 SXM: the table prices eight of them, or one H100 NVL (94 GB): neither is this machine.
    g = infer_machine(env("AMD EPYC 9654", 26, 200, ZEN4, [h100]), table)
    assert g.machine is None and "no machine type in the price table has 1× NVIDIA H100 80GB HBM3" in g.evidence
    nvl = {"name": "NVIDIA H100 NVL", "memory": "95830 MiB", "driver": "550"}
    assert infer_machine(env("AMD EPYC 9V84 96-Core Processor", 40, 314, ZEN4, [nvl]), table).machine.name == \
        "azure/Standard_NC40ads_H100_v5"


def test_gpu_ties_are_broken_by_the_cpu(table):
    t4 = {"name": "Tesla T4", "memory": "15360 MiB", "driver": "535"}
    assert infer_machine(env("Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz", 4, 15.4, {}, [t4]), table).machine.name \
        == "aws/g4dn.xlarge"
    assert infer_machine(env("AMD EPYC 7V12 64-Core Processor", 4, 27.4, ZEN3, [t4]), table).machine.name \
        == "azure/Standard_NC4as_T4_v3"
    l4 = {"name": "NVIDIA L4", "memory": "23034 MiB", "driver": "550"}
    l40s = {"name": "NVIDIA L40S", "memory": "46068 MiB", "driver": "550"}
    assert infer_machine(env("AMD EPYC 7R13 Processor", 4, 15, ZEN3, [l4]), table).machine.name == "aws/g6.xlarge"
    assert infer_machine(env("AMD EPYC 7R13 Processor", 4, 15, ZEN3, [l40s]), table).machine is None  # not an L4


def test_no_fingerprint_or_unknown_cpu(table):
    assert infer_machine(None, table).machine is None
    g = infer_machine(env("Apple M2", 8, 16, {}), table)
    assert g.machine is None and "by model, or by vendor and ISA flags" in g.evidence
