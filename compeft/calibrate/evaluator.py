"""The Evaluator protocol and its lm-eval implementation, which scores an in-memory model many times.

Task objects are built once (``TaskManager(include_path=..., include_defaults=False)`` for YAMLs);
each ``evaluate`` call runs lm-eval on whatever weights the model holds at that moment — no request
or result caches, so in-place weight updates between calls are always seen.
"""

from __future__ import annotations

import functools
import logging
import math
import random
import time
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from compeft.calibrate.tasks import TaskSource, build_task_dict
from compeft.errors import CalibrationError

DEFAULT_SEED = 1234


@dataclass(frozen=True)
class Score:
    """One evaluation: the metric's value, its standard error (None if unknown), docs and seconds."""

    value: float
    stderr: float | None
    n: int | None
    seconds: float


@runtime_checkable
class Evaluator(Protocol):
    """Scores the model it was given on one validation task; higher is better."""

    metric: str

    def evaluate(self, model: Any) -> Score:
        """Evaluate the model's current weights."""
        ...


def quiet_lm_eval() -> None:
    """lm-eval logs every request batch at INFO; calibration runs hundreds of evaluations."""
    for name in ("lm_eval", "lm-eval", "lm_eval.models.huggingface", "lm_eval.api.task", "lm_eval.evaluator"):
        logging.getLogger(name).setLevel(logging.WARNING)


class LmEvalEvaluator:
    """Evaluator running lm-eval's ``evaluate`` with prebuilt task objects on an ``HFLM`` wrapper."""

    def __init__(
        self,
        source: TaskSource,
        tokenizer: Any,
        *,
        limit: float | None = None,
        batch_size: int = 64,
        seed: int = DEFAULT_SEED,
        bootstrap_iters: int = 100,
    ) -> None:
        quiet_lm_eval()
        self.source = source
        self.metric = source.metric
        self.tokenizer = tokenizer
        self.limit = limit
        self.batch_size = batch_size
        self.seed = seed
        self.bootstrap_iters = bootstrap_iters
        self.task_dict = build_task_dict(source)
        self._lm: Any = None
        self._lm_model: Any = None

    def _wrap(self, model: Any):
        """The HFLM around the model, created once per model object."""
        if self._lm is None or self._lm_model is not model:
            from lm_eval.models.huggingface import HFLM

            lm = HFLM(pretrained=model, tokenizer=self.tokenizer, batch_size=self.batch_size,
                      device=str(model.device), logits_cache=False)
            # lm-eval draws a progress bar per request type and evaluation; a sweep runs hundreds
            for method in ("loglikelihood", "loglikelihood_rolling", "generate_until"):
                setattr(lm, method, functools.partial(getattr(type(lm), method), lm, disable_tqdm=True))
            self._lm, self._lm_model = lm, model
        return self._lm

    def _seed(self) -> None:
        """Same seeds before every evaluation: few-shot sampling and bootstrap draws repeat exactly."""
        import numpy as np
        import torch

        random.seed(self.seed)
        np.random.seed(self.seed)
        torch.manual_seed(self.seed)
        for task in self.task_dict["tasks"].values():
            if hasattr(task, "set_fewshot_seed"):
                task.set_fewshot_seed(self.seed)

    def evaluate(self, model: Any) -> Score:
        """Run the task on the model's current weights and return the chosen metric."""
        import torch
        from lm_eval.evaluator import evaluate

        lm = self._wrap(model)
        self._seed()
        start = time.perf_counter()
        try:
            with torch.inference_mode():
                results = evaluate(lm, self.task_dict, limit=self.limit, bootstrap_iters=self.bootstrap_iters,
                                   log_samples=False)
        except Exception as err:
            raise CalibrationError(f"{self.source.label}: lm-eval evaluation failed ({type(err).__name__}: {err})") from err
        seconds = time.perf_counter() - start
        return self._extract(results, seconds)

    def _extract(self, results: Any, seconds: float) -> Score:
        """Pull metric and stderr (first filter) for the one task out of lm-eval's results."""
        if results is None:
            raise CalibrationError("lm-eval returned no results (not rank 0?)")
        per_task = results["results"]
        name = next(iter(self.task_dict["tasks"]))
        row = per_task.get(name) or next(iter(per_task.values()))
        value_key = next((k for k in row if k.split(",")[0] == self.metric and "_stderr" not in k), None)
        if value_key is None:
            metrics = sorted({k.split(",")[0] for k in row if "," in k and "_stderr" not in k})
            raise CalibrationError(f"{self.source.label}: metric {self.metric!r} not in the results (got {', '.join(metrics)})")
        filt = value_key.split(",", 1)[1] if "," in value_key else "none"
        stderr = row.get(f"{self.metric}_stderr,{filt}")
        stderr_value = float(stderr) if isinstance(stderr, (int, float)) and math.isfinite(stderr) else None
        n = results.get("n-samples", {}).get(name, {}).get("effective")
        return Score(float(row[value_key]), stderr_value, int(n) if n is not None else None, seconds)
