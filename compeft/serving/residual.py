"""Full fine-tune residuals applied in place to a resident base model: one base serves many full fine-tunes.

``apply_residual(model, artifact)`` adds s·t to the base's weights where they live (CPU or GPU), a group of
tensors at a time: the chunks covering the group are decoded as s·t in float32 (the value table −s, 0, s; on the
GPU with the device decoder) into one scratch buffer of at most GROUP entries, never a dense τ of the whole
model, and each weight is updated by one ``add_`` of that float32 view, which computes float32(θ) + s·t and
rounds once to the weight's dtype: the value artifact.reconstruct gives (an int8 t with ``alpha=s`` would not:
the CPU kernel rounds s·t to bf16 first), so the model equals the decompressed fine-tune bit for bit (untouched −0.0 becomes
+0.0 there too). ``revert_residual`` undoes the last application. Subtracting s·t again is exact only where the
first rounding lost nothing, which bf16, fp16 and float32 weights do not promise, so by default apply keeps a
pristine copy of the touched entries (k·d values, not the tensors; and where the untouched −0.0s were) and revert
writes them back; with
``pristine=False`` revert subtracts instead (exact only for entries whose sum was exact; said in the result).
``ResidentResidual`` checks an artifact once and keeps its payload on the model's device for repeated applies.
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

GROUP = 1 << 27  # τ entries decoded at once (float32 scratch: 512 MiB)
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
    """A full residual checked once (every checksum), its payload split by group and held on ``device``."""

    def __init__(self, artifact: str | Path | Artifact, device: str | torch.device = "cpu") -> None:
        self.artifact = artifact if isinstance(artifact, Artifact) else open_artifact(artifact, mapped=True)
        document = self.artifact.document
        if document.kind != "full":
            raise InputError(f"{self.artifact.path}: not a full fine-tune residual (kind {document.kind!r}); "
                             "adapters are loaded with compeft.load")
        self.device, self.scale = torch.device(device), document.scale
        self.values = reconstruct(ternary_values(), document.scale, 0.0, torch.float32)  # (−s, 0, s): s·t, exact
        self.codec = get_codec(document.codec)
        payload = self.artifact.container.payload
        with named_payload_errors(self.artifact.path):
            plan = self.codec.prepare(payload, document.d)
        self.groups: list[_Group] = []
        for rec in self.artifact.records.records():
            if rec.numel == 0:
                continue
            if not self.groups or self.groups[-1].stop - self.groups[-1].start + rec.numel > GROUP:
                self.groups.append(_Group([], rec.offset, rec.offset))
            self.groups[-1].records.append(rec)
            self.groups[-1].stop = rec.offset + rec.numel
        span_plan = getattr(self.codec, "span_plan", None)
        for g in self.groups:
            if span_plan is not None:
                g.plan, a, b = span_plan(plan, g.start, g.stop)
                g.payload = payload[a:b].to(self.device) if self.device.type != "cpu" else payload[a:b]
            else:  # a codec without spans: s·t of the group decoded on the host once, kept in float32
                with named_payload_errors(self.artifact.path):
                    t = self.codec.decode_span(plan, payload, g.start, g.stop)
                g.payload = (t.to(torch.float32) * self.values[2]).to(self.device)
        self.carried = dict(self.artifact.container.carried)
        self._scratch: torch.Tensor | None = None

    def scaled(self, group: _Group) -> torch.Tensor:
        """s·t of one group in float32 on the device (a view of a scratch buffer reused by the next call)."""
        n = group.stop - group.start
        if group.plan is None:
            return group.payload
        if self._scratch is None or self._scratch.numel() < n:
            self._scratch = torch.empty(min(GROUP, max(g.stop - g.start for g in self.groups)), dtype=torch.float32,
                                        device=self.device)
        out = self._scratch[:n]
        with named_payload_errors(self.artifact.path):
            self.codec.decode_into(group.plan, group.payload, out, self.values)()
        return out


@dataclass
class AppliedResidual:
    """What apply_residual did: the residual, the pristine values of the touched entries (None: not kept), and
    the carried tensors' previous values."""

    residual: ResidentResidual
    pristine: dict[str, torch.Tensor] | None
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
    """Check every record and carried tensor against the model: present, same shape and dtype, one storage each."""
    where = residual.artifact.path
    seen: dict[int, str] = {}
    names = [(r.name, tuple(r.shape), DTYPES_BY_NAME[r.dtype]) for g in residual.groups for r in g.records]
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


def apply_residual(model, artifact: str | Path | Artifact | ResidentResidual, *, pristine: bool = True) -> AppliedResidual:
    """Add s·t in place to ``model``'s weights (a torch module or a name → tensor mapping), turning the resident
    base into the fine-tune bit for bit; carried tensors of the same shape are copied in. ``pristine`` keeps the
    touched entries' previous values so that ``revert_residual`` restores the base exactly."""
    weights = _weights(model)
    residual = artifact if isinstance(artifact, ResidentResidual) else \
        ResidentResidual(artifact, next(iter(weights.values())).device if weights else "cpu")
    _targets(weights, residual)
    saved: dict[str, torch.Tensor] | None = {} if pristine else None
    with torch.no_grad():
        for group in residual.groups:
            tau = residual.scaled(group)
            for rec in group.records:
                w = weights[rec.name]
                t = tau[rec.offset - group.start : rec.offset - group.start + rec.numel].view(w.shape)
                if saved is not None:  # the touched entries, and the untouched −0.0s (θ + 0 makes them +0.0)
                    saved[rec.name] = w[t != 0]
                    saved[rec.name + "\0negzero"] = torch.nonzero(((w == 0) & w.signbit() & (t == 0)).reshape(-1))
                _add(w, t)
        carried = {}
        for name, value in residual.carried.items():
            carried[name] = weights[name].clone()
            weights[name].copy_(value)
    applied = AppliedResidual(residual, saved, carried)
    if isinstance(model, torch.nn.Module):
        _APPLIED.setdefault(model, []).append(applied)
    return applied


def _add(w: torch.Tensor, st: torch.Tensor, sign: float = 1.0) -> None:
    """w ← dtype(float32(w) ± s·t), in place (``st``: s·t in float32): for bf16, fp16 and float32 the sum is formed
    in float32 and rounded once (one kernel on CUDA), reconstruct's own arithmetic for other dtypes."""
    if w.dtype in FUSED and w.device.type == "cuda":
        w.add_(st, alpha=sign)
    elif w.dtype in FUSED:  # the CPU's mixed-dtype add_ is a slow scalar loop: widen, add, round back instead
        w.copy_(w.to(torch.float32).add_(st, alpha=sign))
    else:
        w.copy_((w.to(torch.float32) + st * sign).to(w.dtype))


def revert_residual(model, artifact: str | Path | Artifact | ResidentResidual | AppliedResidual) -> None:
    """Undo the last apply_residual of this artifact on ``model``: the pristine values written back (exact), or
    s·t subtracted when none were kept. Only the most recent application can be reverted (later ones touched
    the same weights)."""
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
    residual = applied.residual
    with torch.no_grad():
        for name, value in applied.carried.items():
            weights[name].copy_(value)
        for group in residual.groups:
            tau = residual.scaled(group)
            for rec in group.records:
                w = weights[rec.name]
                t = tau[rec.offset - group.start : rec.offset - group.start + rec.numel].view(w.shape)
                if applied.pristine is not None:
                    w[t != 0] = applied.pristine[rec.name]
                    w.view(-1)[applied.pristine[rec.name + "\0negzero"].reshape(-1)] = -0.0
                else:
                    _add(w, t, -1.0)
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
