"""Serve experts from the compressed form: a registry-filled ``AdapterPool`` answering requests that switch experts.

    python -m examples.serving [--workdir DIR] [--requests 12]

Runs on the CPU in seconds with the project's own tiny catalog (examples/catalog: a tiny LLaMA pre-trained on a
synthetic language and adapters trained on its tasks):

1. the service's rules put every adapter of the catalog into a local artifact store and a SQLite registry
   (what ``compeft catalog`` does through Prefect): register the adapter, compress it, store it, register the
   artifact;
2. a server starts with the base model and one dense adapter (``lora-color``), and fills an ``AdapterPool`` from
   the registry by id (``registry:ID``, resolved by ``storage.serving.ArtifactResolver``); adapters of another
   structure are refused with one line each;
3. requests alternate between the tasks: each activates its task's expert and answers a multiple-choice question
   by the choices' log-likelihood.

The two rank-8 experts are the catalog's hard cases for ComPEFT (docs/calibration.md: about 0.6 accuracy after
compression at k = 0.5, α = 2, against 1.0 for the dense adapters and 0.25–0.3 for the base), so some answers
are wrong; what a swap puts into the model is exactly the decompressed adapter (tests/core/test_serving_*.py).
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import torch

CATALOG = Path(__file__).resolve().parent / "catalog"
TASK_OF = {"lora-color": "color", "lora-pair": "pair"}


def fill_registry(workdir: Path):
    """Compress every adapter of the catalog into a local store and register it; returns (registry, store)."""
    from compeft import api
    from compeft.config import CompressionConfig
    from storage import catalog
    from storage.registry import open_registry
    from storage.sources import open_source
    from storage.stores import open_store
    from storage.values import AdapterRef

    registry = open_registry(f"sqlite:///{workdir / 'registry.db'}")
    store = open_store(workdir / "store")
    config = CompressionConfig(density=0.5, alpha=2.0, device="cpu")
    for ref in open_source(str(CATALOG)).iter_adapters():
        if not isinstance(ref, AdapterRef) or ref.peft_type == "FULL":
            continue  # the base model and the full fine-tune are not adapters (sources list them since issue 17)
        adapter = catalog.register_adapter(registry, Path(ref.uri), ref)
        info = api.compress(ref.uri, workdir / "artifacts" / ref.name, config)
        stored = store.put(Path(info.path))
        catalog.register_artifact(registry, adapter, info, stored, config.key_fields(), config.key())
    return registry, store


def load_server_model():
    """The base model with the adapter the server starts with, and the tokenizer."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    base = AutoModelForCausalLM.from_pretrained(CATALOG / "tiny-llama", dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(CATALOG / "lora-color")).eval()
    return model, PreTrainedTokenizerFast.from_pretrained(CATALOG / "tiny-llama")


def answer(model, tokenizer, question: str, choices: list[str]) -> int:
    """The choice with the highest log-likelihood after the question."""
    prompt = tokenizer(question)["input_ids"]
    scores = []
    for choice in choices:
        ids = prompt + tokenizer(" " + choice, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = model(torch.tensor([ids])).logits[0, :-1].log_softmax(-1)
        target = torch.tensor(ids[1:])
        scores.append(float(logp[torch.arange(len(target)), target][len(prompt) - 1 :].sum()))
    return max(range(len(choices)), key=scores.__getitem__)


def requests(n: int, seed: int = 0) -> list[tuple[str, dict]]:
    """``n`` (expert, question) pairs alternating between the tasks, drawn from their test splits."""
    rng = random.Random(seed)
    pools = {name: [json.loads(line) for line in (CATALOG / "tasks" / f"{task}_test.jsonl").read_text().splitlines()]
             for name, task in TASK_OF.items()}
    names = list(TASK_OF)
    return [(names[i % len(names)], rng.choice(pools[names[i % len(names)]])) for i in range(n)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.serving", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=None, help="where the store, registry and artifacts go (default: a temp dir)")
    parser.add_argument("--requests", type=int, default=12)
    args = parser.parse_args(argv)
    from compeft.errors import CompeftError
    from compeft.serving import AdapterPool
    from storage.serving import ArtifactResolver

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="compeft-serving-"))
    registry, store = fill_registry(workdir)
    model, tokenizer = load_server_model()
    pool = AdapterPool(model, gpu_slots=1, resolver=ArtifactResolver(registry=registry, store=store))
    rows, _ = registry.list_artifacts()
    for row in rows:
        name = Path(row.adapter_uri).name
        try:
            pool.add(name, f"registry:{row.artifact.id}")
            print(f"added {name} (registry:{row.artifact.id}, {row.artifact.bytes:,} bytes, {row.artifact.ratio:.1f}x smaller)")
        except CompeftError as err:
            print(f"skipped {name}: {err}")
    correct = 0
    for expert, doc in requests(args.requests):
        start = time.perf_counter()
        pool.activate(expert)
        switched = time.perf_counter() - start
        choice = answer(pool.model, tokenizer, doc["question"], doc["choices"])
        correct += choice == doc["label"]
        print(f"[{expert:10s}] {doc['question']} → {doc['choices'][choice]}"
              f"{'' if choice == doc['label'] else ' (wrong)'}  (switch {1e3 * switched:.1f} ms)")
    stats = pool.stats()
    print(f"{correct}/{args.requests} correct; pool: {stats['hits']} hits, {stats['misses']} misses, "
          f"{stats['bytes_held']:,} bytes held for {len(stats['resident'])} experts")
    registry.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
