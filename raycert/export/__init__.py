"""Models and properties for complete verifiers: a run's or a study's chosen model as ONNX, and
one VNN-LIB robustness property per test sample, in the layout of VNN-COMP's benchmarks.

Modules, one concept each:
- ``network``: the network as an ONNX graph on raw [0, 1] pixels (normalization inside), checked
  by ``onnx.checker`` and run with onnxruntime;
- ``vnnlib``: one sample's L-inf robustness property as VNN-LIB 1.0 text;
- ``folder``: the exported folder (``model.onnx``, ``properties/``, ``instances.csv``,
  ``properties.csv``, ``README.txt``) for a run folder or for a study's chosen models.

onnx, onnxruntime and onnxscript are the ``export`` extra (``pip install raycert[export]``).
"""

import importlib.util

from raycert.export.folder import Exported, export, source_kind

PACKAGES = ("onnx", "onnxruntime", "onnxscript")


def missing_packages() -> list[str]:
    """The packages of the ``export`` extra that are not installed."""
    return [name for name in PACKAGES if importlib.util.find_spec(name) is None]


__all__ = ["PACKAGES", "Exported", "export", "missing_packages", "source_kind"]
