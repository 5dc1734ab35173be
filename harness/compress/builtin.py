"""The built-in recipes: importing this module registers them (base.get_recipe imports it lazily).

Each recipe module imports its heavy libraries (torch, onnxruntime, nncf, openvino) inside its
methods, so importing this stays cheap enough for planning.
"""

from costbench.harness.compress import fp32, nncf_int8, ort_int8  # noqa: F401
from costbench.harness.compress import distill, dynamic_int8, nncf_accuracy, precision, pruning  # noqa: F401
from costbench.harness.compress import executorch_int8  # noqa: F401

__all__ = ["fp32", "nncf_int8", "ort_int8", "distill", "dynamic_int8", "nncf_accuracy", "precision", "pruning",
           "executorch_int8"]
