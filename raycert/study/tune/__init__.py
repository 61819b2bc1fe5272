"""The Ray Tune + Optuna adapter: it runs a study and applies ``raycert.study.policy``'s rules.

Modules, one line each:
- ``run``: ``run_study``, from the checked request to the finished study folder;
- ``searcher``: Optuna under the accuracy constraint, acting on the policy's next step;
- ``stopper``: the budget clock lent to the searcher and the stopper (``BudgetStopper``);
- ``trial``: one trial's training on a worker, and the winners' test certification;
- ``outcome``: the final trials table, the winners chosen and certified, study.json's end;
- ``trials``: Tune's trials as rows of the trials table, kept current (``TrialsWriter``);
- ``state``: Tune's experiment state in the study folder (backup, repair, extension);
- ``failures``: why a trial failed, and a stop on a user's mistake;
- ``cluster``: connecting to Ray and fitting a trial's resources to it;
- ``lock``: one driver per study;
- ``storage``: the study storage checked writable before Ray starts.
"""
