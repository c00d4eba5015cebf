"""Prepare a Prefect server for the ComPEFT deployments: the ``cpu`` and ``gpu`` process work pools
and the lost-worker automation (a flow run whose heartbeats stop is marked Crashed, so the catalog
flow submits its batch again). Idempotent; talks to the server in PREFECT_API_URL.

    python deployments/bootstrap.py [--gpu-limit N] [--lost-after SECONDS]

Workers must send heartbeats more often than --lost-after: PREFECT_FLOWS_HEARTBEAT_FREQUENCY=30.
"""

from __future__ import annotations

import argparse
import os
import sys

import httpx

AUTOMATION = "compeft-lost-worker"
FINAL_EVENTS = [f"prefect.flow-run.{s}" for s in ("Completed", "Failed", "Cancelled", "Crashed")]


def lost_worker_automation(lost_after: int) -> dict:
    """Prefect's zombie-flow recipe: no heartbeat (and no final state) within lost_after s → Crashed."""
    return {
        "name": AUTOMATION,
        "description": "Mark ComPEFT flow runs Crashed when their worker stops sending heartbeats.",
        "enabled": True,
        "trigger": {
            "type": "event", "posture": "Proactive", "threshold": 1, "within": lost_after,
            "match": {"prefect.resource.id": "prefect.flow-run.*"},
            "after": ["prefect.flow-run.heartbeat"],
            "expect": ["prefect.flow-run.heartbeat", *FINAL_EVENTS],
            "for_each": ["prefect.resource.id"],
        },
        "actions": [{"type": "change-flow-run-state", "state": "CRASHED",
                     "message": f"no heartbeat for {lost_after} s: the worker or its host was lost"}],
    }


def ensure_pool(client: httpx.Client, name: str, limit: int | None, template: dict) -> None:
    if client.get(f"/work_pools/{name}").status_code == 200:
        client.patch(f"/work_pools/{name}", json={"concurrency_limit": limit}).raise_for_status()
        return
    client.post("/work_pools/", json={"name": name, "type": "process", "base_job_template": template,
                                      "concurrency_limit": limit}).raise_for_status()


def ensure_automation(client: httpx.Client, lost_after: int) -> None:
    found = client.post("/automations/filter", json={"automations": {"name": {"any_": [AUTOMATION]}}})
    found.raise_for_status()
    for old in found.json():
        client.delete(f"/automations/{old['id']}").raise_for_status()
    client.post("/automations/", json=lost_worker_automation(lost_after)).raise_for_status()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bootstrap.py", description=__doc__.splitlines()[0])
    parser.add_argument("--gpu-limit", type=int, default=None, help="flow runs at once on the gpu pool (default: "
                        "unbounded; each worker's --limit bounds its host)")
    parser.add_argument("--cpu-limit", type=int, default=None, help="flow runs at once on the cpu pool")
    parser.add_argument("--lost-after", type=int, default=300, help="seconds without a heartbeat before a flow "
                        "run counts as lost (default 300; must exceed PREFECT_FLOWS_HEARTBEAT_FREQUENCY)")
    args = parser.parse_args(argv)
    api = os.environ.get("PREFECT_API_URL")
    if not api:
        print("bootstrap.py: PREFECT_API_URL is not set", file=sys.stderr)
        return 2
    from prefect.workers.process import ProcessWorker

    template = ProcessWorker.get_default_base_job_template()
    with httpx.Client(base_url=api.rstrip("/"), timeout=30) as client:
        ensure_pool(client, "cpu", args.cpu_limit, template)
        ensure_pool(client, "gpu", args.gpu_limit, template)
        ensure_automation(client, args.lost_after)
    print(f"work pools cpu, gpu and automation {AUTOMATION} ({args.lost_after} s) ready at {api}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
