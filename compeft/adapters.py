"""Read and write PEFT adapter directories (safetensors only) and classify their tensors.

Which tensors form the task vector and which are carried is the adapter families' rule (compeft/families):
a key with a path component ``lora_A``/``lora_B``/``lora_embedding_A``/``lora_embedding_B`` is a
delta from θ_init = 0, a key with a component ``ia3_l`` a delta from θ_init = 1; every other tensor
(``modules_to_save`` heads, saved ``base_layer`` weights, DoRA magnitudes) is carried bit for bit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from compeft.errors import AdapterFormatError
from compeft.families import DELTA_COMPONENTS, FAMILIES
from compeft.hashing import sha256_file
from compeft.limits import check_allocation
from compeft.safetensors_header import layout, parse_header, parse_json, read_header

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_FILES = (ADAPTER_CONFIG, ADAPTER_WEIGHTS)
# file suffixes that may hold pickled Python objects: never loaded, never downloaded
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy", ".npz")
MAX_CONFIG_BYTES = 1 << 20

DELTA_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class Layout:
    """How an adapter directory stores an adapter: its weights file and its config file (None: the layout has none)."""

    name: str
    weights: str
    config: str | None = None

    @property
    def files(self) -> tuple[str, ...]:
        """The files that make up an adapter of this layout (config first)."""
        return (self.config, self.weights) if self.config else (self.weights,)


PEFT_LAYOUT = Layout("peft", ADAPTER_WEIGHTS, ADAPTER_CONFIG)
LAYOUTS: tuple[Layout, ...] = (PEFT_LAYOUT,)
"""Every layout compeft reads, in order of preference (sources and read_adapter recognise adapters by these)."""


def find_layout(names) -> Layout | None:
    """The first layout whose files are all among ``names`` (file names of one directory), or None."""
    present = set(names)
    return next((layout for layout in LAYOUTS if present.issuperset(layout.files)), None)
SUPPORTED_PEFT_TYPES = tuple(FAMILIES)


def theta_init_of(key: str) -> float | None:
    """θ_init of a delta tensor, or None when the tensor is carried."""
    for part in key.split("."):
        if part in DELTA_COMPONENTS:
            return DELTA_COMPONENTS[part]
    return None


def refuse_pickles(directory: Path, wanted: str) -> None:
    """Raise when a directory offers only pickled weights where safetensors are required."""
    pickles = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise AdapterFormatError(
            f"{directory}: has {', '.join(pickles)} but no {wanted}; pickle files are never loaded "
            "(convert them to safetensors first)"
        )


def parse_config(data: bytes, where) -> dict:
    """A JSON config (adapter_config.json, config.json) from its bytes, with a size cap, as a one-line error."""
    if len(data) > MAX_CONFIG_BYTES:
        raise AdapterFormatError(f"{where}: {len(data)} bytes, larger than the {MAX_CONFIG_BYTES}-byte cap")
    return parse_json(data, "config", where, AdapterFormatError)


def read_config(path: Path) -> dict:
    """Parse a JSON config file with a size cap, as a one-line error on failure."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise AdapterFormatError(f"{path}: missing") from None
    if size > MAX_CONFIG_BYTES:
        raise AdapterFormatError(f"{path}: {size} bytes, larger than the {MAX_CONFIG_BYTES}-byte cap")
    return parse_config(path.read_bytes(), path)


def base_model_of(config: Mapping) -> str | None:
    """The config's ``base_model_name_or_path`` when it is a non-empty string, else None (a listing records an
    object-valued one as unknown; ``read_adapter`` refuses it)."""
    value = config.get("base_model_name_or_path")
    return value if isinstance(value, str) and value else None


def detect_peft_type(config: Mapping) -> str:
    """The adapter kind as the registry records it: LORA, DORA or IA3 (others as peft names them)."""
    peft_type = str(config.get("peft_type", "")).upper()
    if peft_type == "LORA" and config.get("use_dora"):
        return "DORA"
    return peft_type or "UNKNOWN"


@dataclass(frozen=True)
class Adapter:
    """A PEFT adapter read from disk: its config, its tensors (file key names) and source hashes."""

    path: Path
    config: dict
    tensors: dict[str, torch.Tensor] = field(repr=False)
    source_sha256: dict[str, str]
    weights_bytes: int
    blob: torch.Tensor | None = field(default=None, repr=False)  # pinned reads: the data section the tensors view

    @property
    def peft_type(self) -> str:
        return detect_peft_type(self.config)

    @property
    def base_model(self) -> str | None:
        return base_model_of(self.config)


def find_adapter_files(path: Path) -> tuple[Path, Path]:
    """The config and weights files of an adapter directory, or a one-line error."""
    path = Path(path)
    if not path.is_dir():
        raise AdapterFormatError(f"{path}: not a directory")
    config, weights = path / ADAPTER_CONFIG, path / ADAPTER_WEIGHTS
    if not weights.is_file():
        refuse_pickles(path, ADAPTER_WEIGHTS)
        raise AdapterFormatError(f"{path}: no {ADAPTER_WEIGHTS} (not a PEFT adapter directory)")
    if not config.is_file():
        raise AdapterFormatError(f"{path}: no {ADAPTER_CONFIG} (not a PEFT adapter directory)")
    return config, weights


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file, with format errors as one line naming the file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    check_allocation(path.stat().st_size, f"{path}: reading the adapter weights")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise AdapterFormatError(f"{path}: not a readable safetensors file ({err})") from err


def read_safetensors_pinned(path: Path) -> tuple[torch.Tensor, dict[str, torch.Tensor], str]:
    """A safetensors file read once into page-locked memory (plain memory without CUDA): (its data section,
    views of its tensors into that, the file's sha256), its header and layout checked as every header is."""
    _, start, size = read_header(path, AdapterFormatError)  # the cap and the sizes before the whole file is read
    check_allocation(size, f"{path}: reading the adapter weights")
    pin = torch.cuda.is_available()
    raw = torch.empty(size, dtype=torch.uint8, pin_memory=pin)
    with open(path, "rb") as f:
        if f.readinto(memoryview(raw.numpy())) != size:
            raise AdapterFormatError(f"{path}: changed while being read")
    header, start = parse_header(memoryview(raw.numpy()), path, AdapterFormatError)
    tensors = layout(header, size - start, path, AdapterFormatError)
    data = raw[start:]
    if start % 8:  # writers other than safetensors' own may leave the data unaligned: realign it once
        data = torch.empty(size - start, dtype=torch.uint8, pin_memory=pin).copy_(data)
    try:
        views = {name: data[a:b].view(dtype).view(shape) for name, (dtype, shape, a, b) in tensors.items()}
    except RuntimeError as err:
        raise AdapterFormatError(f"{path}: not a readable safetensors file ({err})") from err
    return data, views, hashlib.sha256(memoryview(raw.numpy())).hexdigest()


def read_adapter(path: str | Path, *, pinned: bool = False) -> Adapter:
    """Read a PEFT adapter directory and check that its delta tensors can be compressed.

    ``pinned`` reads the weights once into page-locked memory for a fast copy to the GPU; the delta
    tensors' finiteness is then left to the device (``taskvector.task_vector_from_blob``)."""
    config_path, weights_path = find_adapter_files(Path(path))
    config = read_config(config_path)
    peft_type = str(config.get("peft_type", "")).upper()
    if peft_type not in SUPPORTED_PEFT_TYPES:
        raise AdapterFormatError(
            f"{config_path}: peft_type {config.get('peft_type')!r} is not supported "
            f"(supported: {', '.join(SUPPORTED_PEFT_TYPES)}, DoRA as LORA with use_dora)"
        )
    base = config.get("base_model_name_or_path")
    if base is not None and not isinstance(base, str):
        raise AdapterFormatError(f"{config_path}: base_model_name_or_path must be a string or null, got {type(base).__name__}")
    if pinned:
        blob, tensors, weights_sha = read_safetensors_pinned(weights_path)
        check_delta_tensors(tensors, weights_path, finite=False)
    else:
        blob, tensors = None, load_safetensors(weights_path)
        check_delta_tensors(tensors, weights_path)
        weights_sha = sha256_file(weights_path)
    return Adapter(
        path=Path(path),
        config=config,
        tensors=tensors,
        source_sha256={ADAPTER_CONFIG: sha256_file(config_path), ADAPTER_WEIGHTS: weights_sha},
        weights_bytes=weights_path.stat().st_size,
        blob=blob,
    )


def check_delta_tensors(tensors: Mapping[str, torch.Tensor], source: Path, *, finite: bool = True) -> None:
    """Every delta tensor must be fp32/fp16/bf16 and (unless ``finite`` is off) finite; there must be at least one."""
    deltas = [k for k in tensors if theta_init_of(k) is not None]
    if not deltas:
        raise AdapterFormatError(f"{source}: no LoRA or (IA)3 delta tensors found")
    for key in deltas:
        t = tensors[key]
        if t.dtype not in DELTA_DTYPES:
            raise AdapterFormatError(f"{source}: tensor {key} has dtype {t.dtype}; expected fp32, fp16 or bf16")
        if finite and t.numel() and not bool(torch.isfinite(t).all()):
            raise non_finite_error(source, key)


def non_finite_error(source: Path, key: str) -> AdapterFormatError:
    return AdapterFormatError(f"{source}: tensor {key} contains NaN or Inf")


def write_adapter(path: Path, config_bytes: bytes, tensors: Mapping[str, torch.Tensor]) -> None:
    """Write a standard PEFT adapter directory (config copied byte for byte)."""
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    (path / ADAPTER_CONFIG).write_bytes(config_bytes)
    save_file({k: v.contiguous() for k, v in sorted(tensors.items())}, str(path / ADAPTER_WEIGHTS), metadata={"format": "pt"})
