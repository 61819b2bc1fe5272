"""Studies: Optuna searches a spec's space, Ray Tune runs the trials, the best feasible model wins.

Two subpackages, one way: ``tune`` imports ``policy``, never the reverse.
- ``policy``: the decisions a study makes (plan, budget, fidelity, polish, the next step), as
  plain functions of plain values; it imports neither Ray nor Optuna.
- ``tune``: the thin Ray Tune + Optuna adapter that runs them (``tune.run.run_study``).

Importing this package imports nothing: Ray loads with ``tune.run``.
"""
