"""Paper Table 6 in small: merging compressed experts vs merging the originals, task arithmetic and TIES.

The task set is the example catalog's (a tiny Llama pre-trained on a synthetic language; four multiple-choice tasks:
color, pair, plus, next). One LoRA expert per task with one layout (rank 8 on every linear layer): lora-color and
lora-pair are the bundled ones, plus and next are trained here with the same recipe (cached under .cache/); each is
balanced (A·c, B/c per module: the same function) so that a global top-k keeps entries of both factors. Each expert
is compressed with ComPEFT calibrated on its own validation split (k ∈ {0.1, 0.2, 0.3}, α grid, the smallest
artifact within 0.02 of the best score), as the service calibrates.

For each method and source (original dense LoRA τ, or the ComPEFT artifacts), λ is chosen on the mean validation
accuracy over the four tasks, and the merged adapter is scored on each task's test split. TIES on the originals
trims each τ to its top 20 % first (the TIES paper's default); on the artifacts the trimming is ComPEFT's own.

    python -m bench.merging_table [--out bench/results/merging] [--lams 0.5,1,1.5,2]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("color", "pair", "plus", "next")
RANK8 = {"plus": 23, "next": 24}  # seeds of the recipes trained here (the catalog's own seeds for those tasks)
TRIM = 0.2
DENSITIES = (0.1, 0.2, 0.3)
TOLERANCE = 0.02  # the smallest artifact within 0.02 of the best validation score (as the service calibrates)
ALPHAS = (0.5, 1.0, 2.0, 3.0, 4.0, 6.0)


def balanced(src: Path, dst: Path) -> Path:
    """The adapter with each LoRA pair rescaled to A·c, B/c, c = √(‖B‖/‖A‖) (the same function; as the example
    catalog's builder balances lora-plus): a global top-k then keeps entries of both factors."""
    from compeft.adapters import ADAPTER_CONFIG, read_adapter, write_adapter

    if (dst / "adapter_model.safetensors").is_file():
        return dst
    tensors = dict(read_adapter(src).tensors)
    for name in [n for n in tensors if n.endswith("lora_A.weight")]:
        b_name = name.replace("lora_A", "lora_B")
        a, b = tensors[name], tensors[b_name]
        if float(a.norm()) > 0 and float(b.norm()) > 0:
            c = (b.float().norm() / a.float().norm()).sqrt()
            tensors[name], tensors[b_name] = (a.float() * c).to(a.dtype), (b.float() / c).to(b.dtype)
    write_adapter(dst, (src / ADAPTER_CONFIG).read_bytes(), tensors)
    return dst


def experts(cache: Path) -> dict[str, Path]:
    """The four rank-8 all-linear LoRA experts (two bundled, two trained once into ``cache``), balanced."""
    from examples.catalog_builder import AdapterRecipe, example_catalog, train_adapter

    catalog = example_catalog()
    out = {"color": catalog.adapter("lora-color").path, "pair": catalog.adapter("lora-pair").path}
    torch.set_num_threads(1)
    for task, seed in RANK8.items():
        dst = cache / f"lora-{task}-r8"
        if not (dst / "adapter_model.safetensors").is_file():
            train_adapter(AdapterRecipe(f"lora-{task}-r8", "lora", task, 200, 3e-3, seed), catalog.base_dir, dst)
        out[task] = dst
    return {task: balanced(path, cache / f"balanced-{task}") for task, path in out.items()}


def split_source(task_yaml: Path, split: str):
    """The task checked as calibration checks it, evaluated on ``split`` (validation or test)."""
    from compeft.calibrate.tasks import resolve_task

    source = resolve_task(str(task_yaml))
    if split == "validation":
        return source
    config = copy.deepcopy(dict(source.config))
    config["validation_split"] = None
    config["test_split"] = "test"
    return replace(source, config=config, split="test")


class Scorer:
    """Scores PEFT adapter directories on every task and split, on one loaded base."""

    def __init__(self, base: Path, task_yamls: dict[str, Path]) -> None:
        from compeft.calibrate.evaluator import LmEvalEvaluator
        from compeft.calibrate.session import BaseModelSession

        self.session = BaseModelSession(base, "cpu")
        self.evaluators = {(t, s): LmEvalEvaluator(split_source(task_yamls[t], s), None)
                           for t in TASKS for s in ("validation", "test")}

    def score(self, adapter_dir: Path, split: str) -> dict[str, float]:
        with self.session.attached(adapter_dir) as loaded:
            out = {}
            for task in TASKS:
                evaluator = self.evaluators[(task, split)]
                evaluator.tokenizer = loaded.tokenizer
                out[task] = evaluator.evaluate(loaded.model).value
        return out


def dense_merge(adapters: list[Path], method: str, lam: float, dst: Path) -> Path:
    """Task arithmetic or TIES (trim top 20 %, elect, disjoint mean) of the original LoRA tensors."""
    from compeft.adapters import ADAPTER_CONFIG, read_adapter, write_adapter

    read = [read_adapter(a) for a in adapters]
    thetas = read[0].theta_inits
    names = sorted(thetas)
    taus = torch.stack([torch.cat([(r.tensors[n].float() - thetas[n]).reshape(-1) for n in names]) for r in read])
    if method == "task_arithmetic":
        merged = lam * taus.sum(0)
    else:
        k = int(TRIM * taus.shape[1])
        threshold = taus.abs().kthvalue(taus.shape[1] - k + 1, dim=1, keepdim=True).values
        trimmed = torch.where(taus.abs() >= threshold, taus, torch.zeros(()))
        gamma = torch.sign(trimmed.sum(0))
        agree = (torch.sign(trimmed) == gamma) & (trimmed != 0)
        count = agree.sum(0).clamp(min=1)
        merged = lam * (trimmed * agree).sum(0) / count
    tensors, offset = dict(read[0].tensors), 0
    for n in names:
        t = read[0].tensors[n]
        tensors[n] = (merged[offset : offset + t.numel()].reshape(t.shape) + thetas[n]).to(t.dtype)
        offset += t.numel()
    write_adapter(dst, (read[0].path / ADAPTER_CONFIG).read_bytes(), tensors)
    return dst


def main(argv: list[str] | None = None) -> int:
    import compeft
    from compeft.calibrate import calibrate
    from compeft.ops import merge

    parser = argparse.ArgumentParser(prog="python -m bench.merging_table", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "merging")
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "merging")
    parser.add_argument("--lams", default="0.3,0.5,0.7,1,1.5,2")
    args = parser.parse_args(argv)
    os.environ.setdefault("TQDM_DISABLE", "1")
    torch.set_num_threads(1)
    start = time.perf_counter()
    from examples.catalog_builder import example_catalog

    catalog = example_catalog()
    lams = [float(x) for x in args.lams.split(",")]
    work = args.cache / "work"
    work.mkdir(parents=True, exist_ok=True)
    originals = experts(args.cache)
    compressed, calibration = {}, {}
    for task, path in originals.items():
        dst = args.cache / f"compeft-{task}"
        if not (dst / "compeft.safetensors").is_file():
            calibrate(path, dst, task=str(catalog.task_yamls[task]), base=str(catalog.base_dir), densities=DENSITIES,
                      alphas=ALPHAS, search="grid", tolerance=TOLERANCE, device="cpu")
        info = compeft.inspect(dst)
        compressed[task], calibration[task] = dst, {"density": info.density, "alpha": info.alpha}
    scorer = Scorer(catalog.base_dir, catalog.task_yamls)
    results: dict = {"tasks": list(TASKS), "densities": list(DENSITIES), "trim": TRIM, "lams": lams, "calibration": calibration,
                     "individual": {}, "merged": {}}
    for source, paths in (("original", originals), ("compeft", compressed)):
        per_task = {}
        for task in TASKS:
            adapter = paths[task]
            if source == "compeft":
                adapter = compeft.decompress(paths[task], work / f"dec-{task}", overwrite=True, device="cpu")
            per_task[task] = scorer.score(adapter, "test")[task]
        results["individual"][source] = per_task
        print(source, "individual", per_task, flush=True)
    for method in ("task_arithmetic", "ties"):
        for source in ("original", "compeft"):
            sweep = []
            for lam in lams:
                dst = work / f"{method}-{source}-{lam:g}"
                if source == "original":
                    if not dst.exists():
                        dense_merge([originals[t] for t in TASKS], method, lam, dst)
                else:
                    merge([compressed[t] for t in TASKS], dst, method=method, lam=lam, device="cpu", overwrite=True)
                val = scorer.score(dst, "validation")
                sweep.append({"lam": lam, "validation": val, "mean": sum(val.values()) / len(val)})
                print(method, source, lam, val, flush=True)
            best = max(sweep, key=lambda s: s["mean"])
            test = scorer.score(work / f"{method}-{source}-{best['lam']:g}", "test")
            results["merged"][f"{method}/{source}"] = {"lam": best["lam"], "test": test,
                                                       "test_mean": sum(test.values()) / len(test), "sweep": sweep}
            print(method, source, "test", test, flush=True)
    results["seconds"] = time.perf_counter() - start
    results["command"] = "python -m bench.merging_table " + " ".join(argv or [])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table6.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "table6.md").write_text(markdown(results))
    print(markdown(results))
    return 0


def markdown(results: dict) -> str:
    head = "| | " + " | ".join(results["tasks"]) + " | mean |"
    lines = [head, "|---|" + "---:|" * (len(results["tasks"]) + 1)]

    def row(name: str, scores: dict) -> str:
        values = [scores[t] for t in results["tasks"]]
        return f"| {name} | " + " | ".join(f"{v:.3f}" for v in values) + f" | {sum(values) / len(values):.3f} |"

    for source, scores in results["individual"].items():
        lines.append(row(f"individual experts ({source})", scores))
    for key, merged in results["merged"].items():
        method, source = key.split("/")
        lines.append(row(f"{method}, {source} (λ = {merged['lam']:g})", merged["test"]))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
