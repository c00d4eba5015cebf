"""Prefect settings the service needs, applied to the environment before Prefect is imported."""

from __future__ import annotations

import os

DEFAULTS = {
    # the ephemeral API's migrations outlast Prefect's 20 s default on a fresh, busy machine
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
}


#: only for the ephemeral API that Prefect starts in a subprocess when no PREFECT_API_URL is set: its own log
#: (internal retries such as "database is locked" tracebacks from its event writers on SQLite) stays out of the
#: user's terminal; failures the run sees still reach it through the API client, as one line each
EPHEMERAL_DEFAULTS = {"PREFECT_SERVER_LOGGING_LEVEL": "CRITICAL"}


def configure_prefect_env() -> None:
    """Set the defaults above unless the user set them; call before the first ``import prefect``."""
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
    if not os.environ.get("PREFECT_API_URL"):
        for key, value in EPHEMERAL_DEFAULTS.items():
            os.environ.setdefault(key, value)
