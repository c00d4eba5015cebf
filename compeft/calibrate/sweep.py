"""``calibrate``: load once, evaluate the original, sweep (density, α) in place, choose, write DST.

Order of work: options and the task are checked first (a bad task YAML fails before any model is
loaded), then the model is loaded once (an adapter is attached to the base of a ``BaseModelSession``:
the caller's, shared by many adapters, or a one-shot one closed afterwards); per density one α = 1
artifact gives the ternary pattern and the codec's bytes; per α the weights are rewritten in place
and evaluated. The chosen point is then compressed into DST with ``compeft.compress`` and
calibration.json / calibration.png are added.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from compeft.calibrate.evaluator import DEFAULT_SEED, Evaluator, LmEvalEvaluator
from compeft.calibrate.model import LoadedModel, is_adapter_dir, load_model, local_base_dir
from compeft.calibrate.patterns import PatternFactory
from compeft.calibrate.result import CalibrationResult, Timings
from compeft.calibrate.search import (
    DEFAULT_DENSITIES,
    PAPER_ALPHAS,
    SEARCH_MODES,
    GridPoint,
    alpha_plan,
    select,
)
from compeft.calibrate.session import BaseModelSession, check_session
from compeft.calibrate.tasks import resolve_task
from compeft.errors import InputError, OptionError

log = logging.getLogger("compeft.calibrate")


def check_options(densities: Sequence[float], alphas: Sequence[float], tolerance: float, search: str,
                  limit: float | None, batch_size: int) -> None:
    """One-line errors for option values, before anything is loaded."""
    for k in densities:
        if not (0 < k <= 1):
            raise OptionError(f"--densities: {k} is outside (0, 1]")
    for a in alphas:
        if not (math.isfinite(a) and a > 0):
            raise OptionError(f"--alphas: {a} must be a finite number > 0")
    if not densities or not alphas:
        raise OptionError("--densities and --alphas need at least one value each")
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise OptionError(f"--tolerance {tolerance} must be a finite number >= 0")
    if search not in SEARCH_MODES:
        raise OptionError(f"--search {search!r} is not one of {', '.join(SEARCH_MODES)}")
    if limit is not None and not (limit > 0):
        raise OptionError(f"--limit {limit} must be > 0")
    if batch_size < 1:
        raise OptionError(f"--batch-size {batch_size} must be >= 1")


@contextmanager
def model_under_calibration(src: Path, base: str, base_dir: Path | None, device, session: BaseModelSession | None
                            ) -> Iterator[LoadedModel]:
    """The model for the block: a full fine-tune (BASE_DIR set) of its own, else SRC attached to the session's base."""
    if base_dir is not None:
        yield load_model(src, str(base_dir), device)
        return
    own = session is None
    session = BaseModelSession(base, device) if own else session
    try:
        with session.attached(src) as loaded:
            yield loaded
    finally:
        if own:
            session.close()


def calibrate(
    src: str | Path,
    dst: str | Path | None = None,
    *,
    base: str | Path,
    task: str,
    densities: Sequence[float] | None = DEFAULT_DENSITIES,
    alphas: Sequence[float] | None = PAPER_ALPHAS,
    metric: str = "acc",
    limit: float | None = None,
    tolerance: float = 0.0,
    device: str = "auto",
    batch_size: int = 64,
    search: str = "refine",
    seed: int = DEFAULT_SEED,
    codec: str = "golomb",
    overwrite: bool = False,
    evaluator: Evaluator | None = None,
    session: BaseModelSession | None = None,
) -> CalibrationResult:
    """Choose (density, α) for SRC on a validation task; with DST, write the artifact and the reports there.

    ``densities``/``alphas`` None mean the defaults (0.05, 0.1, 0.2 and the paper's α grid). ``session``
    (holding BASE on the device) lends an adapter its already-loaded base instead of loading one.
    """
    import compeft
    from compeft.atomic import check_destination
    from compeft.calibrate.report import write_json, write_png
    from compeft.codecs import get_codec
    from compeft.devices import resolve_device

    t_start = time.perf_counter()
    src = Path(src)
    densities = tuple(sorted({float(k) for k in (DEFAULT_DENSITIES if densities is None else densities)}))
    alphas = tuple(sorted({float(a) for a in (PAPER_ALPHAS if alphas is None else alphas)}))
    check_options(densities, alphas, tolerance, search, limit, batch_size)
    get_codec(codec)
    if not src.is_dir():
        raise InputError(f"{src}: not a directory")
    if dst is not None:
        dst = Path(dst)
        check_destination(dst, overwrite)
        if dst.resolve() == src.resolve():
            raise InputError(f"{dst}: destination is the source directory")
    full = not is_adapter_dir(src)
    if session is not None and not full:
        check_session(session, base, device)
    dev = session.device if session is not None else resolve_device(device)
    if evaluator is None:
        source = resolve_task(task, metric)  # task errors surface here, before any model load
        evaluator = LmEvalEvaluator(source, None, limit=limit, batch_size=batch_size, seed=seed)
        task_label, split = source.label, source.split
    else:
        task_label, split = task, None
    base_dir = local_base_dir(str(base)) if full else None

    with model_under_calibration(src, str(base), base_dir, dev, session) as loaded:
        if isinstance(evaluator, LmEvalEvaluator):
            evaluator.tokenizer = loaded.tokenizer
        t_loaded = time.perf_counter()
        reference = evaluator.evaluate(loaded.model)
        t_ref = time.perf_counter()
        log.info("original: %s = %.4f", evaluator.metric, reference.value)
        points, eval_s, update_s, pattern_s = sweep_grid(src, loaded, base_dir, codec, densities, alphas, search, evaluator)
    t_sweep = time.perf_counter()
    chosen = select(points, tolerance)

    artifact = None
    if dst is not None:
        res = compeft.compress(src, dst, density=chosen.density, alpha=chosen.alpha, codec=codec, device=dev,
                               base=base_dir, overwrite=overwrite)
        artifact = res.to_dict()
    result = CalibrationResult(
        src=str(src), base=str(base) if base is not None else None, dst=str(dst) if dst is not None else None,
        task=task_label, metric=evaluator.metric, split=split, limit=limit, search=search, seed=seed,
        device=str(dev), densities=densities, alphas=alphas, tolerance=tolerance, reference=reference,
        points=tuple(points), chosen=chosen, artifact=artifact,
    )
    if dst is not None:
        write_png(result, Path(dst))
    t_end = time.perf_counter()
    timings = Timings(
        load=t_loaded - t_start, reference=t_ref - t_loaded, evaluations=eval_s, patterns=pattern_s,
        updates=update_s, sweep=t_sweep - t_ref, write=t_end - t_sweep, total=t_end - t_start,
    )
    result = replace(result, timings=timings)
    if dst is not None:
        write_json(result, Path(dst))
    return result


def sweep_grid(src: Path, loaded: LoadedModel, base_dir: Path | None, codec: str, densities: Sequence[float],
               alphas: Sequence[float], search: str, evaluator: Evaluator) -> tuple[list[GridPoint], float, float, float]:
    """Every evaluated (density, α) point, with the seconds spent evaluating, updating and building patterns."""
    dev = loaded.device
    factory = PatternFactory(src, loaded, base_dir=base_dir, codec=codec)
    points: list[GridPoint] = []
    eval_s = update_s = pattern_s = 0.0
    try:
        for k in densities:
            pattern = factory.pattern(k)
            pattern_s += pattern.build_seconds

            def evaluate_alpha(alpha: float, pattern=pattern, k=k) -> GridPoint:
                nonlocal eval_s, update_s
                t0 = time.perf_counter()
                s = pattern.apply(alpha)
                if dev.type == "cuda":
                    import torch

                    torch.cuda.synchronize(dev)
                t1 = time.perf_counter()
                score = evaluator.evaluate(loaded.model)
                t2 = time.perf_counter()
                update_s += t1 - t0
                eval_s += t2 - t1
                log.info("k=%g α=%g: %s = %.4f", k, alpha, evaluator.metric, score.value)
                return GridPoint(k, alpha, score.value, score.stderr, pattern.bytes_artifact, s, pattern.kept, t2 - t1)

            points.extend(alpha_plan(alphas, search, evaluate_alpha))
            del pattern
    finally:
        factory.close()
    return points, eval_s, update_s, pattern_s
