"""Load the model once for a sweep and expose the live tensors the ternary update writes into.

An adapter is loaded as base + PEFT adapter (``PeftModel.from_pretrained``); a full fine-tune is
loaded from its own directory (so carried tensors such as resized embeddings are right) and its
residual tensors are rewritten as base + s·t. ``live`` maps the names used in the artifact (adapter
file keys, checkpoint tensor names) to tensors sharing storage with the model's parameters.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from compeft.errors import CalibrationError, InputError

ADAPTER_CONFIG = "adapter_config.json"


@dataclass(frozen=True)
class LoadedModel:
    """The model under calibration: the module lm-eval runs, its tokenizer and the writable tensors."""

    model: Any = field(repr=False)  # a transformers PreTrainedModel (PEFT layers injected for adapters)
    tokenizer: Any = field(repr=False)
    live: dict[str, torch.Tensor] = field(repr=False)
    kind: str  # "adapter" or "full"
    device: torch.device
    load_seconds: float


def is_adapter_dir(path: Path) -> bool:
    """A PEFT adapter directory has adapter_config.json; a full model directory has config.json."""
    return (path / ADAPTER_CONFIG).is_file()


def resolve_base(base: str) -> str:
    """A local base directory as an absolute path, or a model id passed on as given (hub resolution)."""
    p = Path(base).expanduser()
    if p.is_dir():
        return str(p.resolve())
    if p.is_absolute() or base.startswith((".", "~")) or base.count("/") > 1:
        raise InputError(f"--base {base}: no such model directory")
    return base


def local_base_dir(base: str) -> Path:
    """A local directory for the base (a model id is fetched through huggingface_hub's cache/endpoint)."""
    p = Path(base).expanduser()
    if p.is_dir():
        return p.resolve()
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=base, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"]))
    except Exception as err:
        raise InputError(f"--base {base}: not a local directory and could not be fetched ({type(err).__name__}: {err})") from err


def _load_tokenizer(*candidates: str):
    """The first tokenizer that loads from the candidate directories / ids."""
    from transformers import AutoTokenizer

    errors = []
    for c in candidates:
        try:
            return AutoTokenizer.from_pretrained(c)
        except (OSError, ValueError, KeyError, TypeError, ImportError) as err:  # no tokenizer there: try the next
            errors.append(f"{c}: {type(err).__name__}")
    raise CalibrationError(f"no tokenizer could be loaded ({'; '.join(errors)})")


def _from_pretrained(path: str, device: torch.device):
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype="auto")
    except Exception as err:
        raise CalibrationError(f"{path}: could not load the model ({type(err).__name__}: {err})") from err
    return model.to(device).eval()


def strip_adapter_name(name: str, adapter_name: str) -> str:
    """PEFT parameter name -> adapter file key (PEFT drops the adapter name component when saving)."""
    return ".".join(part for part in name.split(".") if part != adapter_name)


def load_adapter_model(src: Path, base: str, device: torch.device) -> LoadedModel:
    """Base model + PEFT adapter on device; live tensors keyed by adapter file key."""
    from peft import PeftModel

    start = time.perf_counter()
    base_ref = resolve_base(base)
    model = _from_pretrained(base_ref, device)
    try:
        peft_model = PeftModel.from_pretrained(model, str(src), is_trainable=False)
    except Exception as err:
        raise CalibrationError(f"{src}: could not attach the adapter to {base} ({type(err).__name__}: {err})") from err
    peft_model.eval()
    adapter_name = peft_model.active_adapter if isinstance(peft_model.active_adapter, str) else "default"
    live = {}
    for name, tensor in peft_model.state_dict(keep_vars=True).items():
        if f".{adapter_name}" in f".{name}":
            live[strip_adapter_name(name, adapter_name)] = tensor.data
    tokenizer = _load_tokenizer(str(src), base_ref)
    return LoadedModel(peft_model.get_base_model(), tokenizer, live, "adapter", device, time.perf_counter() - start)


def load_full_model(src: Path, device: torch.device) -> LoadedModel:
    """The fine-tuned model itself on device; live tensors keyed by state-dict name."""
    start = time.perf_counter()
    model = _from_pretrained(str(src), device)
    live = {name: t.data for name, t in model.state_dict(keep_vars=True).items()}
    tokenizer = _load_tokenizer(str(src))
    return LoadedModel(model, tokenizer, live, "full", device, time.perf_counter() - start)


def load_model(src: Path, base: str, device: torch.device) -> LoadedModel:
    """Load SRC (adapter over BASE, or a full fine-tune) once for the whole sweep."""
    if is_adapter_dir(src):
        return load_adapter_model(src, base, device)
    if (src / "config.json").is_file():
        return load_full_model(src, device)
    raise InputError(f"{src}: neither a PEFT adapter directory (adapter_config.json) nor a model directory (config.json)")
