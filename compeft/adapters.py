"""Read and write adapter directories (safetensors only): their layouts (a peft directory, a diffusers LoRA
file), pickle refusal, config parsing, and which saved tensors are deltas.

Which tensors form the task vector and from which θ_init, and which are carried bit for bit, is the adapter
family's rule (compeft/families), chosen by the config's ``peft_type`` (the diffusers family for a diffusers
file); ``read_adapter`` applies it once and the ``Adapter`` holds the result (``theta_inits``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from compeft.errors import AdapterFormatError
from compeft.families import SUPPORTED_PEFT_TYPES, family_of, theta_inits
from compeft.families import diffusers as diffusers_family
from compeft.families.base import Family
from compeft.hashing import sha256_file
from compeft.safetensors_header import layout, parse_header, parse_json, read_header

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_FILES = (ADAPTER_CONFIG, ADAPTER_WEIGHTS)
DIFFUSERS_WEIGHTS = "pytorch_lora_weights.safetensors"
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
DIFFUSERS_LAYOUT = Layout("diffusers", DIFFUSERS_WEIGHTS)
LAYOUTS: tuple[Layout, ...] = (PEFT_LAYOUT, DIFFUSERS_LAYOUT)
"""Every layout compeft reads, in order of preference (sources and read_adapter recognise adapters by these).
A diffusers LoRA (PEFT-style or kohya/LyCORIS keys, no config) is ``pytorch_lora_weights.safetensors``; a single
kohya file of another name is read when ``read_adapter`` is given the file itself (``single_file_layout``)."""


def find_layout(names) -> Layout | None:
    """The first layout whose files are all among ``names`` (file names of one directory), or None."""
    present = set(names)
    return next((layout for layout in LAYOUTS if present.issuperset(layout.files)), None)


def single_file_layout(name: str) -> Layout:
    """The layout of a lone diffusers/kohya LoRA file named ``name`` (``*.safetensors``, no config)."""
    return Layout(DIFFUSERS_LAYOUT.name, name)


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


def detect_peft_type(config: Mapping) -> str:
    """The adapter kind as the registry records it: LORA, DORA or IA3 (others as peft names them)."""
    peft_type = str(config.get("peft_type", "")).upper()
    if peft_type == "LORA" and config.get("use_dora"):
        return "DORA"
    return peft_type or "UNKNOWN"


def adapter_kind(layout: Layout, config: Mapping, tensor_names: Iterable[str]) -> str:
    """The adapter kind the registry records: the config's peft type, or for a layout without a config (diffusers)
    what its tensors' names say."""
    if layout.config is None:
        return diffusers_family.kind(tensor_names)
    return detect_peft_type(config)


@dataclass(frozen=True)
class Adapter:
    """An adapter read from disk: its layout, config ({} without one), tensors (file key names), source hashes,
    and its family's classification: ``theta_inits`` maps every delta tensor to its θ_init (the rest are carried)."""

    path: Path
    config: dict
    tensors: dict[str, torch.Tensor] = field(repr=False)
    source_sha256: dict[str, str]
    weights_bytes: int
    blob: torch.Tensor | None = field(default=None, repr=False)  # pinned reads: the data section the tensors view
    layout: Layout = PEFT_LAYOUT
    theta_inits: dict[str, float] = field(default_factory=dict, repr=False)
    weights_metadata: dict[str, str] | None = None  # the weights file's safetensors metadata (diffusers keeps its config there)

    @property
    def weights_path(self) -> Path:
        return self.path / self.layout.weights

    @property
    def peft_type(self) -> str:
        return adapter_kind(self.layout, self.config, self.tensors)

    @property
    def base_model(self) -> str | None:
        return self.config.get("base_model_name_or_path") or None


def find_adapter_files(path: Path) -> tuple[Layout, Path]:
    """The layout of an adapter directory (or of a lone ``*.safetensors`` LoRA file) and the directory holding
    its files, or a one-line error."""
    path = Path(path)
    if path.is_file() and path.suffix == ".safetensors":
        return single_file_layout(path.name), path.parent
    if not path.is_dir():
        raise AdapterFormatError(f"{path}: not a directory")
    if (path / ADAPTER_WEIGHTS).is_file():
        if not (path / ADAPTER_CONFIG).is_file():
            raise AdapterFormatError(f"{path}: no {ADAPTER_CONFIG} (not a PEFT adapter directory)")
        return PEFT_LAYOUT, path
    if (path / DIFFUSERS_WEIGHTS).is_file():
        return DIFFUSERS_LAYOUT, path
    refuse_pickles(path, ADAPTER_WEIGHTS)
    raise AdapterFormatError(f"{path}: no {ADAPTER_WEIGHTS} (not a PEFT adapter directory) and no {DIFFUSERS_WEIGHTS}")


def family_for(file_layout: Layout, config: Mapping, where) -> Family:
    """The family that classifies an adapter's tensors (by ``peft_type``; the diffusers family for a diffusers
    file), or a one-line error naming the type and why it is refused."""
    if file_layout.config is None:
        return diffusers_family.FAMILY
    family = family_of(config)
    if family is None:
        raise AdapterFormatError(
            f"{where}: peft_type {config.get('peft_type')!r} is not a peft 0.21 adapter type "
            f"(supported: {', '.join(SUPPORTED_PEFT_TYPES)})"
        )
    if (why := family.why_refused(config)) is not None:
        raise AdapterFormatError(f"{where}: peft_type {family.name} is not supported: {why}")
    return family


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file, with format errors as one line naming the file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise AdapterFormatError(f"{path}: not a readable safetensors file ({err})") from err


def read_safetensors_pinned(path: Path) -> tuple[torch.Tensor, dict[str, torch.Tensor], str]:
    """A safetensors file read once into page-locked memory (plain memory without CUDA): (its data section,
    views of its tensors into that, the file's sha256), its header and layout checked as every header is."""
    _, start, size = read_header(path, AdapterFormatError)  # the cap and the sizes before the whole file is read
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
    """Read an adapter (a peft or diffusers directory, or a lone LoRA ``*.safetensors`` file), classify its
    tensors by its family and check that its delta tensors can be compressed.

    ``pinned`` reads the weights once into page-locked memory for a fast copy to the GPU; the delta
    tensors' finiteness is then left to the device (``taskvector.task_vector_from_blob``)."""
    file_layout, root = find_adapter_files(Path(path))
    weights_path = root / file_layout.weights
    config_path = root / file_layout.config if file_layout.config else None
    config = read_config(config_path) if config_path else {}
    family = family_for(file_layout, config, config_path or weights_path)
    if pinned:
        blob, tensors, weights_sha = read_safetensors_pinned(weights_path)
    else:
        blob, tensors = None, load_safetensors(weights_path)
        weights_sha = sha256_file(weights_path)
    thetas = theta_inits(family.rule(config), tensors)
    check_delta_tensors(tensors, thetas, weights_path, family.name, finite=not pinned)
    hashes = {file_layout.config: sha256_file(config_path)} if config_path else {}
    return Adapter(
        path=root,
        config=config,
        tensors=tensors,
        source_sha256={**hashes, file_layout.weights: weights_sha},
        weights_bytes=weights_path.stat().st_size,
        blob=blob,
        layout=file_layout,
        theta_inits=thetas,
        weights_metadata=None if config_path else read_metadata(weights_path),
    )


def read_metadata(path: Path) -> dict[str, str]:
    """The ``__metadata__`` map of a safetensors file ({} without one)."""
    header, _, _ = read_header(path, AdapterFormatError)
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise AdapterFormatError(f"{path}: __metadata__ must map strings to strings")
    return dict(meta)


def check_delta_tensors(tensors: Mapping[str, torch.Tensor], thetas: Mapping[str, float], source: Path, family: str, *,
                        finite: bool = True) -> None:
    """Every delta tensor must be fp32/fp16/bf16 and (unless ``finite`` is off) finite; there must be at least one."""
    if not thetas:
        raise AdapterFormatError(f"{source}: no {family} delta tensors found")
    for key in thetas:
        t = tensors[key]
        if t.dtype not in DELTA_DTYPES:
            raise AdapterFormatError(f"{source}: tensor {key} has dtype {t.dtype}; expected fp32, fp16 or bf16")
        if finite and t.numel() and not bool(torch.isfinite(t).all()):
            raise non_finite_error(source, key)


def non_finite_error(source: Path, key: str) -> AdapterFormatError:
    return AdapterFormatError(f"{source}: tensor {key} contains NaN or Inf")


def write_adapter(path: Path, config_bytes: bytes | None, tensors: Mapping[str, torch.Tensor], *,
                  layout: Layout = PEFT_LAYOUT, metadata: Mapping[str, str] | None = None) -> None:
    """Write an adapter directory of ``layout``: its config copied byte for byte (where the layout has one) and its
    weights file, with ``metadata`` as the safetensors metadata (peft's {"format": "pt"} when None)."""
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    if layout.config:
        (path / layout.config).write_bytes(config_bytes)
    meta = {"format": "pt"} if metadata is None else dict(metadata)
    save_file({k: v.contiguous() for k, v in sorted(tensors.items())}, str(path / layout.weights), metadata=meta)
