"""Training: the typed config, each method's loss, the eps schedule, the loop, the run folder.

Modules, one line each:
- ``config``: ``TrainConfig``, every field with its default and rule;
- ``schedule``: the training radius over the run and the regularizer weight;
- ``methods``: the table of training methods (standard, IBP, ACERT, MTL-IBP, SABR, CROWN-IBP),
  one module per method, and the terms and batch passes their losses share;
- ``loop``: ``train``, one loop for every method;
- ``rundir``: the run folder (checkpoints, metrics, ``load_run``);
- ``evaluation``: the per-epoch val check and ``certify_run``.
"""
