"""Full fine-tune residuals applied in place to a resident base model: one base serves many full fine-tunes.

``apply_residual(model, artifact)`` adds s·t to the base's weights where they live, so that the model equals the
decompressed fine-tune bit for bit: each kept entry becomes dtype(float32(θ) + s·t), rounded once, and every other
entry keeps its bits (artifact.reconstruct's arithmetic; an int8 t with ``alpha=s`` would not do: the CPU kernel
rounds s·t to bf16 first). Two ways, same bits:

- in place (CUDA, golomb; bf16, fp16 and float32 weights): the Triton decoder's last pass reads each kept entry's
  weight, adds ±s and writes it back (codecs/golomb/triton_apply.py): O(k·d) work, no dense τ and no pass over
  the untouched entries, one set of launches for the whole residual and one host sync at the end (error flags).
- dense (the CPU, other dtypes, codecs without spans): a group of tensors at a time, the chunks covering the group
  decoded as s·t in float32 (−0.0 where t = 0, which adds nothing) into one scratch buffer of at most GROUP
  entries, then one add per weight.

``revert_residual`` undoes the last application. Subtracting s·t again is exact only where the first rounding lost
nothing, which bf16, fp16 and float32 weights do not promise, so by default apply keeps a pristine copy of the
touched entries (k·d values, not the tensors) and revert writes them back; with ``pristine=False`` revert subtracts
instead (exact only for entries whose sum was exact; a kept −0.0 comes back as +0.0).
``ResidentResidual`` checks an artifact once (checksums, and one decode without writes on the in-place path) and
keeps its payload on the model's device for repeated applies.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from pathlib import Path

import torch

from compeft.artifact import Artifact, open_artifact, reconstruct
from compeft.codecs import get_codec
from compeft.codecs.base import ternary_values
from compeft.container import named_payload_errors
from compeft.dtypes import DTYPES_BY_NAME
from compeft.errors import InputError

GROUP = 1 << 27  # τ entries decoded at once on the dense path (float32 scratch: 512 MiB)
FUSED = (torch.bfloat16, torch.float16, torch.float32)  # add_ of float32 s·t rounds float32(θ) + s·t once


@dataclass
class _Group:
    """Consecutive records decoded together: their τ span and the codec's plan and payload bytes for it."""

    records: list
    start: int
    stop: int
    plan: object = None
    payload: torch.Tensor | None = None


class ResidentResidual:
    """A full residual checked once (every checksum), its payload held on ``device``: on CUDA (or with
    ``in_place=True``, e.g. under Triton's interpreter) its bf16/fp16/float32 weights go the in-place way when the
    codec has one, the rest by groups."""

    def __init__(self, artifact: str | Path | Artifact, device: str | torch.device = "cpu", *,
                 in_place: bool | None = None) -> None:
        self.artifact = artifact if isinstance(artifact, Artifact) else open_artifact(artifact, mapped=True)
        document = self.artifact.document
        if document.kind != "full":
            raise InputError(f"{self.artifact.path}: not a full fine-tune residual (kind {document.kind!r}); "
                             "adapters are loaded with compeft.load")
        self.device, self.scale = torch.device(device), document.scale
        if self.device.type == "cuda" and self.device.index is None:  # as the model's tensors name it: cuda:N
            self.device = torch.device("cuda", torch.cuda.current_device())
        # s·t and −s·t in float32 (exact), −0.0 where t = 0: θ + −0.0 is θ's own bits
        self.values = reconstruct(ternary_values(), document.scale, -0.0, torch.float32)
        self.negated = reconstruct(-ternary_values(), document.scale, -0.0, torch.float32)
        self.codec = get_codec(document.codec)
        self.payload = self.artifact.container.payload
        with named_payload_errors(self.artifact.path):
            self.plan = self.codec.prepare(self.payload, document.d)
        records = [rec for rec in self.artifact.records.records() if rec.numel]
        if in_place is None:
            in_place = self.device.type == "cuda"
        self.fast = [r for r in records if DTYPES_BY_NAME[r.dtype] in FUSED] if in_place else []
        self.inplace = None
        if self.fast and hasattr(self.codec, "in_place"):
            spans = [(r.offset, r.numel, DTYPES_BY_NAME[r.dtype]) for r in self.fast]
            with named_payload_errors(self.artifact.path):
                self.inplace = self.codec.in_place(self.plan, self.payload, spans, self.values, self.device)
                if self.inplace is not None:
                    self.inplace.check()  # decodes once without writing: the flags of every later apply
        if self.inplace is None:
            self.fast = []
        fast = {r.name for r in self.fast}
        self.groups = self._groups([r for r in records if r.name not in fast])
        self.carried = dict(self.artifact.container.carried)
        self._scratch: torch.Tensor | None = None

    def _groups(self, records: list) -> list[_Group]:
        """Records in groups of at most GROUP consecutive τ entries, each with its plan and payload on the device."""
        groups: list[_Group] = []
        for rec in records:
            if not groups or groups[-1].stop != rec.offset or groups[-1].stop - groups[-1].start + rec.numel > GROUP:
                groups.append(_Group([], rec.offset, rec.offset))
            groups[-1].records.append(rec)
            groups[-1].stop = rec.offset + rec.numel
        span_plan = getattr(self.codec, "span_plan", None)
        for g in groups:
            if span_plan is not None:
                g.plan, a, b = span_plan(self.plan, g.start, g.stop)
                g.payload = self.payload[a:b].to(self.device) if self.device.type != "cpu" else self.payload[a:b]
            else:  # a codec without spans: t of the group decoded on the host once, kept as int8
                with named_payload_errors(self.artifact.path):
                    t = self.codec.decode_span(self.plan, self.payload, g.start, g.stop)
                g.payload = t.to(self.device)
        return groups

    def scaled(self, group: _Group, negated: bool = False) -> torch.Tensor:
        """s·t (or −s·t) of one group in float32 on the device, −0.0 where t = 0 (a view of a scratch buffer reused
        by the next call)."""
        n = group.stop - group.start
        table = self.negated if negated else self.values
        if group.plan is None:
            return table.to(self.device)[group.payload.to(torch.int64) + 1]
        if self._scratch is None or self._scratch.numel() < n:
            self._scratch = torch.empty(min(GROUP, n), dtype=torch.float32, device=self.device)
        out = self._scratch[:n]
        with named_payload_errors(self.artifact.path):
            self.codec.decode_into(group.plan, group.payload, out, table)()
        return out


@dataclass
class _Pristine:
    """The touched entries' previous values: by weight name (dense path), the in-place path's buffer and its mode-1
    chunks' values."""

    values: dict[str, torch.Tensor] = field(default_factory=dict)
    buffer: torch.Tensor | None = None
    chunks: list[torch.Tensor] = field(default_factory=list)


@dataclass
class AppliedResidual:
    """What apply_residual did: the residual, the pristine values of the touched entries (None: not kept) and the
    carried tensors' previous values."""

    residual: ResidentResidual
    pristine: _Pristine | None
    carried: dict[str, torch.Tensor] = field(default_factory=dict)


_APPLIED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model → stack of AppliedResidual


def _weights(model) -> dict[str, torch.Tensor]:
    """The model's tensors by state-dict name (parameters and buffers, tied ones under each name)."""
    if isinstance(model, torch.nn.Module):
        named = dict(model.named_parameters(remove_duplicate=False))
        named.update(model.named_buffers(remove_duplicate=False))
        return {k: v.data if isinstance(v, torch.nn.Parameter) else v for k, v in named.items()}
    return dict(model)


def _targets(weights: dict[str, torch.Tensor], residual: ResidentResidual) -> None:
    """Check every record and carried tensor against the model: present, same shape and dtype, one storage each,
    contiguous and on the residual's device where it is updated in place."""
    where = residual.artifact.path
    seen: dict[int, str] = {}
    records = [r for g in residual.groups for r in g.records] + residual.fast
    names = [(r.name, tuple(r.shape), DTYPES_BY_NAME[r.dtype]) for r in records]
    names += [(n, tuple(t.shape), t.dtype) for n, t in residual.carried.items()]
    for name, shape, dtype in names:
        w = weights.get(name)
        if w is None:
            raise InputError(f"{where}: the model has no tensor {name} (is it the base this residual was made against?)")
        if tuple(w.shape) != shape or w.dtype != dtype:
            raise InputError(f"{where}: tensor {name} is {list(w.shape)} {w.dtype} in the model, {list(shape)} {dtype} in the residual")
        if w.data_ptr() in seen:
            raise InputError(f"{where}: tensors {seen[w.data_ptr()]} and {name} share storage in the model (tied weights)")
        seen[w.data_ptr()] = name
    for rec in residual.fast:
        w = weights[rec.name]
        if w.device != residual.device or not w.is_contiguous():
            raise InputError(f"{where}: tensor {rec.name} is not a contiguous tensor on {residual.device} in the model")


def apply_residual(model, artifact: str | Path | Artifact | ResidentResidual, *, pristine: bool = True) -> AppliedResidual:
    """Add s·t in place to ``model``'s weights (a torch module or a name → tensor mapping), turning the resident
    base into the fine-tune bit for bit; carried tensors of the same shape are copied in. ``pristine`` keeps the
    touched entries' previous values so that ``revert_residual`` restores the base exactly."""
    weights = _weights(model)
    residual = artifact if isinstance(artifact, ResidentResidual) else \
        ResidentResidual(artifact, next(iter(weights.values())).device if weights else "cpu")
    _targets(weights, residual)
    applied = AppliedResidual(residual, _Pristine() if pristine else None)
    with torch.no_grad():
        errors = _apply_in_place(weights, residual, applied) if residual.inplace is not None else None
        for group in residual.groups:
            tau = residual.scaled(group)
            for rec in group.records:
                w = weights[rec.name]
                t = tau[rec.offset - group.start : rec.offset - group.start + rec.numel].view(w.shape)
                if applied.pristine is not None:
                    applied.pristine.values[rec.name] = w[t != 0]
                _add(w, t)
        for name, value in residual.carried.items():
            applied.carried[name] = weights[name].clone()
            weights[name].copy_(value)
        if errors is not None:  # the one host sync
            with named_payload_errors(residual.artifact.path):
                residual.inplace.raise_flags(errors.cpu().numpy())
    if isinstance(model, torch.nn.Module):
        _APPLIED.setdefault(model, []).append(applied)
    return applied


def _apply_in_place(weights: dict[str, torch.Tensor], residual: ResidentResidual,
                    applied: AppliedResidual) -> torch.Tensor:
    """Queue the in-place path, the decode adding s·t at the kept entries; returns the device's error flags."""
    from compeft.codecs.golomb.triton_apply import ADD, ADD_SAVE

    fast = [weights[r.name] for r in residual.fast]
    inplace, saved = residual.inplace, applied.pristine
    if saved is not None:
        saved.buffer = torch.empty(inplace.saved_bytes, dtype=torch.uint8, device=residual.device)
    errors = inplace.run(fast, ADD_SAVE if saved is not None else ADD, saved.buffer if saved is not None else None)
    for s, a, st in inplace.dense:  # mode-1 chunks (rare), at their kept entries only, as the decoder does
        kept = a + torch.nonzero(st).reshape(-1)
        w = fast[s].view(-1)
        if saved is not None:
            saved.chunks.append(w[kept])
        w[kept] = _sum(w[kept], st[kept - a])
    return errors


def _sum(w: torch.Tensor, st: torch.Tensor, sign: float = 1.0) -> torch.Tensor:
    """dtype(float32(w) ± s·t) as a new tensor (``_add``'s arithmetic)."""
    w = w.clone()
    _add(w, st, sign)
    return w


def _add(w: torch.Tensor, st: torch.Tensor, sign: float = 1.0) -> None:
    """w ← dtype(float32(w) ± s·t), in place (``st``: s·t in float32; where it is −0.0 and sign is +1, w keeps its
    bits): for bf16, fp16 and float32 the sum is formed in float32 and rounded once (one kernel on CUDA),
    reconstruct's own arithmetic for other dtypes."""
    if w.dtype in FUSED and w.device.type == "cuda":
        w.add_(st, alpha=sign)
    elif w.dtype in FUSED:  # the CPU's mixed-dtype add_ is a slow scalar loop: widen, add, round back instead
        w.copy_(w.to(torch.float32).add_(st, alpha=sign))
    else:
        w.copy_((w.to(torch.float32) + st * sign).to(w.dtype))


def revert_residual(model, artifact: str | Path | Artifact | ResidentResidual | AppliedResidual) -> None:
    """Undo the last apply_residual of this artifact on ``model``: the pristine values written back (exact), or
    s·t subtracted when none were kept. Only the most recent application can be reverted (later ones touched the
    same weights)."""
    weights = _weights(model)
    stack = _APPLIED.get(model, []) if isinstance(model, torch.nn.Module) else []
    if isinstance(artifact, AppliedResidual):
        applied = artifact
    elif not stack:
        raise InputError(f"{_path_of(artifact)}: no residual is applied to this model (pass the AppliedResidual for a "
                         "mapping of tensors)")
    else:
        applied = stack[-1]
    if _path_of(artifact) != _path_of(applied) or (stack and stack[-1] is not applied):
        raise InputError(f"{_path_of(artifact)}: not the residual applied last to this model "
                         f"({_path_of(stack[-1]) if stack else 'none'} is); revert the later ones first")
    residual, saved = applied.residual, applied.pristine
    with torch.no_grad():
        for name, value in applied.carried.items():
            weights[name].copy_(value)
        if residual.inplace is not None:
            from compeft.codecs.golomb.triton_apply import RESTORE, SUBTRACT

            fast = [weights[r.name] for r in residual.fast]
            residual.inplace.run(fast, RESTORE if saved is not None else SUBTRACT, saved.buffer if saved is not None else None)
            for i, (s, a, st) in enumerate(residual.inplace.dense):
                kept = a + torch.nonzero(st).reshape(-1)
                w = fast[s].view(-1)
                w[kept] = saved.chunks[i] if saved is not None else _sum(w[kept], st[kept - a], -1.0)
        for group in residual.groups:
            tau = residual.scaled(group, negated=saved is None)
            for rec in group.records:
                w = weights[rec.name]
                t = tau[rec.offset - group.start : rec.offset - group.start + rec.numel].view(w.shape)
                if saved is not None:
                    w[t != 0] = saved.values[rec.name]
                else:
                    _add(w, t)
    if stack:
        stack.pop()


def _path_of(artifact) -> str:
    """The resolved container path of whatever names an artifact."""
    from compeft.container import container_path

    if isinstance(artifact, AppliedResidual):
        artifact = artifact.residual
    if isinstance(artifact, ResidentResidual):
        artifact = artifact.artifact
    return str(Path(artifact.path if isinstance(artifact, Artifact) else container_path(artifact)).resolve())
