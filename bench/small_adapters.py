"""Small adapters (issue 12, "Small adapters"): the container's fixed cost against the entropy bound.

Builds synthetic adapters with kept entries spread evenly (i.i.d. Gaussian deltas, so a global top-k keeps
about k of every tensor), compresses them with the golomb codec at several densities and reports the whole
file against H(k)·d: a 20M-parameter, 224-tensor LoRA (Qwen2-7B shapes, r = 32 on q/k/v/o) whose file must
stay within 1.02 × H(k)·d bits + 4 KiB, and small (IA)³ adapters. CPU only; sizes, not timings.

    python -m bench.small_adapters [--densities 0.01,0.02,0.05,0.1,0.2] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from compeft import api
from compeft.adapters import write_adapter
from compeft.stats import entropy_bits_per_param

SLACK_BYTES = 4096
SLACK_FACTOR = 1.02


@dataclass(frozen=True)
class Case:
    """A synthetic adapter: peft type, module shapes (name → (in, out)), layers and rank."""

    name: str
    peft_type: str
    layers: int
    modules: tuple[tuple[str, int, int], ...]  # (module path in a layer, in_features, out_features)
    rank: int = 0

    def tensors(self, seed: int = 0) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        out = {}
        for i in range(self.layers):
            for module, fan_in, fan_out in self.modules:
                prefix = f"base_model.model.model.layers.{i}.{module}"
                if self.peft_type == "LORA":
                    out[f"{prefix}.lora_A.weight"] = torch.randn(self.rank, fan_in, generator=g)
                    out[f"{prefix}.lora_B.weight"] = torch.randn(fan_out, self.rank, generator=g)
                else:  # (IA)³: one scaling vector per module, around its init 1
                    width = fan_in if module.startswith("mlp.") else fan_out
                    out[f"{prefix}.ia3_l"] = 1 + 0.1 * torch.randn(width, generator=g)
        return out

    def config(self) -> dict:
        targets = sorted({m.rsplit(".", 1)[-1] for m, _, _ in self.modules})
        common = {"peft_type": self.peft_type, "base_model_name_or_path": f"synthetic/{self.name}",
                  "target_modules": targets, "task_type": "CAUSAL_LM"}
        if self.peft_type == "LORA":
            return {**common, "r": self.rank, "lora_alpha": 2 * self.rank}
        return {**common, "feedforward_modules": [t for t in targets if t.endswith("down_proj")]}


QWEN2_7B_ATTENTION = (("self_attn.q_proj", 3584, 3584), ("self_attn.k_proj", 3584, 512),
                      ("self_attn.v_proj", 3584, 512), ("self_attn.o_proj", 3584, 3584))
LLAMA_7B_IA3 = (("self_attn.k_proj", 4096, 4096), ("self_attn.v_proj", 4096, 4096), ("mlp.down_proj", 11008, 4096))
CASES = {
    "lora-20M-224": Case("qwen2-7b-r32-qkvo", "LORA", 28, QWEN2_7B_ATTENTION, rank=32),
    "ia3-llama7b": Case("llama-7b-ia3", "IA3", 32, LLAMA_7B_IA3),
    "ia3-small": Case("tiny-ia3", "IA3", 12, (("self_attn.k_proj", 64, 64), ("self_attn.v_proj", 64, 64),
                                              ("mlp.down_proj", 128, 64))),
}


def measure(case: Case, densities: list[float], work: Path) -> list[dict]:
    """Compress ``case`` at each density; the file's bytes against the bound and where they go."""
    src = work / case.name
    tensors = case.tensors()
    write_adapter(src, json.dumps(case.config(), indent=2).encode(), tensors)
    source_bytes = (src / "adapter_model.safetensors").stat().st_size
    rows = []
    for k in densities:
        dst = work / f"{case.name}-{k}"
        info = api.compress(src, dst, density=k, alpha=1.0, codec="golomb", device="cpu")
        bound_bits = entropy_bits_per_param(k) * info.d
        rows.append({
            "case": case.name, "peft_type": case.peft_type, "tensors": info.tensors, "d": info.d, "density": k,
            "kept": info.kept, "source_bytes": source_bytes, "file_bytes": info.bytes_artifact,
            "payload_bytes": info.payload_bytes, "container_bytes": info.bytes_artifact - info.payload_bytes,
            "entropy_bytes": bound_bits / 8, "limit_bytes": SLACK_FACTOR * bound_bits / 8 + SLACK_BYTES,
            "file_over_entropy": info.bytes_artifact / (bound_bits / 8) if bound_bits else None,
            "format_version": info.format_version,
        })
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.small_adapters", description=__doc__.splitlines()[0])
    parser.add_argument("--densities", default="0.01,0.02,0.05,0.1,0.2")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--json", type=Path, default=None, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    densities = [float(x) for x in args.densities.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.cases.split(","):
            rows += measure(CASES[name], densities, Path(tmp))
    print("| case | tensors | d | k | source bytes | file bytes | payload | container | H(k)·d bytes | limit | file / H(k)·d |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        ok = "" if r["file_bytes"] <= r["limit_bytes"] else " (over)"
        print(f"| {r['case']} | {r['tensors']} | {r['d']:,} | {r['density']:g} | {r['source_bytes']:,} | "
              f"{r['file_bytes']:,}{ok} | {r['payload_bytes']:,} | {r['container_bytes']:,} | {r['entropy_bytes']:,.0f} | "
              f"{r['limit_bytes']:,.0f} | {r['file_over_entropy']:.4f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
