"""The CUDA paths of the operations equal the CPU paths: planes (Triton packing), pair and many-candidate counts
(Triton popcount), top-k, merges (TIES elect/agree/count on the device)."""

from __future__ import annotations

import pytest
import torch

from compeft.ops import merge, similarity
from compeft.ops.planes import open_planes, pack_words
from compeft.ops.popcount import many_counts
from compeft.ops.similar import PlaneBank
from compeft.ops.triton_popcount import pack_ternary
from tests.ops.test_merge import SPECS, merged_tau

pytestmark = pytest.mark.gpu


def test_planes_and_counts_equal_the_cpu(artifacts):
    paths = artifacts({"seed": 1}, {"seed": 2, "shared": 1, "mix": 0.2, "codec": "bitmask"}, {"seed": 3, "density": 0.9})
    assert similarity(paths, device="cuda") == similarity(paths, device="cpu")
    for p in paths:
        cpu, gpu = open_planes(p, "cpu"), open_planes(p, "cuda")
        assert torch.equal(cpu.support, gpu.support.cpu()) and torch.equal(cpu.negative, gpu.negative.cpu())
        assert cpu.kept == gpu.kept
    bank_cpu = PlaneBank([open_planes(p, "cpu") for p in paths])
    bank_gpu = PlaneBank([open_planes(p, "cuda") for p in paths])
    q = open_planes(paths[0], "cpu")
    assert bank_gpu.top(q.to("cuda"), 3) == bank_cpu.top(q, 3)


def test_large_random_counts_and_packing():
    g = torch.Generator().manual_seed(0)
    for d in (1, 4097, 3_000_001):
        q = torch.randint(-1, 2, (d,), generator=g, dtype=torch.int8)
        c = torch.randint(-1, 2, (5, d), generator=g, dtype=torch.int8)
        qs, qn = pack_words(q != 0), pack_words(q < 0)
        cs, cn = torch.stack([pack_words(x != 0) for x in c]), torch.stack([pack_words(x < 0) for x in c])
        gs, gn = pack_ternary(q.cuda())
        assert torch.equal(gs.cpu(), qs) and torch.equal(gn.cpu(), qn)
        expected = many_counts(qs, qn, cs, cn)
        got = many_counts(qs.cuda(), qn.cuda(), cs.cuda(), cn.cuda())
        assert all(torch.equal(a, b.cpu()) for a, b in zip(expected, got))


@pytest.mark.parametrize("method", ["task_arithmetic", "ties"])
def test_merge_on_the_device_equals_the_cpu(artifacts, tmp_path, method):
    paths = artifacts(*SPECS)
    merge(paths, tmp_path / "cpu", method=method, weights=[0.5, 1.0, -0.3], device="cpu")
    merge(paths, tmp_path / "gpu", method=method, weights=[0.5, 1.0, -0.3], device="cuda")
    assert torch.equal(merged_tau(tmp_path / "cpu"), merged_tau(tmp_path / "gpu"))
    merge(paths, tmp_path / "cpu-c", method=method, to="compeft", device="cpu")
    merge(paths, tmp_path / "gpu-c", method=method, to="compeft", device="cuda")
    assert (tmp_path / "cpu-c" / "compeft.safetensors").read_bytes() == (tmp_path / "gpu-c" / "compeft.safetensors").read_bytes()
