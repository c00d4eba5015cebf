"""Automated α (and density) calibration of ComPEFT artifacts against a validation task with lm-eval.

Public API (imported lazily; lm-eval, transformers and peft load only when used):
``calibrate(src, dst, base=..., task=...) -> CalibrationResult``, ``BaseModelSession`` (one base
loaded once for many adapters: ``calibrate(..., session=s)``), ``Evaluator`` (protocol),
``LmEvalEvaluator``, ``Score``, ``GridPoint``, ``select``, ``resolve_task``; the CLI entry point is
``compeft.calibrate.cli.calibrate_main(argv)``.
"""

from __future__ import annotations

_EXPORTS = {
    "calibrate": "compeft.calibrate.sweep",
    "BaseModelSession": "compeft.calibrate.session",
    "CalibrationResult": "compeft.calibrate.result",
    "Timings": "compeft.calibrate.result",
    "Evaluator": "compeft.calibrate.evaluator",
    "LmEvalEvaluator": "compeft.calibrate.evaluator",
    "Score": "compeft.calibrate.evaluator",
    "GridPoint": "compeft.calibrate.search",
    "select": "compeft.calibrate.search",
    "resolve_task": "compeft.calibrate.tasks",
    "TaskSource": "compeft.calibrate.tasks",
}
__all__ = [
    "BaseModelSession", "CalibrationResult", "Evaluator", "GridPoint", "LmEvalEvaluator", "Score", "TaskSource", "Timings",
    "calibrate", "resolve_task", "select",
]


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'compeft.calibrate' has no attribute {name!r}")
