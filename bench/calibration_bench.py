"""Benchmark the calibration sweep's overhead: wall time vs. the sum of its evaluations plus one load.

    python bench/calibration_bench.py [--adapter lora-plus] [--device cpu|cuda|auto] [--search grid|refine]
                                      [--densities 0.05,0.1,0.2] [--threads 1] [--json OUT.json]
                                      [--evaluator lm-eval|direct] [--synthetic-update]

Runs ``compeft.calibrate.calibrate`` on a fixture adapter of the example catalog (examples/catalog_builder.py:
the bundled build, or one built and cached on first use) and prints one JSON object: the timings breakdown and
``overhead_ratio = (load + reference + sweep) / (load + reference + Σ evaluations)`` — the issue's
budget is ≤ 1.2. Per-point costs (pattern build per density, in-place update per α) are reported too.

``--evaluator direct`` scores with one batched forward pass instead of lm-eval (for machines without
lm-eval, e.g. a bare GPU box); ``--synthetic-update`` also times the in-place α update on a 7B-like
LoRA (r = 64 on q,k,v,o,gate,up,down × 32 layers, bf16, ~182M parameters) on the chosen device.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script, sys.path starts at bench/, not at the root holding examples/
    sys.path.insert(0, str(REPO))


class DirectEvaluator:
    """Accuracy from one batched forward pass over the validation JSONL next to the task YAML."""

    metric = "acc"

    def __init__(self, task_yaml: Path, tokenizer) -> None:
        self.tokenizer = tokenizer
        lines = (task_yaml.parent / f"{task_yaml.stem}_validation.jsonl").read_text().splitlines()
        self.docs = [json.loads(line) for line in lines]

    def evaluate(self, model):
        import torch

        from compeft.calibrate.evaluator import Score
        from examples.catalog_builder import encode_batch

        start = time.perf_counter()
        ids, mask, _ = encode_batch(self.tokenizer, [d["question"] for d in self.docs])
        ids, mask = ids.to(model.device), mask.to(model.device)
        last = mask.sum(1) - 2  # position of the last prompt word (encode_batch appends EOS)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
        hits = 0
        for i, d in enumerate(self.docs):
            ids_c = self.tokenizer.convert_tokens_to_ids(d["choices"])
            row = logits[i, last[i], ids_c]
            hits += int(int(row.argmax()) == d["label"])
        return Score(hits / len(self.docs), None, len(self.docs), time.perf_counter() - start)


def synthetic_update(device: str) -> dict:
    """Median time of one in-place α update over a 7B-like LoRA's worth of bf16 tensors."""
    import torch

    from compeft.calibrate.patterns import DensityPattern, Slot, group_slots

    dev = torch.device(device)
    h, f, r = 4096, 11008, 64
    shapes = [(r, h), (h, r)] * 4 + [(r, h), (f, r), (r, h), (f, r), (r, f), (h, r)]
    slots = []
    for layer in range(32):
        for i, shape in enumerate(shapes):
            target = torch.empty(shape, dtype=torch.bfloat16, device=dev)
            pattern = torch.randint(-1, 2, shape, dtype=torch.int8, device=dev).to(torch.bfloat16)
            slots.append(Slot(f"{layer}.{i}", target, pattern, None))
    n = sum(s.target.numel() for s in slots)
    dp = DensityPattern(0.1, 0.01, 0, n, 0, 0, tuple(slots), 0.0, group_slots(tuple(slots)))
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    dp.apply(1.0)
    sync()
    times = []
    for a in (0.5, 1, 2, 3, 4, 5, 6, 8, 10):
        t = time.perf_counter()
        dp.apply(a)
        sync()
        times.append(time.perf_counter() - t)
    med = sorted(times)[len(times) // 2]
    return {"params": n, "tensors": len(slots), "median_ms": round(1000 * med, 3)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="calibration_bench")
    p.add_argument("--adapter", default="lora-plus")
    p.add_argument("--device", default="cpu")
    p.add_argument("--search", default="grid", choices=("grid", "refine"))
    p.add_argument("--densities", default="0.05,0.1,0.2")
    p.add_argument("--alphas", default="0.5,1,2,3,4,5,6,8,10")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (the tiny model is fastest on 1)")
    p.add_argument("--json", type=Path, default=None, help="also write the result here")
    p.add_argument("--evaluator", choices=("lm-eval", "direct"), default="lm-eval")
    p.add_argument("--synthetic-update", action="store_true", help="also time the update on a 7B-like LoRA")
    args = p.parse_args(argv)

    import torch

    from compeft.calibrate.sweep import calibrate
    from examples.catalog_builder import example_catalog

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    catalog = example_catalog()
    catalog_s = time.perf_counter() - t0
    fixture = catalog.adapter(args.adapter)
    evaluator = None
    if args.evaluator == "direct":
        from transformers import AutoTokenizer

        evaluator = DirectEvaluator(fixture.task_yaml, AutoTokenizer.from_pretrained(catalog.base_dir))
    result = calibrate(
        fixture.path, None, base=catalog.base_dir, task=str(fixture.task_yaml),
        densities=[float(x) for x in args.densities.split(",")], alphas=[float(x) for x in args.alphas.split(",")],
        search=args.search, device=args.device, limit=args.limit, evaluator=evaluator,
    )
    t = result.timings
    n = len(result.points)
    out = {
        "adapter": args.adapter, "evaluator": args.evaluator, "device": result.device, "search": args.search, "points": n,
        "densities": list(result.densities), "threads": args.threads,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "gpu": torch.cuda.get_device_name(0) if result.device.startswith("cuda") else None,
        "catalog_seconds": round(catalog_s, 2),
        "load_s": round(t.load, 3), "reference_eval_s": round(t.reference, 3),
        "evaluations_s": round(t.evaluations, 3), "mean_eval_s": round(t.evaluations / n, 4),
        "patterns_s": round(t.patterns, 3), "pattern_per_density_s": round(t.patterns / len(result.densities), 4),
        "updates_s": round(t.updates, 4), "update_per_alpha_ms": round(1000 * t.updates / n, 3),
        "sweep_wall_s": round(t.sweep, 3),
        "overhead_ratio": round(t.overhead_ratio, 4),
        "total_s": round(t.total, 3),
        "reference_score": result.reference.value,
        "chosen": {"density": result.chosen.density, "alpha": result.chosen.alpha, "score": result.chosen.score},
    }
    if args.synthetic_update:
        out["synthetic_update"] = synthetic_update(result.device)
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0 if t.overhead_ratio <= 1.2 else 1


if __name__ == "__main__":
    sys.exit(main())
