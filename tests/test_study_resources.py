"""Study resources: fractional GPUs shared by concurrent trials, and requests a cluster cannot
meet refused before anything runs."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import ray
import ray.cloudpickle
import torch
from ray import tune
from studyruns import run_study_cli, toy, toy_request

from raycert.errors import UserError
from raycert.spec import load_study_spec
from raycert.study.tune.run import StudyRequest, run_study
from raycert.study.tune.trial import TrialSetup, train_trial
from raycert.studyfolder import TrialResources

# Trainables defined here go to Ray workers by value: they cannot import this test module.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def test_four_quarter_gpu_trials_share_gpu_0_and_train_on_the_cpu(ray_local, tmp_path):
    """A marker-file barrier proves the four trials run at once; each then runs the real trial
    code, which must fall back to the CPU because no CUDA device exists here."""
    assert not torch.cuda.is_available()
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    request = StudyRequest(
        dataset="synthetic",
        targets=(0.8,),
        preset="smoke",
        trials=4,
        concurrency=4,
        cpus_per_trial=0.5,
        gpus_per_trial=0.25,
        storage=str(tmp_path / "runs"),
        name="gpus",
    )
    base = load_study_spec("synthetic", "smoke").base.resolve().to_dict()
    setup = TrialSetup(str(tmp_path), base, None, 0.25, 0.8)

    def trainable(config: dict) -> None:
        me = barrier / tune.get_context().get_trial_id()
        me.write_text("")
        deadline = time.monotonic() + 90
        while len(list(barrier.glob("*"))) < 8 and time.monotonic() < deadline:
            seen = len([p for p in barrier.iterdir() if p.suffix != ".json"])
            if seen >= 4:
                break
            time.sleep(0.1)
        seen = len([p for p in barrier.iterdir() if p.suffix != ".json"])
        info = {"seen": seen, "gpu_ids": [int(g) for g in ray.get_gpu_ids()]}
        me.with_suffix(".json").write_text(json.dumps(info))
        train_trial(config, setup)

    result = run_study(request, trainable=trainable, progress=False)
    infos = [json.loads(p.read_text()) for p in barrier.glob("*.json")]
    assert len(infos) == 4
    assert all(info["seen"] == 4 for info in infos)  # all four were running at once
    assert all(info["gpu_ids"] == [0] for info in infos)
    table = pd.read_parquet(Path(result.study_dir) / "trials.parquet")
    assert set(table["status"]) == {"completed"} and set(table["device"]) == {"cpu"}
    assert result.meta.resources == TrialResources(cpus_per_trial=0.5, gpus_per_trial=0.25)


def test_more_gpus_than_a_node_has_are_refused_before_anything_runs(ray_local, tmp_path):
    request = toy_request(tmp_path, "greedy", (0.8,), gpus_per_trial=2)
    with pytest.raises(UserError, match="--gpus-per-trial 2 is more than any node"):
        run_study(request, trainable=toy, progress=False)
    assert not (tmp_path / "runs" / "greedy").exists()


def test_cpus_beyond_a_node_are_refused(ray_local, tmp_path):
    request = toy_request(tmp_path, "cpus", (0.8,), cpus_per_trial=3)
    with pytest.raises(UserError, match="--cpus-per-trial 3 is more than any node"):
        run_study(request, trainable=toy, progress=False)


# ---------------------------------------------------------------------------------------------
# Failures: crashed, diverged and early-stopped trials are recorded and the study goes on
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_gpus_on_a_gpu_less_cluster_exit_2_with_one_line(tmp_path):
    """In a fresh process: its own local Ray cluster has no GPU (this machine has none)."""
    args = ["synthetic", "--preset", "smoke", "--gpus-per-trial", "0.5"]
    returncode, out, err = run_study_cli(*args, "--storage", str(tmp_path), timeout=120)
    assert returncode == 2
    assert err.splitlines() == [  # the cluster's GPUs are known once it runs
        f"study {tmp_path}/synthetic-acert-smoke: starting Ray's local cluster",
        "error: --gpus-per-trial 0.5 asks for GPUs but the Ray cluster has none; "
        "use --gpus-per-trial 0 (or auto)",
    ]
    assert "Traceback" not in out + err and not any(tmp_path.iterdir())
