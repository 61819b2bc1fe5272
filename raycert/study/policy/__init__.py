"""The decisions a study makes, as plain functions of plain values: it imports neither Ray nor
Optuna (``tests/test_imports.py`` checks), so every rule is tested with direct calls.

Modules, one line each:
- ``plan``: a request checked and described before Ray starts (``StudyRequest``, ``plan``);
- ``budget``: the wall-clock budget (``Clock``: what fits, when trials stop, the reserve);
- ``fidelity``: multi-fidelity rungs (``shortened`` runs, which run is promoted);
- ``polish``: the budget's end (which front run is fine-tuned next, and how: ``polished``);
- ``racing``: which method a new configuration of a study of several methods tries;
- ``search``: the searcher's next step (a known point, a promotion, a new trial, a polish).
"""
