"""Full fine-tune residuals at scale (issue 17): the streaming writer reproduces the previous in-memory writer's
bytes, and compress / decompress run in anonymous memory that does not grow with the model."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fullmodel_previous import previous_compress_full
from safetensors.torch import save_file

import compeft
from compeft.config import CompressionConfig
from compeft.sparsify_stream import Pass1

ROOT = Path(__file__).resolve().parents[2]


def write_model(path: Path, tensors: dict[str, torch.Tensor], shards: int) -> Path:
    """A model directory: config.json and the tensors cut into ``shards`` files with an index (or one file)."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "llama", "_name_or_path": "synthetic/base"}))
    names = sorted(tensors)
    if shards == 1:
        save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
        return path
    groups = np.array_split(np.arange(len(names)), shards)
    weight_map = {}
    for i, group in enumerate(groups):
        file = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file({names[j]: tensors[names[j]] for j in group}, str(path / file), metadata={"format": "pt"})
        weight_map.update({names[j]: file for j in group})
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return path


def synthetic_pair(root: Path, seed: int = 0, shards: int = 3) -> tuple[Path, Path]:
    """Base and fine-tune with a tensor of more than one golomb chunk (not a multiple of it), mixed float dtypes,
    exact zeros and ties in τ, a resized (carried) tensor and an integer buffer (carried)."""
    gen = torch.Generator().manual_seed(seed)
    shapes = {"embed.weight": (1100, 1000), "layer.0.w": (300, 200), "layer.0.norm": (200,), "layer.1.w": (200, 300),
              "layer.1.h": (64, 64), "head.weight": (130, 64)}
    dtypes = {"layer.0.w": torch.float32, "layer.1.h": torch.float16}
    base, ft = {}, {}
    for name, shape in shapes.items():
        b = torch.randn(shape, generator=gen) * 0.02
        f = b + torch.randn(shape, generator=gen) * 0.002
        f.view(-1)[::7] = b.view(-1)[::7]  # exact zeros in τ
        dtype = dtypes.get(name, torch.bfloat16)
        base[name], ft[name] = b.to(dtype), f.to(dtype)
    ft["head.weight"] = torch.randn((136, 64), generator=gen).to(torch.bfloat16)  # resized: carried
    ft["position_ids"] = base["position_ids"] = torch.arange(64, dtype=torch.int64)  # not floating: carried
    return write_model(root / "ft", ft, shards), write_model(root / "base", base, shards)


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path]:
    return synthetic_pair(tmp_path_factory.mktemp("stream-pair"))


def previous_bytes(ft: Path, base: Path, out: Path, **options) -> bytes:
    previous_compress_full(ft, out, base, CompressionConfig(device="cpu", **options), torch.device("cpu"), overwrite=False,
                           progress=False)
    return (out / "compeft.safetensors").read_bytes()


@pytest.mark.parametrize("options", [
    {"density": 0.1}, {"density": 0.01, "alpha": 2.0}, {"density": 0.7}, {"density": 1.0}, {"density": 0.1, "codec": "bitmask"},
], ids=["k0.1", "k0.01", "k0.7-mode1", "k1-zeros", "bitmask"])
def test_streaming_writer_matches_the_previous_writer_byte_for_byte(pair, tmp_path, options):
    """The same input and options give today's exact bytes (payload, carried tensors, document, checksums)."""
    ft, base = pair
    expected = previous_bytes(ft, base, tmp_path / "previous", **options)
    info = compeft.compress(ft, tmp_path / "streamed", base=base, device="cpu", **options)
    assert (tmp_path / "streamed/compeft.safetensors").read_bytes() == expected
    assert info.kind == "full" and info.carried == 2


def test_a_floor_above_the_threshold_is_retried_with_every_nonzero_entry(pair, tmp_path, monkeypatch):
    """When the sampled floor leaves fewer than m candidates, pass 2 runs again from floor 1: same bytes."""
    ft, base = pair
    expected = previous_bytes(ft, base, tmp_path / "previous", density=0.2)
    monkeypatch.setattr(Pass1, "floor", lambda self, m: 0x7F000000)
    compeft.compress(ft, tmp_path / "streamed", base=base, device="cpu", density=0.2)
    assert (tmp_path / "streamed/compeft.safetensors").read_bytes() == expected


@pytest.fixture
def device_ways(monkeypatch):
    """The GPU's ways taken on the CPU: blocks of 2^21 entries read ahead into slots by threads, candidates kept
    "in device memory" (budget: the returned dict's ``budget``) and coded by the vectorized torch encoder."""
    from compeft import fullmodel

    limits = {"budget": 1 << 40}
    monkeypatch.setattr(fullmodel, "_on_device", lambda device: True)
    monkeypatch.setattr(fullmodel, "resident_budget", lambda device: limits["budget"])
    monkeypatch.setattr(fullmodel, "DEVICE_BLOCK", 1 << 21)
    return limits


@pytest.mark.parametrize("options", [
    {"density": 0.1}, {"density": 0.01, "alpha": 2.0}, {"density": 0.7}, {"density": 1.0}, {"density": 0.1, "codec": "bitmask"},
], ids=["k0.1", "k0.01", "k0.7-mode1", "k1-zeros", "bitmask"])
@pytest.mark.parametrize("block", [1 << 20, 1 << 21], ids=["blocks-of-one-chunk", "blocks-of-two-chunks"])
def test_the_device_ways_write_the_same_bytes(pair, tmp_path, device_ways, monkeypatch, options, block):
    """Read-ahead blocks, candidates kept on the device and coded there (golomb) or chunk by chunk on the host
    (bitmask, which has no device encoder): the previous writer's bytes, with the 1.1 M-entry tensor read as two
    blocks or as one block of two chunks."""
    from compeft import fullmodel
    from compeft.codecs.golomb import GolombStreamEncoder

    monkeypatch.setattr(fullmodel, "DEVICE_BLOCK", block)
    monkeypatch.setattr(fullmodel, "ENCODE_GROUP", block)  # several groups of blocks coded at once
    coded, add_signs = [], GolombStreamEncoder.add_signs
    monkeypatch.setattr(GolombStreamEncoder, "add_signs", lambda self, signs, lengths: coded.append(len(lengths)) or
                        add_signs(self, signs, lengths))
    ft, base = pair
    expected = previous_bytes(ft, base, tmp_path / "previous", **options)
    compeft.compress(ft, tmp_path / "device", base=base, device="cpu", **options)
    assert (tmp_path / "device/compeft.safetensors").read_bytes() == expected
    if options.get("codec") == "bitmask":
        assert not coded
    else:  # every chunk was coded on the "device", in several calls
        from compeft.artifact import open_artifact
        from compeft.codecs import get_codec

        art = open_artifact(tmp_path / "device")
        plan = get_codec("golomb").prepare(art.container.payload, art.document.d)
        assert sum(coded) == len(plan.table.length) and (len(coded) > 1 or block > 1 << 20)


def test_candidates_outgrowing_device_memory_are_spilled_to_files(pair, tmp_path, device_ways, monkeypatch):
    """More candidates than the device memory set aside: pass 2 runs again spilling to files, same bytes; a floor
    above the threshold then still falls back to every non-zero entry."""
    from compeft import fullmodel

    ft, base = pair
    expected = previous_bytes(ft, base, tmp_path / "previous", density=0.2)
    device_ways["budget"] = 1 << 20  # the sample's estimate fits; the real count does not
    monkeypatch.setattr(Pass1, "above", lambda self, floor: 0)
    spills, spill_class = [], fullmodel.Spill
    monkeypatch.setattr(fullmodel, "Spill", lambda directory: spills.append(directory) or spill_class(directory))
    compeft.compress(ft, tmp_path / "device", base=base, device="cpu", density=0.2)
    assert (tmp_path / "device/compeft.safetensors").read_bytes() == expected
    assert spills, "the overflow did not fall back to spill files"


def test_streamed_decompress_rebuilds_the_fine_tune(pair, tmp_path):
    """decompress --base writes every tensor as base + s·t (the reference), the carried ones as they were, in the
    fine-tune's own shards."""
    from safetensors.torch import load_file

    ft, base = pair
    compeft.compress(ft, tmp_path / "art", base=base, device="cpu", density=0.3, alpha=1.5)
    out = compeft.decompress(tmp_path / "art", tmp_path / "model", base=base, device="cpu")
    index = json.loads((out / "model.safetensors.index.json").read_text())
    got = {}
    for file in sorted(set(index["weight_map"].values())):
        got.update(load_file(str(out / file)))
    doc = compeft.inspect(tmp_path / "art")
    base_t = {}
    for p in sorted(base.glob("*.safetensors")):
        base_t.update(load_file(str(p)))
    ft_t = {}
    for p in sorted(ft.glob("*.safetensors")):
        ft_t.update(load_file(str(p)))
    threshold = doc.threshold
    for name, value in got.items():
        if name in ("head.weight", "position_ids"):
            assert torch.equal(value, ft_t[name])
            continue
        tau = ft_t[name].float() - base_t[name].float()
        t = torch.where(tau.abs() >= threshold, torch.sign(tau), torch.zeros(()))
        t[tau == 0] = 0
        expected = (t * doc.scale + base_t[name].float()).to(ft_t[name].dtype)
        assert value.dtype == ft_t[name].dtype
        assert torch.equal(value.view(-1).view(torch.uint8), expected.view(-1).view(torch.uint8)), name


CHILD = """
import json, sys, shutil
sys.path.insert(0, {root!r})
import torch
torch.set_num_threads(1)
import compeft
from bench.fullpair import AnonPeak
with AnonPeak() as peak:
    base_anon = peak.peak
    compeft.compress({ft!r}, {art!r}, base={base!r}, density=0.1, device="cpu")
    compress_peak = peak.peak
    peak.peak = 0
    compeft.decompress({art!r}, {out!r}, base={base!r}, device="cpu")
print(json.dumps({{"base": base_anon, "compress": compress_peak, "decompress": peak.peak}}))
"""


def anon_growth(root: Path, shape, shard_bytes: int) -> dict[str, int]:
    """Peak RssAnon over the child's after-import baseline, for compress and for decompress of a made pair."""
    from bench.fullpair import write_pair

    ft, base = write_pair(shape, root, shard_bytes=shard_bytes)
    code = CHILD.format(root=str(ROOT), ft=str(ft), base=str(base), art=str(root / "art"), out=str(root / "out"))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=600)
    peaks = json.loads(done.stdout.strip().splitlines()[-1])
    return {k: peaks[k] - peaks["base"] for k in ("compress", "decompress")}


@pytest.mark.slow
def test_anonymous_memory_does_not_grow_with_the_model(tmp_path):
    """A pair 11× larger (3.7 → 41 M parameters, 8 MB shards) costs about the same anonymous memory to compress and
    to decompress, within two shards + 256 MB (RssAnon sampled in a subprocess: the mapped models are file pages).
    The previous writer held one int8 per parameter and the float32 τ of the largest tensor: +70 MB more here; what
    remains is the allocator keeping freed blocks, which levels off (0.2B: +65 MB, as 41 M)."""
    from bench.fullpair import ModelShape

    shard = 8 << 20
    small = anon_growth(tmp_path / "small", ModelShape("s", 256, 688, 2, 4096), shard)
    large = anon_growth(tmp_path / "large", ModelShape("l", 512, 1376, 8, 16000), shard)
    for step in ("compress", "decompress"):
        assert large[step] <= 2 * shard + (256 << 20), (step, small, large)
        assert large[step] - small[step] < 40 << 20, (step, small, large)


def test_a_nan_residual_is_refused_and_nothing_is_left(pair, tmp_path):
    """A NaN in the fine-tune is a one-line input error naming the tensor; no artifact and no spill directory remain."""
    from safetensors.torch import load_file

    from compeft.errors import InputError

    ft, base = pair
    bad = tmp_path / "bad"
    shutil.copytree(ft, bad)
    index = json.loads((bad / "model.safetensors.index.json").read_text())
    shard = bad / index["weight_map"]["layer.0.w"]
    tensors = load_file(str(shard))
    tensors["layer.0.w"] = tensors["layer.0.w"].clone()
    tensors["layer.0.w"].view(-1)[5] = float("nan")
    save_file(tensors, str(shard), metadata={"format": "pt"})
    with pytest.raises(InputError, match="layer.0.w.*NaN"):
        compeft.compress(bad, tmp_path / "art", base=base, device="cpu")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad"]


def test_compress_leaves_no_spill_files(pair, tmp_path):
    ft, base = pair
    compeft.compress(ft, tmp_path / "out" / "art", base=base, device="cpu", density=0.05)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["art"]
    assert sorted(p.name for p in (tmp_path / "out" / "art").iterdir()) == ["README.md", "compeft.safetensors", "config.json"]


@pytest.mark.parametrize("numel", [1, 15, 17, 16_383, 262_144, 262_145, 1_000_003, 5 * 262_144 + 40_000])
def test_pass_one_samples_one_sixteenth_of_every_tensor_in_runs(numel):
    """The sample is the first 1/16 of every 262,144-entry stride (rounded up), so every tensor, however small, is
    sampled at about 1/16, inside its own entries, and a 2^24-entry job gathers whole pieces."""
    from compeft.sparsify_stream import SAMPLE, SAMPLE_PIECE, sample_ranges

    ranges = sample_ranges(0, numel)
    stride = SAMPLE * SAMPLE_PIECE
    assert [a for a, _ in ranges] == list(range(0, numel, stride))
    assert all(a < b <= min(a + SAMPLE_PIECE, numel) for a, b in ranges)
    sampled = sum(b - a for a, b in ranges)
    assert numel / SAMPLE <= sampled <= numel / SAMPLE + len(ranges)
    assert sample_ranges(stride, numel) == [r for r in ranges if r[0] >= stride]  # jobs split on strides agree


@pytest.mark.parametrize("trend", [(0.1, 3.0), (3.0, 0.1)])
def test_the_sampled_floor_bounds_the_kept_count(trend):
    """Pass 1's floor from the piece sample lies below the m-th largest |τ| with room to spare, on a τ whose scale
    rises or falls along it (the pieces are runs, not every 16th entry, so such a trend biases them a little; a
    floor above the m-th largest would only cost a second pass 2)."""
    from compeft.sparsify_stream import Pass1, sample_ranges

    gen = torch.Generator().manual_seed(7)
    tau = (torch.randn(4_000_000, generator=gen) * torch.linspace(*trend, 4_000_000)).to(torch.float32)
    sample = Pass1()
    for a in range(0, tau.numel(), 1 << 20):
        b = min(tau.numel(), a + (1 << 20))
        sample.add(torch.cat([tau[x:y] for x, y in sample_ranges(a, b)]), b - a)
    for k in (0.01, 0.1, 0.5):
        m = int(k * tau.numel())
        floor = sample.floor(m)
        above = int((tau.abs().view(torch.int32) >= floor).sum())
        assert m <= above <= 2 * m, (k, above / m)
