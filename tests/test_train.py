"""The trainer, its losses and configs, on the synthetic dataset (seconds on a CPU)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_one_line_error

from raycert.cert.attack import AttackSettings
from raycert.cert.bounds import clean_forward, margin_lower_bounds
from raycert.cert.certify import Certificates, certify, merge_summaries
from raycert.data import load
from raycert.errors import UserError
from raycert.spec import PRESETS, PRESETS_DIR, load_preset
from raycert.study.policy.polish import polished
from raycert.training.config import METHODS, TrainConfig
from raycert.training.evaluation import certify_run, resolve_device
from raycert.training.loop import new_model, train
from raycert.training.methods import (
    METHOD_SPECS,
    StepInput,
    adaptive_radii,
    ibp_regularizers,
    robust_cross_entropy,
)
from raycert.training.rundir import load_run
from raycert.training.schedule import regularizer_weight, scheduled_eps

TIMING = {"train_seconds", "eval_seconds"}


def tiny(**changes) -> TrainConfig:
    """A run of a few batches: 256 synthetic training images, the MLP, 2 epochs."""
    base = TrainConfig(
        dataset="synthetic",
        model="mlp",
        method="acert",
        epochs=2,
        batch_size=64,
        max_eps=0.05,
        warmup_epochs=1,
        ramp_epochs=1,
        lr=1e-2,
        train_limit=256,
        val_limit=64,
        eval_limit=32,
        search_steps=5,
        search_tol=1e-4,
    )
    return base.replace(**changes)


def without_timing(metrics: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in metrics]


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name


class Interrupt(Exception):
    """Raised from a callback to stop a run the way a killed process would."""


def stop_after(epochs: int):
    def callback(metrics: dict, run_dir) -> None:
        if metrics["epoch"] == epochs:
            raise Interrupt

    return callback


# --- eps schedule ------------------------------------------------------------------------------


def test_scheduled_eps_matches_hand_computed_values():
    # 10 batches per epoch, warm-up 1 epoch, ramp 4: start 10, end 50, mid 10 + 0.25 * 40 = 20.
    # Slope continuity at the mid point puts eps there at 10 / (4 * 30 + 10) = 1/13 of max_eps.
    cfg = tiny(max_eps=1.0, warmup_epochs=1, ramp_epochs=4, ramp_mid=0.25, ramp_power=4.0)
    expected = {0: 0.0, 9: 0.0, 10: 0.0, 15: (1 / 13) / 16, 20: 1 / 13, 35: 7 / 13, 50: 1.0}
    for step, value in expected.items():
        assert scheduled_eps(step, 10, cfg) == pytest.approx(value, abs=1e-15), step
    assert scheduled_eps(49, 10, cfg) < 1.0
    assert scheduled_eps(10_000, 10, cfg) == 1.0


def test_scheduled_eps_is_monotone_and_smooth_at_the_mid_point():
    cfg = tiny(max_eps=0.4, warmup_epochs=2, ramp_epochs=7, ramp_mid=0.3, ramp_power=3.0)
    values = [scheduled_eps(step, 13, cfg) for step in range(13 * 12)]
    assert all(b >= a for a, b in zip(values, values[1:], strict=False))
    assert values[: 2 * 13 + 1] == [0.0] * (2 * 13 + 1)
    assert values[9 * 13] == 0.4
    # Slopes agree where the power law meets the line (seen on a fine grid of 1000 steps/epoch).
    mid = 2 * 1000 + int(7 * 1000 * 0.3)
    before = scheduled_eps(mid, 1000, cfg) - scheduled_eps(mid - 1, 1000, cfg)
    after = scheduled_eps(mid + 1, 1000, cfg) - scheduled_eps(mid, 1000, cfg)
    assert after == pytest.approx(before, rel=1e-3)


def test_scheduled_eps_edge_cases():
    assert scheduled_eps(5, 10, tiny(max_eps=0.0)) == 0.0
    jump = tiny(max_eps=0.3, warmup_epochs=1, ramp_epochs=0)
    assert [scheduled_eps(s, 10, jump) for s in (10, 11)] == [0.0, 0.3]
    linear = tiny(max_eps=0.3, warmup_epochs=0, ramp_epochs=1, ramp_mid=0.0)
    assert scheduled_eps(5, 10, linear) == pytest.approx(0.15)


def test_regularizers_run_through_warmup_and_ramp_and_fade_with_eps():
    cfg = tiny(max_eps=0.2, warmup_epochs=1, ramp_epochs=2, reg_weight=0.5)
    assert regularizer_weight(0, 10, 0.0, cfg) == 0.5
    assert regularizer_weight(29, 10, 0.1, cfg) == pytest.approx(0.25)
    assert regularizer_weight(30, 10, 0.2, cfg) == 0.0
    assert regularizer_weight(0, 10, 0.0, tiny(max_eps=0.0)) == 0.0


# --- losses ------------------------------------------------------------------------------------


def batch(n: int = 64):
    split = load("synthetic", "train", limit=n)
    return split.images.float() / 255, split.labels


def test_robust_cross_entropy_at_eps_zero_is_cross_entropy():
    model = new_model(tiny().resolve()).train()
    x, y = batch()
    logits, stats = clean_forward(model, x)
    margins = margin_lower_bounds(model, x, y, 0.0, bn_stats=stats)
    assert robust_cross_entropy(margins).item() == pytest.approx(
        F.cross_entropy(logits, y).item(), rel=1e-5
    )


def test_acert_radii_are_zero_when_misclassified_and_capped_by_the_schedule():
    cfg = tiny(max_eps=0.2).resolve()
    model = new_model(cfg).train()
    x, y = batch(128)
    logits, stats = clean_forward(model, x)
    radii = adaptive_radii(model, x, y, 0.05, cfg, stats, logits)
    wrong = logits.argmax(dim=1) != y
    assert wrong.any() and (~wrong).any()
    assert torch.all(radii[wrong] == 0)
    assert torch.all(radii <= 0.05) and torch.all(radii >= 0)
    assert (radii[~wrong] > 0).any()
    assert not radii.requires_grad


def test_regularizers_are_finite_with_one_sided_or_unstable_layers():
    center = torch.tensor([[1.0, 2.0, -1.0], [0.5, 3.0, -2.0]], requires_grad=True)
    radius = torch.full_like(center, 0.1)
    all_active = (center.abs() + 1.0, radius)  # no inactive neuron: imbalance is maximal
    unstable = (center, torch.full_like(center, 10.0))  # no stable neuron: skipped
    tightness, balance = ibp_regularizers([all_active, unstable], torch.tensor(0.1), 0.5)
    (tightness + balance).backward()
    assert math.isfinite(tightness.item()) and tightness.item() >= 0
    assert balance.item() == pytest.approx(2.0 / 2)  # 2 from the active layer, 0, over 2 layers
    assert torch.isfinite(center.grad).all()


@pytest.mark.parametrize("method", METHODS)
def test_each_method_lowers_its_loss(method):
    # No warm-up or ramp: the radius is max_eps from the second batch on, so the loss is fixed.
    cfg = tiny(method=method, epochs=3, warmup_epochs=0, ramp_epochs=0)
    metrics = train(cfg, device="cpu").metrics
    assert metrics[-1]["train_loss"] < 0.8 * metrics[0]["train_loss"]
    assert metrics[-1]["train_clean_acc"] > 0.8


def test_ibp_at_max_eps_zero_matches_standard_step_for_step():
    ibp = train(tiny(method="ibp", max_eps=0.0, init="ibp"), device="cpu")
    standard = train(tiny(method="standard", init="ibp"), device="cpu")
    assert without_timing(ibp.metrics) == without_timing(standard.metrics)
    assert_same_weights(ibp.model, standard.model)


@pytest.mark.parametrize("method", METHODS)
def test_every_configurable_method_has_a_loss_that_keeps_the_trainer_contract(method):
    # The trainer calls METHOD_SPECS[cfg.method].loss: a scalar loss with a gradient, and
    # detached batch sums of correct predictions and training radii (0 for standard, eps for
    # every sample at fixed radii, each sample's certified radius capped by eps for ACERT).
    cfg = tiny(method=method).resolve()
    model = new_model(cfg).train()
    x, y = batch(128)
    loss, stats = METHOD_SPECS[method].loss(model, StepInput(x, y, 0.05, 0.25, 0), cfg)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters())
    assert set(stats) == {"correct", "radius"} and not stats["radius"].requires_grad
    assert 0 < stats["correct"].item() < len(y)
    radius = stats["radius"].item()
    if method == "standard":
        assert radius == 0
    elif method == "acert":
        assert 0 < radius < 0.05 * len(y)
    else:
        assert radius == pytest.approx(0.05 * len(y))


# --- runs: determinism, checkpoints, resume, divergence ------------------------------------------


def test_seeded_runs_repeat_exactly():
    # Batches of 256 make PyTorch split CPU kernels across threads, where a kernel that adds
    # in thread order (the backward of tensor indexing) would make the runs differ.
    cfg = tiny(batch_size=256, train_limit=1024)
    first, second = train(cfg, device="cpu"), train(cfg, device="cpu")
    assert without_timing(first.metrics) == without_timing(second.metrics)
    assert_same_weights(first.model, second.model)
    other = train(cfg.replace(seed=1), device="cpu")
    assert not torch.equal(other.model[2].weight, first.model[2].weight)


def test_metrics_hold_the_agreed_names():
    metrics = train(tiny(epochs=2), device="cpu").metrics
    assert [m["final"] for m in metrics] == [False, True]
    assert [m["eval_n"] for m in metrics] == [32, 64]  # eval_limit, then the whole val split
    for key in ("epoch", "eps", "lr", "train_loss", "train_clean_acc", "train_radius"):
        assert key in metrics[-1]
    for key in ("clean_acc", "acr", "acr_cap", "acr_pct", "cert_acc@0.05", "train_seconds"):
        assert key in metrics[-1]
    assert metrics[-1]["eval_split"] == "val" and metrics[-1]["acr_cap"] == 0.1
    assert metrics[-1]["eps"] == 0.05 and metrics[0]["eps"] == 0.0


def test_checkpoint_round_trip_certifies_identically(tmp_path):
    result = train(tiny(), tmp_path / "run", device="cpu")
    for name in ("config.json", "model.pt", "state.pt", "metrics.jsonl", "status.json"):
        assert (tmp_path / "run" / name).is_file()
    torch.load(tmp_path / "run" / "state.pt", weights_only=True)
    model, cfg = load_run(tmp_path / "run")
    assert cfg == result.config and not model.training
    val = load("synthetic", "val", limit=64)
    before = certify(result.model, val.images, val.labels, 0.1)
    after = certify(model, val.images, val.labels, 0.1)
    assert torch.equal(before.radii, after.radii)
    assert json.loads((tmp_path / "run" / "status.json").read_text())["status"] == "completed"
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 2


def test_a_split_certified_in_shards_joins_into_the_whole(tmp_path):
    train(tiny(), tmp_path / "run", device="cpu")
    run = {
        "split": "val",
        "limit": 64,
        "attack": AttackSettings(steps=3, restarts=1),
        "device": "cpu",
    }
    whole_certs, whole = certify_run(tmp_path / "run", **run)
    shards = [certify_run(tmp_path / "run", **run, rows=slice(a, a + 24)) for a in (0, 24, 48)]
    certs = Certificates.concat([c for c, _ in shards])
    summary = merge_summaries([m for _, m in shards])
    assert [m["n"] for _, m in shards] == [24, 24, 16] and summary["n"] == whole["n"] == 64
    # Radius searches of other batches stop elsewhere within their tolerance; PGD's random
    # starts differ too.
    assert torch.equal(certs.predictions, whole_certs.predictions)
    assert torch.equal(certs.labels, whole_certs.labels)
    assert torch.allclose(certs.radii, whole_certs.radii, rtol=0, atol=1e-5)
    for name, radii in whole_certs.stage_radii.items():
        assert torch.allclose(certs.stage_radii[name], radii, rtol=0, atol=1e-5), name
    for key, value in whole.items():
        if key not in ("cert_seconds", "by_verifier") and not key.startswith("pgd_acc@"):
            assert summary[key] == pytest.approx(value, abs=1e-4), key
    assert 0 <= summary["pgd_acc@0.05"] <= 1 and len(summary["by_verifier"]) == 2


def test_load_run_reports_missing_and_corrupt_checkpoints(tmp_path):
    with pytest.raises(UserError, match="config.json is missing"):
        load_run(tmp_path / "nothing")
    train(tiny(epochs=1), tmp_path / "run", device="cpu")
    (tmp_path / "run" / "model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError) as info:
        load_run(tmp_path / "run")
    assert_one_line_error(info, f"checkpoint {tmp_path / 'run' / 'model.pt'} is corrupt")


def test_resume_ends_where_an_uninterrupted_run_ends(tmp_path):
    cfg = tiny(epochs=3, ramp_epochs=2, augment=True, crop_pad=1, batch_size=256, train_limit=1024)
    whole = train(cfg, tmp_path / "whole", device="cpu")
    with pytest.raises(Interrupt):
        train(cfg, tmp_path / "cut", callback=stop_after(1), device="cpu")
    resumed = train(cfg, tmp_path / "cut", resume=True, device="cpu")
    assert resumed.status == "completed"
    assert without_timing(resumed.metrics) == without_timing(whole.metrics)
    assert_same_weights(resumed.model, whole.model)

    again = train(cfg, tmp_path / "cut", resume=True, device="cpu")  # finished: nothing to do
    assert again.metrics == resumed.metrics
    with pytest.raises(UserError, match="differs in lr"):
        train(cfg.replace(lr=0.5), tmp_path / "cut", resume=True, device="cpu")
    with pytest.raises(UserError, match="already holds a run"):
        train(cfg, tmp_path / "cut", device="cpu")


def test_a_polished_run_fine_tunes_its_parents_model_at_the_full_radius(tmp_path):
    parent = train(tiny(), tmp_path / "parent", device="cpu")
    cfg = polished(parent.config, {"kappa": 0.8, "lr": 1e-12})
    assert (cfg.epochs, cfg.warmup_epochs, cfg.ramp_epochs) == (1, 0, 0)
    assert (cfg.kappa, cfg.lr_schedule, cfg.max_eps) == (0.8, "constant", 0.05)
    child = train(cfg, tmp_path / "child", device="cpu", init_from=tmp_path / "parent")
    assert child.metrics[0]["eps"] == 0.05 and child.metrics[0]["lr"] == 1e-12
    # Adam moves each weight by about lr per step: the child's weights are its parent's.
    for (name, x), (_, y) in zip(
        parent.model.named_parameters(), child.model.named_parameters(), strict=True
    ):
        assert torch.allclose(x, y, atol=1e-9), name
    fresh = train(cfg, device="cpu")  # the same config from the seed's initialization
    assert not torch.allclose(fresh.model[2].weight, parent.model[2].weight, atol=1e-3)
    resumed = train(cfg, tmp_path / "child", resume=True, device="cpu", init_from="/nowhere")
    assert without_timing(resumed.metrics) == without_timing(child.metrics)  # its own run
    with pytest.raises(UserError) as info:
        train(cfg.replace(model="cnn_small"), device="cpu", init_from=tmp_path / "parent")
    assert_one_line_error(info, f"cannot start from the run in {tmp_path / 'parent'}")


def test_a_nan_weight_ends_the_run_as_diverged_and_keeps_the_last_good_epoch(tmp_path):
    cfg = tiny(epochs=3)
    with pytest.raises(Interrupt):
        train(cfg, tmp_path / "run", callback=stop_after(1), device="cpu")
    good = (tmp_path / "run" / "metrics.jsonl").read_text()
    state = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    state["2.weight"][0, 0] = float("nan")  # poison one weight of the first Linear
    torch.save(state, tmp_path / "run" / "model.pt")

    result = train(cfg, tmp_path / "run", resume=True, device="cpu")
    assert result.status == "diverged" and "epoch 2, batch 1" in result.message
    assert [json.dumps(m) + "\n" for m in result.metrics] == good.splitlines(keepends=True)
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == good
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["status"] == "diverged" and status["epoch"] == 1


def test_an_exploding_learning_rate_diverges_without_crashing():
    cfg = tiny(method="ibp", optimizer="sgd", lr=1e30, grad_clip=0.0)
    result = train(cfg, device="cpu")
    assert result.status == "diverged" and result.metrics == []


# --- configs and presets -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"kappa": 1.5}, "kappa"),
        ({"max_eps": 2.0}, "max_eps"),
        ({"max_eps": "-1/255"}, "max_eps"),
        ({"cert_cap": "2/0"}, "cert_cap"),
        ({"method": "pgd"}, "method"),
        ({"model": "resnet"}, "model"),
        ({"optimizer": "rmsprop"}, "optimizer"),
        ({"lr_schedule": "cosine"}, "lr_schedule"),
        ({"epochs": 2.5}, "epochs"),
        ({"batch_size": 1}, "batch_size"),
        ({"ramp_power": 1.0}, "ramp_power"),
        ({"lr": 0.0}, "lr"),
        ({"lr_milestones": [5, 3]}, "lr_milestones"),
        ({"augment": "yes"}, "augment"),
        ({"dataset": "imagenet"}, "dataset"),
        ({"learning_rate": 0.1}, "learning_rate"),
    ],
)
def test_bad_config_values_are_one_line_user_errors(change, field):
    with pytest.raises(UserError) as info:
        TrainConfig.from_dict({**tiny().to_dict(), **change})
    assert_one_line_error(info, f"config: {field}: ")


def test_config_round_trips_through_json_and_reads_eps_spellings():
    cfg = TrainConfig.from_dict({"dataset": "CIFAR10", "max_eps": "8.8/255", "cert_eps": ["2px"]})
    assert cfg.dataset == "cifar10" and cfg.max_eps == 8.8 / 255 and cfg.cert_eps == (2 / 255,)
    for c in (cfg, cfg.resolve()):
        assert TrainConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    assert cfg.resolve().init == "ibp"
    assert cfg.replace(method="standard").resolve().init == "default"
    assert cfg.replace(method="standard").resolve().max_eps == 0.0


def test_every_packaged_preset_is_valid():
    for path in sorted(PRESETS_DIR.glob("*.toml")):
        for preset in PRESETS:
            if path.stem == "synthetic" and preset == "paper":
                continue
            cfg = load_preset(path.stem, preset).resolve()
            assert cfg.dataset == path.stem
    paper = load_preset("cifar10", "paper")
    assert (paper.model, paper.epochs, paper.lr, paper.kappa) == ("cnn7", 200, 2e-3, 0.25)
    assert paper.max_eps == pytest.approx(8.8 / 255)


def test_load_preset_errors_name_the_problem(tmp_path):
    with pytest.raises(UserError, match="presets there: smoke, quick"):
        load_preset("synthetic", "paper")
    with pytest.raises(UserError, match="no spec file"):
        load_preset("mnist", "quick", tmp_path / "missing.toml")
    spec = tmp_path / "mnist.toml"
    spec.write_text('[presets.quick]\nmodle = "mlp"\n')
    with pytest.raises(UserError) as info:
        load_preset("mnist", "quick", spec)
    assert_one_line_error(info, f"{spec}: presets.quick.modle: unknown key (did you mean 'model'?)")
    spec.write_text('[presets.quick]\nmodel = "mlp"\n')
    assert load_preset("mnist", "quick", spec) == TrainConfig(dataset="mnist", model="mlp")


def test_the_synthetic_smoke_preset_trains_end_to_end(tmp_path):
    result = train(load_preset("synthetic", "smoke"), tmp_path / "smoke", device="cpu")
    assert result.status == "completed" and result.metrics[-1]["final"]


def test_the_mnist_smoke_preset_trains_on_real_data(shared_data, tmp_path):
    result = train(load_preset("mnist", "smoke"), tmp_path / "run", data_dir=shared_data)
    final = result.metrics[-1]
    assert result.status == "completed" and final["eval_n"] == 256
    assert final["clean_acc"] > 0.5 and final["acr_cap"] == 0.4 and "cert_acc@0.3" in final


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_asking_for_cuda_without_it_is_a_user_error():
    with pytest.raises(UserError, match="CUDA is not available"):
        resolve_device("cuda")
