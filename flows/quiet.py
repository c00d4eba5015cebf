"""Quiet, honest run logs: an expected error (``CompeftError``: bad input, an unreachable source, a registry
that cannot be opened) is logged by Prefect's engine as one line, its message, without the traceback Prefect
adds for any exception; unexpected errors keep theirs. Warnings of dependencies that the user can do nothing
about are filtered (their exact messages, not whole categories)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from compeft.errors import CompeftError

#: Prefect's loggers that log a failing flow or task run with its traceback
ENGINE_LOGGERS = ("prefect.flow_runs", "prefect.task_runs", "prefect.engine", "prefect.flow_engine", "prefect.task_engine")
#: (message regex, category) of dependency warnings a user cannot act on: their exact messages, not categories
DEPENDENCY_WARNINGS = (
    (r"`is_gradient_checkpointing` is deprecated", FutureWarning),  # transformers, inside lm-eval's model wrapper
    (r"`torch_dtype` is deprecated", FutureWarning),
)
#: logger → starts of messages dropped: lm-eval's notes on being handed a loaded model (what calibration does)
DEPENDENCY_LOG_LINES = {
    "lm_eval.models.huggingface": ("`pretrained` model kwarg is not of type `str`", "Passed an already-initialized model"),
}


class _DropLines(logging.Filter):
    def __init__(self, starts: tuple[str, ...]) -> None:
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.starts)


class _FirstLine(logging.Filter):
    """Prefect's 'Starting temporary server on URL' without the docs link appended on a second line."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        if text.startswith("Starting temporary server") and "\n" in text:
            record.msg, record.args = text.split("\n", 1)[0], None
        return True


#: Prefect's records that only announce an exception the run's final state then names ("Finished in state
#: Failed('... SourceError: MESSAGE')"): dropped for expected errors, so each failed run says it once
ANNOUNCEMENTS = ("Task run failed with exception", "Encountered exception during execution",
                 "Engine execution exited with unexpected exception")


class OneLineErrors(logging.Filter):
    """An expected error (CompeftError) is logged once per run, as one line: the records announcing it are
    dropped (the final state's message names it) and any other keeps its message without the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, CompeftError) and str(record.msg).startswith(ANNOUNCEMENTS):
            return False
        if isinstance(exc, CompeftError):
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            message = record.getMessage()
            if text not in message:
                message = f"{message}: {type(exc).__name__}: {text}"
            record.msg, record.args, record.exc_info, record.exc_text = message, None, None, None
        return True


_FILTER = OneLineErrors()
_FIRST_LINE = _FirstLine()


def install() -> None:
    """Attach the filters to Prefect's and lm-eval's loggers and register the warning filters (idempotent)."""
    for name in ENGINE_LOGGERS:
        _add(logging.getLogger(name), _FILTER)
    _add(logging.getLogger("prefect"), _FIRST_LINE)
    for name, starts in DEPENDENCY_LOG_LINES.items():
        _add(logging.getLogger(name), _DropLines(starts))
    for message, category in DEPENDENCY_WARNINGS:
        warnings.filterwarnings("ignore", message=".*" + message, category=category)


def _add(logger: logging.Logger, flt: logging.Filter) -> None:
    if not any(type(f) is type(flt) for f in logger.filters):
        logger.addFilter(flt)


class _Forward(logging.Handler):
    def __init__(self, target: logging.Logger | logging.LoggerAdapter, prefix: str) -> None:
        super().__init__(logging.INFO)
        self.target, self.prefix = target, prefix

    def emit(self, record: logging.LogRecord) -> None:
        self.target.log(record.levelno, "%s%s", self.prefix, record.getMessage())


@contextmanager
def forwarded(name: str, target: logging.Logger | logging.LoggerAdapter, prefix: str = "") -> Iterator[None]:
    """Within the block, INFO and higher records of the library logger ``name`` (e.g. a calibration's line per
    (k, α) point) go to ``target`` (the run's logger: console and Prefect UI), prefixed."""
    source = logging.getLogger(name)
    handler, level, propagate = _Forward(target, prefix), source.level, source.propagate
    source.addHandler(handler)
    source.propagate = False  # the run's logger prints it; the root's handlers would print it twice
    if source.getEffectiveLevel() > logging.INFO:
        source.setLevel(logging.INFO)
    try:
        yield
    finally:
        source.removeHandler(handler)
        source.setLevel(level)
        source.propagate = propagate
