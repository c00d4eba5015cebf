"""Load the model once for a sweep and expose the live tensors the ternary update writes into.

An adapter is attached to a loaded base (``load_base``, then ``PeftModel.from_pretrained`` on it) and
detached again without merging (``detach_adapter``), so one base can serve many adapters; a full
fine-tune is loaded from its own directory (so carried tensors such as resized embeddings are right)
and its residual tensors are rewritten as base + s·t. ``live`` maps the names used in the artifact
(adapter file keys, checkpoint tensor names) to tensors sharing storage with the model's parameters.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
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
    peft: Any = field(default=None, repr=False)  # the PeftModel wrapper of an attached adapter (to detach it)


@dataclass(frozen=True)
class LoadedBase:
    """A base model on a device, loaded once for any number of adapters, and its tokenizer (if it has one)."""

    model: Any = field(repr=False)  # a transformers PreTrainedModel without PEFT layers
    tokenizer: Any = field(repr=False)  # None where the base directory has no tokenizer
    ref: str  # resolve_base(base): absolute directory or model id
    device: torch.device
    load_seconds: float
    tokenizer_error: str | None = None  # why the base has no tokenizer


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


def load_base(base: str, device: torch.device) -> LoadedBase:
    """The base model (evaluation mode) and its tokenizer on device, for adapters to be attached to."""
    start = time.perf_counter()
    ref = resolve_base(base)
    model = _from_pretrained(ref, device)
    try:
        tokenizer, error = _load_tokenizer(ref), None
    except CalibrationError as err:  # adapters may bring their own tokenizer
        tokenizer, error = None, str(err)
    return LoadedBase(model, tokenizer, ref, device, time.perf_counter() - start, error)


def _adapter_tokenizer(src: Path, base: LoadedBase):
    """The adapter's own tokenizer if its directory has one, else the base's."""
    try:
        return _load_tokenizer(str(src))
    except CalibrationError as err:
        if base.tokenizer is None:
            raise CalibrationError(f"{err}; {base.tokenizer_error}") from err
        return base.tokenizer


def attach_adapter(base: LoadedBase, src: Path) -> LoadedModel:
    """Inject the PEFT adapter at SRC into the loaded base (in place); live tensors keyed by adapter file key."""
    from peft import PeftModel

    start = time.perf_counter()
    tokenizer = _adapter_tokenizer(src, base)
    try:
        peft_model = PeftModel.from_pretrained(base.model, str(src), is_trainable=False)
    except Exception as err:
        detach_adapter(base.model)  # a half-injected adapter must not stay in the base
        raise CalibrationError(f"{src}: could not attach the adapter to {base.ref} ({type(err).__name__}: {err})") from err
    peft_model.eval()
    adapter_name = peft_model.active_adapter if isinstance(peft_model.active_adapter, str) else "default"
    live = {}
    for name, tensor in peft_model.state_dict(keep_vars=True).items():
        if f".{adapter_name}" in f".{name}":
            live[strip_adapter_name(name, adapter_name)] = tensor.data
    return LoadedModel(peft_model.get_base_model(), tokenizer, live, "adapter", base.device,
                       time.perf_counter() - start, peft_model)


def peft_layers(model: Any) -> tuple[str, ...]:
    """Names of the PEFT modules (tuner layers, modules_to_save/trainable-token wrappers) inside MODEL."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.other import AuxiliaryTrainingWrapper

    return tuple(name for name, module in model.named_modules()
                 if isinstance(module, (BaseTunerLayer, AuxiliaryTrainingWrapper)))


def detach_adapter(model: Any, peft_model: Any = None) -> tuple[str, ...]:
    """Remove every PEFT module from MODEL without merging; returns the names of any that could not be removed.

    ``peft_model.unload()`` does the work where the wrapper exists; a half-attached adapter (failed
    ``from_pretrained``) is stripped module by module the same way (base layer back in its place).
    """
    if peft_model is not None:
        try:
            peft_model.unload()
        except Exception:  # noqa: BLE001 - fall back to stripping the modules one by one below
            pass
    while names := peft_layers(model):  # each pass removes the outermost wrappers (wrappers may nest)
        removed = 0
        for name in names:
            parent_name, _, child = name.rpartition(".")
            try:
                parent = model.get_submodule(parent_name) if parent_name else model
                module = getattr(parent, child)
                if hasattr(module, "unload_and_optionally_merge_module"):
                    replacement = module.unload_and_optionally_merge_module(merge=False, safe_merge=False,
                                                                            adapter_names=None)
                else:
                    replacement = module.get_base_layer()
            except Exception:  # noqa: BLE001 - inside a wrapper removed earlier, or not removable: reported below
                continue
            setattr(parent, child, replacement)
            removed += 1
        if not removed:
            break
    if hasattr(model, "peft_config"):
        del model.peft_config
    return peft_layers(model)


def load_adapter_model(src: Path, base: str, device: torch.device) -> LoadedModel:
    """Base model + PEFT adapter on device (a base of its own); live tensors keyed by adapter file key."""
    start = time.perf_counter()
    loaded = attach_adapter(load_base(base, device), src)
    return replace(loaded, load_seconds=time.perf_counter() - start)


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
