"""Studies: Optuna searches a spec's space, Ray Tune runs the trials, the best feasible model wins.

``spec`` (spec files: presets, search space, study settings), ``run`` (``run_study``),
``searcher`` (Optuna under an accuracy constraint), ``trial`` (one trial), ``cluster`` (Ray),
``tune_trials`` and ``tune_state`` (Tune's records in the study folder). Importing this package
imports nothing: Ray loads with ``run``.
"""
