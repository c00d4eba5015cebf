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
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from compeft.calibrate.evaluator import Evaluator, LmEvalEvaluator
from compeft.calibrate.model import (
    LoadedModel,
    is_adapter_dir,
    load_model,
    local_base_dir,
)
from compeft.calibrate.patterns import PatternFactory
from compeft.calibrate.result import CalibrationResult, Timings
from compeft.calibrate.search import GridPoint, alpha_plan, select
from compeft.calibrate.session import BaseModelSession, check_session
from compeft.calibrate.tasks import resolve_task
from compeft.config import CalibrationConfig, CompressionConfig
from compeft.errors import InputError, OptionError

log = logging.getLogger("compeft.calibrate")


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


def calibrate(src: str | Path, dst: str | Path | None = None, config: CalibrationConfig | None = None, *,
              overwrite: bool = False, evaluator: Evaluator | None = None, session: BaseModelSession | None = None,
              **options) -> CalibrationResult:
    """Choose (density, α) for SRC on a validation task; with DST, write the artifact and the reports there.

    ``options`` are CalibrationConfig fields (task, base, densities, alphas, ...; None meaning the field's
    default) when no ``config`` is given. ``session`` (holding the base on the device) lends an adapter its
    already-loaded base instead of loading one.
    """
    import compeft
    from compeft.atomic import check_destination
    from compeft.calibrate.report import write_json, write_png
    from compeft.devices import resolve_device

    t_start = time.perf_counter()
    if config is not None and options:
        raise OptionError(f"pass either a CalibrationConfig or its fields, not both ({', '.join(sorted(options))})")
    config = config if config is not None else CalibrationConfig(**{k: v for k, v in options.items() if v is not None})
    base = config.base if config.base is not None else session.base if session is not None else None
    if base is None:
        raise OptionError("calibration needs a base model (base)", "base")
    src = Path(src)
    if not src.is_dir():
        raise InputError(f"{src}: not a directory")
    if dst is not None:
        dst = Path(dst)
        check_destination(dst, overwrite)
        if dst.resolve() == src.resolve():
            raise InputError(f"{dst}: destination is the source directory")
    full = not is_adapter_dir(src)
    if session is not None and not full:
        check_session(session, base, config.device)
    dev = session.device if session is not None else resolve_device(config.device)
    if evaluator is None:
        source = resolve_task(config.task, config.metric)  # task errors surface here, before any model load
        evaluator = LmEvalEvaluator(source, None, limit=config.limit, batch_size=config.batch_size, seed=config.seed)
        task_label, split = source.label, source.split
    else:
        task_label, split = config.task, None
    base_dir = local_base_dir(base) if full else None

    with model_under_calibration(src, str(base), base_dir, dev, session) as loaded:
        if isinstance(evaluator, LmEvalEvaluator):
            evaluator.tokenizer = loaded.tokenizer
        t_loaded = time.perf_counter()
        reference = evaluator.evaluate(loaded.model)
        t_ref = time.perf_counter()
        log.info("original: %s = %.4f", evaluator.metric, reference.value)
        points, eval_s, update_s, pattern_s = sweep_grid(src, loaded, base_dir, config, evaluator)
    t_sweep = time.perf_counter()
    chosen = select(points, config.tolerance)

    artifact = None
    if dst is not None:
        artifact = compeft.compress(src, dst, CompressionConfig(density=chosen.density, alpha=chosen.alpha,
                                                                  codec=config.codec, device=str(dev)),
                                    base=base_dir, overwrite=overwrite)
    result = CalibrationResult(
        src=str(src), base=base, dst=str(dst) if dst is not None else None, task=task_label, metric=evaluator.metric,
        split=split, limit=config.limit, search=config.search, seed=config.seed, device=str(dev),
        densities=config.densities, alphas=config.alphas, tolerance=config.tolerance, reference=reference,
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


def sweep_grid(src: Path, loaded: LoadedModel, base_dir: Path | None, config: CalibrationConfig,
               evaluator: Evaluator) -> tuple[list[GridPoint], float, float, float]:
    """Every evaluated (density, α) point, with the seconds spent evaluating, updating and building patterns."""
    dev = loaded.device
    factory = PatternFactory(src, loaded, base_dir=base_dir, codec=config.codec)
    points: list[GridPoint] = []
    eval_s = update_s = pattern_s = 0.0
    try:
        for k in config.densities:
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

            points.extend(alpha_plan(config.alphas, config.search, evaluate_alpha))
            del pattern
    finally:
        factory.close()
    return points, eval_s, update_s, pattern_s
