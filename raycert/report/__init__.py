"""The offline HTML report of persisted studies.

It reads study folders through ``raycert.studyfolder`` only and imports neither torch nor ray.
Modules, one line each:
- ``page``: ``build_report``, one self-contained HTML page for one or more studies;
- ``figures``: the Plotly figures (fronts, certified accuracy, search progress);
- ``reading``: a study folder read for the report, and its hyperparameters ranked.
"""
