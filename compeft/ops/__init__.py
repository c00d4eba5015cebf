"""Operations on compressed artifacts (paper §2.2, §3.6, §3.7): ``similarity`` from the bit planes, ``merge``
(task arithmetic, TIES) and ``compose`` (LoraHub). Each reads artifacts through ``compeft.artifact`` and writes new
adapters or artifacts; each takes its configuration object (``compeft.config``) or its fields as keywords."""

from __future__ import annotations

__all__ = ["similarity", "merge", "compose"]


def similarity(artifacts, config=None, **options):
    """Every pair's cosine, overlap, common and sign agreement (``compeft.ops.similar.similarity``)."""
    from compeft.ops.similar import similarity as run

    return run(artifacts, config, **options)


def merge(artifacts, dst, config=None, *, overwrite: bool = False, **options):
    """Merge artifacts into a PEFT adapter or an artifact (``compeft.ops.merging.merge``)."""
    from compeft.ops.merging import merge as run

    return run(artifacts, dst, config, overwrite=overwrite, **options)


def compose(artifacts, dst, config=None, *, overwrite: bool = False, progress: bool = False, **options):
    """Learn LoraHub weights for a task and write the composed adapter (``compeft.ops.composing.compose``)."""
    from compeft.ops.composing import compose as run

    return run(artifacts, dst, config, overwrite=overwrite, progress=progress, **options)
