"""The training methods against each other and against their definitions: MTL-IBP, SABR and
CROWN-IBP reduce to IBP (and MTL-IBP to PGD training) at their ends, adaptive radii change
nothing where every sample is certified at the scheduled eps, gradients reach every parameter;
each method declares the config fields it reads, and trains on real MNIST to
certificates that PGD cannot break."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_one_line_error
from nets import net_and_batch
from torch import nn

from raycert.cert.attack import AttackSettings, training_attack
from raycert.cert.bounds import clean_forward, propagate
from raycert.cert.radius import certified_radius
from raycert.errors import UserError
from raycert.spec import load_preset
from raycert.training.config import METHODS, TrainConfig
from raycert.training.evaluation import certify_run
from raycert.training.loop import train
from raycert.training.methods import METHOD_SPECS, StepInput
from raycert.training.methods.crown_ibp import crown_ibp_beta

BOUND_METHODS = ("mtl-ibp", "sabr", "crown-ibp")


def config(**changes) -> TrainConfig:
    """A config for calling losses directly (its ``method`` only lets ``adaptive`` be set)."""
    base = TrainConfig(
        dataset="synthetic", method="mtl-ibp", max_eps=0.1, search_steps=20, search_tol=1e-7
    )
    return base.replace(**changes)


def step(method: str, net: nn.Sequential, x, y, eps: float, cfg, reg_weight: float, seed=7):
    """The loss of ``method`` on a copy of ``net``, its gradient per parameter, and its stats."""
    model = copy.deepcopy(net)
    loss, stats = METHOD_SPECS[method].loss(model, StepInput(x, y, eps, reg_weight, seed), cfg)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    return loss.detach(), grads, stats


def assert_same_step(a, b) -> None:
    assert torch.equal(a[0], b[0]), (a[0], b[0])
    for index, (g, h) in enumerate(zip(a[1], b[1], strict=True)):
        assert torch.equal(g, h), f"gradient of parameter {index} differs"


# --- identities ---------------------------------------------------------------------------------


@pytest.mark.parametrize("reg_weight", [0.0, 0.3])
@pytest.mark.parametrize("adaptive", [False, True])
def test_mtl_ibp_at_alpha_1_and_sabr_at_lambda_1_are_ibp(reg_weight, adaptive):
    net, x, y = net_and_batch()
    interval = "acert" if adaptive else "ibp"
    ibp = step(interval, net, x, y, 0.05, config(), reg_weight)
    assert_same_step(
        step("mtl-ibp", net, x, y, 0.05, config(mtl_alpha=1.0, adaptive=adaptive), reg_weight), ibp
    )
    # SABR reads kappa as IBP does; MTL-IBP has no clean term to weigh.
    kappa = config(kappa=0.3)
    ibp = step(interval, net, x, y, 0.05, kappa, reg_weight)
    sabr = step(
        "sabr", net, x, y, 0.05, kappa.replace(sabr_lambda=1.0, adaptive=adaptive), reg_weight
    )
    assert_same_step(sabr, ibp)
    # and below the ends they are not IBP
    assert step("mtl-ibp", net, x, y, 0.05, config(mtl_alpha=0.9), reg_weight)[0] != ibp[0]
    assert step("sabr", net, x, y, 0.05, kappa.replace(sabr_lambda=0.9), reg_weight)[0] != ibp[0]


@pytest.mark.parametrize("reg_weight", [0.0, 0.3])
def test_crown_ibp_at_its_ibp_end_is_ibp(reg_weight):
    net, x, y = net_and_batch()
    cfg = config(kappa=0.2)
    for adaptive, interval in ((False, "ibp"), (True, "acert")):
        at_end = cfg.replace(adaptive=adaptive)
        ibp = step(interval, net, x, y, cfg.max_eps, cfg, reg_weight)
        assert_same_step(step("crown-ibp", net, x, y, cfg.max_eps, at_end, reg_weight), ibp)
    mid_ramp = step("crown-ibp", net, x, y, cfg.max_eps / 2, cfg, reg_weight)
    assert mid_ramp[0] != step("ibp", net, x, y, cfg.max_eps / 2, cfg, reg_weight)[0]


def test_crown_ibp_beta_falls_with_the_scheduled_eps_to_its_final_value():
    cfg = config(max_eps=0.4)
    assert [crown_ibp_beta(e, cfg) for e in (0.0, 0.1, 0.2, 0.4)] == [1.0, 0.75, 0.5, 0.0]
    half = cfg.replace(crown_ibp_final_beta=0.5)
    assert [crown_ibp_beta(e, half) for e in (0.0, 0.2, 0.4)] == [1.0, 0.75, 0.5]
    assert crown_ibp_beta(0.3, cfg.replace(crown_ibp_final_beta=1.0)) == 1.0


def test_mtl_ibp_at_alpha_0_is_pgd_training():
    net, x, y = net_and_batch()
    cfg = config(mtl_alpha=0.0, attack_steps=3, attack_step_size=0.5)
    mtl = step("mtl-ibp", net, x, y, 0.05, cfg, 0.0, seed=11)
    # PGD training from its parts: the clean batch's statistics, the attack, CE at its point.
    model = copy.deepcopy(net)
    _, stats = clean_forward(model, x)
    frozen = {i: (m.detach(), v.detach()) for i, (m, v) in stats.items()}

    def under(batch_stats):
        return lambda z: model[-1](propagate(model, z, None, bn_stats=batch_stats).center)

    point = training_attack(under(frozen), x, y, 0.05, steps=3, step_size=0.5, seed=11)
    loss = F.cross_entropy(under(stats)(point), y)
    loss.backward()
    assert_same_step(mtl, (loss.detach(), [p.grad for p in model.parameters()]))
    with torch.no_grad():
        assert loss > F.cross_entropy(under(stats)(x), y)  # the point is an attack


def _every_sample_certified(net, x):
    """Labels the net gets right and an eps every sample is IBP-certified at."""
    logits, stats = clean_forward(copy.deepcopy(net), x)
    y = logits.argmax(dim=1)
    with torch.no_grad():
        radii = certified_radius(net, x, y, cap=0.5, tol=1e-7, bn_stats=stats, clean_logits=logits)
    assert (radii > 0).all()
    return y, float(radii.min()) / 2


@pytest.mark.parametrize("reg_weight", [0.0, 0.3])
@pytest.mark.parametrize("method", ["ibp", *BOUND_METHODS])
def test_adaptive_radii_change_nothing_where_every_sample_is_certified(method, reg_weight):
    net, x, _ = net_and_batch(seed=3, conv_layers=1)
    y, eps = _every_sample_certified(net, x)
    cfg = config(max_eps=4 * eps, mtl_alpha=0.5, sabr_lambda=0.3, kappa=0.1)
    fixed_method, adaptive_method = ("ibp", "acert") if method == "ibp" else (method, method)
    fixed = step(fixed_method, net, x, y, eps, cfg, reg_weight)
    adaptive_cfg = cfg if method == "ibp" else cfg.replace(adaptive=True)
    adaptive = step(adaptive_method, net, x, y, eps, adaptive_cfg, reg_weight)
    assert_same_step(adaptive, fixed)
    assert adaptive[2]["radius"].item() == pytest.approx(fixed[2]["radius"].item())


def test_adaptive_radii_are_each_samples_own_below_the_scheduled_eps():
    # A misclassified sample trains at radius 0: its robust loss is its clean CE.
    net, x, y = net_and_batch(seed=3, conv_layers=1)
    for method in BOUND_METHODS:
        cfg = config(adaptive=True)
        adaptive = step(method, net, x, y, 0.08, cfg, 0.0)
        fixed = step(method, net, x, y, 0.08, cfg.replace(adaptive=False), 0.0)
        assert (
            0 < adaptive[2]["radius"].item() < fixed[2]["radius"].item() == pytest.approx(0.08 * 16)
        )
        assert adaptive[0] < fixed[0], method


def test_sabr_trains_each_sample_at_the_radius_its_small_box_is_certified():
    # SABR bounds a box lambda times the radius: its adaptive radius is the IBP radius / lambda
    # (the IBP radius itself trained SABR at almost nothing).
    net, x, y = net_and_batch(seed=3, conv_layers=1)
    box_ratio, eps = 0.3, 0.08
    cfg = config(adaptive=True, sabr_lambda=box_ratio)
    stats = step("sabr", net, x, y, eps, cfg, 0.0)[2]
    logits, bn_stats = clean_forward(copy.deepcopy(net), x)
    with torch.no_grad():
        ibp = certified_radius(
            net,
            x,
            y,
            cap=box_ratio * eps,
            tol=cfg.search_tol,
            max_iter=cfg.search_steps,
            bn_stats=bn_stats,
            clean_logits=logits,
        )
    assert 0 < ibp.sum() < box_ratio * eps * len(y)
    assert stats["radius"].item() == pytest.approx((ibp / box_ratio).sum().item(), rel=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_gradients_reach_every_parameter(method):
    net, x, y = net_and_batch()
    adaptive = [None] if METHOD_SPECS[method].adaptive != "option" else [False, True]
    for choice in adaptive:
        cfg = config(adaptive=choice, kappa=0.2)
        loss, grads, _ = step(method, net, x, y, 0.05, cfg, 0.3)
        assert torch.isfinite(loss)
        for index, grad in enumerate(grads):
            assert grad is not None and torch.isfinite(grad).all(), index
            assert grad.abs().sum() > 0, f"{method}: no gradient reaches parameter {index}"


# --- the declared knobs ---------------------------------------------------------------------------


class Recorder:
    """A config that records which fields are read."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg, self.read = cfg, set()

    def __getattr__(self, name: str):
        self.read.add(name)
        return getattr(self.cfg, name)


def test_each_method_reads_exactly_the_knobs_its_spec_declares():
    knobs = {f for spec in METHOD_SPECS.values() for a in (False, True) for f in spec.fields(a)}
    assert knobs <= set(TrainConfig.model_fields)
    net, x, y = net_and_batch()
    for name, spec in METHOD_SPECS.items():
        for adaptive in [None] if spec.adaptive != "option" else [False, True]:
            # mid-ramp, regularizers on, every mix strictly inside its ends: every branch runs
            recorder = Recorder(config(adaptive=adaptive, mtl_alpha=0.5, kappa=0.1))
            spec.loss(copy.deepcopy(net), StepInput(x, y, 0.05, 0.3, 0), recorder)
            declared = set(spec.fields(adaptive))
            # reg_weight reaches the loss scheduled by the trainer, as its argument
            assert (recorder.read & knobs) | ({"reg_weight"} & declared) == declared, name
            assert ("reg_weight" in declared) == ("reg_tol" in declared)
    assert METHOD_SPECS["standard"].fields() == ()
    assert set(METHOD_SPECS["acert"].fields()) == set(METHOD_SPECS["ibp"].fields()) | {
        "search_steps",
        "search_tol",
        "search_probes",
    }


@pytest.mark.parametrize(
    ("method", "adaptive", "fragment"),
    [
        ("ibp", True, "ibp with adaptive radii is acert"),
        ("acert", False, "for fixed radii use method ibp"),
        ("standard", True, "standard trains at no radius"),
    ],
)
def test_a_method_that_fixes_its_radii_refuses_the_other_choice(method, adaptive, fragment):
    with pytest.raises(UserError) as info:
        TrainConfig.from_dict({"dataset": "mnist", "method": method, "adaptive": adaptive})
    assert_one_line_error(info, "config: adaptive: ", fragment)


def test_adaptive_is_an_option_of_the_other_bound_methods_and_none_is_the_methods_choice():
    for method in BOUND_METHODS:
        for adaptive in (None, False, True):
            cfg = TrainConfig(dataset="mnist", method=method, adaptive=adaptive).resolve()
            assert cfg.adaptive is adaptive
            assert METHOD_SPECS[method].is_adaptive(adaptive) is bool(adaptive)
    assert METHOD_SPECS["acert"].is_adaptive(None) and not METHOD_SPECS["ibp"].is_adaptive(None)
    # None survives resolve, so a study can swap the method of a resolved config
    acert = TrainConfig(dataset="mnist").resolve()
    assert acert.method == "acert" and acert.replace(method="ibp").adaptive is None


# --- runs ----------------------------------------------------------------------------------------


def test_an_attack_method_repeats_exactly_and_resumes_where_it_would_have_gone(tmp_path):
    cfg = TrainConfig(
        dataset="synthetic",
        model="mlp",
        method="sabr",
        epochs=2,
        batch_size=64,
        max_eps=0.05,
        warmup_epochs=0,
        ramp_epochs=1,
        lr=1e-2,
        train_limit=256,
        val_limit=64,
        eval_limit=32,
        attack_steps=2,
        attack_step_size=0.5,
    )

    class Stop(Exception):
        pass

    def stop_after_one(metrics, _run_dir):
        if metrics["epoch"] == 1:
            raise Stop

    whole = train(cfg, tmp_path / "whole", device="cpu")
    again = train(cfg, device="cpu")
    with pytest.raises(Stop):
        train(cfg, tmp_path / "cut", callback=stop_after_one, device="cpu")
    resumed = train(cfg, tmp_path / "cut", resume=True, device="cpu")
    for other in (again, resumed):
        for a, b in zip(
            whole.model.state_dict().values(), other.model.state_dict().values(), strict=True
        ):
            assert torch.equal(a, b)
    other_seed = train(cfg.replace(seed=1), device="cpu")
    assert not torch.equal(other_seed.model[2].weight, whole.model[2].weight)


@pytest.mark.parametrize(
    "changes",
    [
        {"method": "mtl-ibp"},
        {"method": "sabr"},
        {"method": "crown-ibp"},
        {"method": "sabr", "adaptive": True},
    ],
    ids=["mtl-ibp", "sabr", "crown-ibp", "sabr-adaptive"],
)
def test_each_method_trains_on_mnist_to_certificates_pgd_cannot_break(
    shared_data, tmp_path, changes
):
    # The smoke preset, long enough at a radius for the methods to part ways (seconds).
    cfg = load_preset("mnist", "smoke").replace(
        epochs=4, ramp_epochs=2, max_eps=0.2, train_limit=1024, **changes
    )
    result = train(cfg, tmp_path / "run", data_dir=shared_data, download=False, device="cpu")
    assert result.status == "completed" and result.metrics[-1]["final"]
    # The same certification as every method's, with PGD checking every certified radius
    # (attack_split raises CertificateViolation on a flip inside one).
    certs, summary = certify_run(
        tmp_path / "run",
        "test",
        data_dir=shared_data,
        download=False,
        limit=200,
        attack=AttackSettings(steps=10, restarts=1, bisections=4),
        device="cpu",
    )
    assert summary["clean_acc"] > 0.5
    assert (certs.radii[certs.correct] > 0.05).sum() >= 20, "the certificates must claim something"
    assert summary["pgd_acc@0.3"] < summary["clean_acc"], "the attack must find flips"
