"""The compeft CLI (issue 2, "CLI"): happy paths, exit codes, one-line errors, --debug tracebacks, pickles never loaded."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from checks import assert_tensors_identical, read_doc
from safetensors.torch import load_file

import compeft
import compeft.artifact
import compeft.pipeline
from compeft.cli import main

REPO = Path(__file__).resolve().parents[2]
COMPEFT_BIN = Path(sys.executable).parent / "compeft"


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, out: str, err: str, expected_code: int = 2, *needles: str) -> None:
    assert code == expected_code, (code, out, err)
    lines = err.splitlines()
    assert len(lines) == 1, f"stderr should be one line, got {err!r}"
    assert "Traceback" not in err
    for needle in needles:
        assert needle.lower() in err.lower(), (needle, err)


class _Boom:
    """A pickle that creates a directory when unpickled (proves nothing was unpickled if it never appears)."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return (os.mkdir, (self.sentinel,))


def pickle_only_adapter(root: Path, lora_dir: Path) -> tuple[Path, Path]:
    src = root / "pickled"
    src.mkdir()
    shutil.copyfile(lora_dir / "adapter_config.json", src / "adapter_config.json")
    sentinel = root / "UNPICKLED"
    (src / "adapter_model.bin").write_bytes(pickle.dumps({"state": _Boom(sentinel)}))
    return src, sentinel


def test_compress_decompress_inspect_happy_path(tmp_path, capsys, lora_dir):
    """compress → inspect → decompress exit 0; compress prints one summary line (bytes, ratios, bits/param vs H(k))."""
    code, out, err = run_cli(capsys, "compress", lora_dir, tmp_path / "art", "--density", "0.1", "--device", "cpu")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert len(lines) == 1
    line = lines[0]
    doc = read_doc(tmp_path / "art")
    size = (tmp_path / "art/compeft.safetensors").stat().st_size
    source_size = (lora_dir / "adapter_model.safetensors").stat().st_size
    assert f"{size:,}" in line and f"{source_size:,}" in line
    assert "16-bit" in line and "bits/param" in line and "H(k)" in line
    import re

    ratio = re.search(r"([0-9.]+)× vs source", line)
    assert ratio and float(ratio.group(1)) == pytest.approx(source_size / size, abs=0.051)
    bpp = re.search(r"([0-9.]+) bits/param vs H\(k\)=([0-9.]+)", line)
    assert bpp
    import compeft_reference as ref

    assert float(bpp.group(2)) == pytest.approx(ref.entropy_bits(doc["kept"] / doc["d"]), abs=5e-4)
    assert doc["density"] == 0.1 and doc["codec"] == "golomb"

    code, out, err = run_cli(capsys, "inspect", tmp_path / "art")
    assert code == 0 and err == "" and "kept" in out and str(doc["d"]) in out

    code, out, err = run_cli(capsys, "inspect", tmp_path / "art", "--json")
    assert code == 0 and err == ""
    info = json.loads(out)
    for key in ("codec", "density", "alpha", "sigma", "scale", "d", "kept", "format_version"):
        assert info[key] == doc[key], key

    code, out, err = run_cli(capsys, "decompress", tmp_path / "art", tmp_path / "dec", "--device", "cpu")
    assert code == 0 and err == "" and len(out.splitlines()) == 1
    assert_tensors_identical(load_file(str(tmp_path / "dec/adapter_model.safetensors")), compeft.load(tmp_path / "art"), "cli decompress")


def test_compress_options_reach_the_document(tmp_path, capsys, head_dir):
    """--density, --alpha and --codec are honoured; --json prints the result as JSON."""
    code, out, err = run_cli(capsys, "compress", head_dir, tmp_path / "art", "--density", "0.3", "--alpha", "2.5", "--codec",
                             "bitmask", "--device", "cpu", "--json")
    assert code == 0 and err == ""
    result = json.loads(out)
    doc = read_doc(tmp_path / "art")
    assert (doc["density"], doc["alpha"], doc["codec"]) == (0.3, 2.5, "bitmask")
    assert result["kept"] == doc["kept"] and result["codec"] == "bitmask"


def test_overwrite_flag(tmp_path, capsys, lora_dir):
    """An existing DST is refused with exit 2 and one line; --overwrite replaces it."""
    dst = tmp_path / "art"
    dst.mkdir()
    (dst / "mine").write_text("x")
    code, out, err = run_cli(capsys, "compress", lora_dir, dst, "--device", "cpu")
    assert_one_line_error(code, out, err, 2, "exists")
    assert [p.name for p in dst.iterdir()] == ["mine"]
    code, out, err = run_cli(capsys, "compress", lora_dir, dst, "--device", "cpu", "--overwrite")
    assert code == 0
    assert not (dst / "mine").exists() and (dst / "compeft.safetensors").is_file()


def _bad_inputs(root: Path, lora_dir: Path, artifact: Path) -> dict[str, tuple[list[str], tuple[str, ...]]]:
    corrupt = root / "corrupt"
    corrupt.mkdir()
    shutil.copyfile(lora_dir / "adapter_config.json", corrupt / "adapter_config.json")
    (corrupt / "adapter_model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all" + os.urandom(64))
    prefix = root / "prefix"
    prefix.mkdir()
    shutil.copyfile(lora_dir / "adapter_model.safetensors", prefix / "adapter_model.safetensors")
    (prefix / "adapter_config.json").write_text(json.dumps({"peft_type": "PREFIX_TUNING"}))  # LoRA tensors under a prompt type
    unknown = root / "unknown"
    unknown.mkdir()
    shutil.copyfile(lora_dir / "adapter_model.safetensors", unknown / "adapter_model.safetensors")
    (unknown / "adapter_config.json").write_text(json.dumps({"peft_type": "MADE_UP"}))
    no_config = root / "noconfig"
    no_config.mkdir()
    shutil.copyfile(lora_dir / "adapter_model.safetensors", no_config / "adapter_model.safetensors")
    damaged = root / "damaged"
    shutil.copytree(artifact, damaged)
    raw = bytearray((damaged / "compeft.safetensors").read_bytes())
    raw[-3] ^= 0x10
    (damaged / "compeft.safetensors").write_bytes(bytes(raw))
    nan = root / "nan"
    nan.mkdir()
    shutil.copyfile(lora_dir / "adapter_config.json", nan / "adapter_config.json")
    tensors = load_file(str(lora_dir / "adapter_model.safetensors"))
    first = sorted(tensors)[0]
    tensors[first] = tensors[first].clone()
    tensors[first].view(-1)[3] = float("nan")
    from safetensors.torch import save_file

    save_file(tensors, str(nan / "adapter_model.safetensors"))
    ints = root / "ints"
    ints.mkdir()
    shutil.copyfile(lora_dir / "adapter_config.json", ints / "adapter_config.json")
    tensors = load_file(str(lora_dir / "adapter_model.safetensors"))
    tensors[first] = torch.ones_like(tensors[first], dtype=torch.int32)
    save_file(tensors, str(ints / "adapter_model.safetensors"))
    pt_only = root / "ptonly"
    pt_only.mkdir()
    shutil.copyfile(lora_dir / "adapter_config.json", pt_only / "adapter_config.json")
    (pt_only / "adapter_model.pt").write_bytes(b"\x80\x04K\x01.")
    heads_only = root / "headsonly"
    heads_only.mkdir()
    shutil.copyfile(lora_dir / "adapter_config.json", heads_only / "adapter_config.json")
    save_file({"base_model.model.score.weight": torch.ones(3, 4)}, str(heads_only / "adapter_model.safetensors"))
    bad_json = root / "badjson"
    bad_json.mkdir()
    shutil.copyfile(lora_dir / "adapter_model.safetensors", bad_json / "adapter_model.safetensors")
    (bad_json / "adapter_config.json").write_text("{ this is not json")
    out = str(root / "dst")
    return {
        "no-delta-tensors": (["compress", str(heads_only), out], ("lora",)),
        "config-not-json": (["compress", str(bad_json), out], ("adapter_config.json",)),
        "nan-tensor": (["compress", str(nan), out], ("nan",)),
        "int-delta-tensor": (["compress", str(ints), out], ("dtype",)),
        "pt-only": (["compress", str(pt_only), out], ("adapter_model.pt", "pickle")),
        "missing-dir": (["compress", str(root / "nope"), out], ("nope",)),
        "corrupt-safetensors": (["compress", str(corrupt), out], ("adapter_model.safetensors",)),
        "no-config": (["compress", str(no_config), out], ("adapter_config.json",)),
        "tensors-of-another-type": (["compress", str(prefix), out], ("PREFIX_TUNING", "no PREFIX_TUNING delta tensors")),
        "unknown-peft-type": (["compress", str(unknown), out], ("MADE_UP", "not a peft 0.21 adapter type")),
        "density-0": (["compress", str(lora_dir), out, "--density", "0"], ("density",)),
        "density-1.5": (["compress", str(lora_dir), out, "--density", "1.5"], ("density",)),
        "density-nan": (["compress", str(lora_dir), out, "--density", "nan"], ("density",)),
        "density-text": (["compress", str(lora_dir), out, "--density", "lots"], ("density",)),
        "alpha-0": (["compress", str(lora_dir), out, "--alpha", "0"], ("alpha",)),
        "unknown-codec": (["compress", str(lora_dir), out, "--codec", "zip"], ("zip",)),
        "bad-device": (["compress", str(lora_dir), out, "--device", "tpu"], ("tpu",)),
        "missing-argument": (["compress", str(lora_dir)], ()),
        "unknown-option": (["compress", str(lora_dir), out, "--frobnicate"], ("frobnicate",)),
        "decompress-not-artifact": (["decompress", str(lora_dir), out], ("compeft.safetensors",)),
        "decompress-damaged": (["decompress", str(damaged), out], ("checksum",)),
        "inspect-damaged": (["inspect", str(damaged)], ("checksum",)),
        "inspect-missing": (["inspect", str(root / "nope")], ("nope",)),
        "decompress-with-base-on-adapter": (["decompress", str(artifact), out, "--base", str(lora_dir)], ("base",)),
    }


BAD = [
    "no-delta-tensors", "config-not-json", "nan-tensor", "int-delta-tensor", "pt-only",
    "missing-dir", "corrupt-safetensors", "no-config", "tensors-of-another-type", "unknown-peft-type", "density-0", "density-1.5",
    "density-nan",
    "density-text", "alpha-0", "unknown-codec", "bad-device", "missing-argument", "unknown-option", "decompress-not-artifact",
    "decompress-damaged", "inspect-damaged", "inspect-missing", "decompress-with-base-on-adapter",
]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, lora_dir, lora_artifact, case):
    """Bad usage or input exits 2 with exactly one line on stderr, no traceback, and writes no DST."""
    argv, needles = _bad_inputs(tmp_path, lora_dir, lora_artifact)[case]
    code, out, err = run_cli(capsys, *argv)
    assert_one_line_error(code, out, err, 2, *needles)
    assert out == ""
    assert not (tmp_path / "dst").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")
def test_device_cuda_without_cuda(tmp_path, capsys, lora_dir, lora_artifact):
    """--device cuda without CUDA exits 2 with one line (never a silent CPU fallback)."""
    for argv in (
        ["compress", lora_dir, tmp_path / "dst", "--device", "cuda"],
        ["decompress", lora_artifact, tmp_path / "dst", "--device", "cuda:0"],
    ):
        code, out, err = run_cli(capsys, *argv)
        assert_one_line_error(code, out, err, 2, "cuda")
        assert not (tmp_path / "dst").exists()


def test_pickle_adapter_is_refused_and_never_unpickled(tmp_path, capsys, lora_dir, monkeypatch):
    """adapter_model.bin alone is refused (exit 2, says pickles are never loaded) and nothing is unpickled."""
    src, sentinel = pickle_only_adapter(tmp_path, lora_dir)

    def no_unpickling(*args, **kwargs):
        raise AssertionError("something tried to unpickle")

    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(pickle, "loads", no_unpickling)
    monkeypatch.setattr(torch, "load", no_unpickling)
    code, out, err = run_cli(capsys, "compress", src, tmp_path / "dst", "--device", "cpu")
    assert_one_line_error(code, out, err, 2, "adapter_model.bin", "pickle", "never")
    assert not sentinel.exists()
    assert not (tmp_path / "dst").exists()


def test_pickle_beside_safetensors_is_never_unpickled(tmp_path, capsys, lora_dir):
    """With adapter_model.safetensors present, a stray adapter_model.bin is ignored and never unpickled."""
    src, sentinel = pickle_only_adapter(tmp_path, lora_dir)
    shutil.copyfile(lora_dir / "adapter_model.safetensors", src / "adapter_model.safetensors")
    code, out, err = run_cli(capsys, "compress", src, tmp_path / "dst", "--device", "cpu")
    assert code == 0, err
    assert not sentinel.exists()


def test_debug_shows_traceback(tmp_path, capsys, lora_dir):
    """--debug prints the traceback (and still the error line and exit code 2)."""
    code, out, err = run_cli(capsys, "compress", tmp_path / "nope", tmp_path / "dst", "--debug")
    assert code == 2
    assert "Traceback" in err and "nope" in err


def test_internal_error_exits_1_with_one_line(tmp_path, capsys, lora_dir, monkeypatch):
    """An unexpected exception exits 1 with one line on stderr (traceback only with --debug), leaving no DST."""

    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(compeft.artifact, "write_container", boom)
    code, out, err = run_cli(capsys, "compress", lora_dir, tmp_path / "dst", "--device", "cpu")
    assert_one_line_error(code, out, err, 1, "disk on fire")
    assert not (tmp_path / "dst").exists() and list(tmp_path.iterdir()) == []
    code, out, err = run_cli(capsys, "compress", lora_dir, tmp_path / "dst", "--device", "cpu", "--debug")
    assert code == 1 and "Traceback" in err


def _subprocess(*argv) -> subprocess.CompletedProcess:
    exe = [str(COMPEFT_BIN)] if COMPEFT_BIN.exists() else [sys.executable, "-m", "compeft.cli"]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([*exe, *map(str, argv)], capture_output=True, text=True, cwd=REPO, env=env, timeout=300)


def test_installed_entry_point_round_trip(tmp_path, lora_dir):
    """The installed `compeft` executable compresses (one summary line, exit 0) and answers a usage error with exit 2 and one line."""
    proc = _subprocess("compress", lora_dir, tmp_path / "art")  # default --device auto
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 1 and "bits/param" in proc.stdout
    assert proc.stderr == ""
    proc = _subprocess("inspect", tmp_path / "art", "--frobnicate")
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr
