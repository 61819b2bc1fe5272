"""Spec files (``raycert/spec/presets/<dataset>.toml``): what a valid file yields, and a
one-line error naming the file and the key for each kind of mistake."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import assert_one_line_error

from raycert.errors import UserError
from raycert.spec import file as spec_module
from raycert.spec import load_preset, load_study_spec, parse_targets

PRESET = '[presets.smoke]\nmodel = "mlp"\nepochs = 2\n'
KAPPA = '[search.kappa]\ntype = "float"\nlow = 0.0\nhigh = 0.5\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "synthetic.toml"
    path.write_text(text)
    return path


def test_a_full_spec_file_is_read_once_into_typed_settings(tmp_path, monkeypatch):
    path = write(
        tmp_path,
        PRESET
        + '[search.max_eps]\ntype = "float"\nlow = "2/255"\nhigh = "8px"\n'
        + '[search.lr]\ntype = "log-float"\nlow = 1e-4\nhigh = 1e-2\n'
        + '[search.epochs]\ntype = "int"\nlow = 2\nhigh = 8\nstep = 2\n'
        + '[search.optimizer]\ntype = "categorical"\nchoices = ["adam", "sgd"]\n'
        + "[study]\ntargets = [0.9, 0.8, 0.9]\n"
        + "[study.smoke]\ntrials = 6\nasha = true\ngrace_period = 2\ntargets = [0.7]\n",
    )
    reads = []
    loads = spec_module.tomllib.loads
    monkeypatch.setattr(spec_module.tomllib, "loads", lambda text: reads.append(1) or loads(text))
    spec = load_study_spec("synthetic", "smoke", path)
    assert len(reads) == 1
    assert spec.base == load_preset("synthetic", "smoke", path)
    assert (spec.base.model, spec.base.epochs, spec.base.dataset) == ("mlp", 2, "synthetic")
    assert (spec.trials, spec.asha, spec.grace_period, spec.targets) == (6, True, 2, (0.7,))
    params = {p.name: p for p in spec.params}
    assert (params["max_eps"].low, params["max_eps"].high) == (2 / 255, 8 / 255)
    assert (params["lr"].type, params["epochs"].step) == ("log-float", 2)
    assert params["optimizer"].choices == ("adam", "sgd")
    assert spec.search_space["max_eps"] == {"type": "float", "low": 2 / 255, "high": 8 / 255}
    quick = load_study_spec(
        "synthetic",
        "quick",
        write(
            tmp_path, PRESET.replace("smoke", "quick") + KAPPA + "[study]\ntargets = [0.9, 0.8]\n"
        ),
    )
    assert quick.targets == (0.8, 0.9) and quick.trials is None and not quick.asha


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        (
            PRESET + KAPPA.replace("search", "serch"),
            ["serch: unknown key (did you mean 'search'?)"],
        ),
        (
            PRESET + KAPPA + "[stuff]\nx = 1\n",
            ["stuff: unknown key", "known keys: presets, search, methods, study"],
        ),
        (PRESET + KAPPA.replace("kappa", "kapa"), ["'kapa' is not a searchable", "'kappa'"]),
        (PRESET + KAPPA.replace("high", "hgih"), ["search.kappa.hgih: unknown key", "'high'"]),
        (PRESET + KAPPA.replace("high = 0.5", ""), ["search.kappa.high: missing"]),
        (PRESET + KAPPA.replace("0.0", "0.6"), ["search.kappa: low (0.6) must be below high"]),
        (PRESET + KAPPA.replace("0.5", "1.5"), ["search.kappa.high: ", "less than or equal to 1"]),
        (PRESET + KAPPA.replace('"float"', '"uniform"'), ["search.kappa: ", "'uniform'"]),
        (
            PRESET + KAPPA + "[study.smoke]\nasha = true\ngrace_period = 1\n",
            ["grace_period 1 lets ASHA rank trials before their radius ramp ends at epoch 2"],
        ),
        (PRESET + KAPPA + "[study.smoke]\nbudget = 10\n", ["budget: ", 'like "10m"']),
        (PRESET + KAPPA + '[study.smoke]\nbudget = "10"\n', ["cannot read duration '10'"]),
        (PRESET + KAPPA + '[study.smoke]\nsampler = "grid"\n', ["study.smoke.sampler", "'tpe'"]),
        (PRESET + KAPPA + "[study.smoke]\nrungs = [0.5, 0.25, 1.0]\n", ["increasing shares"]),
        (PRESET + KAPPA + "[study.smoke]\nrungs = [0.25, 0.5]\n", ["ending at 1"]),
        (PRESET + KAPPA + "[study.smoke]\neta = 1\n", ["study.smoke.eta: "]),
        (
            PRESET + KAPPA + "[study.smoke]\nasha = true\ngrace_period = 2\nrungs = [0.5, 1.0]\n",
            ["asha and rungs are two ways", "pick one"],
        ),
        (PRESET + KAPPA.replace("kappa", "epochs").replace("0.5", "4.0"), ["search.epochs.low"]),
        (PRESET + '[search.epochs]\ntype = "float"\nlow = 1\nhigh = 4\n', ["epochs refuses"]),
        (PRESET + '[search.lr]\ntype = "log-float"\nlow = 0\nhigh = 1\n', ["search.lr.low: "]),
        (PRESET + '[search.max_eps]\ntype = "float"\nlow = "2/0"\nhigh = 0.1\n', ["cannot read"]),
        (
            PRESET + '[search.optimizer]\ntype = "categorical"\nchoices = ["adam", "rmsprop"]\n',
            ["search.optimizer.choices: Input should be 'adam' or 'sgd'"],
        ),
        (PRESET + '[search.kappa]\ntype = "categorical"\nchoices = []\n', ["kappa.choices"]),
        (PRESET + KAPPA + "[study.smoke]\ntrails = 3\n", ["study.smoke.trails", "'trials'"]),
        (PRESET + KAPPA + "[study.smoke]\ntrials = 0\n", ["study.smoke.trials: ", "got 0"]),
        (PRESET + KAPPA + "[study]\ntargets = [90]\n", ["study.targets: target 90.0 is outside"]),
        (PRESET + KAPPA + "[study.huge]\ntrials = 3\n", ["study.huge: unknown key"]),
        (PRESET.replace("mlp", "resnet") + KAPPA, ["presets.smoke.model: ", "'resnet'"]),
        (PRESET + 'max_eps = "2/0"\n' + KAPPA, ["presets.smoke.max_eps: cannot read eps"]),
        (PRESET + 'dataset = "mnist"\n' + KAPPA, ["is for 'mnist', not 'synthetic'"]),
        (PRESET, ["has no [search] table"]),
        (
            PRESET + KAPPA + "[study.smoke]\nstarts = [{ lr = 1e-3 }]\n",
            ["study.smoke.starts[0].lr is not searched for acert (it searches kappa)"],
        ),
        (
            PRESET + KAPPA + "[study.smoke]\nstarts = [{ kappa = 0.9 }]\n",
            ["study.smoke.starts[0].kappa = 0.9 is outside [search.kappa]"],
        ),
        (PRESET + KAPPA + "[study.smoke]\nstarts = [{}]\n", ["starts[0] changes nothing"]),
        (PRESET + KAPPA + "[study.smoke]\nstarts = [{ kappa = 'x' }]\n", ["starts[0].kappa: "]),
        (
            PRESET + KAPPA + "[study.smoke]\npolish = { kapa = 0.8 }\n",
            ["study.smoke.polish: ", "'kapa' is not a field a fine-tuning", "'kappa'"],
        ),
        (
            PRESET + KAPPA + '[study.smoke]\npolish = { model = "cnn7" }\n',
            ["study.smoke.polish: 'model' is not a field a fine-tuning may change"],
        ),
        (PRESET + KAPPA + "[study.smoke]\npolish = { kappa = 2 }\n", ["polish: kappa: "]),
        ("[presets.smoke\n", ["cannot read"]),
    ],
)
def test_a_bad_spec_file_is_one_line_naming_the_file_and_key(tmp_path, text, fragments):
    path = write(tmp_path, text)
    with pytest.raises(UserError) as info:
        load_study_spec("synthetic", "smoke", path)
    assert_one_line_error(info, str(path), *fragments)


def test_targets_from_the_command_line_are_checked_like_the_file(tmp_path):
    assert parse_targets([0.9, 0.5, 0.9], "--min-acc") == (0.5, 0.9)
    with pytest.raises(UserError) as info:
        parse_targets([0.9, 1.5], "--min-acc")
    assert_one_line_error(info, "--min-acc: target 1.5 is outside (0, 1); write 0.9 for 90%")


def test_the_recipe_is_the_presets_values_that_the_search_space_holds(tmp_path):
    search = (
        KAPPA
        + '[search.lr]\ntype = "log-float"\nlow = 1e-2\nhigh = 1e-1\n'
        + '[search.optimizer]\ntype = "categorical"\nchoices = ["adam"]\n'
    )
    spec = load_study_spec("synthetic", "smoke", write(tmp_path, PRESET + "lr = 5e-3\n" + search))
    assert spec.recipe == {"kappa": 0.0, "optimizer": "adam"}  # lr 5e-3 is outside: sampled


def test_a_baseline_study_names_its_sampler_and_skips_the_recipe(tmp_path):
    study = '[study.smoke]\nsampler = "random"\nrecipe_first = false\n'
    spec = load_study_spec("synthetic", "smoke", write(tmp_path, PRESET + KAPPA + study))
    assert (spec.sampler, spec.recipe_first) == ("random", False)
    default = load_study_spec("synthetic", "smoke", write(tmp_path, PRESET + KAPPA))
    assert (default.sampler, default.recipe_first) == ("tpe", True)


def test_polish_holds_training_changes_read_by_the_fields_rules(tmp_path):
    study = '[study.smoke]\npolish = { kappa = 0.8, max_eps = "2/255", epochs = 2 }\n'
    spec = load_study_spec("synthetic", "smoke", write(tmp_path, PRESET + KAPPA + study))
    assert spec.polish == {"kappa": 0.8, "max_eps": 2 / 255, "epochs": 2}
    assert load_study_spec("synthetic", "smoke", write(tmp_path, PRESET + KAPPA)).polish is None


def test_starts_follow_the_recipe_as_the_recipe_with_their_fields_changed(tmp_path):
    eps = '[search.max_eps]\ntype = "float"\nlow = "1/255"\nhigh = "8/255"\n'
    study = '[study.smoke]\nstarts = [{ max_eps = "2/255" }, { kappa = 0.5, max_eps = 0.01 }]\n'
    path = write(tmp_path, PRESET + 'max_eps = "4/255"\n' + KAPPA + eps + study)
    spec = load_study_spec("synthetic", "smoke", path)
    assert spec.known_points == [
        {"kappa": 0.0, "max_eps": 4 / 255},
        {"kappa": 0.0, "max_eps": 2 / 255},  # read by the field's rule: pixel units
        {"kappa": 0.5, "max_eps": 0.01},
    ]
    baseline = study + "recipe_first = false\n"
    path = write(tmp_path, PRESET + 'max_eps = "4/255"\n' + KAPPA + eps + baseline)
    assert load_study_spec("synthetic", "smoke", path).known_points == []
