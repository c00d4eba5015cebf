"""Resolve and check a validation task (an lm-eval task name or a task YAML) before any model is loaded.

A YAML's ``dataset_kwargs.data_files`` are resolved relative to the YAML's directory (lm-eval itself
would resolve them against the working directory), every data file must exist, and every metric the
task or ``--metric`` names must be one lm-eval knows. The task is evaluated on its validation split
when it has one (calibration must not look at the test split).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compeft.errors import TaskConfigError

YAML_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class TaskSource:
    """A checked validation task: either a registered lm-eval name or a resolved inline config."""

    name: str  # lm-eval task name
    metric: str
    yaml_path: Path | None = None  # the YAML it came from, if any
    config: Mapping[str, Any] | None = field(default=None, repr=False)  # resolved config (YAML tasks)
    split: str | None = None  # the split evaluated, when known

    @property
    def label(self) -> str:
        """How reports name the task: the YAML path or the registered name."""
        return str(self.yaml_path) if self.yaml_path is not None else self.name


def is_yaml_path(task: str) -> bool:
    """A task argument is a YAML path when it ends in .yaml/.yml or names an existing file."""
    return task.lower().endswith(YAML_SUFFIXES) or Path(task).is_file()


def known_metrics() -> set[str]:
    """Names of the metrics registered in lm-eval."""
    import lm_eval.api.metrics  # noqa: F401  (registers the built-in metrics)
    from lm_eval.api.registry import metric_registry

    return set(metric_registry.keys()) if hasattr(metric_registry, "keys") else set(metric_registry)


def load_task_yaml(path: Path) -> dict[str, Any]:
    """Parse a task YAML with lm-eval's loader (includes, !function), as a one-line error on failure."""
    from lm_eval.tasks._yaml_loader import load_yaml

    try:
        cfg = load_yaml(path, resolve_func=True, recursive=True)
    except FileNotFoundError as err:
        raise TaskConfigError(f"{path}: file not found ({err.filename})") from err
    except Exception as err:  # yaml errors, include cycles, broken !function references
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TaskConfigError(f"{path}: not a valid lm-eval task YAML ({first})") from err
    if "group" in cfg and "task" not in cfg:
        raise TaskConfigError(f"{path}: is a group; calibration needs a single task YAML")
    if not isinstance(cfg.get("task"), str):
        raise TaskConfigError(f"{path}: field 'task' (the task name) is missing")
    return cfg


def resolve_data_files(cfg: dict[str, Any], yaml_path: Path) -> None:
    """Make every dataset_kwargs.data_files entry absolute (relative to the YAML) and check it exists."""
    kwargs = cfg.get("dataset_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise TaskConfigError(f"{yaml_path}: field 'dataset_kwargs' must be a mapping")
    data_files = kwargs.get("data_files")
    if data_files is None:
        if cfg.get("dataset_path") in ("json", "csv", "parquet", "text"):
            raise TaskConfigError(f"{yaml_path}: dataset_path {cfg['dataset_path']!r} needs dataset_kwargs.data_files")
        return

    def fix(entry: Any, where: str) -> Any:
        if isinstance(entry, list):
            return [fix(e, where) for e in entry]
        if not isinstance(entry, str):
            raise TaskConfigError(f"{yaml_path}: dataset_kwargs.data_files{where} must be a path or a list of paths")
        if "://" in entry:
            return entry
        p = Path(entry).expanduser()
        resolved = p if p.is_absolute() else (yaml_path.parent / p).resolve()
        if not resolved.is_file():
            raise TaskConfigError(f"{yaml_path}: data file {entry!r} (dataset_kwargs.data_files{where}) not found at {resolved}")
        return str(resolved)

    if isinstance(data_files, dict):
        kwargs["data_files"] = {split: fix(v, f".{split}") for split, v in data_files.items()}
    else:
        kwargs["data_files"] = fix(data_files, "")
    cfg["dataset_kwargs"] = kwargs


def check_metrics(cfg: Mapping[str, Any], metric: str, where: str) -> None:
    """Every metric of metric_list must be known to lm-eval, and --metric must be one of them."""
    known = known_metrics()
    listed = cfg.get("metric_list")
    names: list[str] = []
    if listed is not None:
        if not isinstance(listed, list):
            raise TaskConfigError(f"{where}: field 'metric_list' must be a list")
        for i, entry in enumerate(listed):
            name = entry.get("metric") if isinstance(entry, dict) else None
            if callable(name):
                names.append(getattr(name, "__name__", str(name)))
                continue
            if not isinstance(name, str):
                raise TaskConfigError(f"{where}: metric_list[{i}] has no 'metric' name")
            if name not in known and not (isinstance(entry, dict) and entry.get("hf_evaluate")):
                raise TaskConfigError(f"{where}: metric_list[{i}]: unknown metric {name!r} (lm-eval knows e.g. acc, acc_norm, exact_match)")
            names.append(name)
    if names and metric not in names:
        raise TaskConfigError(f"{where}: --metric {metric!r} is not computed by this task (its metrics: {', '.join(names)})")
    if not names and metric not in known:
        raise TaskConfigError(f"{where}: unknown metric {metric!r}")


def prefer_validation(cfg: dict[str, Any]) -> str | None:
    """Evaluate the validation split when the task has one (drop test_split); returns the split used."""
    if cfg.get("validation_split"):
        cfg["test_split"] = None
        return str(cfg["validation_split"])
    return cfg.get("test_split")


def resolve_task(task: str, metric: str = "acc") -> TaskSource:
    """Check a --task argument (YAML path or registered name) without loading any model."""
    if not task:
        raise TaskConfigError("--task is empty")
    if is_yaml_path(task):
        path = Path(task).expanduser().resolve()
        if not path.is_file():
            raise TaskConfigError(f"{task}: task YAML not found")
        cfg = copy.deepcopy(load_task_yaml(path))
        resolve_data_files(cfg, path)
        check_metrics(cfg, metric, str(path))
        split = prefer_validation(cfg)
        return TaskSource(name=cfg["task"], metric=metric, yaml_path=path, config=cfg, split=split)
    if metric not in known_metrics():
        raise TaskConfigError(f"--metric {metric!r}: unknown lm-eval metric")
    return TaskSource(name=task, metric=metric)


def build_task_dict(source: TaskSource):
    """Build lm-eval's task objects once (datasets loaded); evaluations reuse them."""
    from lm_eval.tasks import TaskManager

    try:
        if source.config is not None:
            manager = TaskManager(include_path=str(source.yaml_path.parent), include_defaults=False)  # type: ignore[union-attr]
            task_dict = manager.load(dict(copy.deepcopy(source.config)))
        else:
            manager = TaskManager()  # a registered name: index the built-in tasks once
            if source.name not in manager.all_tasks:
                raise TaskConfigError(f"--task {source.name!r}: not a registered lm-eval task and not a YAML path")
            task_dict = manager.load(source.name)
    except TaskConfigError:
        raise
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TaskConfigError(f"{source.label}: lm-eval could not build the task ({first})") from err
    tasks = task_dict.get("tasks", {})
    if len(tasks) != 1:
        raise TaskConfigError(f"{source.label}: expands to {len(tasks)} tasks; calibration needs exactly one")
    if source.config is None:
        task = next(iter(tasks.values()))
        if task.has_validation_docs() and task.has_test_docs():
            # same rule as for YAML tasks: calibrate on validation, never on test
            task.config.test_split = None
    return task_dict
