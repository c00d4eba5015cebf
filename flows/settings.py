"""Prefect settings the service needs, applied to the environment before Prefect is imported."""

from __future__ import annotations

import os

DEFAULTS = {
    # the ephemeral API's migrations outlast Prefect's 20 s default on a fresh, busy machine
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
}


def configure_prefect_env() -> None:
    """Set the defaults above unless the user set them; call before the first ``import prefect``."""
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
