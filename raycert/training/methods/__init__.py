"""The training methods: what each one is, in one table (``METHOD_SPECS``).

Every method's loss has the signature ``loss(model, step, cfg) -> (loss, stats)`` (``LossFn``;
``step`` a ``StepInput``: the batch, the scheduled radius, the regularizers' weight and the
seed) and does exactly one clean forward, whose BatchNorm batch
statistics every bound and attack of the step reuses (``raycert.training.methods.batch``).
``stats`` holds detached per-batch sums (``correct``, ``radius``) that the trainer adds up
without a device sync. One module per method says which reference it follows and where it
differs: ``standard``, ``interval`` (``ibp``, ``acert``), ``mtl_ibp``, ``sabr``, ``crown_ibp``.

``MethodSpec.fields`` names the ``TrainConfig`` fields a method reads beyond those every method
shares (data, model, schedule, optimizer, evaluation): a study's search space makes each of
them conditional on the method, so no trial carries a dimension its method ignores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from raycert.training.config import METHODS
from raycert.training.methods.batch import (
    MIN_REG_EPS,
    LossFn,
    Stats,
    StepInput,
    adaptive_radii,
)
from raycert.training.methods.crown_ibp import crown_ibp_loss
from raycert.training.methods.interval import acert_loss, ibp_loss
from raycert.training.methods.mtl_ibp import mtl_ibp_loss
from raycert.training.methods.sabr import sabr_loss
from raycert.training.methods.standard import standard_loss
from raycert.training.methods.terms import ibp_regularizers, l1_penalty, robust_cross_entropy

__all__ = [
    "METHOD_SPECS",
    "MIN_REG_EPS",
    "LossFn",
    "StepInput",
    "MethodSpec",
    "Stats",
    "adaptive_radii",
    "ibp_regularizers",
    "l1_penalty",
    "robust_cross_entropy",
]

# The radius search of adaptive radii: read by a method whenever its radii are adaptive.
ADAPTIVE_FIELDS = ("search_steps", "search_tol", "search_probes")
# The bound-based methods' regularizers (``reg_weight`` reaches the loss scheduled by the loop).
REGULARIZER_FIELDS = ("reg_weight", "reg_tol")


@dataclass(frozen=True)
class MethodSpec:
    """A training method: its loss, the method knobs it reads, and its adaptive radii.

    ``adaptive`` is ``"option"`` where the config's ``adaptive`` chooses (None: off), or
    ``"always"`` / ``"never"`` where the method fixes it; ``refusal`` then says why the other
    choice is refused (and which method it is).
    """

    name: str
    loss: LossFn
    reads: tuple[str, ...]  # knobs read whatever the radii; see ``fields``
    adaptive: Literal["always", "never", "option"]
    refusal: str = ""

    def is_adaptive(self, adaptive: bool | None) -> bool:
        """Whether a config of this method with ``adaptive`` trains at adaptive radii."""
        if self.adaptive == "option":
            return bool(adaptive)
        return self.adaptive == "always"

    def fields(self, adaptive: bool | None = None) -> tuple[str, ...]:
        """The ``TrainConfig`` knobs a config of this method with ``adaptive`` reads:
        ``reads``, ``adaptive`` itself where it is an option, and the radius search's fields
        where the radii are adaptive."""
        option = ("adaptive",) if self.adaptive == "option" else ()
        search = ADAPTIVE_FIELDS if self.is_adaptive(adaptive) else ()
        return (*self.reads, *option, *search)

    def refuses(self, adaptive: bool) -> str:
        """Why this method cannot train with ``adaptive``, or "" when it can."""
        if self.adaptive == "option" or adaptive == (self.adaptive == "always"):
            return ""
        return self.refusal


METHOD_SPECS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec(
            "standard",
            standard_loss,
            (),
            "never",
            "standard trains at no radius: adaptive radii are for the bound-based methods",
        ),
        MethodSpec(
            "ibp",
            ibp_loss,
            ("kappa", *REGULARIZER_FIELDS),
            "never",
            "ibp with adaptive radii is acert: use method acert",
        ),
        MethodSpec(
            "acert",
            acert_loss,
            ("kappa", *REGULARIZER_FIELDS),
            "always",
            "acert is ibp at adaptive radii: for fixed radii use method ibp",
        ),
        MethodSpec(
            "mtl-ibp",
            mtl_ibp_loss,
            ("mtl_alpha", "attack_steps", "attack_step_size", *REGULARIZER_FIELDS),
            "option",
        ),
        MethodSpec(
            "sabr",
            sabr_loss,
            ("sabr_lambda", "attack_steps", "attack_step_size", "kappa", *REGULARIZER_FIELDS),
            "option",
        ),
        MethodSpec(
            "crown-ibp",
            crown_ibp_loss,
            ("crown_ibp_final_beta", "kappa", *REGULARIZER_FIELDS),
            "option",
        ),
    )
}
assert tuple(METHOD_SPECS) == METHODS, "raycert.training.config.METHODS and METHOD_SPECS differ"
