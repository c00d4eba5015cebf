"""Credentials from Prefect Secret blocks, for workers whose environment does not carry them.

The environment wins; a missing variable is filled from the block of the same purpose if it exists.
Values go into this flow run's process environment only, never into parameters, logs or artifacts.
"""

from __future__ import annotations

import os

BLOCKS = {
    "HF_TOKEN": "compeft-hf-token",
    "AWS_ACCESS_KEY_ID": "compeft-aws-access-key-id",
    "AWS_SECRET_ACCESS_KEY": "compeft-aws-secret-access-key",
    "COMPEFT_DATABASE_URL": "compeft-database-url",
}


def load_secrets() -> list[str]:
    """Fill unset credential variables from Prefect Secret blocks; returns the variables filled."""
    missing = [var for var in BLOCKS if not os.environ.get(var)]
    if not missing:
        return []
    from prefect.blocks.system import Secret

    filled = []
    for var in missing:
        try:
            value = Secret.load(BLOCKS[var]).get()
        except (ValueError, RuntimeError):  # no such block (the usual case)
            continue
        if value:
            os.environ[var] = str(value)
            filled.append(var)
    return filled
