"""Real services on 127.0.0.1 for the end-to-end tests: a Prefect server, process workers, SeaweedFS.

Every daemon runs in its own session (process group) so that stopping it stops its children too.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Daemon:
    """A background process started in its own session, logging to a file."""

    name: str
    proc: subprocess.Popen
    log: Path

    def tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, wait: float = 20) -> None:
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def start(name: str, cmd: list[str], env: dict[str, str], logdir: Path, cwd: Path = REPO) -> Daemon:
    log = logdir / f"{name}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)
    return Daemon(name, proc, log)


@dataclass
class Stack:
    """The Prefect server, its API client, the workers and the environment they share."""

    root: Path
    env: dict[str, str]
    api: str
    server: Daemon | None = None
    workers: dict[str, Daemon] = field(default_factory=dict)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.api, timeout=60)

    def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        """One API call; 5xx answers are retried, as Prefect's own client does, and so are read timeouts of
        calls that change nothing (reads and filters)."""
        safe = method == "GET" or path.endswith("/filter")
        with self.client() as c:
            for attempt in range(10):
                try:
                    r = c.request(method, path, **kwargs)
                except httpx.ReadTimeout:
                    if not safe or attempt == 9:
                        raise
                    continue
                if r.status_code < 500:
                    break
                time.sleep(0.5 * (attempt + 1))
            r.raise_for_status()
            return r

    def start_server(self, timeout: float = 240) -> None:
        port = self.api.rsplit(":", 1)[1].split("/")[0]
        self.server = start("server", [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", port],
                            self.env, self.root)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.server.proc.poll() is not None:
                raise RuntimeError(f"prefect server exited: {self.server.tail()}")
            try:
                if httpx.get(f"{self.api}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"prefect server not healthy after {timeout} s: {self.server.tail()}")

    def run(self, *cmd: str, timeout: float = 300) -> str:
        """Run a command to completion in the stack's environment (from the repository root)."""
        done = subprocess.run(list(cmd), env=self.env, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}")
        return done.stdout

    def start_worker(self, pool: str) -> Daemon:
        """The same script docs/service.md and docker-compose.yml run."""
        daemon = start(f"worker-{pool}", ["bash", str(REPO / "deployments" / f"worker-{pool}.sh")], self.env, self.root)
        self.workers[pool] = daemon
        return daemon

    def deployment_id(self, name: str) -> str:
        return self.request("GET", f"/deployments/name/{name}").json()["id"]

    def trigger(self, deployment: str, parameters: dict) -> str:
        """Create a flow run of a deployment with parameters, as the UI's run form does."""
        return self.request("POST", f"/deployments/{self.deployment_id(deployment)}/create_flow_run",
                            json={"parameters": parameters, "state": {"type": "SCHEDULED"}}).json()["id"]

    def flow_run(self, flow_run_id: str) -> dict:
        return self.request("GET", f"/flow_runs/{flow_run_id}").json()

    def wait(self, flow_run_id: str, timeout: float = 400) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.flow_run(flow_run_id)
            if run["state_type"] in FINAL:
                return run
            time.sleep(1)
        raise TimeoutError(f"flow run {flow_run_id} not finished after {timeout} s: {self.flow_run(flow_run_id)['state_type']}"
                           f"\n{self.logs_tail()}")

    def flow_runs(self, **filters) -> list[dict]:
        return self.request("POST", "/flow_runs/filter", json={"flow_runs": filters, "limit": 200}).json()

    def children(self, parent_id: str) -> list[dict]:
        """Flow runs submitted by a parent run (subflows, and deployment runs: run_deployment links them as subflows)."""
        found = self.request("POST", "/task_runs/filter", json={"flow_runs": {"id": {"any_": [parent_id]}}, "limit": 200})
        task_ids = [t["id"] for t in found.json()]
        if not task_ids:
            return []
        return self.flow_runs(parent_task_run_id={"any_": task_ids})

    def gpu_runs(self, parent_id: str) -> list[dict]:
        """The GPU batch runs below a catalog run (submitted by its dispatch-batches subflow)."""
        runs, todo = [], [parent_id]
        while todo:
            for child in self.children(todo.pop()):
                (runs if child["work_pool_name"] == "gpu" else todo).append(child if child["work_pool_name"] == "gpu" else child["id"])
        return runs

    def artifacts(self, flow_run_id: str) -> list[dict]:
        return self.request("POST", "/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}}).json()

    def table(self, flow_run_id: str, key: str = "compeft-outcome-fields") -> list[dict]:
        """A table artifact's rows: by default the machine-readable outcome fields (``compeft-outcomes`` is the
        table in words a person reads)."""
        rows = next(a for a in self.artifacts(flow_run_id) if a["key"] == key)["data"]
        return json.loads(rows) if isinstance(rows, str) else rows

    def logs_tail(self) -> str:
        return "\n".join(f"--- {d.name}\n{d.tail(1500)}" for d in [*self.workers.values()] + ([self.server] if self.server else []))

    def stop(self) -> None:
        for daemon in self.workers.values():
            daemon.stop()
        if self.server:
            self.server.stop()


def start_seaweedfs(root: Path, access_key: str, secret_key: str) -> tuple[Daemon, str]:
    """A real S3 API (SeaweedFS ``weed mini``) bound to 127.0.0.1 on free ports."""
    root.mkdir(parents=True, exist_ok=True)
    for sub in ("data", "logs"):
        (root / sub).mkdir(exist_ok=True)
    identities = {"identities": [{"name": "e2e", "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                                  "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}
    (root / "identities.json").write_text(json.dumps(identities))
    s3_port = free_port()
    ports = {name: free_port() for name in (
        "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
        "s3.port.grpc", "webdav.port", "admin.port", "admin.port.grpc", "s3.port.iceberg", "s3.port.lance")}
    cmd = [str(BIN / "weed"), f"-logdir={root / 'logs'}", "mini", f"-dir={root / 'data'}", "-ip=127.0.0.1",
           "-ip.bind=127.0.0.1", f"-s3.port={s3_port}", f"-s3.config={root / 'identities.json'}", "-admin.ui=false",
           *[f"-{name}={port}" for name, port in ports.items()]]
    daemon = start("seaweedfs", cmd, dict(os.environ), root, cwd=root)
    return daemon, f"http://127.0.0.1:{s3_port}"
