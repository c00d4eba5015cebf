"""Full fine-tune residuals: τ = θ_ft − θ_base, streamed in blocks, in memory that does not grow with the model.

Both models are read from the page cache (memory maps on the CPU, pread read-ahead on a GPU: file pages, not
anonymous memory), a block of τ at a time. Pass 1 histograms a 1/16 sample of |τ| read in runs
(sparsify_stream.sample_ranges) while the base tensors and the fine-tune's shards are hashed through the maps;
pass 2 accumulates σ and keeps each golomb chunk's candidates (about 1.3·k·d entries: position, τ's signed bit
pattern) in spill files or device memory; once the exact threshold is known, each chunk's kept entries go to
the codec's stream encoder, whose spill files become the payload, and the container is written from pieces
(container.write_container_streamed).
The artifact's bytes are those of the in-memory writer. Decompress maps the artifact and writes each output
shard tensor by tensor, a chunk at a time: base + s·t through artifact.reconstruct.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from compeft.adapters import PICKLE_SUFFIXES, read_config
from compeft.artifact import (
    Artifact,
    ArtifactInfo,
    reconstruct,
    scale_of,
    write_streamed_artifact,
)
from compeft.atomic import atomic_directory
from compeft.checkpoint import INDEX, WEIGHTS, Checkpoint, index_document
from compeft.codecs import get_codec
from compeft.codecs.golomb.format import MAX_CHUNK, chunk_lengths
from compeft.config import CompressionConfig
from compeft.container import FILENAME, StreamedTensor, named_payload_errors
from compeft.document import CarriedRecord, Document
from compeft.dtypes import DTYPE_NAMES, DTYPES_BY_NAME, INT_OF_SIZE, dtype_name
from compeft.errors import AdapterFormatError, ContainerError
from compeft.hashing import sha256_file
from compeft.progress import Progress
from compeft.safetensors_header import encode_header
from compeft.sparsify import bits_to_float, kept_count
from compeft.sparsify_stream import SAMPLE, Moments, Pass1, Pass2, sample_ranges
from compeft.taskvector import DeltaRecord
from compeft.version import __version__

CONFIG = "config.json"
FLOATING = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
SIDE_FILE_CAP = 64 << 20
SHARD_BYTES = 2 << 30
DEVICE_BLOCK = 1 << 24  # τ entries per block on a GPU (a multiple of MAX_CHUNK; small read-ahead slots); on the CPU: one chunk
ENCODE_GROUP = 1 << 26  # τ entries coded at once on a device
READ_THREADS = max(2, min(6, (os.cpu_count() or 1) // 2))  # reads ahead (and slots) on a device
PIECE_BITS = 16  # the spill keeps positions' low 16 bits and the candidate count of each 2^16-entry piece
PIECES = MAX_CHUNK >> PIECE_BITS


def side_files(directory: Path) -> list[Path]:
    """Small non-weight files (config, tokenizer, generation config) that travel with the artifact."""
    skip = {WEIGHTS, INDEX, FILENAME, "README.md"}
    out = []
    for p in sorted(directory.iterdir()):
        if p.is_file() and p.name not in skip and p.suffix not in (".safetensors", *PICKLE_SUFFIXES):
            if p.stat().st_size <= SIDE_FILE_CAP:
                out.append(p)
    return out


def plan_tensors(ft: Checkpoint, base: Checkpoint) -> tuple[list[DeltaRecord], list[str]]:
    """Delta records (floating tensors in both with equal shapes) and carried names, sorted."""
    base_names = set(base.names())
    records, carried, offset = [], [], 0
    for name in ft.names():
        dtype, shape = ft.meta(name)
        if name in base_names and dtype in FLOATING:
            base_dtype, base_shape = base.meta(name)
            if base_dtype in FLOATING and base_shape == shape:
                rec = DeltaRecord(name, shape, dtype_name(dtype), 0.0, offset)
                records.append(rec)
                offset += rec.numel
                continue
        carried.append(name)
    return records, carried


def tensor_sha256(raw: np.ndarray) -> str:
    """sha256 of mapped bytes: a tensor's or a whole shard's (hashlib releases the GIL: this runs beside the numeric
    work)."""
    h = hashlib.sha256()
    view = memoryview(raw)
    for start in range(0, len(view), 64 << 20):
        h.update(view[start : start + (64 << 20)])
    return h.hexdigest()


def file_states(*checkpoints: Checkpoint) -> dict[Path, tuple[int, int, int]]:
    """(size, mtime, inode) of every shard: a model rewritten during the passes is refused."""
    return {f: (s.st_size, s.st_mtime_ns, s.st_ino) for c in checkpoints for f in c.files() for s in [f.stat()]}


def _on_device(device: torch.device) -> bool:
    """Whether compress takes the device's ways: blocks of DEVICE_BLOCK read ahead into page-locked slots,
    candidates kept in device memory (while they fit) and coded there (tests force them on the CPU)."""
    return device.type != "cpu"


def resident_budget(device: torch.device) -> int:
    """Bytes of device memory the candidates may take: half of what is free (none on the CPU)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] // 2
    return 0


class Residual:
    """Blocks of τ = θ_ft − θ_base (float32, on ``device``) read from the two mapped models. On the CPU the blocks
    are written into the same two buffers every time (τ over the fine-tune's) (a block is used before the next is
    read): fresh ones would cost a page-fault storm per block. On a device the ranges are read ahead from the files
    by threads into page-locked slots and copied asynchronously (readahead.ReadAhead)."""

    def __init__(self, ft: Checkpoint, base: Checkpoint, device: torch.device) -> None:
        self.ft, self.base, self.device = ft, base, device
        self.ahead = _on_device(device)
        self.block = DEVICE_BLOCK if self.ahead else MAX_CHUNK
        self.buffers = None if self.ahead else [torch.empty(self.block, dtype=torch.float32) for _ in range(2)]

    def _typed(self, ckpt: Checkpoint, name: str, a: int, b: int) -> tuple[np.ndarray, torch.dtype]:
        """Entries a..b of a tensor as an integer view of its mapping, and the tensor's dtype."""
        dtype, _ = ckpt.meta(name)
        size = dtype.itemsize
        return ckpt.raw(name)[a * size : b * size].view(INT_OF_SIZE[size]), dtype

    def _tau(self, name: str, ranges: list[tuple[int, int]]) -> torch.Tensor:
        """τ over the entry ranges, back to back, into the reused buffers (the CPU's way)."""
        out = []
        for ckpt, buf in zip((self.ft, self.base), self.buffers, strict=True):
            at = 0
            for a, b in ranges:
                typed, dtype = self._typed(ckpt, name, a, b)
                buf[at : at + b - a].copy_(torch.from_numpy(typed).view(dtype))
                at += b - a
            out.append(buf[:at])
        return torch.sub(out[0], out[1], out=out[0])

    def _read(self, jobs: list[tuple[DeltaRecord, int, list[tuple[int, int]]]]):
        """(record, entries covered, τ over the entry ranges) of each (record, entries covered, ranges) job."""
        if not self.ahead:
            for rec, n, ranges in jobs:
                yield rec, n, self._tau(rec.name, ranges)
            return
        from compeft.readahead import ReadAhead

        models = (self.ft, self.base)
        sizes = [max((sum(b - a for a, b in ranges) * c.meta(rec.name)[0].itemsize for rec, _, ranges in jobs),
                     default=1) for c in models]
        reader = ReadAhead(self.device, tuple(sizes), READ_THREADS)
        try:
            def files(rec: DeltaRecord, ranges: list[tuple[int, int]]):
                for c in models:
                    f, at, _ = c.location(rec.name)
                    size = c.meta(rec.name)[0].itemsize
                    yield tuple((f, at + a * size, (b - a) * size) for a, b in ranges)

            for (rec, n, _), (x, y) in zip(jobs, reader.run(tuple(files(r, g)) for r, _, g in jobs), strict=True):
                x, y = x.view(self.ft.meta(rec.name)[0]), y.view(self.base.meta(rec.name)[0])
                yield rec, n, x.to(torch.float32) - y.to(torch.float32)
        finally:
            reader.close()

    def _jobs(self, records: list[DeltaRecord], sampled: bool) -> list[tuple[DeltaRecord, int, list[tuple[int, int]]]]:
        """Blocks (one range each) or sample pieces (SAMPLE·MAX_CHUNK entries covered, MAX_CHUNK sampled)."""
        span = SAMPLE * MAX_CHUNK if sampled else self.block
        jobs = []
        for rec in records:
            for a in range(0, rec.numel, span):
                b = min(rec.numel, a + span)
                jobs.append((rec, b - a, sample_ranges(a, b) if sampled else [(a, b)]))
        return jobs

    def blocks(self, records: list[DeltaRecord]):
        """(record, τ block) over the records, blocks aligned to golomb chunks."""
        for rec, _, tau in self._read(self._jobs(records, False)):
            yield rec, tau

    def samples(self, records: list[DeltaRecord]):
        """(entries covered, τ over their sampled ranges): the same sample on every device."""
        for _, n, tau in self._read(self._jobs(records, True)):
            yield n, tau

    def count(self, records: list[DeltaRecord], sampled: bool = False) -> int:
        """How many blocks (or sample pieces) the records make: the progress bars' totals."""
        span = SAMPLE * MAX_CHUNK if sampled else self.block
        return sum(-(-rec.numel // span) for rec in records)


class Spill:
    """Each chunk's candidates, appended in chunk order to two files: the low 16 bits of their positions (uint16;
    how many fall in each 2^16-entry piece of the chunk is kept in memory, 16 counts a chunk) and τ's signed
    float32 bit patterns (int32): 6 bytes a candidate, since writing new file pages is a large part of the CPU cost.
    Read back a chunk at a time into reused buffers."""

    DTYPES = (np.uint16, np.int32)

    def __init__(self, directory: Path) -> None:
        self.paths = [directory / f"candidates-{n}" for n in ("pos", "bits")]
        self.files = [open(p, "wb") for p in self.paths]  # noqa: SIM115 - closed in close
        self.blocks: list[np.ndarray] = []
        self.pieces = np.zeros((0, PIECES), np.int64)  # per chunk, candidates per 2^16-entry piece (after close)
        self.counts: list[int] = []  # candidates per chunk (after close)

    def add(self, length: int, pos: torch.Tensor, signed: torch.Tensor) -> None:
        """One block's candidates (increasing positions relative to the block, which starts a chunk)."""
        pos, signed = pos.cpu().numpy(), signed.cpu().numpy()
        chunks = -(-length // MAX_CHUNK)
        edges = np.searchsorted(pos, np.arange(chunks * PIECES + 1, dtype=np.int64) << PIECE_BITS)
        self.blocks.append(np.diff(edges).reshape(chunks, PIECES))
        self.files[0].write(memoryview(pos.astype(np.uint16)))  # the low 16 bits
        self.files[1].write(memoryview(signed))

    def close(self) -> None:
        for f in self.files:
            f.close()
        self.pieces = np.concatenate(self.blocks) if self.blocks else np.zeros((0, PIECES), np.int64)
        self.counts = self.pieces.sum(axis=1).tolist()

    def read(self, which: int, counts: list[int]):
        """Consecutive pieces of one file (0: positions' low bits, 1: bit patterns), ``counts`` entries each;
        every piece is a view of one buffer, valid until the next."""
        dtype = self.DTYPES[which]
        buf = np.empty(max(counts, default=0), dtype)
        with open(self.paths[which], "rb", buffering=0) as f:
            for n in counts:
                view = memoryview(buf[:n]).cast("B")
                done = 0
                while done < len(view) and (got := f.readinto(view[done:])):
                    done += got
                if done != len(view):
                    raise AssertionError(f"spill file {self.paths[which]} is shorter than its counts")  # a bug, not input
                yield buf[:n]

    def patterns(self, entries: int = MAX_CHUNK):
        """The bit patterns in pieces of at most ``entries`` (for one pass over them)."""
        total = sum(self.counts)
        yield from self.read(1, [min(entries, total - a) for a in range(0, total, entries)])

    def chunks(self):
        """(positions in the chunk, bit patterns), both int32, of each chunk's candidates in order."""
        starts = np.arange(PIECES, dtype=np.int32) << PIECE_BITS
        for pieces, low, signed in zip(self.pieces, self.read(0, self.counts), self.read(1, self.counts), strict=True):
            pos = np.repeat(starts, pieces)
            pos |= low
            yield pos, signed

    def encode(self, encoder, lengths: list[int], t_bits: int, bar: Progress) -> int:
        """Each chunk's kept entries (|τ| ≥ t) through the stream encoder; returns how many were kept."""
        if len(lengths) != len(self.counts):
            raise AssertionError(f"spill has {len(self.counts)} chunks, the chunking {len(lengths)}")  # a bug, not input
        kept, floor = 0, np.uint32(2 * max(t_bits, 1))  # zeros are never kept, even when t = 0
        for length, (pos, signed) in zip(lengths, self.chunks(), strict=True):
            keep = (signed.view(np.uint32) << np.uint32(1)) >= floor  # |τ| ≥ t on the bit patterns, sign shifted out
            positions = np.compress(keep, pos)
            kept += positions.size
            encoder.add(length, positions, np.compress(keep, signed) < 0)
            bar.step()
        return kept


class _ResidentOverflow(Exception):  # a signal inside compress, never raised out of it
    """The candidates outgrew the device memory set aside for them (compress spills them to files instead)."""


class DeviceSpill:
    """Each block's candidates kept in device memory (positions in the block as int32, τ's bit patterns: 8 bytes
    a candidate, at most ``budget`` bytes in all): no spill files and no copies to the host. The kept entries are
    coded block by block on the device when the codec's stream encoder can (DeviceStreamEncoder.add_signs), else
    copied to the host a block at a time and given chunk by chunk."""

    def __init__(self, budget: int) -> None:
        self.budget, self.bytes = budget, 0
        self.blocks: list[tuple[int, torch.Tensor, torch.Tensor]] = []

    def add(self, length: int, pos: torch.Tensor, signed: torch.Tensor) -> None:
        self.bytes += 8 * pos.numel()
        if self.bytes > self.budget:
            self.blocks.clear()
            raise _ResidentOverflow
        self.blocks.append((length, pos.to(torch.int32), signed))

    def close(self) -> None:
        """Nothing to flush (Spill's interface)."""

    def patterns(self):
        """The candidates' bit patterns, a block at a time, on the device."""
        for _, _, signed in self.blocks:
            yield signed

    def encode(self, encoder, lengths: list[int], t_bits: int, bar: Progress) -> int:
        """Each block's kept entries (|τ| ≥ t) through the stream encoder (consecutive blocks of up to ENCODE_GROUP
        entries at once on the device); returns how many were kept."""
        kept, first, on_device = 0, 0, hasattr(encoder, "add_signs")
        group: list[tuple[int, list[int], torch.Tensor, torch.Tensor]] = []  # blocks coded together

        def flush() -> None:
            signs = torch.zeros(sum(g[0] for g in group), dtype=torch.int8, device=group[0][2].device)
            at = 0
            for length, _, where, negative in group:
                signs[at + where.long()] = 1 - 2 * negative.to(torch.int8)
                at += length
            chunks = [c for g in group for c in g[1]]
            encoder.add_signs(signs, chunks)
            bar.step(len(chunks))
            group.clear()

        for length, pos, signed in self.blocks:
            last, covered = first, 0
            while last < len(lengths) and covered < length:
                covered += lengths[last]
                last += 1
            if covered != length:
                raise AssertionError(f"block of {length} entries does not end on a chunk boundary")  # a bug, not input
            chunks = lengths[first:last]
            keep = (signed & 0x7FFFFFFF) >= max(t_bits, 1)  # zeros are never kept, even when t = 0
            where, negative = pos[keep], signed[keep] < 0
            kept += where.numel()
            if on_device:
                if group and sum(g[0] for g in group) + length > ENCODE_GROUP:
                    flush()
                group.append((length, chunks, where, negative))
            else:
                where, negative = where.cpu().numpy(), negative.cpu().numpy()
                edges = np.searchsorted(where, np.cumsum([0, *chunks]))
                starts = np.cumsum([0, *chunks[:-1]])
                for length_c, a, b, start in zip(chunks, edges[:-1], edges[1:], starts, strict=True):
                    encoder.add(length_c, where[a:b] - start, negative[a:b])
                bar.step(len(chunks))
            first = last
        if group:
            flush()
        if first != len(lengths):
            raise AssertionError(f"candidates cover {first} chunks, the chunking {len(lengths)}")  # a bug, not input
        return kept


def compress_full(src: Path, dst: Path, base_dir: Path, config: CompressionConfig, device: torch.device, *,
                  overwrite: bool, progress: bool) -> ArtifactInfo:
    """Compress a fine-tuned model directory against its base into an artifact directory, in bounded memory."""
    density, alpha, codec = config.density, config.alpha, get_codec(config.codec)
    ft, base = Checkpoint(src), Checkpoint(base_dir)
    if not (src / CONFIG).is_file():
        raise AdapterFormatError(f"{src}: no {CONFIG} (not a Hugging Face model directory)")
    records, carried_names = plan_tensors(ft, base)
    if not records:
        raise AdapterFormatError(f"{src}: no floating tensor shares a name and shape with {base_dir}")
    d = records[-1].offset + records[-1].numel
    states = file_states(ft, base)
    residual = Residual(ft, base, device)
    hashing = ThreadPoolExecutor(max(2, min(8, (os.cpu_count() or 1) // 2)))  # sha256 at ~2 GB/s a thread
    try:
        base_hashes = {r.name: hashing.submit(tensor_sha256, base.raw(r.name)) for r in records}
        file_hashes = {CONFIG: hashing.submit(sha256_file, src / CONFIG)}
        file_hashes |= {p.name: hashing.submit(tensor_sha256, ft.mapped_file(p)) for p in ft.files()}  # no read copies
        sample = Pass1()
        bar = Progress("pass 1/2 (sampled histogram)", residual.count(records, sampled=True), progress)
        for n, tau in residual.samples(records):
            sample.add(tau, n)
            bar.step()
        m = kept_count(density, d)
        with tempfile.TemporaryDirectory(prefix=f".{dst.name}.spill-", dir=_spill_parent(dst)) as tmp:
            moments, select = Moments(), Pass2(sample.floor(m), m)
            resident = _on_device(device) and 10 * sample.above(select.floor) < resident_budget(device)
            while True:
                spill = DeviceSpill(resident_budget(device)) if resident else Spill(Path(tmp))
                bar = Progress("pass 2/2 (σ, candidates)", residual.count(records), progress)
                try:
                    for rec, tau in residual.blocks(records):
                        if moments is not None and not moments.add(tau):
                            raise AdapterFormatError(f"{ft.directory}: tensor {rec.name} gives a NaN or Inf residual")
                        spill.add(tau.numel(), *select.block(tau))
                        bar.step()
                except _ResidentOverflow:  # more candidates than the sample promised: again, spilling to files
                    moments, select, resident = Moments(), Pass2(select.floor, m), False
                    continue
                spill.close()
                if moments is not None:
                    sigma = moments.sigma()
                if select.enough():
                    break
                moments, select = None, Pass2(1, m)  # the sample's floor was too high (rare): every non-zero entry
            if file_states(ft, base) != states:
                raise AdapterFormatError(f"{src} or {base_dir} changed while being compressed")
            payload, kept, t_bits = _encode(codec, d, records, spill, select, Path(tmp), progress)
            base_sha256 = {name: f.result() for name, f in base_hashes.items()}
            files = {name: f.result() for name, f in file_hashes.items()}
            sigma32, scale = scale_of(alpha, sigma)
            carried = {}
            for name in carried_names:
                dtype, shape = ft.meta(name)
                carried[name] = StreamedTensor(dtype, shape, (ft.raw(name),))
            config_json = read_config(src / CONFIG)
            document = Document(
                kind="full", codec=codec.id, density=density, alpha=alpha, sigma=sigma32, scale=scale,
                threshold=bits_to_float(t_bits), d=d, kept=kept,
                carried=tuple(CarriedRecord(n, tuple(t.shape), DTYPE_NAMES[t.dtype]) for n, t in carried.items()),
                source={"files": files, "peft_type": "FULL", "base_model": config_json.get("_name_or_path") or base_dir.name,
                        "bytes": ft.bytes()},
                package_version=__version__, base_sha256=base_sha256,
                weight_map={name: file.name for name, file in ft.weight_map.items()} if (src / INDEX).is_file() else None,
            )
            return write_streamed_artifact(dst, document, payload, carried, tuple(records),
                                           {p.name: p for p in side_files(src)}, src.resolve().name, overwrite=overwrite)
    finally:
        hashing.shutdown(cancel_futures=True)


def _spill_parent(dst: Path) -> Path:
    """Spill files go beside the destination (same disk as the artifact, removed when compress ends)."""
    parent = dst.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    return parent


def _encode(codec, d: int, records: list[DeltaRecord], spill: Spill | DeviceSpill, select: Pass2, directory: Path,
            progress: bool) -> tuple[StreamedTensor, int, int]:
    """Each chunk's kept entries (|τ| ≥ t) through the codec's stream encoder: (payload, kept, t's bit pattern)."""
    t_bits = select.threshold_bits(spill.patterns())
    lengths = chunk_lengths(d, [r.numel for r in records])
    encoder = codec.stream_encoder(d, [r.numel for r in records], directory)
    try:
        kept = spill.encode(encoder, lengths, t_bits, Progress("encoding", len(lengths), progress))
    except BaseException:
        encoder.close()
        raise
    parts = encoder.finish()
    size = sum(len(p) if isinstance(p, bytes) else os.path.getsize(p) for p in parts)
    return StreamedTensor(torch.uint8, (size,), tuple(parts)), kept, t_bits


def plan_shards(sizes: dict[str, int], shard_bytes: int) -> list[tuple[str, list[str]]]:
    """(file, names) shards of at most shard_bytes each, names in order (one tensor may exceed it)."""
    shards: list[list[str]] = [[]]
    used = 0
    for name, size in sizes.items():
        if shards[-1] and used + size > shard_bytes:
            shards.append([])
            used = 0
        shards[-1].append(name)
        used += size
    if len(shards) == 1:
        return [(WEIGHTS, shards[0])]
    return [(f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors", names) for i, names in enumerate(shards)]


def source_shards(weight_map: dict | None, names: list[str]) -> list[tuple[str, list[str]]] | None:
    """The fine-tune's own shard grouping, recorded at compression, if it had one."""
    if weight_map is None:
        return None
    if set(weight_map) != set(names) or any(Path(f).name != f for f in weight_map.values()):
        raise ContainerError("document weight_map does not match the tensors of the residual")
    files = sorted(set(weight_map.values()))
    return [(f, [n for n in names if weight_map[n] == f]) for f in files]


def decompress_full(artifact: Artifact, base_dir: Path, dst: Path, *, device: torch.device, overwrite: bool,
                    progress: bool, shard_bytes: int = SHARD_BYTES) -> Path:
    """Write base + s·t as a full sharded model directory (side files copied from the artifact), one shard at a
    time and each tensor a chunk at a time: memory does not grow with the model."""
    container, document, base = artifact.container, artifact.document, Checkpoint(base_dir)
    expected = document.base_sha256 or {}
    base_names = set(base.names())
    by_name = {r.name: r for r in artifact.records.records()}
    missing = [name for name in by_name if name not in base_names]
    if missing:
        raise ContainerError(f"{base_dir}: base lacks tensor {missing[0]} that the residual was computed against")
    codec = get_codec(document.codec)
    with named_payload_errors(container.path):
        plan = codec.prepare(container.payload, document.d)
    meta: dict[str, tuple[torch.dtype, tuple[int, ...]]] = {}
    for name in sorted([*by_name, *container.carried]):
        if name in by_name:
            meta[name] = (DTYPES_BY_NAME[by_name[name].dtype], tuple(by_name[name].shape))
        else:
            meta[name] = (container.carried[name].dtype, tuple(container.carried[name].shape))
    sizes = {name: int(np.prod(shape, dtype=np.int64)) * dtype.itemsize for name, (dtype, shape) in meta.items()}
    shards = source_shards(document.weight_map, list(sizes)) or plan_shards(sizes, shard_bytes)
    weight_map: dict[str, str] = {}
    bar = Progress("writing model", len(sizes), progress)
    with atomic_directory(dst, overwrite) as tmp:
        for p in side_files(container.path.parent):
            shutil.copyfile(p, tmp / p.name)
        for file, names in shards:
            header, offset = {"__metadata__": {"format": "pt"}}, 0
            for name in names:
                dtype, shape = meta[name]
                header[name] = {"dtype": DTYPE_NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + sizes[name]]}
                offset += sizes[name]
            with open(tmp / file, "wb") as f:
                f.write(encode_header(header))
                for name in names:
                    if name in by_name:
                        _write_reconstructed(f, by_name[name], base, base_dir, expected.get(name) if expected else None,
                                             codec, plan, container, document.scale, device)
                    else:
                        f.write(memoryview(container.carried[name].contiguous().reshape(-1).view(torch.uint8).numpy()))
                    weight_map[name] = file
                    bar.step()
        if len(shards) > 1 or shards[0][0] != WEIGHTS:  # one shard under another name needs its index too
            (tmp / INDEX).write_text(index_document(weight_map, sum(sizes.values())), encoding="utf-8")
    return dst


def _write_reconstructed(f, rec: DeltaRecord, base: Checkpoint, base_dir: Path, expected: str | None, codec, plan,
                         container, scale: float, device: torch.device) -> None:
    """θ_base + s·t of one record, written a golomb chunk at a time (the base tensor checked against its hash first)."""
    raw = base.raw(rec.name)
    if expected is not None and tensor_sha256(raw) != expected:
        raise ContainerError(f"{base_dir}: tensor {rec.name} differs from the base the residual was made against")
    base_dtype, _ = base.meta(rec.name)
    dtype, size = DTYPES_BY_NAME[rec.dtype], base_dtype.itemsize
    for a in range(0, rec.numel, MAX_CHUNK):
        b = min(rec.numel, a + MAX_CHUNK)
        with named_payload_errors(container.path):
            ternary = codec.decode_span(plan, container.payload, rec.offset + a, rec.offset + b)
        theta = torch.from_numpy(raw[a * size : b * size]).view(base_dtype)
        value = reconstruct(ternary.to(device), scale, theta.to(device), dtype).cpu()
        f.write(memoryview(value.view(torch.uint8).numpy()))

