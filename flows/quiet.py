"""Quiet, honest run logs: an expected error (``CompeftError``: bad input, an unreachable source, a registry
that cannot be opened) is logged by Prefect's engine as one line, its message, without the traceback Prefect
adds for any exception; unexpected errors keep theirs. Warnings of dependencies that the user can do nothing
about are filtered (their exact messages, not whole categories)."""

from __future__ import annotations

import logging
import warnings

from compeft.errors import CompeftError

#: Prefect's loggers that log a failing flow or task run with its traceback
ENGINE_LOGGERS = ("prefect.flow_runs", "prefect.task_runs", "prefect.engine", "prefect.flow_engine", "prefect.task_engine")
#: (message regex, category, module regex) of dependency warnings a user cannot act on
DEPENDENCY_WARNINGS = (
    (r".*`torch_dtype` is deprecated.*", FutureWarning, ""),
    (r".*TRANSFORMERS_CACHE.*", FutureWarning, ""),
    (r".*pkg_resources is deprecated.*", UserWarning, ""),
)


class OneLineErrors(logging.Filter):
    """Drop the traceback of a record whose exception is a CompeftError, keeping its one-line message."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, CompeftError):
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            message = record.getMessage()
            if text not in message:
                message = f"{message}: {type(exc).__name__}: {text}"
            record.msg, record.args, record.exc_info, record.exc_text = message, None, None, None
        return True


_FILTER = OneLineErrors()


def install() -> None:
    """Attach the filter to Prefect's engine loggers and register the warning filters (idempotent)."""
    for name in ENGINE_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    for message, category, module in DEPENDENCY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
