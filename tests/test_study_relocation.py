"""A study folder is relocatable: a copy or a move resumes in place and never touches another
folder (every path it writes is relative to the folder, and Tune's state is re-pointed)."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from pathlib import Path

import pandas as pd
from studyruns import journal_study

from raycert.study.tune.run import StudyRequest, run_study


def _fingerprint(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` and the hash of its bytes."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def _request(tmp_path: Path, name: str) -> StudyRequest:
    """Two real trials of the synthetic smoke preset, two at a time, under ``tmp_path/runs``."""
    return StudyRequest(
        dataset="synthetic",
        targets=(0.5,),
        preset="smoke",
        trials=2,
        concurrency=2,
        gpus_per_trial=0,
        storage=str(tmp_path / "runs"),
        name=name,
    )


def _grown(request: StudyRequest, study_dir: Path, trials: int):
    """Resume the study now at ``study_dir`` (same name) to ``trials`` trials."""
    moved = dataclasses.replace(request, storage=str(study_dir.parent), trials=trials, resume=True)
    result = run_study(moved, progress=False)
    assert Path(result.study_dir) == study_dir
    return result


def test_a_copied_study_resumes_in_the_copy_and_leaves_the_original_untouched(ray_local, tmp_path):
    request = _request(tmp_path, "orig")
    first = run_study(request, progress=False)
    original = Path(first.study_dir)
    before = _fingerprint(original.parent)

    copy = tmp_path / "copies" / "orig"
    shutil.copytree(original, copy)
    result = _grown(request, copy, trials=3)

    assert _fingerprint(original.parent) == before  # not a byte of the original changed
    table = pd.read_csv(copy / "trials.csv")
    assert result.status == "finished" and len(table) == 3 and table["trial_id"].is_unique
    assert len(journal_study(copy, "orig").trials) == 3
    # Every checkpoint the copy's table names lies in the copy, relative to it.
    assert all(not Path(p).is_absolute() and (copy / p).is_dir() for p in table["run_dir"])
    assert str(original) not in (copy / "trials.csv").read_text()


def test_a_moved_study_resumes_where_it_now_lies(ray_local, tmp_path):
    request = _request(tmp_path, "wander")
    first = run_study(request, progress=False)
    moved = tmp_path / "elsewhere" / "wander"
    moved.parent.mkdir()
    shutil.move(first.study_dir, moved)

    result = _grown(request, moved, trials=3)

    assert not Path(first.study_dir).exists()
    table = pd.read_parquet(moved / "trials.parquet")
    assert result.status == "finished" and len(table) == 3
    assert result.targets[0].run_dir == "chosen/0.5" and (moved / "chosen/0.5/model.pt").is_file()
