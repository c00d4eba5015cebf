"""Per-adapter orchestration overhead of ``compeft catalog`` on embedded defaults (Prefect's ephemeral API, SQLite
registry, local store and publish directory): N small LoRA adapters (~75 KB each) in a local catalog, a first run
and a no-op re-run, each in a fresh process. Reports wall time, CPU time (user + system of the run's process
tree), per-adapter time and peak RSS.

    python -m bench.catalog_overhead --sizes 100,500,2000 [--work DIR] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HIDDEN, RANK = 96, 24  # 2 layers x (q, v) x (A + B) = 18,432 float32 = 74 KB of weights


def make_catalog(root: Path, n: int) -> Path:
    """``n`` random LoRA adapters of ~75 KB (sharing one base) under ``root``."""
    from tests.adapters import lora_adapter

    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        if not (root / f"lora-{i:05d}" / "adapter_model.safetensors").exists():
            lora_adapter(root / f"lora-{i:05d}", seed=i, base="tiny/base", hidden=HIDDEN, rank=RANK)
    return root


def run_once(catalog: Path, home: Path, extra: list[str]) -> dict:
    """One ``compeft catalog`` process: wall, CPU (children's user + sys) and peak RSS (largest child)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "COMPEFT_"))}
    (home / "prefect").mkdir(parents=True, exist_ok=True)
    env.update(COMPEFT_HOME=str(home), PREFECT_HOME=str(home / "prefect"), TQDM_DISABLE="1")
    cmd = [sys.executable, "-c", "import sys; from compeft.cli import main; sys.exit(main(sys.argv[1:]))",
           "catalog", str(catalog), "--density", "0.1", "--publish-to", str(home / "published"), "--json", *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"compeft catalog failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout[done.stdout.index("{"):])
    return {"wall_s": round(wall, 2), "cpu_s": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 2),
            "peak_rss_mb": round(after.ru_maxrss / 1024, 1), "counts": result["counts"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.catalog_overhead", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="100", help="comma-separated catalog sizes")
    p.add_argument("--work", default=None, help="scratch directory (default: a temporary one, removed afterwards)")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = p.parse_args(argv)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="compeft-overhead-"))
    rows = []
    try:
        for n in (int(s) for s in args.sizes.split(",")):
            catalog = make_catalog(work / f"catalog-{n}", n)
            home = work / f"home-{n}"
            shutil.rmtree(home, ignore_errors=True)
            first = run_once(catalog, home, [])
            again = run_once(catalog, home, [])
            assert first["counts"]["compressed"] == n and again["counts"]["existing"] == n, (first, again)
            row = {"adapters": n, "first": first, "rerun": again,
                   "first_per_adapter_s": round(first["wall_s"] / n, 3), "rerun_per_adapter_s": round(again["wall_s"] / n, 4)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        if not args.keep and not args.work:
            shutil.rmtree(work, ignore_errors=True)
    info = {"machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.python_version()}", "rows": rows}
    if args.out:
        Path(args.out).write_text(json.dumps(info, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
