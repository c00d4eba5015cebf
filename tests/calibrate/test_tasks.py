"""Task checks: a bad task YAML fails with one clear line before any model is loaded."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from compeft.calibrate.tasks import build_task_dict, resolve_task
from compeft.errors import TaskConfigError
from examples.tasks_gen import TASKS_DIR, task_files, task_yaml


def copy_task(tmp_path: Path, short: str = "plus") -> Path:
    for f in TASKS_DIR.glob(f"{short}*"):
        shutil.copy2(f, tmp_path / f.name)
    return tmp_path / f"{short}.yaml"


@pytest.fixture
def no_model_load(monkeypatch):
    """Fail loudly if the calibration tries to load a model."""
    from compeft.calibrate import model, sweep

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the task was checked")

    monkeypatch.setattr(model, "_from_pretrained", refuse)  # every model load (base, adapter, full) goes here
    monkeypatch.setattr(sweep, "local_base_dir", refuse)


def run_cli(argv):
    from compeft.calibrate.cli import calibrate_main

    return calibrate_main(argv)


def test_committed_task_files_match_the_generator():
    for name, text in task_files().items():
        assert (TASKS_DIR / name).read_text(encoding="utf-8") == text, f"{name} is stale: run python -m examples.tasks_gen"


def test_data_files_resolve_relative_to_the_yaml(tmp_path, monkeypatch):
    yaml_path = copy_task(tmp_path)
    monkeypatch.chdir("/")
    source = resolve_task(str(yaml_path))
    files = source.config["dataset_kwargs"]["data_files"]
    assert Path(files["validation"]) == (tmp_path / "plus_validation.jsonl").resolve()
    assert source.split == "validation" and source.config["test_split"] is None
    task_dict = build_task_dict(source)
    (task,) = task_dict["tasks"].values()
    assert len(task.eval_docs) == 120


def test_missing_data_file_fails_before_model_load(tmp_path, no_model_load):
    yaml_path = copy_task(tmp_path)
    (tmp_path / "plus_validation.jsonl").unlink()
    (tmp_path / "adapter").mkdir()
    with pytest.raises(TaskConfigError) as err:
        run_cli([str(tmp_path / "adapter"), str(tmp_path / "out"), "--base", str(tmp_path), "--task", str(yaml_path)])
    msg = str(err.value)
    assert "plus_validation.jsonl" in msg and "not found" in msg and "\n" not in msg
    assert err.value.exit_code == 2


def test_unknown_metric_in_yaml_fails_before_model_load(tmp_path, no_model_load):
    from compeft.calibrate.sweep import calibrate

    yaml_path = copy_task(tmp_path)
    yaml_path.write_text(yaml_path.read_text().replace("- metric: acc", "- metric: accuracy_typo"))
    (tmp_path / "adapter").mkdir()
    with pytest.raises(TaskConfigError, match="unknown metric 'accuracy_typo'"):
        calibrate(tmp_path / "adapter", None, base=tmp_path, task=str(yaml_path))


def test_metric_option_must_be_computed_by_the_task(no_model_load, tmp_path):
    (tmp_path / "adapter").mkdir()
    with pytest.raises(TaskConfigError, match="--metric 'exact_match' is not computed by this task"):
        run_cli([str(tmp_path / "adapter"), str(tmp_path / "out"), "--base", str(tmp_path),
                 "--task", str(task_yaml("plus")), "--metric", "exact_match"])


def test_missing_yaml_and_broken_yaml(tmp_path):
    with pytest.raises(TaskConfigError, match="not found"):
        resolve_task(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: [unclosed\n")
    with pytest.raises(TaskConfigError, match="not a valid lm-eval task YAML"):
        resolve_task(str(bad))
    nameless = tmp_path / "nameless.yaml"
    nameless.write_text("dataset_path: json\n")
    with pytest.raises(TaskConfigError, match="'task'"):
        resolve_task(str(nameless))


def test_json_dataset_needs_data_files(tmp_path):
    y = tmp_path / "t.yaml"
    y.write_text("task: t\ndataset_path: json\noutput_type: multiple_choice\n")
    with pytest.raises(TaskConfigError, match="needs dataset_kwargs.data_files"):
        resolve_task(str(y))
