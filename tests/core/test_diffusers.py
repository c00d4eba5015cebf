"""diffusers LoRA files (issue 12): ``pytorch_lora_weights.safetensors`` with PEFT-style keys, a lone kohya file and
LyCORIS LoHa/LoKr/DoRA tensors, compressed with the same semantics (factors are deltas from 0; alphas, DoRA scales
and whole layers carried) and decompressed to the same file name, keys and safetensors metadata, which diffusers'
``load_lora_weights`` accepts: a tiny Stable Diffusion pipeline built from configs gives the reference
reconstruction's outputs exactly."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from checks import assert_tensors_identical, bytes_equal, check_artifact_against_reference, read_doc
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from test_cli import assert_one_line_error, run_cli

import compeft

pytest.importorskip("diffusers")

DENSITY = 0.3
WEIGHTS = "pytorch_lora_weights.safetensors"
FACTORS = ("lora_A", "lora_B", "lora_down", "lora_up", "hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "lokr_w1", "lokr_w2",
           "lokr_w1_a", "lokr_w1_b", "lokr_w2_a", "lokr_w2_b")


def theta(key: str) -> float | None:
    """The rule as these tests state it: LoRA/LoHa/LoKr factors are deltas from 0, everything else is carried."""
    return 0.0 if set(key.split(".")) & set(FACTORS) else None


def metadata(path: Path) -> dict:
    with safe_open(str(path), "pt") as f:
        return f.metadata() or {}


@pytest.fixture(scope="module")
def tokenizer_files(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tok")
    (d / "vocab.json").write_text(json.dumps({"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "b</w>": 3, "a": 4, "b": 5}))
    (d / "merges.txt").write_text("#version: 0.2\n")
    return d


def pipeline(tok: Path):
    """A tiny Stable Diffusion pipeline from configs (seeded, no downloads)."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16, norm_num_groups=4,
                                attention_head_dim=2)
    vae = AutoencoderKL(block_out_channels=(8,), in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",),
                        up_block_types=("UpDecoderBlock2D",), latent_channels=4, norm_num_groups=4)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=6, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                        max_position_embeddings=8, bos_token_id=0, eos_token_id=1, pad_token_id=1))
    tokenizer = CLIPTokenizer(str(tok / "vocab.json"), str(tok / "merges.txt"), model_max_length=8)
    return StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text, tokenizer=tokenizer, scheduler=DDIMScheduler(),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def outputs(pipe) -> torch.Tensor:
    """The UNet's noise prediction for fixed latents and the text encoder's embedding of fixed tokens."""
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        encoded = pipe.text_encoder(torch.tensor([[0, 2, 3, 1, 1, 1, 1, 1]]))[0]
        return pipe.unet(latents, 10, encoder_hidden_states=encoded).sample


def loaded(tok: Path, directory: Path, weight_name: str = WEIGHTS) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = pipeline(tok)
        pipe.load_lora_weights(str(directory), weight_name=weight_name)
    return outputs(pipe)


@pytest.fixture(scope="module")
def peft_style(tok_dir) -> dict[str, torch.Tensor]:
    """A trained-looking diffusers LoRA for the UNet and the text encoder, as diffusers saves it (PEFT-style keys)."""
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    pipe = pipeline(tok_dir)
    unet_config = LoraConfig(r=4, lora_alpha=8, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False)
    text_config = LoraConfig(r=4, lora_alpha=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inject_adapter_in_model(unet_config, pipe.unet)
        inject_adapter_in_model(text_config, pipe.text_encoder)
    out = tok_dir / "peft-style"
    StableDiffusionPipeline.save_lora_weights(
        out, unet_lora_layers=get_peft_model_state_dict(pipe.unet), text_encoder_lora_layers=get_peft_model_state_dict(pipe.text_encoder),
        unet_lora_adapter_metadata=unet_config.to_dict(), text_encoder_lora_adapter_metadata=text_config.to_dict())
    return load_file(str(out / WEIGHTS))


@pytest.fixture(scope="module")
def tok_dir(tokenizer_files):
    return tokenizer_files


def round_trip(src: Path, tmp: Path, weight_name: str) -> tuple[dict, dict, dict]:
    """Compress + decompress; checks the artifact against the reference and returns (source, decompressed, expected)."""
    source_file = src if src.is_file() else src / weight_name
    source = load_file(str(source_file))
    info = compeft.compress(src, tmp / "art", density=DENSITY, device="cpu")
    doc = read_doc(tmp / "art")
    assert doc["source"]["layout"] == "diffusers" and doc["source"]["weights_file"] == weight_name
    assert doc["source"]["weights_metadata"] == metadata(source_file)
    assert set(doc["source"]["files"]) == {weight_name} and info.bytes_source == source_file.stat().st_size
    r = check_artifact_against_reference(tmp / "art", source, DENSITY, 1.0, "golomb", theta=theta)
    compeft.decompress(tmp / "art", tmp / "dec", device="cpu")
    assert sorted(p.name for p in (tmp / "dec").iterdir()) == [weight_name]
    dec = load_file(str(tmp / "dec" / weight_name))
    assert metadata(tmp / "dec" / weight_name) == metadata(source_file)
    expected = r.reconstruct(s=doc["scale"])
    assert_tensors_identical(dec, expected, "decompressed vs reference")
    for name in r.carried:
        assert bytes_equal(dec[name], source[name]), name
    ref_dir = tmp / "ref"
    ref_dir.mkdir()
    save_file({k: v.contiguous() for k, v in expected.items()}, str(ref_dir / weight_name), metadata=metadata(source_file))
    return source, dec, expected


def test_peft_style_diffusers_lora_loads_in_diffusers(peft_style, tok_dir, tmp_path):
    assert any(k.startswith("unet.") for k in peft_style) and any(k.startswith("text_encoder.") for k in peft_style)
    round_trip(tok_dir / "peft-style", tmp_path, WEIGHTS)
    got = loaded(tok_dir, tmp_path / "dec")
    torch.testing.assert_close(got, loaded(tok_dir, tmp_path / "ref"), rtol=0, atol=0)
    assert not torch.equal(got, outputs(pipeline(tok_dir)))  # the LoRA took effect


def kohya_key(key: str) -> str:
    """unet.down_blocks.0.attentions.0.….to_q.lora_A.weight → lora_unet_down_blocks_0_attentions_0_…_to_q.lora_down.weight"""
    module, factor = key.removeprefix("unet.").rsplit(".lora_", 1)
    return "lora_unet_" + module.replace(".", "_") + {"A.weight": ".lora_down.weight", "B.weight": ".lora_up.weight"}[factor]


def test_kohya_single_file_loads_in_diffusers(peft_style, tok_dir, tmp_path):
    """A lone kohya file under its own name (``.alpha`` scalars carried) is compressed by naming the file."""
    tensors = {kohya_key(k): v for k, v in peft_style.items() if k.startswith("unet.")}
    for key in [k for k in tensors if k.endswith(".lora_down.weight")]:
        tensors[key.replace(".lora_down.weight", ".alpha")] = torch.tensor(3.0)
    src = tmp_path / "src"
    src.mkdir()
    save_file(tensors, str(src / "my-style.safetensors"), metadata={"ss_network_dim": "4", "ss_network_alpha": "3"})
    _, dec, _ = round_trip(src / "my-style.safetensors", tmp_path, "my-style.safetensors")
    assert all(bytes_equal(dec[k], tensors[k]) for k in tensors if k.endswith(".alpha"))
    got = loaded(tok_dir, tmp_path / "dec", "my-style.safetensors")
    torch.testing.assert_close(got, loaded(tok_dir, tmp_path / "ref", "my-style.safetensors"), rtol=0, atol=0)
    assert not torch.equal(got, outputs(pipeline(tok_dir)))


def test_lycoris_loha_lokr_dora_keep_keys_and_carry_scales(tmp_path):
    gen = torch.Generator().manual_seed(4)
    tensors = {}
    for i, kind in enumerate(("hada", "lokr", "dora")):
        module = f"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_{'qkv'[i]}"
        if kind == "hada":
            parts = {"hada_w1_a": (16, 4), "hada_w1_b": (4, 16), "hada_w2_a": (16, 4), "hada_w2_b": (4, 16)}
        elif kind == "lokr":
            parts = {"lokr_w1": (4, 4), "lokr_w2": (4, 4)}
        else:
            parts = {"lora_down.weight": (4, 16), "lora_up.weight": (16, 4), "dora_scale": (1, 16)}
        for part, shape in parts.items():
            tensors[f"{module}.{part}"] = torch.randn(shape, generator=gen).to(torch.bfloat16 if kind == "lokr" else torch.float16)
        tensors[f"{module}.alpha"] = torch.tensor(2.0)
    tensors["lora_unet_conv_in.weight"] = torch.randn(8, 4, 3, 3, generator=gen)  # a whole trained layer: carried
    (tmp_path / "src").mkdir()
    save_file(tensors, str(tmp_path / "src" / WEIGHTS))
    source, dec, _ = round_trip(tmp_path / "src", tmp_path, WEIGHTS)
    carried = [k for k in source if theta(k) is None]
    assert sorted(carried) == sorted(k for k in tensors if k.endswith((".alpha", ".dora_scale")) or "conv_in" in k)
    assert compeft.inspect(tmp_path / "art").peft_type == "LOHA"


def zimage_transformer():
    """A tiny Z-Image transformer from a config (seeded, no downloads): diffusers loads LoKr files into it."""
    from diffusers import ZImageTransformer2DModel

    torch.manual_seed(0)
    return ZImageTransformer2DModel(all_patch_size=(2,), all_f_patch_size=(1,), in_channels=4, dim=32, n_layers=1,
                                    n_refiner_layers=1, n_heads=2, n_kv_heads=2, cap_feat_dim=16, axes_dims=[4, 6, 6],
                                    axes_lens=[64, 64, 64])


def zimage_outputs(model) -> torch.Tensor:
    latents = [torch.randn(4, 1, 4, 4, generator=torch.Generator().manual_seed(1))]
    captions = [torch.randn(3, 16, generator=torch.Generator().manual_seed(2))]
    with torch.no_grad():
        return model(latents, torch.tensor([0.5]), captions, return_dict=False)[0][0]


def zimage_loaded(path: Path) -> torch.Tensor:
    """The tiny transformer's output with the LoKr file at ``path`` loaded as ``ZImagePipeline.load_lora_weights``
    does (``ZImageLoraLoaderMixin.lora_state_dict`` converts the keys and bakes ``alpha``, then peft's LoKr layers)."""
    from diffusers.loaders import ZImageLoraLoaderMixin

    model = zimage_transformer()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        state_dict, meta = ZImageLoraLoaderMixin.lora_state_dict(str(path), return_lora_metadata=True)
        ZImageLoraLoaderMixin.load_lora_into_transformer(state_dict, transformer=model, metadata=meta)
    assert any(type(m).__name__ == "Linear" and hasattr(m, "lokr_w1") for m in model.modules())  # peft's LoKr layers
    return zimage_outputs(model)


def test_lokr_file_loads_in_diffusers(tmp_path):
    """A LoKr file as ai-toolkit writes it for Z-Image (``diffusion_model.<module>.lokr_w1`` full, ``lokr_w2_a/_b``
    rank-decomposed or ``lokr_w2`` full, ``.alpha``; non-zero factors): compressed, decompressed, and loaded by
    diffusers, it gives exactly the output of the reference reconstruction (θ_init 0 + s·t, alpha carried) loaded
    the same way, and not the original's. (diffusers 0.42.1 has no LoHa loader: LoHa files are only round-tripped.)"""
    gen = torch.Generator().manual_seed(5)
    tensors = {}
    for block in ("layers.0", "noise_refiner.0"):
        for proj in ("to_q", "to_k", "to_v", "to_out.0"):
            module = f"diffusion_model.{block}.attention.{proj}"  # 32 × 32 = kron(4 × 4, 8 × 8)
            tensors[f"{module}.lokr_w1"] = torch.randn(4, 4, generator=gen)
            if proj == "to_out.0":
                tensors[f"{module}.lokr_w2"] = torch.randn(8, 8, generator=gen)
            else:
                tensors[f"{module}.lokr_w2_a"] = torch.randn(8, 2, generator=gen)
                tensors[f"{module}.lokr_w2_b"] = torch.randn(2, 8, generator=gen)
                tensors[f"{module}.alpha"] = torch.tensor(1.0)
    src = tmp_path / "src"
    src.mkdir()
    save_file(tensors, str(src / "zimage_lokr.safetensors"))
    source, dec, _ = round_trip(src / "zimage_lokr.safetensors", tmp_path, "zimage_lokr.safetensors")
    assert sorted(k for k in source if theta(k) is None) == sorted(k for k in tensors if k.endswith(".alpha"))
    assert compeft.inspect(tmp_path / "art").peft_type == "LOKR"
    got = zimage_loaded(tmp_path / "dec" / "zimage_lokr.safetensors")
    torch.testing.assert_close(got, zimage_loaded(tmp_path / "ref" / "zimage_lokr.safetensors"), rtol=0, atol=0)
    assert not torch.equal(got, zimage_loaded(src / "zimage_lokr.safetensors"))  # the compression is what is loaded
    assert not torch.equal(got, zimage_outputs(zimage_transformer()))  # the LoKr took effect


def test_diffusers_file_without_factors_is_one_line_error(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    save_file({"lora_unet_conv_in.weight": torch.ones(2, 2)}, str(tmp_path / "src" / WEIGHTS))
    code, out, err = run_cli(capsys, "compress", tmp_path / "src", tmp_path / "art", "--device", "cpu")
    assert_one_line_error(code, out, err, 2, WEIGHTS, "no DIFFUSERS delta tensors")
