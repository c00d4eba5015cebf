"""LoraHub composition from compressed experts (Huang et al. 2023; paper §3.6): learn one weight w_i per expert
so that the adapter θ_init + Σ w_i τ̂_i (Σ w_i A_i, Σ w_i B_i for LoRA) does well on a few examples of a new task.

As LoraHub does, the weights are searched with nevergrad's NGOpt in [−bound, bound]ⁿ from w = 0, minimising
−score + regularization·mean|w| (the best point evaluated is kept); the score is the project's lm-eval
evaluator on the first ``shots`` documents of the task's validation split. The base model is loaded once; each
candidate is written into the attached adapter's tensors in place (one matrix-vector product over the experts'
dense τ̂), so an evaluation costs one lm-eval run.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from compeft.artifact import adapter_config_bytes, reconstruct
from compeft.atomic import check_destination
from compeft.config import ComposeConfig
from compeft.container import FILENAME
from compeft.devices import resolve_device
from compeft.dtypes import DTYPES_BY_NAME
from compeft.errors import CalibrationError, OptionError
from compeft.ops.merging import MergeInput, lineage_inputs, merged_tensors, open_inputs, write_peft
from compeft.ops.planes import TernaryPlanes

log = logging.getLogger("compeft.ops")
RESULT_FILE = "compose.json"


@dataclass(frozen=True)
class Evaluation:
    """One point the optimizer tried: the weights, the task score and the objective minimised."""

    weights: tuple[float, ...]
    score: float
    objective: float


@dataclass(frozen=True)
class ComposeResult:
    """The composed adapter: where it is, the learned weights (in ``inputs``), its score and the search."""

    path: str
    task: str
    metric: str
    shots: int
    budget: int
    inputs: tuple[MergeInput, ...]
    score: float
    base_score: float
    evaluations: tuple[Evaluation, ...]
    seconds: float

    @property
    def weights(self) -> tuple[float, ...]:
        return tuple(i.weight for i in self.inputs)

    def lineage(self) -> dict:
        return {"operation": "compose", "method": "lorahub", "task": self.task,
                "inputs": [asdict(i) for i in self.inputs]}

    def summary(self) -> str:
        """The one line ``compeft compose`` prints."""
        weights = ", ".join(f"{w:.3f}" for w in self.weights)
        return (f"{self.path}: composed from {len(self.inputs)} experts, weights [{weights}]; {self.metric} on "
                f"{self.shots} examples {self.score:.4f} (base {self.base_score:.4f}), {len(self.evaluations)} "
                f"evaluations in {self.seconds:.1f} s")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["weights"] = list(self.weights)
        return data


class Composition:
    """The experts' dense τ̂ stacked on the device and the live adapter tensors a weight vector is written into."""

    def __init__(self, planes: Sequence[TernaryPlanes], live: dict[str, torch.Tensor]) -> None:
        self.first = planes[0]
        self.taus = torch.stack([p.ternary(torch.float32) * p.scale for p in planes])
        records = self.first.records
        missing = [n for n in records.names if n not in live]
        if missing:
            raise CalibrationError(f"{self.first.label}: the attached adapter has no tensor {missing[0]!r}")
        self.targets = [(live[n], DTYPES_BY_NAME[dt], th, off, num, shape) for n, dt, th, off, num, shape in
                        zip(records.names, records.dtypes, records.theta_inits, records.offsets, records.numels,
                            records.shapes)]

    def tau(self, weights: Sequence[float]) -> torch.Tensor:
        """Σ w_i τ̂_i (float32, on the device)."""
        w = torch.tensor(list(weights), dtype=torch.float32, device=self.taus.device)
        return w @ self.taus

    def apply(self, weights: Sequence[float]) -> None:
        """Write θ_init + Σ w_i τ̂_i into the live tensors (rounded to each record's dtype, as a saved adapter is)."""
        tau = self.tau(weights)
        with torch.no_grad():
            for target, dtype, theta, offset, numel, shape in self.targets:
                target.copy_(reconstruct(tau[offset : offset + numel], 1.0, theta, dtype).reshape(shape))


def compose(artifacts: Sequence[str | Path | TernaryPlanes], dst: str | Path, config: ComposeConfig | None = None, *,
            overwrite: bool = False, progress: bool = False, evaluator=None, session=None, **options) -> ComposeResult:
    """Learn LoraHub weights for ``config.task`` over the experts and write the composed PEFT adapter to ``dst``
    (with ``compose.json``: the weights, scores and every evaluation). ``evaluator`` replaces the lm-eval one;
    ``session`` (a ``compeft.calibrate.BaseModelSession``) lends its loaded base."""
    import nevergrad as ng

    from compeft.adapters import write_adapter
    from compeft.calibrate.evaluator import LmEvalEvaluator
    from compeft.calibrate.session import BaseModelSession
    from compeft.calibrate.tasks import resolve_task

    start = time.perf_counter()
    if config is not None and options:
        raise OptionError(f"pass either a ComposeConfig or its fields, not both ({', '.join(sorted(options))})")
    config = config if config is not None else ComposeConfig(**options)
    dst = Path(dst)
    check_destination(dst, overwrite)
    device = session.device if session is not None else resolve_device(config.device)
    label = config.task
    if evaluator is None:
        source = resolve_task(config.task, config.metric)  # task errors before any model is loaded
        evaluator = LmEvalEvaluator(source, None, limit=config.shots, batch_size=config.batch_size, seed=config.seed)
        label = source.label
    planes = open_inputs(artifacts, device, "compose")
    first = planes[0]
    own = session is None
    session = BaseModelSession(config.base, device) if own else session
    evaluations: list[Evaluation] = []
    try:
        with tempfile.TemporaryDirectory(prefix="compeft-compose-") as tmp:
            start_dir = Path(tmp) / "adapter"
            zero = torch.zeros(first.d, dtype=torch.float32)
            config_bytes = adapter_config_bytes(first.directory / FILENAME, first.source)
            write_adapter(start_dir, config_bytes, merged_tensors(first, zero))
            with session.attached(start_dir) as loaded:
                if isinstance(evaluator, LmEvalEvaluator):
                    evaluator.tokenizer = loaded.tokenizer
                composition = Composition(planes, loaded.live)

                def score(weights: Sequence[float]) -> float:
                    composition.apply(weights)
                    return evaluator.evaluate(loaded.model).value

                def objective(weights: np.ndarray) -> float:
                    w = tuple(float(x) for x in weights)
                    value = score(w)
                    loss = -value + config.regularization * float(np.mean(np.abs(weights)))
                    evaluations.append(Evaluation(w, value, loss))
                    if progress:
                        log.warning("compose %d/%d: %s = %.4f", len(evaluations), config.budget, evaluator.metric, value)
                    return loss

                n = len(planes)
                parametrization = ng.p.Array(init=np.zeros(n), lower=-config.bound, upper=config.bound)
                parametrization.random_state = np.random.RandomState(config.seed)
                optimizer = ng.optimizers.NGOpt(parametrization=parametrization, budget=config.budget)
                optimizer.minimize(objective)
                best = min(evaluations, key=lambda e: e.objective)  # the best point seen (NGOpt starts at w = 0)
                weights, best_score = best.weights, best.score
                base_score = next((e.score for e in evaluations if not any(e.weights)), None)
                if base_score is None:
                    base_score = score((0.0,) * n)
    finally:
        if own:
            session.close()
    result = ComposeResult(
        path=str(dst), task=label, metric=evaluator.metric, shots=config.shots, budget=config.budget,
        inputs=lineage_inputs(planes, weights), score=best_score, base_score=base_score,
        evaluations=tuple(evaluations), seconds=time.perf_counter() - start,
    )
    tau = composition.tau(weights)
    write_peft(first, tau, dst, result.lineage(), overwrite=overwrite,
               extra={RESULT_FILE: json.dumps(result.to_dict(), indent=2) + "\n"})
    return result
