"""The training methods in spec files and plans (no Ray): which knobs each method's trials carry,
each method's recipe as a start, the ``[methods.<method>]`` tables' rules as one-line errors,
``--method`` lists and ``all``, and the define-by-run space that draws them from Optuna."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import optuna
import pytest
from helpers import assert_one_line_error

from raycert.errors import UserError
from raycert.spec import PRESETS_DIR, STUDY_METHODS, load_study_spec
from raycert.study.policy.plan import StudyRequest, plan
from raycert.study.tune.space import MethodSpace
from raycert.training.config import TrainConfig
from raycert.training.methods import METHOD_SPECS

PRESET = '[presets.smoke]\nmodel = "mlp"\nepochs = 2\nkappa = 0.2\n'
SHARED = (
    '[search.lr]\ntype = "log-float"\nlow = 1e-3\nhigh = 1e-2\n'
    '[search.kappa]\ntype = "float"\nlow = 0.0\nhigh = 0.9\n'
    '[search.adaptive]\ntype = "categorical"\nchoices = [false, true]\n'
    '[search.attack_steps]\ntype = "int"\nlow = 1\nhigh = 4\n'
    '[search.search_steps]\ntype = "int"\nlow = 2\nhigh = 12\n'
)
SABR = (
    '[methods.sabr.search.sabr_lambda]\ntype = "float"\nlow = 0.1\nhigh = 1.0\n'
    "[methods.sabr.recipe]\nsabr_lambda = 0.6\nattack_steps = 3\nadaptive = true\n"
)
MTL = '[methods.mtl-ibp.search.mtl_alpha]\ntype = "log-float"\nlow = 0.01\nhigh = 1.0\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "synthetic.toml"
    path.write_text(text)
    return path


def with_methods(spec, *methods: str):
    return dataclasses.replace(spec, methods=methods)


def test_each_method_carries_the_knobs_it_reads_and_its_own(tmp_path):
    spec = load_study_spec("synthetic", "smoke", write(tmp_path, PRESET + SHARED + SABR + MTL))

    def names(method: str, adaptive: bool) -> list[str]:
        return [p.name for p in spec.knobs(method, adaptive)]

    assert names("acert", False) == ["lr", "kappa", "search_steps"]  # always adaptive
    assert names("ibp", True) == ["lr", "kappa"]  # never adaptive, and no attack
    assert names("mtl-ibp", False) == ["lr", "adaptive", "attack_steps", "mtl_alpha"]  # no kappa
    assert names("sabr", False) == ["lr", "kappa", "adaptive", "attack_steps", "sabr_lambda"]
    assert names("sabr", True) == [*names("sabr", False)[:4], "search_steps", "sabr_lambda"]
    assert names("crown-ibp", False) == ["lr", "kappa", "adaptive"]
    for method in STUDY_METHODS:  # a trial never carries a field its method ignores
        for adaptive in (False, True):
            read = set(METHOD_SPECS[method].fields(adaptive)) | {"lr"}
            assert set(names(method, adaptive)) <= read


def test_study_json_names_the_methods_carrying_each_knob(tmp_path):
    spec = load_study_spec("synthetic", "smoke", write(tmp_path, PRESET + SHARED + SABR + MTL))
    alone = spec.search_space  # acert alone: its knobs, no method, no other method's
    assert list(alone) == ["lr", "kappa", "search_steps"] and "methods" not in alone["kappa"]
    space = with_methods(spec, "acert", "ibp", "sabr").search_space
    assert space["method"] == {"type": "categorical", "choices": ["acert", "ibp", "sabr"]}
    assert "methods" not in space["lr"] and "methods" not in space["kappa"]
    assert space["adaptive"]["methods"] == ["sabr"]
    assert space["search_steps"]["methods"] == ["acert", "sabr"]
    assert space["sabr_lambda"] == {"type": "float", "low": 0.1, "high": 1.0, "methods": ["sabr"]}
    assert "mtl_alpha" not in space  # mtl-ibp is not searched


def test_each_methods_recipe_is_a_start_then_the_starts(tmp_path):
    study = (
        '[study.smoke]\nstarts = [{ kappa = 0.5 }, { method = "sabr", sabr_lambda = 0.3 }, '
        '{ method = "mtl-ibp", mtl_alpha = 0.1 }]\n'
    )
    path = write(tmp_path, PRESET + "lr = 5e-3\n" + SHARED + SABR + MTL + study)
    spec = with_methods(load_study_spec("synthetic", "smoke", path), "acert", "sabr", "ibp")
    acert = {"method": "acert", "lr": 5e-3, "kappa": 0.2, "search_steps": 10}
    sabr = {"method": "sabr", "lr": 5e-3, "kappa": 0.2, "adaptive": True, "attack_steps": 3}
    sabr |= {"search_steps": 10, "sabr_lambda": 0.6}  # adaptive (its recipe): the search's
    ibp = {"method": "ibp", "lr": 5e-3, "kappa": 0.2}
    assert spec.known_points == [
        acert,
        sabr,
        ibp,
        {**acert, "kappa": 0.5},  # a start without a method changes the first method's recipe
        {**sabr, "sabr_lambda": 0.3},
    ]  # mtl-ibp's start is left out: the study does not search mtl-ibp
    alone = load_study_spec("synthetic", "smoke", path)  # the preset's method alone
    assert alone.known_points[:2] == [
        {"lr": 5e-3, "kappa": 0.2, "search_steps": 10},
        {"lr": 5e-3, "kappa": 0.5, "search_steps": 10},
    ]
    mtl = with_methods(alone, "mtl-ibp").recipe  # no recipe table: the base's, adaptive off
    assert mtl == {"lr": 5e-3, "adaptive": False, "attack_steps": 1, "mtl_alpha": 0.5}


@pytest.mark.parametrize("dataset", ["mnist", "cifar10", "tinyimagenet", "synthetic"])
def test_every_shipped_recipe_is_a_start_inside_its_space(dataset):
    for preset in ("quick", "paper") if dataset != "synthetic" else ("smoke", "quick"):
        spec = with_methods(load_study_spec(dataset, preset), *STUDY_METHODS)
        points = spec.known_points
        assert [p["method"] for p in points[: len(STUDY_METHODS)]] == list(STUDY_METHODS)
        for point in points:
            method = point["method"]
            config = TrainConfig.from_dict({**spec.base.to_dict(), **point})  # a valid config
            assert config.method == method
            knobs = {p.name: p for p in spec.knobs(method, True)}
            for key, value in point.items():
                assert key == "method" or knobs[key].holds(value), (dataset, method, key)
        assert spec.recipe_of("sabr")["sabr_lambda"] == spec.recipes["sabr"]["sabr_lambda"]


def test_cifar10_and_tinyimagenet_spaces_reach_the_accuracy_end():
    for dataset in ("cifar10", "tinyimagenet"):
        spec = load_study_spec(dataset, "paper")
        space = spec.search_space
        assert space["kappa"]["high"] >= 0.95
        cap = spec.base.resolve().cert_cap
        assert space["max_eps"]["high"] == pytest.approx(1.1 * cap, rel=0.02)
    assert max(load_study_spec("cifar10", "paper").targets) >= 0.87  # ACERT's 87.0% point


BAD = [
    (
        '[methods.sabrr.search.sabr_lambda]\ntype = "float"\nlow = 0.1\nhigh = 1.0\n',
        ["methods: 'sabrr' is not a method a study searches (did you mean 'sabr'?)"],
    ),
    (
        '[methods.sabr.search.mtl_alpha]\ntype = "float"\nlow = 0.1\nhigh = 1.0\n',
        ["methods.sabr.search: sabr does not read mtl_alpha (its own knobs: sabr_lambda, "],
    ),
    (
        '[methods.acert.search.adaptive]\ntype = "categorical"\nchoices = [true]\n',
        ["methods.acert.search: acert does not read adaptive"],
    ),
    (
        '[methods.sabr.search.kappa]\ntype = "float"\nlow = 0.1\nhigh = 0.5\n',
        ["[methods.sabr.search.kappa] declares kappa again, after [search.kappa]"],
    ),
    (
        MTL.replace("mtl-ibp", "crown-ibp").replace("mtl_alpha", "crown_ibp_final_beta")
        + MTL.replace("mtl-ibp", "sabr").replace("mtl_alpha", "crown_ibp_final_beta"),
        ["methods.sabr.search: sabr does not read crown_ibp_final_beta"],
    ),
    (
        '[methods.sabr.search.sabr_lambda]\ntype = "float"\nlow = 0.1\nhigh = 1.5\n',
        ["methods.sabr.search.sabr_lambda.high: ", "less than or equal to 1"],
    ),
    (
        SABR.replace("sabr_lambda = 0.6", "sabr_lambda = 0.05"),
        ["methods.sabr.recipe.sabr_lambda = 0.05 is outside [methods.sabr.search.sabr_lambda]"],
    ),
    (
        SABR.replace("attack_steps = 3", "attack_steps = 9"),
        ["methods.sabr.recipe.attack_steps = 9 is outside [search.attack_steps]"],
    ),
    (
        "[methods.ibp.recipe]\nreg_weight = 0.3\n",
        ["methods.ibp.recipe.reg_weight is not searched for ibp (it searches lr, kappa)"],
    ),
    ("[methods.mtl-ibp.recipe]\nkappa = 0.3\n", ["methods.mtl-ibp.recipe: mtl-ibp does not read"]),
    ("[methods.sabr.recipe]\nsabr_lambda = 2\n", ["methods.sabr.recipe: sabr_lambda: "]),
    ("[methods.sabr.recipes]\nkappa = 0.3\n", ["methods.sabr.recipes: unknown key", "'recipe'"]),
    (
        '[search.method]\ntype = "categorical"\nchoices = ["acert", "ibp"]\n',
        ["search: 'method' is searched with --method"],
    ),
    (
        '[study.smoke]\nstarts = [{ method = "standard", kappa = 0.1 }]\n',
        ["study.smoke.starts[0].method: 'standard' is not a method a study searches"],
    ),
    (
        "[study.smoke]\nstarts = [{ attack_steps = 2 }]\n",
        ["study.smoke.starts[0].attack_steps is not searched for acert"],
    ),
    ('[study.smoke]\nstarts = [{ method = "sabr" }]\n', ["starts[0] changes nothing"]),
]


@pytest.mark.parametrize(("text", "fragments"), BAD)
def test_a_bad_method_table_is_one_line_naming_the_file_and_key(tmp_path, text, fragments):
    path = write(tmp_path, PRESET + SHARED + text)
    with pytest.raises(UserError) as info:
        load_study_spec("synthetic", "smoke", path)
    assert_one_line_error(info, str(path), *fragments)


def request(tmp_path: Path, method: str, spec: Path | None = None) -> StudyRequest:
    return StudyRequest(
        dataset="synthetic",
        method=method,
        preset="smoke",
        storage=str(tmp_path / "runs"),
        spec=None if spec is None else str(spec),
    )


def test_method_all_searches_every_study_method_the_presets_first(tmp_path):
    spec, meta = plan(request(tmp_path, "all"))
    assert spec.study_methods == ("acert", "ibp", "mtl-ibp", "sabr", "crown-ibp")
    assert meta.name == "synthetic-all-smoke" and meta.method == ",".join(STUDY_METHODS)
    assert meta.search_space["method"]["choices"] == list(STUDY_METHODS)
    assert meta.trial_params()[0] == "method"  # the trials table's first parameter column
    preset = write(
        tmp_path,
        (PRESETS_DIR / "synthetic.toml")
        .read_text()
        .replace('method = "acert"', 'method = "sabr"', 1),
    )
    spec, meta = plan(request(tmp_path, "all", preset))
    assert spec.study_methods[0] == "sabr" and spec.base.method == "sabr"
    assert spec.base.adaptive is None  # each method's own choice (or searched)
    spec, meta = plan(request(tmp_path, "mtl-ibp,crown-ibp"))
    assert meta.name == "synthetic-mtl-ibp-crown-ibp-smoke" and spec.base.method == "mtl-ibp"
    assert "kappa" in meta.search_space and meta.search_space["kappa"]["methods"] == ["crown-ibp"]


@pytest.mark.parametrize(
    ("method", "fragments"),
    [
        ("pgd", ["unknown study method 'pgd' in --method 'pgd'", "or all"]),
        ("acert,standard", ["unknown study method 'standard'"]),
        ("sabr,sabr", ["--method 'sabr,sabr' names a method twice"]),
    ],
)
def test_a_bad_method_list_is_one_line(tmp_path, method, fragments):
    with pytest.raises(UserError) as info:
        plan(request(tmp_path, method))
    assert_one_line_error(info, *fragments)


def test_the_define_by_run_space_draws_each_trials_methods_knobs_and_pickles(tmp_path):
    path = write(tmp_path, PRESET + SHARED + SABR + MTL)
    spec = with_methods(load_study_spec("synthetic", "smoke", path), "acert", "mtl-ibp", "sabr")
    space = pickle.loads(pickle.dumps(MethodSpace(spec)))  # what Tune's state holds
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for point in spec.known_points:
        study.enqueue_trial(point)
    drawn = []
    for _ in range(40):
        trial = study.ask()
        space(trial)
        drawn.append(trial.params)
        study.tell(trial, 0.0)
    assert drawn[: len(spec.known_points)] == spec.known_points  # the recipes come first
    seen = set()
    for params in drawn:
        method = params["method"]
        adaptive = params.get("adaptive", method == "acert")
        expected = {p.name for p in spec.knobs(method, adaptive)} | {"method"}
        assert set(params) == expected, params  # exactly its method's knobs
        seen.add((method, adaptive))
    assert seen == {
        ("acert", True),
        ("mtl-ibp", False),
        ("mtl-ibp", True),
        ("sabr", False),
        ("sabr", True),
    }
