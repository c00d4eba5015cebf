"""compeft.ops.similarity and `compeft similar`: the popcount counts equal the dense computation."""

from __future__ import annotations

import json
import math

import pytest
import torch

from compeft.cli import main
from compeft.errors import InputError
from compeft.ops import similarity
from compeft.ops.planes import open_planes, pack_words, unpack_words
from compeft.ops.popcount import many_counts, support_count
from tests.ops.conftest import adapter_tensors, make_artifact
from tests.ops.reference import dense_similarity, dense_tau

CASES = [
    ({"seed": 1}, {"seed": 2}),  # unrelated: cosine near 0
    ({"seed": 3}, {"seed": 4, "shared": 3, "mix": 0.1}),  # near-duplicate
    ({"seed": 5, "density": 0.05}, {"seed": 6, "shared": 5, "mix": 0.5, "density": 0.7}),
    ({"seed": 7, "codec": "bitmask"}, {"seed": 8, "shared": 7, "mix": 0.3}),  # codecs mix
    ({"seed": 9, "density": 1.0}, {"seed": 9, "density": 1.0}),  # identical, dense
]


@pytest.mark.parametrize("pair", CASES)
def test_similarity_equals_the_dense_computation(artifacts, pair):
    a, b = artifacts(*pair)
    [result] = similarity([a, b], device="cpu")
    expected = dense_similarity(a, b)
    assert result.common == expected["common"]
    for key in ("cosine", "overlap", "sign_agreement"):
        assert getattr(result, key) == pytest.approx(expected[key], rel=1e-12, abs=1e-15), key
    assert (result.a, result.b) == (str(a), str(b))


def test_every_pair_in_input_order_and_high_similarity_for_related_adapters(artifacts):
    paths = artifacts({"seed": 1}, {"seed": 2, "shared": 1, "mix": 0.05}, {"seed": 3})
    pairs = similarity(paths, device="cpu")
    assert [(p.a, p.b) for p in pairs] == [(str(paths[0]), str(paths[1])), (str(paths[0]), str(paths[2])),
                                           (str(paths[1]), str(paths[2]))]
    assert pairs[0].cosine > 0.9 and abs(pairs[1].cosine) < 0.2


def test_pack_and_counts_at_word_edges():
    g = torch.Generator().manual_seed(0)
    for d in (1, 63, 64, 65, 1000, 64 * 70001 + 5):  # last: more than one CPU chunk
        t = torch.randint(-1, 2, (d,), generator=g, dtype=torch.int8)
        u = torch.randint(-1, 2, (d,), generator=g, dtype=torch.int8)
        s, n = pack_words(t != 0), pack_words(t < 0)
        assert torch.equal(unpack_words(s, d), t != 0) and torch.equal(unpack_words(n, d), t < 0)
        assert support_count(s) == int((t != 0).sum())
        common, disagree = many_counts(s, n, pack_words(u != 0).unsqueeze(0), pack_words(u < 0).unsqueeze(0))
        both = (t != 0) & (u != 0)
        assert int(common[0]) == int(both.sum()) and int(disagree[0]) == int((both & (t != u)).sum())


def test_planes_keep_the_documented_count_and_layout(artifacts):
    a, b = artifacts({"seed": 1}, {"seed": 2, "codec": "bitmask"})
    pa, pb = open_planes(a), open_planes(b)
    assert pa.layout == pb.layout and pa.kept == support_count(pa.support)
    t, _, _ = dense_tau(a)
    assert torch.equal(pa.ternary(torch.float64), t) and torch.equal(unpack_words(pa.positive(), pa.d), t > 0)


def test_different_layouts_are_one_clear_error(artifacts, tmp_path, capsys):
    import compeft
    from tests.adapters import lora_adapter

    a, = artifacts({"seed": 1})
    other = compeft.compress(lora_adapter(tmp_path / "other-src"), tmp_path / "other", device="cpu").path
    with pytest.raises(InputError, match="task-vector entries"):
        similarity([a, other], device="cpu")
    assert main(["similar", str(a), other]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot be compared" in err
    renamed = make_artifact(tmp_path, "renamed", {k.replace("a.", "c."): v for k, v in adapter_tensors(1).items()})
    with pytest.raises(InputError, match="record layout differs"):
        similarity([a, renamed], device="cpu")


def test_cli_json_and_text(artifacts, capsys):
    a, b, c = artifacts({"seed": 1}, {"seed": 2, "shared": 1, "mix": 0.2}, {"seed": 3})
    assert main(["similar", str(a), str(b), str(c), "--json", "--device", "cpu"]) == 0
    pairs = json.loads(capsys.readouterr().out)["pairs"]
    assert len(pairs) == 3 and set(pairs[0]) == {"a", "b", "cosine", "overlap", "common", "sign_agreement"}
    expected = dense_similarity(a, b)
    assert pairs[0]["common"] == expected["common"] and math.isclose(pairs[0]["cosine"], expected["cosine"])
    assert main(["similar", str(a), str(b)]) == 0
    assert "cosine" in capsys.readouterr().out
    assert main(["similar", str(a)]) == 2
