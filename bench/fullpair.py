"""Full fine-tune pairs with LLaMA shapes (base + fine-tune, bf16, sharded safetensors), made locally for the
full-residual benchmarks and tests (issue 17), and the peak anonymous memory of a process (/proc RssAnon)."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class ModelShape:
    """A LLaMA-like causal LM: hidden width, MLP width, layers, vocabulary."""

    name: str
    hidden: int
    intermediate: int
    layers: int
    vocab: int = 32000

    def tensors(self) -> list[tuple[str, tuple[int, ...]]]:
        """(name, shape) of every weight, as transformers names a LlamaForCausalLM's."""
        h, f = self.hidden, self.intermediate
        out = [("model.embed_tokens.weight", (self.vocab, h)), ("model.norm.weight", (h,)), ("lm_head.weight", (self.vocab, h))]
        for i in range(self.layers):
            p = f"model.layers.{i}."
            out += [(p + "input_layernorm.weight", (h,)), (p + "post_attention_layernorm.weight", (h,))]
            out += [(p + f"self_attn.{m}_proj.weight", (h, h)) for m in "qkvo"]
            out += [(p + "mlp.gate_proj.weight", (f, h)), (p + "mlp.up_proj.weight", (f, h)), (p + "mlp.down_proj.weight", (h, f))]
        return out

    @property
    def params(self) -> int:
        return sum(int(torch.Size(s).numel()) for _, s in self.tensors())

    def config(self) -> dict:
        return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": self.hidden,
                "intermediate_size": self.intermediate, "num_hidden_layers": self.layers, "num_attention_heads": max(1, self.hidden // 128),
                "num_key_value_heads": max(1, self.hidden // 128), "vocab_size": self.vocab, "torch_dtype": "bfloat16",
                "rms_norm_eps": 1e-5, "max_position_embeddings": 4096, "tie_word_embeddings": False}


MODEL_SHAPES = {s.name: s for s in (
    ModelShape("tiny", 256, 688, 2, 4096),
    ModelShape("0.2B", 1024, 2816, 12),
    ModelShape("1B", 2048, 5632, 16),
    ModelShape("2B", 2560, 6912, 20),
    ModelShape("7B", 4096, 11008, 32),
)}


def pair_dirs(shape: ModelShape, root: Path) -> tuple[Path, Path]:
    """(fine-tune dir, base dir) of the pair ``write_pair`` makes under ``root``."""
    return root / f"{shape.name}-ft", root / f"{shape.name}-base"


def write_pair(shape: ModelShape, root: Path, *, shard_bytes: int = 1 << 30, seed: int = 0, delta: float = 2e-3,
               device: str = "cpu") -> tuple[Path, Path]:
    """(fine-tune dir, base dir): base ~ N(0, 0.02²), fine-tune = base + N(0, delta²), both bf16, sharded at
    ``shard_bytes`` like save_pretrained; one shard at a time in memory."""
    from safetensors.torch import save_file

    ft_dir, base_dir = pair_dirs(shape, root)
    gen = torch.Generator(device=device).manual_seed(seed)
    shards: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    used = 0
    for name, dims in shape.tensors():
        size = 2 * int(torch.Size(dims).numel())
        if shards[-1] and used + size > shard_bytes:
            shards.append([])
            used = 0
        shards[-1].append((name, dims))
        used += size
    for d in (base_dir, ft_dir):
        d.mkdir(parents=True, exist_ok=True)
        config = shape.config() | {"_name_or_path": str(base_dir) if d == ft_dir else shape.name}
        (d / "config.json").write_text(json.dumps(config, indent=2))
    weight_map, total = {}, 0
    for i, members in enumerate(shards):
        file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        base_t, ft_t = {}, {}
        for name, dims in members:
            b = torch.randn(dims, generator=gen, device=device) * 0.02
            if name.endswith("norm.weight"):
                b += 1
            f = b + torch.randn(dims, generator=gen, device=device) * delta
            base_t[name], ft_t[name] = b.to(torch.bfloat16).cpu(), f.to(torch.bfloat16).cpu()
            weight_map[name] = file
            total += 2 * b.numel()
        save_file(base_t, str(base_dir / file), metadata={"format": "pt"})
        save_file(ft_t, str(ft_dir / file), metadata={"format": "pt"})
    index = json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2)
    for d in (base_dir, ft_dir):
        (d / "model.safetensors.index.json").write_text(index)
    return ft_dir, base_dir


def rss_anon(pid: int | str = "self") -> int:
    """A process's anonymous resident memory in bytes (RssAnon: file pages, such as mapped models, excluded)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise OSError(f"no RssAnon in /proc/{pid}/status")


class AnonPeak:
    """Samples a process's RssAnon (this one by default) every few milliseconds in a thread; ``peak`` is the largest
    value seen. Sampling another process from outside costs that process no CPU time and no GIL switches."""

    def __init__(self, interval: float = 0.002, pid: int | str = "self") -> None:
        self.interval, self.pid, self._stop = interval, pid, threading.Event()
        self.peak = rss_anon(pid)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> bool:
        try:
            self.peak = max(self.peak, rss_anon(self.pid))
        except OSError:  # the process has exited (or is a zombie without memory)
            return False
        return True

    def _run(self) -> None:
        while not self._stop.is_set() and self._sample():
            time.sleep(self.interval)

    def __enter__(self) -> AnonPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
