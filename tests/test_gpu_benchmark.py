"""benchmarks/gpu.py at ``--tiny`` sizes, run as the device runs it: every section measures, the
table has its rows, and the JSON holds positive numbers that agree with each other."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

ROOT = Path(__file__).parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu.py"

TABLE_ROWS = [
    "standard epoch, mid-ramp",
    "ibp epoch, mid-ramp",
    "acert epoch, mid-ramp",
    "acert epoch, warm-up",
    "acert epoch, after the ramp",
    "acert epoch, mid-ramp, sweep 8x4",
    "acert epoch, mid-ramp, sweep 16x3",
    "acert/standard",
    "acert/ibp",
    "ibp/standard",
    "acert warm-up/standard",
    "acert search bound passes per step",
    "acert host syncs per step",
    "peak memory standard",
    "peak memory ibp",
    "peak memory acert",
    "per-epoch val check (24 images)",
    "final val check (24 images)",
    "certify float32",
    "certify float64",
    "certify float64, 10k images",
    "certify float64 bound passes",
    "float32 IBP bound, TF32 allowed",
    "float32 IBP bound, IEEE float32",
    "profile: one acert step",
    "profile: one certification batch",
    "test certification of a chosen model",
    "1 training process(es)",
    "2 training process(es)",
    "4 training process(es)",
    "paper trial (200 epochs)",
    "48-trial study, 0.25 GPU/trial, 1 GPU(s)",
    "48-trial study, 0.25 GPU/trial, 8 GPU(s)",
]
MAY_BE_ZERO = ("acert mean radius", "train clean accuracy")  # the model's


def python(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    """A fresh interpreter in the repo root with ``PYTHONPATH=.`` before what it held (the
    device command's carried wheels), as the device command runs."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_benchmark(out: Path, device: str) -> tuple[subprocess.CompletedProcess, dict[str, Any]]:
    """Run the script as the device command does (``PYTHONPATH=.``, a fresh interpreter)."""
    result = python([str(SCRIPT), "--device", device, "--tiny", "--out-json", str(out)], 600)
    assert result.returncode == 0, result.stderr[-4000:]
    return result, json.loads(out.read_text())


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory: pytest.TempPathFactory):
    return run_benchmark(tmp_path_factory.mktemp("gpu-bench") / "gpu.json", "cpu")


def table_values(stdout: str) -> dict[str, str]:
    """``measurement -> value`` for every row of the markdown table."""
    rows = re.findall(r"^\| ([^|]+?) \| ([^|]+?) \|", stdout, re.M)
    return {name: value for name, value in rows if name != "measurement" and value != "---:"}


def positive(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_the_table_has_a_number_in_every_row(cpu_run) -> None:
    result, _ = cpu_run
    values = table_values(result.stdout)
    missing = [row for row in TABLE_ROWS if row not in values]
    assert not missing, f"rows missing from the table: {missing}\n{result.stdout}"
    for name, value in values.items():
        if name.startswith("peak memory"):
            assert value == "n/a", "the CPU has no device memory to report"
        elif name in MAY_BE_ZERO or name.startswith("float32 IBP bound"):  # rounding: may be 0
            assert float(value) >= 0, f"{name}: {value}"
        else:
            assert float(value.replace(",", "")) > 0, f"{name}: {value}"
    assert "extrapolated to 3125 steps (50000 images / 16)" in result.stdout


def test_the_json_line_and_file_agree_and_hold_positive_numbers(cpu_run) -> None:
    result, saved = cpu_run
    assert json.loads(result.stdout.strip().splitlines()[-1]) == saved
    assert saved["device"] == "cpu" and saved["tiny"] is True
    for name in ("standard", "ibp", "acert", "acert_warmup", "acert_post_ramp"):
        run = saved["train"][name]
        assert positive(run["step_s"]) and run["peak_mib"] is None
        assert run["epoch_s"] == pytest.approx(run["step_s"] * saved["steps_per_epoch"])
    train = saved["train"]
    assert train["standard"]["eps_pixel"] == 0 and 0 < train["ibp"]["eps_pixel"] < 8.8 / 255
    assert train["acert_post_ramp"]["eps_pixel"] == pytest.approx(8.8 / 255)
    assert positive(train["acert"]["bound_passes_per_step"])
    for probes, rounds in ((8, 4), (16, 3)):  # the sweep: its rounds, whatever the data
        swept = train[f"acert_sweep_{probes}x{rounds}"]
        assert swept["bound_passes_per_step"] == rounds
        # The trainer's one finite check is the sweep's step's only sync.
        assert swept["host_syncs_per_step"] == train["ibp"]["host_syncs_per_step"] == 1
    assert train["acert"]["host_syncs_per_step"] > 1  # the bracketing search's
    assert train["ibp"]["bound_passes_per_step"] == 0, "only the acert search makes passes"
    ratios = saved["ratios"]
    assert ratios["acert/ibp"] == pytest.approx(train["acert"]["epoch_s"] / train["ibp"]["epoch_s"])
    assert all(positive(r) for r in ratios.values())

    for dtype in ("float32", "float64"):
        cert = saved["certify"][dtype]
        assert cert["images"] == 48 and cert["cap"] == pytest.approx(8.8 / 255)
        for key in ("images_per_s", "seconds_per_10k", "bound_passes", "sample_passes_per_image"):
            assert positive(cert[key]), (dtype, key, cert[key])

    check = saved["val_check"]
    assert check["per_epoch"]["images"] == check["final"]["images"] == 24
    assert (check["per_epoch"]["dtype"], check["final"]["dtype"]) == ("float32", "float64")
    assert positive(check["per_epoch"]["seconds"]) and positive(check["final"]["seconds"])
    assert check["per_epoch"]["share_of_acert_epoch"] == pytest.approx(
        check["per_epoch"]["seconds"] / train["acert"]["epoch_s"]
    )
    tf32 = saved["tf32"]
    assert tf32["tf32_allowed"] == tf32["ieee_float32"], "a CPU has no TF32"
    assert tf32["ieee_float32"]["verdicts_differ"] == 0
    assert tf32["ieee_float32"]["max_rel_gap"] < 1e-4  # float32 rounding
    for key in ("acert_step", "cert_batch"):
        prof = saved["profile"][key]
        assert positive(prof["wall_s"]) and len(prof["top"]) == 5
        assert prof["kernel_launches"] == prof["host_syncs"] == 0, "no kernels on a CPU"
        assert prof["device_busy_share"] is None

    shared = saved["shared"]
    assert [row["processes"] for row in shared] == [1, 2, 4]
    assert shared[0]["speedup"] == 1.0
    assert all(positive(row["images_per_s"]) and positive(row["speedup"]) for row in shared)
    assert all(row["memory_fraction"] is None for row in shared), "no memory cap on the CPU"


def test_the_projection_follows_from_the_measurements(cpu_run) -> None:
    _, saved = cpu_run
    p = saved["projection"]
    assert (p["epochs"], p["train_images"], p["steps_per_epoch"]) == (200, 45000, 2813)
    assert p["trial_hours"] == pytest.approx(p["trial_train_hours"] + p["trial_eval_hours"])
    assert all(positive(p[key]) for key in ("trial_train_hours", "trial_eval_hours"))
    study = {(s["gpus_per_trial"], s["gpus"]): s["hours"] for s in p["study"]}
    assert set(study) == {(share, gpus) for share in (1.0, 0.5, 0.25) for gpus in (1, 8)}
    # The trial's checks: 199 per-epoch ones, the final one scaled to the 5k val split, and the
    # final certification's price probe of 128 images.
    check, cert = saved["val_check"], saved["certify"]["float64"]
    checks_s = 199 * check["per_epoch"]["seconds"] + check["final"]["seconds"] * 5000 / 24
    checks_s += 128 / cert["images_per_s"]
    assert p["trial_eval_hours"] == pytest.approx(checks_s / 3600)
    assert p["test_cert_seconds"] == pytest.approx(10_000 / cert["images_per_s"])
    ending_h = p["targets"] * p["test_cert_seconds"] / 3600  # the chosen models, on test
    assert p["targets"] == 6
    # One trial per GPU: 48 waves on one GPU, 6 on eight, the test certifications shared.
    assert study[1.0, 1] == pytest.approx(48 * p["trial_hours"] + ending_h)
    assert study[1.0, 8] == pytest.approx(6 * p["trial_hours"] + ending_h / 8)
    # Four per GPU: 12 waves of trials that each run at speed-up(4) / 4.
    slow = 4 / saved["shared"][2]["speedup"]
    assert study[0.25, 1] == pytest.approx((12 * p["trial_hours"] + ending_h / 4) * slow)
    assert study[0.25, 8] == pytest.approx((2 * p["trial_hours"] + ending_h / 32) * slow)


def test_the_projection_prices_the_probe_a_trial_runs() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_report

    from raycert.study.tune.trial import FINAL_CERT_PROBE

    assert gpu_report.FINAL_CERT_PROBE == FINAL_CERT_PROBE


def test_the_script_and_its_sibling_modules_import_nothing_the_gpu_image_lacks() -> None:
    """The GPU image has torch, numpy, rich and pydantic only: gpu.py and its gpu_* and counters
    siblings (found through benchmarks/ on sys.path, as a file run finds them)
    must load no ray, optuna or plotly. A fresh interpreter, so other tests' imports don't count."""
    probe = (
        "import sys; sys.path.insert(0, 'benchmarks'); import gpu; "
        "print(' '.join(sorted({name.split('.')[0] for name in sys.modules})))"
    )
    result = python(["-c", probe], 120)
    assert result.returncode == 0, result.stderr[-4000:]
    loaded = set(result.stdout.split())
    siblings = {"counters", "gpu_measure", "gpu_checks", "gpu_shared", "gpu_report"}
    assert {"torch", "raycert"} | siblings <= loaded
    assert not loaded & {"ray", "optuna", "plotly"}, sorted(loaded & {"ray", "optuna", "plotly"})


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_asking_for_cuda_without_it_is_one_error_line() -> None:
    result = python([str(SCRIPT), "--device", "cuda", "--tiny"], 120)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "cuda" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_benchmark_tiny_on_cuda_reports_memory_and_caps_shared_processes(
    tmp_path: Path,
) -> None:
    result, saved = run_benchmark(tmp_path / "gpu.json", "cuda")
    assert saved["device"] == "cuda"
    assert all(positive(saved["train"][m]["peak_mib"]) for m in ("standard", "ibp", "acert"))
    fractions = [row["memory_fraction"] for row in saved["shared"]]
    assert fractions == [1.0, 0.5, 0.25]
    assert all(positive(row["peak_mib_per_process"]) for row in saved["shared"])
    assert "n/a" not in table_values(result.stdout).values()
    for key in ("acert_step", "cert_batch"):
        prof = saved["profile"][key]
        assert prof["kernel_launches"] > 0 and 0 < prof["device_busy_share"] <= 1


def test_shared_only_measures_section_three_alone(tmp_path: Path) -> None:
    """What the device command runs again under NVIDIA MPS: the sharing rows, nothing else."""
    out = tmp_path / "mps.json"
    result = python(
        [str(SCRIPT), "--device", "cpu", "--tiny", "--shared-only", "--out-json", str(out)], 300
    )
    assert result.returncode == 0, result.stderr[-4000:]
    saved = json.loads(out.read_text())
    assert [row["processes"] for row in saved["shared"]] == [1, 2, 4]
    assert "train" not in saved and "projection" not in saved
    values = table_values(result.stdout)
    assert set(values) == {f"{k} training process(es)" for k in (1, 2, 4)}
    assert all(positive(float(v.replace(",", ""))) for v in values.values())
