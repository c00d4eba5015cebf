"""Shared fixtures for the calibration tests: the example catalog (bundled, else built once and cached) and one thread.

The catalog is the committed build in examples/catalog/ while its builder is unchanged; otherwise it
is built under .cache/fixtures/ keyed by a hash of the builder's sources (examples/), so the first
session builds it (~1 minute on 2 cores) and later sessions reuse it.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """The tiny model runs fastest single-threaded; restored after each module (other tests keep theirs)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def catalog():
    """The example catalog (tiny Llama, LoRA/(IA)³ adapters, full fine-tune, task YAMLs)."""
    from examples.catalog_builder import example_catalog

    return example_catalog()


@pytest.fixture(scope="session")
def base_tokenizer(catalog):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(catalog.base_dir)


@pytest.fixture(scope="session")
def score_adapter_dir(catalog):
    """A function scoring a PEFT adapter directory (or the bare base with None) on a task YAML, over the
    base of ``on`` (default: the shared catalog)."""
    return lambda adapter_dir, task_yaml, limit=None, on=catalog: _score_adapter_dir(adapter_dir, on, task_yaml,
                                                                                      limit=limit)


@pytest.fixture(scope="session")
def score_model_dir():
    """A function scoring a full model directory on a task YAML."""
    return _score_model_dir


def _score_adapter_dir(adapter_dir, catalog, task_yaml, *, limit=None):
    """Score of a PEFT adapter directory (fresh base + PeftModel) with the lm-eval evaluator."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from compeft.calibrate.evaluator import LmEvalEvaluator
    from compeft.calibrate.tasks import resolve_task

    tok = AutoTokenizer.from_pretrained(catalog.base_dir)
    model = AutoModelForCausalLM.from_pretrained(catalog.base_dir, dtype=torch.float32).eval()
    if adapter_dir is not None:
        model = PeftModel.from_pretrained(model, str(adapter_dir)).eval().get_base_model()
    return LmEvalEvaluator(resolve_task(str(task_yaml)), tok, limit=limit).evaluate(model)


def _score_model_dir(model_dir, task_yaml, *, limit=None):
    """Score of a full model directory with the lm-eval evaluator."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from compeft.calibrate.evaluator import LmEvalEvaluator
    from compeft.calibrate.tasks import resolve_task

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    return LmEvalEvaluator(resolve_task(str(task_yaml)), tok, limit=limit).evaluate(model)
