"""Lazy, per-tensor access to a Hugging Face model directory (single or sharded safetensors)."""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from compeft.adapters import read_config, refuse_pickles
from compeft.dtypes import DTYPES_BY_NAME
from compeft.errors import AdapterFormatError

WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"


class Checkpoint:
    """Tensor names, dtypes and shapes of a model directory, with tensors read one at a time."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise AdapterFormatError(f"{self.directory}: not a directory")
        self._handles: dict[Path, object] = {}
        self._maps: dict[Path, tuple[np.ndarray, dict, np.ndarray | None]] = {}

    @cached_property
    def weight_map(self) -> dict[str, Path]:
        index, single = self.directory / INDEX, self.directory / WEIGHTS
        if index.is_file():
            data = read_config(index).get("weight_map")
            if not isinstance(data, dict) or not data:
                raise AdapterFormatError(f"{index}: no weight_map")
            mapping = {}
            for name, file in data.items():
                if not isinstance(file, str) or Path(file).name != file or not file.endswith(".safetensors"):
                    raise AdapterFormatError(f"{index}: tensor {name!r} points at an invalid shard name {file!r}")
                if not (self.directory / file).is_file():
                    raise AdapterFormatError(f"{index}: shard {file} is missing")
                mapping[name] = self.directory / file
            return mapping
        if single.is_file():
            return {name: single for name in self._handle(single).keys()}
        refuse_pickles(self.directory, f"{WEIGHTS} or {INDEX}")
        raise AdapterFormatError(f"{self.directory}: no {WEIGHTS} or {INDEX} (not a safetensors model directory)")

    def _handle(self, file: Path):
        from safetensors import SafetensorError, safe_open

        if file not in self._handles:
            try:
                self._handles[file] = safe_open(str(file), framework="pt")
            except (SafetensorError, OSError) as err:
                raise AdapterFormatError(f"{file}: not a readable safetensors file ({err})") from err
        return self._handles[file]

    def names(self) -> list[str]:
        return sorted(self.weight_map)

    def files(self) -> list[Path]:
        return sorted(set(self.weight_map.values()))

    def meta(self, name: str) -> tuple[torch.dtype, tuple[int, ...]]:
        """dtype and shape of a tensor, read from the shard header only."""
        mapped = self._maps.get(self.weight_map[name])
        if mapped is not None and name in mapped[1]:
            dtype, shape, _, _ = mapped[1][name]
            return dtype, shape
        sl = self._handle(self.weight_map[name]).get_slice(name)
        dtype = DTYPES_BY_NAME.get(sl.get_dtype())
        if dtype is None:
            raise AdapterFormatError(f"{self.weight_map[name]}: tensor {name} has unsupported dtype {sl.get_dtype()}")
        return dtype, tuple(sl.get_shape())

    def get(self, name: str) -> torch.Tensor:
        from safetensors import SafetensorError

        file = self.weight_map[name]
        try:
            return self._handle(file).get_tensor(name)
        except (SafetensorError, OSError) as err:
            raise AdapterFormatError(f"{file}: cannot read tensor {name} ({err})") from err

    def raw(self, name: str) -> np.ndarray:
        """The tensor's bytes as a uint8 view of its memory-mapped shard (copy-on-write, never written): file pages, never copied, so
        reading a model this way costs no anonymous memory however large it is."""
        file = self.weight_map[name]
        data, tensors, _ = self._map(file)
        if name not in tensors:
            raise AdapterFormatError(f"{file}: has no tensor {name}")
        _, _, a, b = tensors[name]
        return data[a:b]

    def location(self, name: str) -> tuple[Path, int, int]:
        """The shard holding the tensor, its bytes' offset in that file and their count (for reads that bypass
        the mapping)."""
        file = self.weight_map[name]
        data, tensors, whole = self._map(file)
        if name not in tensors:
            raise AdapterFormatError(f"{file}: has no tensor {name}")
        _, _, a, b = tensors[name]
        return file, whole.size - data.size + a if whole is not None else a, b - a

    def _map(self, file: Path) -> tuple[np.ndarray, dict, np.ndarray | None]:
        """A shard's tensor bytes (a uint8 view of its mapping, header skipped), its tensor layout, and the whole
        mapped file (None for a shard without tensor bytes, which is not mapped)."""
        from compeft.safetensors_header import layout, read_header

        if file not in self._maps:
            header, start, size = read_header(file, AdapterFormatError)
            tensors = layout(header, size - start, file, AdapterFormatError)
            whole = np.asarray(np.memmap(file, dtype=np.uint8, mode="c")) if size > start else None
            data = whole[start:] if whole is not None else np.zeros(0, np.uint8)  # plain views: slicing a memmap costs ~0.1 ms
            self._maps[file] = (data, tensors, whole)
        return self._maps[file]

    def mapped_file(self, file: Path) -> np.ndarray:
        """A shard file's whole bytes, header included, through the mapping its tensors are read from (hashing it
        this way copies nothing); a shard without tensor bytes is read."""
        whole = self._map(file)[2]
        return whole if whole is not None else np.fromfile(file, dtype=np.uint8)

    def bytes(self) -> int:
        return sum(f.stat().st_size for f in self.files())


def index_document(weight_map: dict[str, str], total_size: int) -> str:
    """The text of a model.safetensors.index.json."""
    return json.dumps({"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))}, indent=2)
