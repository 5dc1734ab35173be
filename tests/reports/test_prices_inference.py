"""Inferring a run's machine type from its fingerprint, with fingerprints of known machines (issue 13)."""

import pytest

from costbench.harness.reports.prices import infer_machine, load_prices

SPR = {"avx2": True, "avx512f": True, "avx512_vnni": True, "avx512_bf16": True, "amx_tile": True}
ZEN3 = {"avx2": True, "fma": True, "avx512f": False, "avx512_vnni": False, "amx_tile": False}
ZEN4 = {"avx2": True, "avx512f": True, "avx512_vnni": True, "avx_vnni": False, "amx_tile": False}


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
    # The same CPU with AVX-512 VNNI is a Zen 4: 2-vCPU Zen 4 types are in the table (issue 25).
    g = infer_machine(env("AMD EPYC", 2, 3.8, ZEN4), table)
    assert g.machine.name == "aws/c7a.large" and g.machine.hourly == 0.10264
    assert "vendor AMD with avx512_vnni, no avx_vnni: Zen 4" in g.evidence and "memory" not in g.evidence
    assert g.confidence == "vendor and ISA generation only"


def test_cores_no_type_has_take_the_next_larger_size_and_say_so(table):
    g = infer_machine(env("AMD EPYC", 6, 12, ZEN4), table)
    assert g.machine.vcpus == 8 and "No type of that evidence has 6 vCPUs" in g.size_note
    assert f"smallest larger size, {g.machine.name} (8 vCPUs)" in g.size_note
    g = infer_machine(env("AMD EPYC", 1024, 4096, ZEN4), table)
    assert g.machine is None and "fits types up to" in g.evidence and "1024 logical cores" in g.evidence
    text = g.describe("feedbeef")
    assert text.startswith("No price for env feedbeef: ") and text.count(". ") == 0  # one sentence
    assert "--machine-type feedbeef=TYPE" in text and '[assign] "feedbeef" = "TYPE"' in text


def test_arm_vm_by_architecture_only(table):
    """An Arm VM's fingerprint names no CPU model and no Arm flags: every Arm type of its size fits."""
    arm = env("aarch64", 2, 3.7, {f: False for f in ZEN3})
    arm["key"]["machine"] = "aarch64"
    g = infer_machine(arm, table)
    assert g.confidence == "architecture only" and g.machine.architecture == "aarch64"
    assert g.machine.name == "aws/c6g.large"  # the cheapest firm 2-vCPU Arm price with 4 GiB
    assert {"aws/c7g.large", "aws/c8g.large", "gcp/c4a-standard-2", "azure/Standard_D2ps_v5"} <= set(g.alternatives)
    arm["recorded"]["os"] = "macOS-15.1-arm64-arm-64bit"  # a Mac is no cloud machine
    assert infer_machine(arm, table).machine is None


def test_epyc_by_model_name(table):
    assert infer_machine(env("AMD EPYC 7R13 Processor", 4, 7.6, ZEN3), table).machine.name == "aws/c6a.xlarge"
    assert infer_machine(env("AMD EPYC 7B13", 4, 15.6, ZEN3), table).machine.name == "gcp/c2d-standard-4"


def test_h100_box_by_gpu_model_count_and_memory(table):
    h100 = {"name": "NVIDIA H100 80GB HBM3", "memory": "81559 MiB", "driver": "550.54"}
    g = infer_machine(env("AMD EPYC 7R13 Processor", 192, 2000, ZEN3, [h100] * 8), table)
    assert g.machine.name == "aws/p5.48xlarge" and "8× NVIDIA H100 80GB HBM3" in g.evidence
    # One H100 SXM: AWS's one-GPU P5 (AMD host) and GCP's a3-highgpu-1g (Intel, 26 vCPUs); the AMD host decides.
    g = infer_machine(env("AMD EPYC 9654", 26, 200, ZEN4, [h100]), table)
    assert g.machine.name == "aws/p5.4xlarge" and "gcp/a3-highgpu-1g" in g.alternatives
    assert "azure/Standard_NC40ads_H100_v5" not in g.alternatives  # an H100 NVL (94 GB) is another GPU
    # Two of them: no type has two, so the price is a share of the smallest type with more, said so.
    g = infer_machine(env("AMD EPYC 9654", 52, 400, ZEN4, [h100] * 2), table)
    assert g.machine.name == "aws/p5.48xlarge ×2/8" and g.machine.hourly == pytest.approx(55.04 / 4)
    assert "No type in the table has 2 of these GPUs" in g.size_note
    # Sixteen: more than any type has.
    g = infer_machine(env("AMD EPYC 9654", 52, 400, ZEN4, [h100] * 16), table)
    assert g.machine is None and "fewer than this machine's 16" in g.evidence
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
    assert infer_machine(env("AMD EPYC 7R13 Processor", 4, 15, ZEN3, [l40s]), table).machine.name == "aws/g6e.xlarge"
    rtx = {"name": "NVIDIA GeForce RTX 4090", "memory": "24564 MiB", "driver": "550"}
    g = infer_machine(env("AMD Ryzen 9 7950X", 32, 64, ZEN4, [rtx]), table)
    assert g.machine is None and "priced GPUs: " in g.evidence and "L40S" in g.evidence


def test_no_fingerprint_or_unknown_cpu(table):
    assert infer_machine(None, table).machine is None
    g = infer_machine(env("Apple M2", 8, 16, {}), table)
    assert g.machine is None and "by model, or by vendor and ISA flags" in g.evidence
