"""The package's import graph runs one way, from lower concerns to higher ones, and the report
path never loads torch or Ray.

Layers, low to high: errors/units/files/paths/validation < data < cert < training < spec and
studyfolder < study < report < cli. A module may import its own layer and lower ones; ``report``
only the Ray-free base (errors, units, files, studyfolder); nothing imports ``cli``. Inside
``study``, the policy core imports neither Ray, Optuna nor the Tune adapter. Imports inside
functions count too: a lazy import still runs when the function does.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from studyfiles import write_study

PACKAGE = Path(__file__).parents[1] / "raycert"
LAYERS = {
    "raycert": 0,
    "raycert.errors": 0,
    "raycert.units": 0,
    "raycert.files": 0,
    "raycert.interrupts": 0,
    "raycert.paths": 0,
    "raycert.validation": 0,
    "raycert.data": 1,
    "raycert.cert": 2,
    "raycert.training": 3,
    "raycert.spec": 4,
    "raycert.studyfolder": 4,
    "raycert.study": 5,
    "raycert.report": 6,
    "raycert.export": 6,
    "raycert.cli": 7,
}
REPORT_MAY_IMPORT = {"raycert.errors", "raycert.units", "raycert.files", "raycert.studyfolder"}
NEVER_IN_REPORT = {"torch", "ray"}
POLICY, ADAPTER = "raycert.study.policy", "raycert.study.tune"
NEVER_IN_POLICY = {"ray", "optuna"}


def concern(module: str) -> str:
    """The concern (a key of ``LAYERS``) a ``raycert`` module belongs to."""
    parts = module.split(".")
    return ".".join(parts[:2]) if ".".join(parts[:2]) in LAYERS else "raycert"


def imports_of(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """Every module ``source`` imports, anywhere in it (functions included), with its line.

    ``from a import b`` yields ``a.b`` (a submodule, or a name whose concern is ``a``'s).
    """
    base = module.split(".") if is_package else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            parent = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = base[: len(base) - node.level + 1]
                parent = ".".join([*anchor, *([parent] if parent else [])])
            found += [(node.lineno, f"{parent}.{alias.name}") for alias in node.names]
    return found


def violations(modules: dict[str, tuple[str, bool]]) -> list[str]:
    """The imports that break the layering, as ``module:line imports target (why)``."""
    problems = []
    for module, (source, is_package) in sorted(modules.items()):
        mine = concern(module)
        for line, target in imports_of(source, module, is_package):
            where = f"{module}:{line} imports {target}"
            top = target.split(".")[0]
            if mine == "raycert.report" and top in NEVER_IN_REPORT:
                problems.append(f"{where} (report never loads torch or ray)")
            in_policy = module == POLICY or module.startswith(f"{POLICY}.")
            if in_policy and (top in NEVER_IN_POLICY or target.startswith(ADAPTER)):
                problems.append(f"{where} (the study policy imports neither Ray, Optuna nor tune)")
            if top != "raycert":
                continue
            theirs = concern(target)
            if theirs == "raycert.cli" and mine != "raycert.cli":
                problems.append(f"{where} (nothing imports the CLI)")
            elif LAYERS[theirs] > LAYERS[mine]:
                problems.append(f"{where} (a lower concern imports a higher one)")
            elif mine == "raycert.report" and theirs not in REPORT_MAY_IMPORT | {mine, "raycert"}:
                problems.append(f"{where} (report reads through studyfolder only)")
    return problems


def package_modules() -> dict[str, tuple[str, bool]]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        modules[name] = (path.read_text(), is_package)
    return modules


def test_the_package_imports_only_downwards():
    modules = package_modules()
    assert {concern(m) for m in modules} == set(LAYERS), "a new concern needs its layer here"
    assert violations(modules) == []


@pytest.mark.parametrize(
    ("module", "source", "why"),
    [
        ("raycert.cert.bounds", "def f():\n    from raycert.training import loop\n", "higher"),
        ("raycert.cert.models", "from ..study.run import run_study\n", "higher"),
        ("raycert.data.loading", "import raycert.cli\n", "CLI"),
        ("raycert.report.page", "def f():\n    import torch\n", "torch or ray"),
        ("raycert.report.figures", "from ray import tune\n", "torch or ray"),
        ("raycert.report.reading", "from raycert.data import load\n", "studyfolder only"),
        ("raycert.studyfolder", "from raycert.study.run import run_study\n", "higher"),
        ("raycert.spec.file", "from raycert.study.policy import plan\n", "higher"),
        ("raycert.study.policy.budget", "from ray.tune import Stopper\n", "Ray, Optuna"),
        ("raycert.study.policy.search", "def f():\n    import optuna\n", "Ray, Optuna"),
        ("raycert.study.policy", "from raycert.study.tune import run\n", "Ray, Optuna"),
    ],
)
def test_the_check_catches_each_kind_of_upward_import(module, source, why):
    (problem,) = violations({module: (source, False)})
    assert problem.startswith(f"{module}:") and why in problem


def test_raycert_report_runs_without_torch_or_ray(tmp_path):
    """The CLI path of ``raycert report`` on a study folder: importing torch or ray (or the
    modules that train) fails the run, and none of them is loaded when it ends."""
    study = write_study(tmp_path / "runs")
    out = tmp_path / "report.html"
    blocked = ["torch", "ray", "raycert.training", "raycert.cert", "raycert.study"]
    script = f"""
import importlib.abc, json, sys
BLOCKED = {blocked!r}

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ImportError(f"raycert report imported {{name}}")

sys.meta_path.insert(0, Block())
from raycert.cli import app
try:
    app(["report", {str(study)!r}, "--out", {str(out)!r}], prog_name="raycert")
except SystemExit as exc:
    code = exc.code
loaded = sorted(m for m in sys.modules if any(m == b or m.startswith(b + ".") for b in BLOCKED))
print(json.dumps({{"code": code, "loaded": loaded}}))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.splitlines()[-1])
    assert outcome == {"code": 0, "loaded": []}, result.stderr
    assert out.is_file() and "plotly" in out.read_text()
