"""The environment a run records: controls that move a measurement are written beside the fingerprint, not hashed."""

from __future__ import annotations

from costbench.harness.machine.env import RUNTIME_VARS, fingerprint


def test_runtime_variables_that_are_set_are_recorded_and_leave_the_env_id_alone(monkeypatch):
    for name in RUNTIME_VARS:
        monkeypatch.delenv(name, raising=False)
    quiet = fingerprint()
    assert quiet["recorded"]["runtime_env"] == {}
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.setenv("THP_MEM_ALLOC_ENABLE", "1")
    monkeypatch.setenv("UNRELATED_SETTING", "x")
    capped = fingerprint()
    assert capped["recorded"]["runtime_env"] == {"ONEDNN_MAX_CPU_ISA": "AVX2", "THP_MEM_ALLOC_ENABLE": "1"}
    # The same machine and libraries: runs under either setting stay comparable (compare shows both).
    assert capped["env_id"] == quiet["env_id"]
