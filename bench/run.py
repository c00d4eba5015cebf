"""The ComPEFT performance suite (issue 3): compress time with breakdown, load time vs dense and vs the
paper's Table 5, CPU decode throughput, and sizes vs H(k)·d, the paper's Golomb estimate, bitmask and
zstd-19. Runs on whatever device is present; writes results.json and results.md.

    python -m bench [--shapes 7B,13B,33B,65B] [--densities 0.05,0.1,0.2] [--repeats 5] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.synth import SHAPES, lora_tensors, write_adapter_dir

PAPER_LOAD_MS = {"7B": (134.28, 11.23), "13B": (186.60, 23.09), "33B": (307.29, 18.00), "65B": (475.26, 18.60)}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int, warmup: int = 1, clock=time.perf_counter) -> tuple[float, object]:
    """Median time (s, wall unless another ``clock`` is given) of fn() over repeats, synchronizing the device around
    each call. The previous call's result is released before the clock starts (unloading is not part of a load)."""
    result = None
    for _ in range(warmup):
        result = fn()
        sync(device)
    times = []
    for _ in range(repeats):
        result = None
        sync(device)
        t = clock()
        result = fn()
        sync(device)
        times.append(clock() - t)
    return statistics.median(times), result


def machine_info(device: torch.device) -> dict:
    info = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "command": " ".join([Path(sys.executable).name, "-m", "bench", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        pass
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu_model"] = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info["gpu"] = p.name
        info["gpu_memory_gib"] = round(p.total_memory / 2**30, 1)
        info["cuda"] = torch.version.cuda
    return info


def bandwidths(device: torch.device) -> dict:
    """Measured ceilings: pinned host→device copy (GB/s) and device write rate (GB/s, a fill)."""
    if device.type != "cuda":
        return {}
    n = 1 << 30
    host = torch.empty(n, dtype=torch.uint8, pin_memory=True)
    host.fill_(1)
    dev = torch.empty(n, dtype=torch.uint8, device=device)
    t_h2d, _ = timed(lambda: dev.copy_(host, non_blocking=True), device, 5)
    big = torch.empty(4 * n, dtype=torch.uint8, device=device)
    t_fill, _ = timed(lambda: big.fill_(3), device, 5)
    t_copy, _ = timed(lambda: big[: 2 * n].copy_(big[2 * n :]), device, 5)
    return {"h2d_GBps": n / t_h2d / 1e9, "fill_GBps": 4 * n / t_fill / 1e9, "d2d_copy_GBps_rw": 4 * n / t_copy / 1e9}


def compress_breakdown(src: Path, dst_root: Path, density: float, device: torch.device, repeats: int) -> dict:
    """``compeft.compress`` (file → artifact) end to end on ``device``, and the shipped stages it runs, each timed
    alone: the adapter read (pinned on a GPU host), τ on the device, σ + exact threshold + signs, the encode."""
    from compeft import api
    from compeft.adapters import read_adapter
    from compeft.codecs import get_codec
    from compeft.sparsify import ternarize
    from compeft.taskvector import build_task_vector, task_vector_from_blob

    cpu, gpu = torch.device("cpu"), device.type == "cuda"
    out: dict = {}
    weights = src / "adapter_model.safetensors"
    t_read, adapter = timed(lambda: read_adapter(src, pinned=gpu), cpu, repeats, warmup=0)
    out["read_s"] = t_read  # file (page cache) → (pinned) host memory, hashed
    if adapter.blob is not None:
        t_tv, tv = timed(lambda: task_vector_from_blob(adapter.blob, adapter.tensors, adapter.theta_inits, device, weights), device,
                         repeats)
    else:
        t_tv, tv = timed(lambda: build_task_vector(adapter.tensors, adapter.theta_inits, device), device, repeats)
    out["load_tau_s"] = t_tv  # host tensors → float32 τ on the device
    t_tern, tern = timed(lambda: ternarize(tv.tau, density), device, repeats)
    out["ternarize_s"] = t_tern  # σ (float64) + exact top-k threshold + int8 signs
    segments = [r.numel for r in tv.records]
    t_enc, payload = timed(lambda: get_codec("golomb").encode(tern.signs, segments), device, repeats)
    out["encode_s"] = t_enc
    out["in_memory_s"] = t_tv + t_tern + t_enc
    out["d"], out["kept"], out["payload_bytes"] = tv.d, tern.kept, int(payload.numel())
    out["bf16_input_MBps"] = 2 * tv.d / out["in_memory_s"] / 1e6
    dst = dst_root / "artifact"
    t_api, info = timed(lambda: api.compress(src, dst, density=density, device=str(device), overwrite=True), device,
                        max(1, min(repeats, 2)), warmup=0)
    out["api_compress_s"] = t_api  # what users run: read, τ, ternarize, encode, write, read back, check, card
    out["write_s"] = max(0.0, t_api - t_read - out["in_memory_s"])  # the rest of the API call
    out["artifact_bytes"] = info.bytes_artifact
    return out, payload, dst


def dense_load(src_file: Path, device: torch.device, repeats: int) -> float:
    """Original adapter, its safetensors bytes already in pinned memory → bf16 tensors on the device."""
    import struct

    size = src_file.stat().st_size
    host = torch.empty(size, dtype=torch.uint8, pin_memory=device.type == "cuda")
    with open(src_file, "rb") as f:
        f.readinto(memoryview(host.numpy()))
    (n,) = struct.unpack("<Q", host[:8].numpy().tobytes())

    def load():
        header = json.loads(host[8 : 8 + n].numpy().tobytes())
        data = host[8 + n :].to(device, non_blocking=True)
        out = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            a, b = info["data_offsets"]
            out[name] = data[a:b].view(torch.bfloat16).view(info["shape"])
        return out

    t, _ = timed(load, device, repeats)
    return t


def compressed_load(artifact: Path, device: torch.device, repeats: int) -> dict:
    """The shipped load paths: ResidentArtifact.load (checked once; with and without the opt-in GC pause),
    load_bytes (cold: parse and check every call), with every checksum, and compeft.load from the file."""
    from compeft import api
    from compeft.container import container_path, read_bytes
    from compeft.fastload import ResidentArtifact, load_bytes

    host = read_bytes(container_path(artifact), pin=True)
    resident = [ResidentArtifact(host, verify=False)]
    t_resident, _ = timed(lambda: resident[0].load(device), device, repeats)
    t_resident_gc, _ = timed(lambda: resident[0].load(device, pause_gc=True), device, repeats)
    resident.clear()
    t_fast, _ = timed(lambda: load_bytes(host, device, verify=False), device, repeats)
    t_fast_gc, _ = timed(lambda: load_bytes(host, device, verify=False, pause_gc=True), device, repeats)
    t_verify, _ = timed(lambda: load_bytes(host, device, verify=True), device, max(1, repeats // 2))
    t_api, _ = timed(lambda: api.load(artifact, device=device), device, max(1, min(3, repeats)))
    return {"resident_load_s": t_resident, "resident_load_paused_gc_s": t_resident_gc, "load_s": t_fast,
            "load_paused_gc_s": t_fast_gc, "load_verified_s": t_verify, "api_load_s": t_api}


def check_same(artifact: Path, device: torch.device) -> bool:
    """The device's fast load equals the CPU load (numpy decoder) bit for bit."""
    from compeft import api

    ref, fast = api.load(artifact, device="cpu"), api.load(artifact, device=device)
    return set(ref) == set(fast) and all(torch.equal(ref[k], fast[k].cpu()) for k in ref)


def cpu_figures(payload: torch.Tensor, tau_cpu: torch.Tensor, segments, density: float, repeats: int, threads: int) -> dict:
    """CPU compress (σ/threshold/signs + encode) and decode throughput with ``threads`` threads."""
    from compeft.codecs import get_codec
    from compeft.codecs.golomb import numpy_backend
    from compeft.sparsify import kept_count
    from compeft.sparsify_cpu import ternarize_cpu

    cpu = torch.device("cpu")
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        d = tau_cpu.numel()
        t_tern, (signs, _, _) = timed(lambda: ternarize_cpu(tau_cpu, kept_count(density, d), threads), cpu, repeats)
        t_enc, p2 = timed(lambda: numpy_backend.encode(signs, segments, threads), cpu, repeats)
        values = torch.tensor([-0.01, 0.0, 0.01]).to(torch.bfloat16)
        table = get_codec("golomb").prepare(payload, d).table
        out = torch.empty(d, dtype=values.dtype)
        t_dec, _ = timed(lambda: numpy_backend.decode_into(table, payload, out, values, threads), cpu, repeats)
        t_dec1, _ = timed(lambda: numpy_backend.decode_into(table, payload, out, values, 1), cpu, repeats)
    finally:
        torch.set_num_threads(old)
    return {
        "threads": threads,
        "ternarize_s": t_tern,
        "encode_s": t_enc,
        "compress_MBps_bf16_in": 2 * d / (t_tern + t_enc) / 1e6,
        "compress_MBps_per_core": 2 * d / (t_tern + t_enc) / 1e6 / threads,
        "decode_s": t_dec,
        "decode_MBps_bf16_out": 2 * d / t_dec / 1e6,
        "decode_1thread_MBps": 2 * d / t_dec1 / 1e6,
        "same_bytes_as_device_path": bool(torch.equal(p2, payload)),
    }


def size_figures(signs_first_layer: torch.Tensor, payload_bytes: int, d: int, kept: int, density: float) -> dict:
    """Bytes of the golomb payload vs H(k)·d, the paper's estimate, bitmask and zstd-19 of the planes."""
    import zstandard

    from compeft.stats import entropy_bits_per_param, golomb_estimate_bits_per_param

    k = kept / d
    s = signs_first_layer.cpu().numpy()
    planes = np.concatenate([np.packbits(s > 0, bitorder="little"), np.packbits(s < 0, bitorder="little")]).tobytes()
    t = time.perf_counter()
    z = len(zstandard.ZstdCompressor(level=19, threads=-1).compress(planes))
    zstd_s = time.perf_counter() - t
    zstd_bytes = z * d / s.size
    return {
        "k_effective": k,
        "golomb_bytes": payload_bytes,
        "golomb_bits_per_param": 8 * payload_bytes / d,
        "entropy_bytes": entropy_bits_per_param(k) * d / 8,
        "paper_golomb_estimate_bytes": golomb_estimate_bits_per_param(k) * d / 8,
        "bitmask_bytes": 2 * ((d + 7) // 8),
        "zstd19_planes_bytes": zstd_bytes,
        "zstd19_sample_params": int(s.size),
        "zstd19_sample_seconds": zstd_s,
        "dense_bf16_bytes": 2 * d,
    }


def run_case(shape_name: str, density: float, device: torch.device, repeats: int, cpu_threads: int, work: Path, tensors: dict,
             src: Path) -> dict:
    shape = SHAPES[shape_name]
    case_dir = work / f"{shape_name}-{density}"
    case_dir.mkdir(parents=True, exist_ok=True)
    row: dict = {"shape": shape_name, "params": shape.params, "density": density, "device": str(device)}
    comp, payload, artifact = compress_breakdown(src, case_dir, density, device, repeats)
    row["compress"] = comp
    row["same_as_reference_decode"] = check_same(artifact, device)
    row["same_checked_against"] = "the CPU load (numpy decoder)"
    row["load"] = compressed_load(artifact, device, repeats)
    row["load"]["dense_s"] = dense_load(src / "adapter_model.safetensors", device, repeats)
    row["load"]["paper_dense_ms"], row["load"]["paper_compeft_ms"] = PAPER_LOAD_MS.get(shape_name, (float("nan"), float("nan")))
    from compeft.adapters import read_adapter
    from compeft.sparsify import ternarize
    from compeft.taskvector import build_task_vector

    tv = build_task_vector(tensors, read_adapter(src).theta_inits, "cpu")
    first_layer = sum(r.numel for r in tv.records if ".layers.0." in r.name)
    tern = ternarize(tv.tau.to(device), density)
    row["size"] = size_figures(tern.signs[:first_layer], comp["payload_bytes"], comp["d"], comp["kept"], density)
    del tern
    if cpu_threads:
        row["cpu"] = cpu_figures(payload, tv.tau, [r.numel for r in tv.records], density, max(1, repeats // 2), cpu_threads)
    shutil.rmtree(case_dir / "artifact", ignore_errors=True)
    return row


def fmt_ms(s: float) -> str:
    return f"{1e3 * s:.1f}" if s < 10 else f"{s:.0f} s"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def markdown(results: dict) -> str:
    info, rows, bw = results["machine"], results["rows"], results.get("bandwidth", {})
    lines = [f"# ComPEFT benchmark — {info.get('gpu', info.get('cpu_model', info['cpu']))}", ""]
    lines += [f"- command: `{info['command']}`", f"- date: {info['date']}",
              f"- torch {info['torch']}, numpy {info['numpy']}, python {info['python']}"]
    if "triton" in info:
        lines.append(f"- triton {info['triton']}")
    lines.append(f"- CPU: {info.get('cpu_model', info['cpu'])}, {info['cpu_count']} cores visible; "
                 f"CPU figures use {results['cpu_threads']} threads")
    if bw:
        lines.append(f"- measured: pinned H2D {bw['h2d_GBps']:.1f} GB/s, device fill {bw['fill_GBps']:.0f} GB/s, "
                     f"device copy {bw['d2d_copy_GBps_rw']:.0f} GB/s (read+write)")
    lines.append(f"- medians of {results['repeats']} repeats; {results.get('note', '')}")
    lines += ["", "## 1. Compression time (ms), source file → artifact (`compeft.compress` and its stages)", ""]
    lines += table(
        ["shape", "params", "k", "read file (hashed)", "τ to device", "σ + threshold + signs", "encode", "in-memory total",
         "bf16 in MB/s", "rest of the call (write, check)", "compeft.compress e2e"],
        [[r["shape"], f"{r['params'] / 1e6:.0f}M", str(r["density"]), fmt_ms(c["read_s"]), fmt_ms(c["load_tau_s"]),
          fmt_ms(c["ternarize_s"]), fmt_ms(c["encode_s"]), f"**{fmt_ms(c['in_memory_s'])}**", f"{c['bf16_input_MBps']:.0f}",
          fmt_ms(c["write_s"]), fmt_ms(c["api_compress_s"])] for r in rows for c in [r["compress"]]])
    lines += ["", "## 2. Load time (ms): bytes in pinned host memory → dense bf16 tensors on the device", ""]
    load_rows = []
    for r in rows:
        ld, c = r["load"], r["compress"]
        limit = ""
        if bw:
            limit = f"{1e3 * (c['payload_bytes'] / (bw['h2d_GBps'] * 1e9) + 2 * c['d'] / (bw['fill_GBps'] * 1e9)):.2f}"
        load_rows.append([
            r["shape"], str(r["density"]), f"{c['payload_bytes'] / 1e6:.1f}", f"**{1e3 * ld['resident_load_s']:.2f}**",
            f"{1e3 * ld.get('resident_load_paused_gc_s', float('nan')):.2f}", f"**{1e3 * ld['load_s']:.2f}**",
            f"{1e3 * ld.get('load_paused_gc_s', float('nan')):.2f}",
            f"{1e3 * ld['load_verified_s']:.1f}", f"{1e3 * ld['api_load_s']:.0f}", f"{1e3 * ld['dense_s']:.1f}",
            str(ld["paper_dense_ms"]), str(ld["paper_compeft_ms"]),
            f"{ld['paper_compeft_ms'] / (1e3 * ld['resident_load_s']):.1f}× faster", limit])
    lines += table(["shape", "k", "payload MB", "resident (checked once)", "resident, GC paused", "cold (load_bytes)",
                    "cold, GC paused", "+ sha256 verify", "compeft.load (file)", "dense original", "paper original", "paper ComPEFT",
                    "resident vs paper ComPEFT", "limit (H2D + write)"], load_rows)
    cpu_rows = [r for r in rows if "cpu" in r]
    if cpu_rows:
        lines += ["", f"## 3. CPU throughput ({results['cpu_threads']} threads)", ""]
        lines += table(
            ["shape", "k", "σ+threshold+signs", "encode", "compress MB/s bf16 in (per core)", "decode", "decode MB/s bf16 out",
             "1 thread", "same bytes as device path"],
            [[r["shape"], str(r["density"]), fmt_ms(c["ternarize_s"]), fmt_ms(c["encode_s"]),
              f"{c['compress_MBps_bf16_in']:.0f} ({c['compress_MBps_per_core']:.0f})", fmt_ms(c["decode_s"]),
              f"{c['decode_MBps_bf16_out']:.0f}", f"{c['decode_1thread_MBps']:.0f}", str(c["same_bytes_as_device_path"])]
             for r in cpu_rows for c in [r["cpu"]]])
    lines += ["", "## 4. Size (MB; bits/param in parentheses)", ""]
    size_rows = []
    for r in rows:
        s, d = r["size"], r["compress"]["d"]

        def cell(b, d=d):
            return f"{b / 1e6:.2f} ({8 * b / d:.3f})"

        size_rows.append([r["shape"], str(r["density"]), f"{s['k_effective']:.4f}", f"**{cell(s['golomb_bytes'])}**",
                          cell(s["entropy_bytes"]), cell(s["paper_golomb_estimate_bytes"]), cell(s["bitmask_bytes"]),
                          cell(s["zstd19_planes_bytes"]), f"{s['dense_bf16_bytes'] / 1e6:.0f}"])
    lines += table(["shape", "k", "kept/d", "golomb (ours)", "H(k)·d", "paper Golomb est.", "bitmask", "zstd-19 of planes*",
                    "dense bf16"], size_rows)
    lines += ["", "\\* zstd-19 (zstandard, all threads) of the two bit planes of layer 0's tensors, scaled to d "
              "(zstd-19 of a whole 65B plane takes minutes)."]
    same = all(r["same_as_reference_decode"] for r in rows)
    lines.append(f"\nThe device's fast load equals the CPU load bit for bit in every case: {same}.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--shapes", default=None, help="comma list of 7B,13B,33B,65B (default: all on GPU, 7B on CPU)")
    parser.add_argument("--densities", default="0.05,0.1,0.2")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--cpu-threads", type=int, default=2, help="threads for the CPU figures (0 skips them)")
    parser.add_argument("--cpu-shapes", default="7B", help="shapes that also get the CPU figures")
    parser.add_argument("--out", default=None)
    parser.add_argument("--work", default=None, help="scratch directory for adapters and artifacts")
    args = parser.parse_args(argv)
    from compeft.devices import resolve_device

    device = resolve_device(args.device)
    gpu = device.type == "cuda"
    shapes = (args.shapes or ("7B,13B,33B,65B" if gpu else "7B")).split(",")
    densities = [float(x) for x in args.densities.split(",")]
    repeats = args.repeats or (5 if gpu else 2)
    out_dir = Path(args.out or f"bench/results/{'gpu' if gpu else 'cpu'}")
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="compeft-bench-"))
    results = {"machine": machine_info(device), "repeats": repeats, "cpu_threads": args.cpu_threads, "rows": []}
    if not gpu:
        results["note"] = "CPU-only run: small shape set and repeats to fit a few minutes"
    results["bandwidth"] = bandwidths(device)
    if gpu:
        torch.cuda.empty_cache()
    cpu_shapes = set(args.cpu_shapes.split(",")) if args.cpu_threads else set()
    for name in shapes:
        t = time.perf_counter()
        tensors = {k: v.cpu() for k, v in lora_tensors(SHAPES[name], seed=0, device=device).items()}
        print(f"[bench] {name}: generated {SHAPES[name].params / 1e6:.0f}M params in {time.perf_counter() - t:.1f} s", flush=True)
        src = write_adapter_dir(work / name / "adapter", tensors, SHAPES[name])
        for k in densities:
            t = time.perf_counter()
            row = run_case(name, k, device, repeats, args.cpu_threads if name in cpu_shapes else 0, work, tensors, src)
            results["rows"].append(row)
            c, ld = row["compress"], row["load"]
            print(
                f"[bench] {name} k={k}: compress in-memory {1e3 * c['in_memory_s']:.1f} ms, e2e {1e3 * c['api_compress_s']:.0f} ms, "
                f"load resident {1e3 * ld['resident_load_s']:.2f} / cold {1e3 * ld['load_s']:.2f} ms "
                f"(dense {1e3 * ld['dense_s']:.1f} ms), payload {c['payload_bytes'] / 1e6:.2f} MB, case {time.perf_counter() - t:.0f} s",
                flush=True,
            )
            (out_dir / "results.json").write_text(json.dumps(results, indent=2))
        shutil.rmtree(work / name, ignore_errors=True)
        for k in densities:
            shutil.rmtree(work / f"{name}-{k}", ignore_errors=True)
        del tensors
        if gpu:
            torch.cuda.empty_cache()
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    (out_dir / "results.md").write_text(markdown(results))
    print(markdown(results))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
