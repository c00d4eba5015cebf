"""Crafted hostile artifacts: a real artifact taken apart, changed where an attacker would change it, and put back
together with every checksum recomputed the way the writer does (each tensor's sha256 in ``checksums``, the
document's own hash, the canonical header), so that a test exercises the checks behind the checksums.

    craft(src, dst, doc=lambda doc: doc.update(d=1 << 40))           # a document field
    craft(src, dst, tensors=lambda t: t.update(payload=new_bytes))   # a tensor (payload, carried/*, records*)
    craft(src, dst, records=lambda records: records[0].update(shape=[9]))  # the delta records
    craft(src, dst, doc_text=lambda text: text.replace(...))         # the document's text itself
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open

from compeft.container import DOC_HASH_KEY, DOC_KEY, encode_header, tensor_bytes
from compeft.dtypes import DTYPE_NAMES
from compeft.record_table import encode_table

FILE = "compeft.safetensors"


def take_apart(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(document without ``checksums``, tensors by name) of a container, read with safetensors alone."""
    with safe_open(str(path), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        doc = json.loads(f.metadata()[DOC_KEY])
    doc.pop("checksums", None)
    return doc, tensors


def checksums(tensors: dict[str, torch.Tensor]) -> dict[str, str]:
    """The ``checksums`` field the writer computes for these tensors."""
    return {n: hashlib.sha256(tensor_bytes(t)).hexdigest() for n, t in sorted(tensors.items())}


def put_together(path: Path, doc: dict, tensors: dict[str, torch.Tensor], *, doc_text: Callable[[str], str] | None = None,
                 header: Callable[[dict], dict] | None = None, header_bytes: Callable[[bytes], bytes] | None = None) -> None:
    """Write a container as the writer does (tensors by item size then name, checksums of their bytes unless the
    document holds its own, the document hashed), with optional raw edits of the document text, the header object
    or the header bytes."""
    order = sorted(tensors, key=lambda n: (-tensors[n].element_size(), n))
    blobs = {n: tensor_bytes(tensors[n]) for n in order}
    if "checksums" not in doc:  # kept as given when the caller tampers with them
        doc = dict(doc, checksums=checksums(tensors))
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"))  # the writer's encoding, NaN allowed
    if doc_text is not None:
        text = doc_text(text)
    head: dict = {"__metadata__": {DOC_KEY: text, DOC_HASH_KEY: hashlib.sha256(text.encode()).hexdigest()}}
    offset = 0
    for n in order:
        head[n] = {"dtype": DTYPE_NAMES[tensors[n].dtype], "shape": list(tensors[n].shape),
                   "data_offsets": [offset, offset + len(blobs[n])]}
        offset += len(blobs[n])
    if header is not None:
        head = header(head)
    raw = encode_header(head)
    if header_bytes is not None:
        raw = header_bytes(raw)
    Path(path).write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(blobs[n] for n in order))


def record_table(records: list[dict], dtypes: list[str]) -> torch.Tensor:
    """The version-3 record table of ``records`` ({name, shape, dtype, theta_init}), encoded as the writer
    encodes it, whatever the values (the reader's checks are what is tested)."""
    data = encode_table([r["name"] for r in records],
                        [(dtypes.index(r["dtype"]), float(r["theta_init"]), tuple(r["shape"])) for r in records])
    return torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.zeros(0, dtype=torch.uint8)


def edit_records(doc: dict, tensors: dict[str, torch.Tensor], edit: Callable[[list[dict]], object]) -> None:
    """Apply ``edit(records)`` to a version-3 container's records (read independently, checks.read_record_table)
    and write its record table, ``records`` and ``record_dtypes`` back."""
    from checks import read_record_table

    records = read_record_table(tensors["records/table"].numpy().tobytes(), doc["records"], doc["record_dtypes"])
    edit(records)
    doc["record_dtypes"] = sorted({r["dtype"] for r in records})
    doc["records"] = len(records)
    tensors["records/table"] = record_table(records, doc["record_dtypes"])


def craft(src: Path, dst: Path, *, doc: Callable[[dict], object] | None = None,
          tensors: Callable[[dict[str, torch.Tensor]], object] | None = None,
          records: Callable[[list[dict]], object] | None = None, **raw_edits) -> Path:
    """Copy the artifact directory ``src`` to ``dst`` with its container changed by ``doc(document)``,
    ``tensors(by_name)`` and ``records(list of records)`` (in place) and the raw edits of ``put_together``;
    returns ``dst``."""
    shutil.copytree(src, dst)
    document, by_name = take_apart(dst / FILE)
    if doc is not None:
        doc(document)
    if tensors is not None:
        tensors(by_name)
    if records is not None:
        edit_records(document, by_name, records)
    put_together(dst / FILE, document, by_name, **raw_edits)
    return dst
