"""Training: the typed config, each method's loss, the eps schedule, the loop, the run folder.

``config`` (``TrainConfig``), ``schedule`` (scheduled eps and regularizer weight), ``methods``
(standard, IBP and ACERT losses), ``loop`` (``train``), ``rundir`` (checkpoints, ``load_run``),
``evaluation`` (val checks, ``certify_run``).
"""
