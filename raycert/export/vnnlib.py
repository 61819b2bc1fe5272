"""One sample's L-inf robustness as a VNN-LIB 1.0 property, the format VNN-COMP's verifiers
read.

The inputs ``X_0 .. X_{n-1}`` are the image flattened in (channel, row, column) order, as the
exported network's input ``[1, C, H, W]`` lays them out; the outputs ``Y_0 .. Y_{k-1}`` are its
logits. The property states the negation of robustness: some input in the box
``[max(x - r, 0), min(x + r, 1)]`` has some class ``j != y`` with ``Y_j >= Y_y``. A verifier that
proves it unsatisfiable proves the network robust on the box; a satisfying input is a
counterexample.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RobustnessProperty:
    """Sample ``sample`` of the test split: ``image`` (C, H, W) in [0, 1], its ``label``, the L-inf
    ``radius`` in pixel units and the network's ``num_classes``."""

    sample: int
    image: np.ndarray
    label: int
    radius: float
    num_classes: int

    def box(self) -> tuple[np.ndarray, np.ndarray]:
        """The flattened input box (lower, upper), clipped to [0, 1], in float64."""
        x = np.asarray(self.image, dtype=np.float64).reshape(-1)
        return np.clip(x - self.radius, 0.0, 1.0), np.clip(x + self.radius, 0.0, 1.0)

    def text(self) -> str:
        """The property as VNN-LIB 1.0."""
        lower, upper = self.box()
        lines = [
            f"; raycert: test sample {self.sample}, label {self.label}, L-inf radius "
            f"{_number(self.radius)} around the image, clipped to [0, 1]",
            "; unsatisfiable = robust: no input in the box makes another class's logit reach",
            "; the label's",
        ]
        lines += [f"(declare-const X_{i} Real)" for i in range(len(lower))]
        lines += [f"(declare-const Y_{j} Real)" for j in range(self.num_classes)]
        for i, (lo, hi) in enumerate(zip(lower, upper, strict=True)):
            lines.append(f"(assert (>= X_{i} {_number(lo)}))")
            lines.append(f"(assert (<= X_{i} {_number(hi)}))")
        others = [j for j in range(self.num_classes) if j != self.label]
        lines.append("(assert (or")
        lines += [f"    (and (>= Y_{j} Y_{self.label}))" for j in others]
        lines.append("))")
        return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    """A decimal numeral without an exponent (SMT-LIB has none) that reads back as ``value``."""
    return np.format_float_positional(float(value), unique=True, trim="0")
