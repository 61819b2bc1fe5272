"""The files of a study under ``<storage>/<name>/``: one typed contract for the study that writes
them and the report that reads them.

- ``study.json`` (``StudyMeta``): settings, search space, hardware, versions, times, status and
  the trial counts per status.
- ``trials.parquet`` and ``trials.csv``: one row per finished trial (``TrialRow``), in columns
  ``TRIAL_COLUMNS``, ``param.<name>``, the final val metrics, ``feasible@<target>``, ``pareto``
  and ``run_dir`` (``trials_table`` writes them, ``read_trials`` checks them).
- ``results.json`` (``TargetResult`` per target): the chosen trial with its val and test
  metrics, or ``met: false`` and the closest trial.
- ``chosen/<target>/``: the chosen run, ``test_metrics.json`` (``Metrics``) and
  ``test_radii.csv`` (``SampleRadii``: per test sample the certified radius, the radius after
  each verifier stage and, when the study attacked, PGD's empirical radius).
- ``optuna.journal`` (Optuna's journal, opened only by ``journal_storage``) and
  ``tune/`` (Ray Tune's experiment).

The rules that read the table live here too, once: ``is_completed`` (a trial that ran to the end
with finite accuracy and ACR), the ``feasible@<target>`` columns (completed and accurate enough),
the ``pareto`` column (on the (clean_acc, acr) front of completed trials) and ``choose`` (the
winner per target). The table is rewritten whenever a trial finishes, so a running or
interrupted study can be read too. A file that is missing, corrupt or of another shape is a
one-line ``UserError`` naming it.

Storage is a local or shared path, or a URI (``s3://...``) read and written through
``pyarrow.fs``. Optuna's journal needs a local file: on a URI it lives in a local cache and is
copied to the study directory when the study stops. Nothing here imports torch or ray.

Modules, one line each (import from the package):
- ``records``: the typed records and column names;
- ``folder``: ``StudyDir``, the file names, the JSON records and test outcomes;
- ``trials``: the trials table and its rules;
- ``pareto``: Pareto fronts (``pareto_mask``) and ranks (``pareto_ranks``);
- ``journal``: Optuna's journal, and its repair after a crash.
"""

from raycert.studyfolder.folder import (
    CHOSEN,
    JOURNAL,
    RESULTS_JSON,
    STUDY_JSON,
    TEST_METRICS_JSON,
    TEST_RADII_CSV,
    TRIALS_CSV,
    TRIALS_PARQUET,
    TUNE_DIR,
    TUNE_STATE_BACKUP,
    StudyDir,
    read_meta,
    read_results,
    read_test_metrics,
    read_test_radii,
    write_meta,
    write_results,
    write_test,
)
from raycert.studyfolder.journal import (
    fail_stale_trials,
    journal_storage,
    optuna_numbers,
    optuna_study,
    repair_journal,
)
from raycert.studyfolder.pareto import pareto_mask, pareto_ranks
from raycert.studyfolder.records import (
    FIDELITY,
    METRIC_COLUMNS,
    PARETO,
    PGD_COLUMN,
    POLISHED_FROM,
    RADII_COLUMNS,
    STAGE_PREFIX,
    TRIAL_COLUMNS,
    TRIAL_STATUSES,
    ClosestTrial,
    Hardware,
    Metrics,
    SampleRadii,
    StudyMeta,
    TargetResult,
    TrialError,
    TrialResources,
    TrialRow,
    feasible_column,
    target_label,
)
from raycert.studyfolder.trials import (
    choose,
    is_completed,
    read_trials,
    trial_counts,
    trial_row,
    trial_status,
    trials_table,
    unmet,
    won,
    write_trials,
)

__all__ = [
    "FIDELITY",
    "POLISHED_FROM",
    "CHOSEN",
    "JOURNAL",
    "METRIC_COLUMNS",
    "PARETO",
    "PGD_COLUMN",
    "RADII_COLUMNS",
    "RESULTS_JSON",
    "STAGE_PREFIX",
    "STUDY_JSON",
    "TEST_METRICS_JSON",
    "TEST_RADII_CSV",
    "TRIALS_CSV",
    "TRIALS_PARQUET",
    "TRIAL_COLUMNS",
    "TRIAL_STATUSES",
    "TUNE_DIR",
    "TUNE_STATE_BACKUP",
    "ClosestTrial",
    "Hardware",
    "Metrics",
    "SampleRadii",
    "StudyDir",
    "StudyMeta",
    "TargetResult",
    "TrialError",
    "TrialResources",
    "TrialRow",
    "choose",
    "fail_stale_trials",
    "feasible_column",
    "is_completed",
    "journal_storage",
    "optuna_numbers",
    "optuna_study",
    "pareto_mask",
    "pareto_ranks",
    "read_meta",
    "read_results",
    "read_test_metrics",
    "read_test_radii",
    "read_trials",
    "repair_journal",
    "target_label",
    "trial_counts",
    "trial_row",
    "trial_status",
    "trials_table",
    "unmet",
    "won",
    "write_meta",
    "write_results",
    "write_test",
    "write_trials",
]
