"""compeft.ops.compose on the example catalog's tiny Llama with a tiny budget: learned weights recorded, the written
adapter is θ_init + Σ w_i τ̂_i and scores what the search saw, the CLI writes it too."""

from __future__ import annotations

import json

import pytest
import torch

import compeft
from compeft.adapters import read_adapter
from compeft.cli import main
from compeft.errors import TaskConfigError
from compeft.ops import compose
from tests.ops.reference import dense_tau

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def experts(tmp_path_factory):
    from examples.catalog_builder import example_catalog

    torch.set_num_threads(1)
    catalog = example_catalog()
    root = tmp_path_factory.mktemp("experts")
    paths = [compeft.compress(catalog.adapter(n).path, root / n, density=0.3, device="cpu").path
             for n in ("lora-color", "lora-pair")]
    return catalog, paths


def test_compose_learns_weights_and_writes_the_composed_adapter(experts, tmp_path):
    from tests.calibrate.conftest import _score_adapter_dir

    catalog, paths = experts
    task = catalog.task_yamls["color"]
    result = compose(paths, tmp_path / "composed", task=str(task), base=str(catalog.base_dir), shots=12, budget=4,
                     device="cpu")
    assert len(result.evaluations) == 4 and result.evaluations[0].weights == (0.0, 0.0)
    assert result.score >= result.base_score  # the best point seen, w = 0 included
    written = json.loads((tmp_path / "composed" / "compose.json").read_text())
    assert written["weights"] == list(result.weights) and len(written["evaluations"]) == 4
    adapter = read_adapter(tmp_path / "composed")
    got = torch.cat([(adapter.tensors[n].to(torch.float64) - theta).reshape(-1)
                     for n, theta in sorted(adapter.theta_inits.items())])
    expected = sum(w * dense_tau(p)[1] for w, p in zip(result.weights, paths))
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)
    saved = _score_adapter_dir(tmp_path / "composed", catalog, task, limit=12)
    assert saved.value == pytest.approx(result.score)
    assert "compose" in (tmp_path / "composed" / "README.md").read_text()


def test_cli_compose_and_a_bad_task_fails_before_loading(experts, tmp_path, capsys):
    catalog, paths = experts
    code = main(["compose", *map(str, paths), "--task", str(catalog.task_yamls["pair"]), "--base", str(catalog.base_dir),
                 "--shots", "8", "--budget", "2", "--out", str(tmp_path / "c"), "--device", "cpu"])
    assert code == 0 and "composed from 2 experts" in capsys.readouterr().out
    with pytest.raises(TaskConfigError):
        compose(paths, tmp_path / "d", task=str(tmp_path / "missing.yaml"), base=str(catalog.base_dir), device="cpu")
    assert main(["compose", *map(str, paths), "--task", "x.yaml", "--base", "b", "--out", str(tmp_path / "e"),
                 "--budget", "0"]) == 2
