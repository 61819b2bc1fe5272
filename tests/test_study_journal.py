"""A study whose Optuna journal a crash damaged resumes from its whole records; one that cannot
be read gives one error line, and the study's table stays readable."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pandas as pd
import pytest
from studyruns import journal_study, toy, toy_request

from raycert.errors import UserError
from raycert.study.tune.run import run_study

DAMAGE = {
    "last byte cut": lambda data: data[:-1],
    "last record half cut": lambda data: data[: data.rindex(b"\n", 0, -1) + 9],
    "cut halfway": lambda data: data[: len(data) // 2],
    "bytes appended": lambda data: data + b"\xff\xfe\x00 not a record",
    "a foreign line appended": lambda data: data + b'{"hello": 1}\n',
}


@pytest.fixture(scope="module")
def finished(ray_local, tmp_path_factory):
    """A finished toy study of 3 trials and its journal's bytes."""
    tmp_path = tmp_path_factory.mktemp("journal")
    request = toy_request(tmp_path, "journal", (0.8,), trials=3)
    result = run_study(request, trainable=toy, progress=False)
    return request, Path(result.study_dir)


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_journal_is_cut_to_its_whole_records_and_the_study_resumes(
    finished, tmp_path, damage, capsys
):
    request, original = finished
    study_dir = tmp_path / "journal"
    shutil.copytree(original, study_dir)
    journal = study_dir / "optuna.journal"
    whole = journal.read_bytes()
    journal.write_bytes(DAMAGE[damage](whole))
    damaged = journal.read_bytes()

    again = dataclasses.replace(request, storage=str(tmp_path), trials=5, resume=True)
    result = run_study(again, trainable=toy, progress=False)

    assert result.status == "finished"
    table = pd.read_csv(study_dir / "trials.csv")
    assert len(table) == 5 and table["trial_id"].is_unique
    assert (study_dir / "optuna.journal.damaged").read_bytes() == damaged  # every byte kept
    assert journal.read_bytes().startswith(damaged[: len(damaged) // 2 - 200])
    assert len(journal_study(study_dir, "journal").trials) >= 2
    lines = [line for line in capsys.readouterr().err.splitlines() if "optuna.journal" in line]
    assert len(lines) == 1 and "dropped its last" in lines[0], lines


@pytest.mark.parametrize("damage", ["deleted", "nothing readable"])
def test_a_journal_that_cannot_be_read_is_one_error_and_the_table_stays(finished, tmp_path, damage):
    request, original = finished
    study_dir = tmp_path / "journal"
    shutil.copytree(original, study_dir)
    journal = study_dir / "optuna.journal"
    if damage == "deleted":
        journal.unlink()
    else:
        journal.write_bytes(b"\x00" * 300)
    table = (study_dir / "trials.csv").read_bytes()

    again = dataclasses.replace(request, storage=str(tmp_path), trials=5, resume=True)
    with pytest.raises(UserError) as error:
        run_study(again, trainable=toy, progress=False)

    message = str(error.value)
    assert "\n" not in message and str(journal) in message and "another --name" in message
    assert (study_dir / "trials.csv").read_bytes() == table
    assert len(pd.read_parquet(study_dir / "trials.parquet")) == 3
