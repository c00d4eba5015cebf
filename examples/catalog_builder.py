"""Build the example catalog locally: a word-level tokenizer, a tiny Llama pre-trained on the synthetic
language, three trained LoRA adapters (lora-plus: rank 64 on the MLP, A/B norm-balanced, which a
calibrated α brings back to the original's score at k = 0.3 and halfway at k = 0.1; lora-color /
lora-pair: rank 8 on every linear layer, the hard cases), one (IA)³ adapter and one full fine-tune,
with the lm-eval task YAMLs of examples/catalog/tasks. Nothing is downloaded; seeds are fixed.

``build_example_catalog(out_dir)`` builds into out_dir (reusing a complete build there).
``example_catalog()`` returns the bundled build in examples/catalog/ (1.5 MB, committed: training
is float arithmetic, and a rebuild on another CPU or library version gives slightly different adapters
whose scores the calibration tests pin), or, when the builder's sources changed since that build, a
fresh build cached under a hash of the sources. ``python -m examples.catalog_builder --regen`` rebuilds
the bundled copy (explicitly only, like golden fixtures); ``python -m examples.catalog_builder OUT_DIR``
builds anywhere (run both from the repository root).

Layout (base model directory beside the adapter directories)::

    OUT/catalog.json
    OUT/tiny-llama/            config.json, model.safetensors, tokenizer.json, ...
    OUT/lora-color/            adapter_config.json (base_model_name_or_path "../tiny-llama"), adapter_model.safetensors
    OUT/lora-pair/             same, base_model_name_or_path "" (as for models built from a config)
    OUT/lora-plus/
    OUT/ia3-next/
    OUT/full-color/            a full fine-tune of tiny-llama (config.json, model.safetensors)
    OUT/tasks/                 the task YAMLs and JSONL splits (tasks_gen's; in the bundled build, the one copy)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

CATALOG_FILE = "catalog.json"
PROVENANCE_FILE = "provenance.json"
BUNDLED = Path(__file__).resolve().parent / "catalog"
BASE_NAME = "tiny-llama"
PRETRAIN_SEED = 1234
FORMAT_VERSION = 1


@dataclass(frozen=True)
class AdapterFixture:
    """One trained adapter of the catalog: where it is, its kind and the task it was trained on."""

    name: str
    path: Path
    peft_type: str  # LORA, IA3 or FULL (a full fine-tune directory)
    task: str  # short task name (color, pair, plus, next)
    task_yaml: Path


@dataclass(frozen=True)
class ExampleCatalog:
    """Paths of a built catalog: the base model directory, the adapters and the task YAMLs."""

    root: Path
    base_dir: Path
    adapters: tuple[AdapterFixture, ...]
    task_yamls: dict[str, Path]
    build_seconds: float

    def adapter(self, name: str) -> AdapterFixture:
        """The adapter fixture called name (lora-color, ia3-next, ...)."""
        for a in self.adapters:
            if a.name == name:
                return a
        raise KeyError(f"no adapter {name!r} in {self.root}")

    def to_json(self) -> dict:
        return {
            "format": FORMAT_VERSION,
            "base": self.base_dir.name,
            "adapters": [
                {"name": a.name, "path": a.path.name, "peft_type": a.peft_type, "task": a.task,
                 "task_yaml": str(a.task_yaml.relative_to(self.root))}
                for a in self.adapters
            ],
            "tasks": {k: str(v.relative_to(self.root)) for k, v in self.task_yamls.items()},
            "build_seconds": round(self.build_seconds, 2),
        }

    @classmethod
    def from_json(cls, root: Path, data: dict) -> ExampleCatalog:
        adapters = tuple(
            AdapterFixture(a["name"], root / a["path"], a["peft_type"], a["task"], root / a["task_yaml"])
            for a in data["adapters"]
        )
        tasks = {k: root / v for k, v in data["tasks"].items()}
        return cls(root, root / data["base"], adapters, tasks, float(data.get("build_seconds", 0.0)))


# ------------------------------------------------------------------------------------------ recipe
@dataclass(frozen=True)
class AdapterRecipe:
    """How one adapter is trained: its PEFT kind, task, steps, learning rate and seed."""

    name: str
    kind: str  # "lora", "ia3" or "full"
    task: str
    steps: int
    lr: float
    seed: int
    record_base: bool = True  # write base_model_name_or_path ("../tiny-llama") or leave it empty
    rank: int = 8
    lora_alpha: int = 16
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    balance: bool = False  # rescale A·c, B/c so ‖A‖ = ‖B‖ per module (same function, see balance_lora)


RECIPES: tuple[AdapterRecipe, ...] = (
    AdapterRecipe("lora-color", "lora", "color", 200, 3e-3, 21),
    AdapterRecipe("lora-pair", "lora", "pair", 150, 3e-3, 22, record_base=False),
    AdapterRecipe("lora-plus", "lora", "plus", 150, 3e-3, 23, rank=64, lora_alpha=64,
                  targets=("gate_proj", "up_proj", "down_proj"), balance=True),
    AdapterRecipe("ia3-next", "ia3", "next", 150, 3e-2, 24),
    AdapterRecipe("full-color", "full", "color", 100, 2e-3, 25),
)
PRETRAIN_STEPS = 400
WORKERS = 2  # adapters train in parallel processes, one thread each (tiny models: threads only add overhead)
PRETRAIN_SENTENCES = 6000
TRAIN_DOCS = 1024
BATCH = 64


def model_config(vocab_size: int):
    """The tiny Llama: 2 layers, hidden 64, 4 heads, SiLU MLP 128."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
        pad_token_id=0, bos_token_id=2, eos_token_id=3, tie_word_embeddings=False,
    )


def build_tokenizer(out: Path):
    """A word-level tokenizer over the synthetic vocabulary, saved as a PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from examples.language import vocabulary

    vocab = {w: i for i, w in enumerate(vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>",
        model_max_length=64,
    )
    fast.save_pretrained(out)
    return fast


def encode_batch(tok, texts: Sequence[str], loss_from: Sequence[int] | None = None):
    """Token ids (words + EOS, no BOS: lm-eval's HFLM adds none), mask and labels (−100 on padding/prompts)."""
    import torch

    ids = [[*tok(t, add_special_tokens=False)["input_ids"], tok.eos_token_id] for t in texts]
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    labels = torch.full((len(ids), width), -100, dtype=torch.long)
    for i, row in enumerate(ids):
        input_ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
        start = 0 if loss_from is None else loss_from[i]
        labels[i, start : len(row)] = torch.tensor(row[start:])
    return input_ids, mask, labels


def train_loop(model, params: Iterable, batches, steps: int, lr: float) -> float:
    """Plain AdamW over the given batches (cycled); returns the last loss."""
    import torch

    opt = torch.optim.AdamW(list(params), lr=lr, weight_decay=0.0)
    model.train()
    loss_value = float("nan")
    for step in range(steps):
        input_ids, mask, labels = batches[step % len(batches)]
        out = model(input_ids=input_ids, attention_mask=mask, labels=labels)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        loss_value = out.loss.item()
    model.eval()
    return loss_value


def make_batches(tok, texts: Sequence[str], loss_from: Sequence[int] | None = None):
    """Fixed batches of BATCH examples."""
    out = []
    for i in range(0, len(texts), BATCH):
        sub_from = None if loss_from is None else loss_from[i : i + BATCH]
        out.append(encode_batch(tok, texts[i : i + BATCH], sub_from))
    return out


def task_batches(tok, task: str, seed: int):
    """Training batches of a task: prompt + gold answer, loss on the answer (and EOS) only."""
    import random

    from examples.language import training_texts

    pairs = list(training_texts(task, TRAIN_DOCS))
    random.Random(seed).shuffle(pairs)
    texts = [f"{q} {a}" for q, a in pairs]
    # the answer starts right after the prompt's words
    loss_from = [len(q.split()) for q, _ in pairs]
    return make_batches(tok, texts, loss_from)


def pretrain_base(out: Path) -> None:
    """Pre-train the tiny Llama on plain sentences and save it with its tokenizer."""
    import torch
    from transformers import LlamaForCausalLM

    from examples.language import pretraining_sentences

    tok = build_tokenizer(out)
    torch.manual_seed(PRETRAIN_SEED)
    model = LlamaForCausalLM(model_config(len(tok)))
    batches = make_batches(tok, pretraining_sentences(PRETRAIN_SENTENCES, PRETRAIN_SEED))
    train_loop(model, model.parameters(), batches, PRETRAIN_STEPS, 3e-3)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out)


def load_base(base_dir: Path):
    """The saved base model (float32, eval mode) and its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model.eval()
    return model, AutoTokenizer.from_pretrained(base_dir)


def train_adapter(recipe: AdapterRecipe, base_dir: Path, out: Path) -> None:
    """Train one adapter (or full fine-tune) of the recipe on its task and save it to out."""
    import torch
    from peft import IA3Config, LoraConfig, get_peft_model

    model, tok = load_base(base_dir)
    torch.manual_seed(recipe.seed)
    batches = task_batches(tok, recipe.task, recipe.seed)
    if recipe.kind == "full":
        train_loop(model, model.parameters(), batches, recipe.steps, recipe.lr)
        model.save_pretrained(out)
        tok.save_pretrained(out)
        return
    if recipe.kind == "lora":
        cfg = LoraConfig(r=recipe.rank, lora_alpha=recipe.lora_alpha, lora_dropout=0.0, task_type="CAUSAL_LM",
                         target_modules=list(recipe.targets))
    else:
        cfg = IA3Config(task_type="CAUSAL_LM", target_modules=["k_proj", "v_proj", "down_proj"],
                        feedforward_modules=["down_proj"])
    peft_model = get_peft_model(model, cfg)
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    train_loop(peft_model, trainable, batches, recipe.steps, recipe.lr)
    if recipe.balance:
        balance_lora(peft_model)
    peft_model.save_pretrained(out)
    config_path = out / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = f"../{BASE_NAME}" if recipe.record_base else ""
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def balance_lora(peft_model) -> None:
    """Rescale each LoRA pair to A·c, B/c with c = sqrt(‖B‖/‖A‖): B·A (the adapter) is unchanged.

    LoRA's A starts random and B at zero, so after short training their magnitudes differ and a
    global top-k keeps mostly one of them; equal norms let it keep entries of both, which compresses
    far better. The gauge is free, so the adapter
    is the same function.
    """
    import torch

    with torch.no_grad():
        for module in peft_model.modules():
            a_dict, b_dict = getattr(module, "lora_A", None), getattr(module, "lora_B", None)
            if not isinstance(a_dict, torch.nn.ModuleDict) or not isinstance(b_dict, torch.nn.ModuleDict):
                continue
            for name, a in a_dict.items():
                b = b_dict[name]
                na, nb = a.weight.norm(), b.weight.norm()
                if float(na) > 0 and float(nb) > 0:
                    c = (nb / na).sqrt()
                    a.weight.mul_(c)
                    b.weight.div_(c)


def write_catalog_tasks(out: Path) -> dict[str, Path]:
    """Write the task YAMLs and JSONL splits into out/tasks; returns short name -> YAML.

    They come from tasks_gen (the same bytes as the committed examples/catalog/tasks, which a test
    checks), not copied from the bundled catalog: that is the one stored copy, and ``--regen``
    replaces it.
    """
    from examples.language import TASKS
    from examples.tasks_gen import write_tasks as write_task_files

    dst = out / "tasks"
    write_task_files(dst)
    return {short: dst / f"{short}.yaml" for short in TASKS}


def _train_one(args: tuple[AdapterRecipe, str, str]) -> str:
    """Worker entry point: train one recipe with a single thread."""
    import torch

    recipe, base_dir, out = args
    torch.set_num_threads(1)
    train_adapter(recipe, Path(base_dir), Path(out))
    return recipe.name


def _build_into(out: Path) -> ExampleCatalog:
    """Build every piece of the catalog into the (empty) directory out."""
    import multiprocessing

    import torch

    start = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model: one thread is fastest, and numerics do not depend on the machine
    try:
        base_dir = out / BASE_NAME
        pretrain_base(base_dir)
        tasks = write_catalog_tasks(out)
        jobs = [(recipe, str(base_dir), str(out / recipe.name)) for recipe in RECIPES]
        if WORKERS > 1:
            with multiprocessing.get_context("spawn").Pool(WORKERS) as pool:
                list(pool.imap_unordered(_train_one, jobs))
        else:
            for job in jobs:
                _train_one(job)
    finally:
        torch.set_num_threads(threads)
    adapters = tuple(
        AdapterFixture(r.name, out / r.name, r.kind.upper(), r.task, tasks[r.task]) for r in RECIPES
    )
    catalog = ExampleCatalog(out, base_dir, adapters, tasks, time.perf_counter() - start)
    (out / CATALOG_FILE).write_text(json.dumps(catalog.to_json(), indent=2) + "\n")
    return catalog


def read_catalog(root: Path) -> ExampleCatalog | None:
    """The catalog built in root, or None when root holds no complete build."""
    path = Path(root) / CATALOG_FILE
    if not path.is_file():
        return None
    try:
        return ExampleCatalog.from_json(Path(root), json.loads(path.read_text()))
    except (KeyError, TypeError, ValueError, json.JSONDecodeError):
        return None


def build_example_catalog(out_dir: str | Path, force: bool = False) -> ExampleCatalog:
    """Build the catalog into out_dir, or return the complete build already there.

    The build goes to a sibling temporary directory first and is renamed into place, so a concurrent
    builder or an interrupted build never leaves a half-written catalog behind.
    """
    out = Path(out_dir).resolve()
    if not force and (existing := read_catalog(out)) is not None:
        return existing
    if not force and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out}: exists and holds no complete catalog (pass force=True / --force to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _build_into(tmp)
        if force and out.exists():
            shutil.rmtree(out)
        try:
            os.rename(tmp, out)
        except OSError:
            if (existing := read_catalog(out)) is not None:  # another process won the race
                return existing
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    catalog = read_catalog(out)
    if catalog is None:
        raise RuntimeError(f"{out}: catalog build left no {CATALOG_FILE}")
    return catalog


# The files that define the build: the three builder modules and the task files. Hashed by path
# relative to examples/, so moving or renaming any of them (or TASKS_DIR) changes builder_hash()
# although the build is the same: then recompute it and write it into examples/catalog/provenance.json
# ("builder_sha256", other keys kept), or the bundled catalog is ignored and rebuilt under .cache.
BUILDER_MODULES = ("catalog_builder.py", "language.py", "tasks_gen.py")
TASK_SUFFIXES = (".yaml", ".jsonl")


def builder_files() -> list[Path]:
    """The builder's modules and the committed task files, in a fixed order."""
    from examples.tasks_gen import TASKS_DIR

    here = Path(__file__).resolve().parent
    tasks = sorted(f for f in TASKS_DIR.iterdir() if f.is_file() and f.suffix in TASK_SUFFIXES)
    return [*(here / name for name in BUILDER_MODULES), *tasks]


def builder_hash() -> str:
    """sha256 of the builder's sources and task files: what the bundled catalog was built from."""
    h = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for f in builder_files():
        h.update(f.relative_to(here).as_posix().encode())
        h.update(b"\0")
        h.update(f.read_bytes())
    return h.hexdigest()


def library_versions() -> dict[str, str]:
    import peft
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}


def source_hash() -> str:
    """Hash of the builder's sources, the task files and the library versions: the cache key."""
    versions = library_versions()
    h = hashlib.sha256(builder_hash().encode())
    h.update(f"{versions['torch']} {versions['transformers']} {versions['peft']}".encode())
    return h.hexdigest()[:16]


def bundled_catalog() -> ExampleCatalog | None:
    """The committed catalog, or None when it is missing or was built from other builder sources."""
    try:
        provenance = json.loads((BUNDLED / PROVENANCE_FILE).read_text())
    except (OSError, ValueError):
        return None
    if provenance.get("builder_sha256") != builder_hash():
        return None
    return read_catalog(BUNDLED)


def regenerate_bundled() -> ExampleCatalog:
    """Rebuild examples/catalog/ from the builder (the explicit ``--regen`` mode)."""
    catalog = build_example_catalog(BUNDLED, force=True)
    provenance = {"builder_sha256": builder_hash(), **library_versions()}
    (BUNDLED / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
    return catalog


def default_cache_root() -> Path:
    """COMPEFT_FIXTURE_CACHE, else .cache/fixtures of the source checkout, else ~/.cache/compeft/fixtures."""
    if env := os.environ.get("COMPEFT_FIXTURE_CACHE"):
        return Path(env)
    repo = Path(__file__).resolve().parents[1]  # examples/ sits in the repository root
    if (repo / "pyproject.toml").is_file():
        return repo / ".cache" / "fixtures"
    return Path.home() / ".cache" / "compeft" / "fixtures"


def example_catalog(cache_root: str | Path | None = None) -> ExampleCatalog:
    """The bundled catalog, else (builder changed since) one built once per source hash under the cache root."""
    if cache_root is None and (bundled := bundled_catalog()) is not None:
        return bundled
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    return build_example_catalog(root / f"catalog-{source_hash()}")


def main(argv: list[str] | None = None) -> int:
    """``python -m examples.catalog_builder [OUT_DIR] [--force] | --regen``: build and print the catalog."""
    args = list(sys.argv[1:] if argv is None else argv)
    force = "--force" in args
    regen = "--regen" in args
    args = [a for a in args if a not in ("--force", "--regen")]
    if regen:
        catalog = regenerate_bundled()
    else:
        catalog = build_example_catalog(args[0], force=force) if args else example_catalog()
    print(json.dumps({"root": str(catalog.root), **catalog.to_json()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
