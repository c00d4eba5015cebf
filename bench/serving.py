"""Serving benchmark (issue 13): swapping compressed experts into a live model, against peft's ways, side by side.

    python -m bench.serving                 # GPU: 7B (real bf16 base) and 65B (base on the meta device)
    python -m bench.serving --tiny          # the same script with tiny shapes on the CPU (a dry run, seconds)

1. Swap table, per LLaMA shape with a LoRA r = 64 on every linear layer, k = 0.1: each row puts the same
   adapter into the live model and is timed until the model is ready for its next forward (device synced).
   Rows: peft ``load_adapter`` from a directory (a new adapter name), peft ``hotswap_adapter`` from a directory,
   a dense state dict in pinned memory → peft ``hotswap_adapter_from_state_dict``, ``ResidentArtifact.load`` →
   the same, ``ResidentArtifact.load`` alone, ``compeft.serving.hotswap`` from a ``ResidentArtifact`` and
   ``AdapterPool.activate`` (a miss every time: two experts alternate in one slot). The 65B base (130 GB in bf16)
   does not fit one GPU and a swap never touches it, so it is built on the meta device and only its LoRA
   parameters live on the GPU; the rows that read a 3.2 GB directory are left out there.
2. Experts held per GiB of host memory: the compressed artifact (``ResidentArtifact.nbytes``) vs the dense
   fp32 and bf16 ``adapter_model.safetensors``.
3. Time to first token after switching experts: 100 requests over 50 experts with Zipf popularity on a small
   LLaMA (real weights): ``AdapterPool`` (1 and 4 GPU slots, every expert resident in host memory) vs peft
   ``load_adapter`` (4 adapters kept on the GPU, least recently used deleted) vs peft ``hotswap_adapter``.
   Peft's directories are in the page cache (written just before).

Exactness: after the compeft swaps, the live parameters are compared with the artifact's decode (and the 7B
model's logits with those after peft's swap of the same tensors).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from bench.run import bandwidths, machine_info, sync, timed
from bench.synth import Shape, lora_tensors, write_adapter_dir

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
FULL = {"7B": Shape("7B", 4096, 11008, 32), "65B": Shape("65B", 8192, 22016, 80)}
TINY = {"7B": Shape("tiny7B", 128, 344, 2), "65B": Shape("tiny65B", 256, 688, 3)}
SMALL = {"full": Shape("small", 1024, 2816, 8), "tiny": Shape("smalltiny", 64, 172, 2)}


def llama(shape: Shape, vocab: int, device: torch.device, meta: bool = False):
    """A LLaMA of ``shape`` with random bf16 weights on ``device`` (or on the meta device)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    heads = max(1, shape.hidden // 128)
    config = LlamaConfig(hidden_size=shape.hidden, intermediate_size=shape.intermediate, num_hidden_layers=shape.layers,
                         num_attention_heads=heads, num_key_value_heads=heads, vocab_size=vocab,
                         max_position_embeddings=256)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("meta" if meta else device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def with_lora(model, rank: int, device: torch.device):
    """The peft model with an all-linear LoRA ``default`` (its parameters on ``device``, fp32 as peft keeps them)."""
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraLayer

    peft = get_peft_model(model, LoraConfig(r=rank, lora_alpha=16, target_modules=TARGETS))
    for m in peft.modules():
        if isinstance(m, LoraLayer):
            for part in (m.lora_A, m.lora_B):
                if next(part.parameters()).is_meta:
                    part.to_empty(device=device)
    return peft.eval()


def make_expert(work: Path, name: str, shape: Shape, seed: int, device: torch.device, rank: int = 64,
                density: float = 0.1, dtype=torch.float32) -> tuple[Path, Path]:
    """(dense adapter directory, artifact directory) of a synthetic expert."""
    from compeft import api

    tensors = {k: v.to(dtype).cpu() for k, v in lora_tensors(shape, seed=seed, device=device, rank=rank).items()}
    src = write_adapter_dir(work / f"{name}-dense", tensors, shape, rank)
    del tensors
    art = work / f"{name}-art"
    api.compress(src, art, density=density, device=device)
    return src, art


def ms(seconds: float) -> float:
    return round(1e3 * seconds, 3)


def live_equals_decode(model, resident, device) -> bool:
    """The bound adapter's parameters equal the artifact's decode (cast to their dtype)."""
    from compeft.serving.swap import slot_of

    slot = slot_of(model, "default")
    decoded = resident.load(device)
    return all(torch.equal(slot.live[k], v.to(slot.live[k].dtype)) for k, v in decoded.items())


def swap_table(shape: Shape, device: torch.device, work: Path, repeats: int, meta: bool, vocab: int) -> dict:
    from peft.utils.hotswap import hotswap_adapter, hotswap_adapter_from_state_dict
    from peft.utils.save_and_load import _insert_adapter_name_into_state_dict  # what peft's hotswap_adapter does
    from safetensors.torch import load_file

    from compeft.fastload import ResidentArtifact
    from compeft.serving import AdapterPool, hotswap

    t0 = time.perf_counter()
    model = with_lora(llama(shape, vocab, device, meta=meta), 64, device)
    build_s = time.perf_counter() - t0
    src1, art1 = make_expert(work, f"{shape.name}-1", shape, 1, device)
    src2, art2 = make_expert(work, f"{shape.name}-2", shape, 2, device)
    r1, r2 = ResidentArtifact.open(art1), ResidentArtifact.open(art2)
    peft_config = model.peft_config["default"]
    rows: dict[str, float] = {}
    x = torch.randint(0, vocab, (1, 16), device=device)

    def logits():
        with torch.no_grad():
            return model(x).logits

    if not meta:
        names = iter(range(10_000))

        def load_adapter():
            name = f"x{next(names)}"
            model.load_adapter(str(src1), adapter_name=name)
            return name

        times = []
        for _ in range(max(2, repeats // 3)):
            sync(device)
            t = time.perf_counter()
            name = load_adapter()
            sync(device)
            times.append(time.perf_counter() - t)
            model.delete_adapter(name)
        rows["peft load_adapter from a local dir (new adapter name)"] = statistics.median(times)
        rows["peft hotswap_adapter from a local dir"] = timed(
            lambda: hotswap_adapter(model, str(src1), adapter_name="default", torch_device=str(device)),
            device, max(2, repeats // 2))[0]
    dense = _insert_adapter_name_into_state_dict(load_file(src1 / "adapter_model.safetensors"), "default", "lora_")
    if device.type == "cuda":
        dense = {k: v.pin_memory() for k, v in dense.items()}
    rows["dense state dict in pinned host memory → peft hotswap_adapter_from_state_dict"] = timed(
        lambda: hotswap_adapter_from_state_dict(model, dense, "default", peft_config), device, repeats)[0]
    dense = None  # noqa: F841 - frees the pinned copy

    def resident_then_peft():
        sd = _insert_adapter_name_into_state_dict(r1.load(device), "default", "lora_")
        hotswap_adapter_from_state_dict(model, sd, "default", peft_config)

    rows["ResidentArtifact.load → peft hotswap_adapter_from_state_dict"] = timed(resident_then_peft, device, repeats)[0]
    rows["ResidentArtifact.load alone (decode)"] = timed(lambda: r1.load(device), device, 2 * repeats)[0]
    reference = None if meta else logits()  # peft's swap of r1's tensors
    hotswap(model, r2)  # binds the adapter (once)
    which = iter(range(10_000))
    rows["compeft.serving.hotswap (ResidentArtifact)"] = timed(
        lambda: hotswap(model, (r1, r2)[next(which) % 2]), device, 4 * repeats)[0]
    hotswap(model, r1)
    exact = live_equals_decode(model, r1, device)
    if not meta:
        exact = exact and torch.equal(logits(), reference)
    pool = AdapterPool(model, gpu_slots=1)
    pool.add("e1", r1)
    pool.add("e2", r2)
    which = iter(range(10_000))
    rows["AdapterPool.activate (a miss: decode into the slot)"] = timed(
        lambda: pool.activate(("e1", "e2")[next(which) % 2]), device, 4 * repeats)[0]
    pool.activate("e2")
    pool.activate("e2")
    rows["AdapterPool.activate (a hit)"] = timed(lambda: pool.activate("e2"), device, 4 * repeats)[0]
    exact = exact and live_equals_decode(model, r2, device)
    dense_fp32 = (src1 / "adapter_model.safetensors").stat().st_size
    info = {
        "shape": shape.name, "base": "meta device (LoRA parameters on the device)" if meta else "real bf16 weights",
        "adapter_params": shape.params if shape.layers else None, "tensors": len(r1.checked[1].names),
        "artifact_bytes": r1.container.file_bytes, "resident_bytes": r1.nbytes, "dense_fp32_bytes": dense_fp32,
        "experts_per_gib": {"compressed": 2**30 / r1.nbytes, "dense fp32": 2**30 / dense_fp32,
                            "dense bf16": 2**30 / (dense_fp32 / 2)},
        "build_s": round(build_s, 1), "exact": bool(exact), "rows_ms": {k: ms(v) for k, v in rows.items()},
    }
    model = pool = None  # noqa: F841 - frees the GPU memory before the next table
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return info


def zipf_requests(experts: int, requests: int, seed: int = 0, s: float = 1.0) -> list[int]:
    """``requests`` expert ids drawn with probability ∝ 1/rankˢ (seeded)."""
    p = 1.0 / np.arange(1, experts + 1) ** s
    return np.random.default_rng(seed).choice(experts, size=requests, p=p / p.sum()).tolist()


def ttft(shape: Shape, device: torch.device, work: Path, experts: int, requests: int, vocab: int, rank: int) -> dict:
    """Median and mean time to first token per request after switching to its expert, per method."""
    from peft.utils.hotswap import hotswap_adapter

    from compeft.fastload import ResidentArtifact
    from compeft.serving import AdapterPool

    order = zipf_requests(experts, requests)
    made = [make_expert(work, f"e{i}", shape, 100 + i, device, rank=rank) for i in range(experts)]
    residents = [ResidentArtifact.open(art) for _, art in made]
    prompt = torch.randint(0, vocab, (1, 32), device=device)

    def first_token(model) -> int:
        with torch.no_grad():
            return int(model(prompt).logits[0, -1].argmax())

    def run(model, switch) -> dict:
        first_token(model)  # warm-up
        times = []
        for e in order:
            sync(device)
            t = time.perf_counter()
            switch(e)
            first_token(model)
            times.append(time.perf_counter() - t)
        return {"median_ms": ms(statistics.median(times)), "mean_ms": ms(statistics.fmean(times)),
                "p90_ms": ms(float(np.percentile(times, 90)))}

    base = llama(shape, vocab, device)
    results = {"experts": experts, "requests": requests, "distinct_requested": len(set(order)),
               "switches": sum(a != b for a, b in zip(order, order[1:])) + 1}
    model = with_lora(base, rank, device)
    results["no switch (prefill + first token only)"] = run(model, lambda e: None)
    for slots in (1, 4):
        pool = AdapterPool(model, gpu_slots=slots)
        for i, r in enumerate(residents):
            pool.add(f"e{i}", r)
        results[f"AdapterPool, {slots} GPU slot(s), all experts resident"] = run(model, lambda e, p=pool: p.activate(f"e{e}"))
        results[f"AdapterPool, {slots} GPU slot(s), all experts resident"]["stats"] = {
            k: v for k, v in pool.stats().items() if k in ("hits", "misses", "bytes_held")}
        for name in list(model.peft_config):
            if name != "default":
                model.delete_adapter(name)
        model.set_adapter("default")
    current = {"e": None}

    def hot(e):
        if current["e"] != e:
            hotswap_adapter(model, str(made[e][0]), adapter_name="default", torch_device=str(device))
            current["e"] = e

    results["peft hotswap_adapter from the dir"] = run(model, hot)
    loaded: OrderedDict[str, None] = OrderedDict()

    def load(e):
        name = f"p{e}"
        if name not in loaded:
            model.load_adapter(str(made[e][0]), adapter_name=name)
            loaded[name] = None
            if len(loaded) > 4:
                model.delete_adapter(loaded.popitem(last=False)[0])
        loaded.move_to_end(name)
        model.set_adapter(name)

    results["peft load_adapter from the dir, 4 kept on the GPU (LRU)"] = run(model, load)
    dense = (made[0][0] / "adapter_model.safetensors").stat().st_size
    results["experts_per_gib"] = {"compressed": 2**30 / residents[0].nbytes, "dense fp32": 2**30 / dense}
    results["shape"] = f"{shape.name}: hidden {shape.hidden}, MLP {shape.intermediate}, {shape.layers} layers, r = {rank}"
    return results


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = [f"# Serving benchmark ({'tiny dry run' if results['tiny'] else 'issue 13'})", "",
             f"- machine: {m.get('gpu', m.get('cpu_model', m['cpu']))}, torch {m['torch']}, {m.get('triton', '')} "
             f"{m['date']}; command: `{results['command']}`"]
    bw = results.get("bandwidth") or {}
    if bw:
        lines.append(f"- measured: pinned H2D {bw['h2d_GBps']:.1f} GB/s, device fill {bw['fill_GBps']:.0f} GB/s")
    for table in results["swap"]:
        lines += ["", f"## Swap, {table['shape']} ({table['base']}), {table['tensors']} tensors, artifact "
                  f"{table['artifact_bytes']:,} B vs dense fp32 {table['dense_fp32_bytes']:,} B; exact: {table['exact']}",
                  "", "| way to put an adapter into the live model | median ms |", "|---|---|"]
        lines += [f"| {k} | {v:.2f} |" for k, v in table["rows_ms"].items()]
        lines += ["", "experts per GiB of host memory: " + ", ".join(
            f"{k} {v:.1f}" for k, v in table["experts_per_gib"].items())]
    t = results.get("ttft")
    if t:
        lines += ["", f"## Time to first token after switching ({t['shape']}; {t['requests']} requests over "
                  f"{t['experts']} experts, Zipf s = 1, {t['distinct_requested']} distinct, {t['switches']} switches)",
                  "", "| method | median ms | mean ms | p90 ms |", "|---|---|---|---|"]
        for k, v in t.items():
            if isinstance(v, dict) and "median_ms" in v:
                lines.append(f"| {k} | {v['median_ms']:.2f} | {v['mean_ms']:.2f} | {v['p90_ms']:.2f} |")
        lines += ["", "experts per GiB of host memory: " + ", ".join(f"{k} {v:.1f}" for k, v in t["experts_per_gib"].items())]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serving", description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny shapes on the CPU: a dry run of the whole script")
    parser.add_argument("--shapes", default="7B,65B")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--experts", type=int, default=None)
    parser.add_argument("--requests", type=int, default=None)
    parser.add_argument("--skip-ttft", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    device = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    repeats = args.repeats or (3 if args.tiny else 10)
    shapes = TINY if args.tiny else FULL
    vocab = 256 if args.tiny else 32000
    work = Path(tempfile.mkdtemp(prefix="compeft-serving-bench-"))
    results = {"machine": machine_info(device), "tiny": args.tiny, "repeats": repeats,
               "command": "python -m bench.serving " + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
               "bandwidth": bandwidths(device), "swap": []}
    for name in args.shapes.split(","):
        t = time.perf_counter()
        results["swap"].append(swap_table(shapes[name], device, work, repeats, meta=name == "65B", vocab=vocab))
        print(f"{name}: {json.dumps(results['swap'][-1]['rows_ms'])} ({time.perf_counter() - t:.0f} s)", flush=True)
    if not args.skip_ttft:
        t = time.perf_counter()
        results["ttft"] = ttft(SMALL["tiny" if args.tiny else "full"], device, work, args.experts or (6 if args.tiny else 50),
                               args.requests or (12 if args.tiny else 100), vocab, rank=8 if args.tiny else 16)
        print(f"ttft ({time.perf_counter() - t:.0f} s)", flush=True)
    out = Path(args.out or f"bench/results/{'cpu' if device.type == 'cpu' else 'gpu'}")
    out.mkdir(parents=True, exist_ok=True)
    stem = "serving_tiny" if args.tiny else "serving"
    (out / f"{stem}.json").write_text(json.dumps(results, indent=1, default=str))
    (out / f"{stem}.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
