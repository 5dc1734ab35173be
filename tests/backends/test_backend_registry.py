"""The entry-point registry: extra backends from the environment, and entries that fail to load."""

from __future__ import annotations

import pytest

from costbench.backends import get_backend, load_registry
from costbench.backends.registry import EXTRA_ENV
from costbench.backends.torch_backend import TorchBackend


def test_extra_backend_from_environment_loads(monkeypatch):
    monkeypatch.setenv(EXTRA_ENV, "torch2=costbench.backends.torch_backend:TorchBackend")
    registry = load_registry()
    assert isinstance(registry["torch2"].backend, TorchBackend)
    assert {"torch", "onnxruntime", "openvino", "torch2"} <= set(registry)


def test_missing_module_is_kept_with_its_import_error(monkeypatch):
    monkeypatch.setenv(EXTRA_ENV, "ghost=costbench_no_such_module.backend:Ghost")
    entry = load_registry()["ghost"]
    assert entry.backend is None
    assert "could not import costbench_no_such_module.backend:Ghost" in entry.load_error
    assert "No module named 'costbench_no_such_module'" in entry.load_error
    availability = entry.probe()
    assert not availability.available
    assert availability.reason == entry.load_error
    # One broken plugin must not hide the built-ins.
    assert load_registry()["torch"].backend is not None
    with pytest.raises(RuntimeError, match="No module named 'costbench_no_such_module'"):
        get_backend("ghost")


def test_class_that_is_not_a_backend_is_rejected(monkeypatch):
    monkeypatch.setenv(EXTRA_ENV, "dict=collections:OrderedDict")
    entry = load_registry()["dict"]
    assert entry.backend is None
    assert "collections:OrderedDict is not a costbench Backend subclass" in entry.load_error
    assert not entry.probe().available


def test_missing_attribute_is_reported(monkeypatch):
    monkeypatch.setenv(EXTRA_ENV, "typo=costbench.backends.torch_backend:TorchBackendd")
    entry = load_registry()["typo"]
    assert entry.backend is None
    assert "TorchBackendd" in entry.load_error


def test_malformed_environment_entry_is_an_error(monkeypatch):
    monkeypatch.setenv(EXTRA_ENV, "no-target-here")
    with pytest.raises(ValueError, match=EXTRA_ENV):
        load_registry()


def test_unknown_backend_lists_registered_names():
    with pytest.raises(KeyError, match="onnxruntime"):
        get_backend("tensorflow")
