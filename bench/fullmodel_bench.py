"""Full fine-tune residuals at LLM scale (issue 17): peak RssAnon, wall and CPU time of compress and decompress for
made pairs of growing size, the page-cache read rate beside them, and (on CUDA) apply/revert on a resident base.

    python -m bench.fullmodel_bench --sizes 0.2B,1B,2B --root /tmp/pairs --device cpu --out results.json
    python -m bench.fullmodel_bench --sizes 7B --root /scratch --device cuda --apply --out results.json
    python -m bench.fullmodel_bench --tiny ...   (the tiny shape: checks the script itself)

Each compress / decompress runs in a child process whose RssAnon this process samples every 2 ms from outside
(bench.fullpair.AnonPeak on the child's pid: no sampler thread, and so no GIL switches, inside the timed process);
CPU time is the child's user + system time (every thread), so MB/s per core = fine-tuned bytes / CPU seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, sys, time, resource
sys.path.insert(0, {root!r})
import torch
import compeft
from bench.fullpair import rss_anon
print(json.dumps({{"anon_base": rss_anon()}}), flush=True)
sys.stdin.readline()  # the parent samples this process's RssAnon from now on
r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
if {profile!r}:
    import cProfile, io, pstats
    prof = cProfile.Profile()
    prof.enable()
{call}
if {profile!r}:
    prof.disable()
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(25)
    open({profile!r}, "w").write(text.getvalue())
r1 = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({{"wall": time.perf_counter() - t0, "cpu": r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime}}))
"""


def child(call: str, profile: str = "") -> dict:
    """Run ``call`` in a fresh interpreter after its imports: wall and CPU time (its own, every thread), and its
    RssAnon after the imports and at peak, sampled from this process (no sampler thread inside the child).
    ``profile``: a file for the main thread's cProfile summary (the 25 functions with most own time)."""
    from bench.fullpair import AnonPeak

    code = CHILD.format(root=str(ROOT), call=call, profile=profile)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()
    if not first:
        proc.wait()
        raise RuntimeError(proc.stderr.read()[-3000:])
    with AnonPeak(pid=proc.pid) as peak:
        out, err = proc.communicate("go\n")
    if proc.returncode:
        raise RuntimeError(err[-3000:])
    phases = {label.strip(): float(t) for label, t in re.findall(r"([^\r\n:]+): \d+/\d+ \(([\d.]+) s\)", err)}
    return {**json.loads(first), **json.loads(out.strip().splitlines()[-1]), "anon_peak": peak.peak, "phases_s": phases}


def read_rate(dirs: list[Path], threads: int = 1) -> float:
    """GB/s of reading the models' files once more (they are in the page cache after compress), with ``threads``
    readers taking 64 MB pieces in turn (the compress reads with several threads too)."""
    from concurrent.futures import ThreadPoolExecutor

    pieces = [(p, off) for d in dirs for p in sorted(d.glob("*.safetensors"))
              for off in range(0, p.stat().st_size, 64 << 20)]
    bufs = [bytearray(64 << 20) for _ in range(threads)]

    def read(i: int) -> int:
        n = 0
        for p, off in pieces[i::threads]:
            with open(p, "rb", buffering=0) as f:
                f.seek(off)
                n += f.readinto(bufs[i])
        return n

    t = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        n = sum(pool.map(read, range(threads)))
    return n / (time.perf_counter() - t) / 1e9


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def exactness(weights: dict, resident, art: Path, base: Path, device: str) -> tuple[bool, bool]:
    """(apply equals the decompressed fine-tune, revert with the pristine copy equals the base), bit for bit."""
    import torch

    import compeft
    from compeft.checkpoint import Checkpoint
    from compeft.serving import apply_residual, revert_residual

    def equal(d: Path) -> bool:
        c = Checkpoint(d)
        return all(torch.equal(weights[n].reshape(-1).view(torch.uint8).cpu(), c.get(n).reshape(-1).view(torch.uint8))
                   for n in c.names())

    model_dir = art.parent.parent / f"{art.parent.name}-decompressed"
    shutil.rmtree(model_dir, ignore_errors=True)
    compeft.decompress(art, model_dir, base=base, device=device)
    applied = apply_residual(weights, resident)
    same = equal(model_dir)
    revert_residual(weights, applied)
    back = equal(base)
    shutil.rmtree(model_dir, ignore_errors=True)
    return same, back


def median_ms(fn, device: str, repeats: int) -> float:
    """Median wall ms of ``fn()`` until the device is idle."""
    times = []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - t) * 1e3)
    return sorted(times)[len(times) // 2]


def against_dense(weights: dict, resident, art: Path, base: Path, device: str) -> tuple[bool, bool]:
    """(in-place apply equals the dense path's apply, in-place revert with the pristine copy equals the base), bit
    for bit: the dense path (decode s·t, one add per weight) is checked against decompress by the tests."""
    import torch

    from compeft.checkpoint import Checkpoint
    from compeft.serving import ResidentResidual, apply_residual, revert_residual

    def bits(t):
        return t.reshape(-1).view(torch.uint8)

    ref = {n: w.clone() for n, w in weights.items()}
    applied = apply_residual(weights, resident)
    dense = apply_residual(ref, ResidentResidual(art, device, in_place=False))
    same = all(torch.equal(bits(weights[n]), bits(ref[n])) for n in weights)
    revert_residual(weights, applied)
    del ref, dense
    c = Checkpoint(base)
    back = all(torch.equal(bits(weights[n]).cpu(), bits(c.get(n))) for n in c.names())
    return same, back


def apply_bench(base: Path, art: Path, device: str, repeats: int, exact: bool = True, exact_dense: bool = False,
                dense_anchor: bool = False) -> dict:
    """Median ms of apply_residual / revert_residual with a resident residual on a resident base, and exactness;
    on CUDA also the in-place path's parts alone (the −0.0 pass; the decode without writes) and, with
    ``dense_anchor``, the dense path (decode s·t into a scratch, one add per weight) in the same run."""
    import torch

    from compeft.checkpoint import Checkpoint
    from compeft.serving import ResidentResidual, apply_residual, revert_residual

    c = Checkpoint(base)
    weights = {n: c.get(n).to(device) for n in c.names()}
    t = time.perf_counter()
    resident = ResidentResidual(art, device)
    sync(device)
    out: dict = {"resident_prepare_ms": (time.perf_counter() - t) * 1e3, "apply_bit_exact": None, "revert_bit_exact": None,
                 "in_place": resident.inplace is not None}
    if exact:
        out["apply_bit_exact"], out["revert_bit_exact"] = exactness(weights, resident, art, base, device)
    elif exact_dense:
        out["apply_equals_dense"], out["revert_bit_exact"] = against_dense(weights, resident, art, base, device)
    variants = [("", resident)]
    if dense_anchor:
        variants.append(("_dense", ResidentResidual(art, device, in_place=False)))
    for tag0, res in variants:
        for pristine in (True, False):  # without a pristine copy revert drifts: last
            times_a, times_r = [], []
            for _ in range(repeats):
                sync(device)
                t = time.perf_counter()
                applied = apply_residual(weights, res, pristine=pristine)
                sync(device)
                times_a.append((time.perf_counter() - t) * 1e3)
                t = time.perf_counter()
                revert_residual(weights, applied)
                sync(device)
                times_r.append((time.perf_counter() - t) * 1e3)
            tag = tag0 + ("_pristine" if pristine else "")
            out[f"apply_ms{tag}"] = sorted(times_a)[len(times_a) // 2]
            out[f"revert_ms{tag}"] = sorted(times_r)[len(times_r) // 2]
    if resident.inplace is not None:
        from compeft.codecs.golomb.triton_apply import ADD, CHECK, SUBTRACT

        fast = [weights[r.name] for r in resident.fast]
        out["decode_no_writes_ms"] = median_ms(lambda: resident.inplace.run(fast, CHECK), device, repeats)

        for warps in (4, 8, 2):  # the last pass's warps: an add and a subtract (the weights come back close)
            resident.inplace.warps = warps
            out[f"add_then_subtract_ms_warps{warps}"] = median_ms(
                lambda: (resident.inplace.run(fast, ADD), resident.inplace.run(fast, SUBTRACT)), device, repeats)
        resident.inplace.warps = 4
        out["kept_entries"] = int(resident.inplace.cols.n)
        out["pristine_bytes"] = resident.inplace.saved_bytes
        if device.startswith("cuda"):
            out["gpu_peak_GB"] = torch.cuda.max_memory_allocated() / 1e9
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="0.2B,1B,2B")
    p.add_argument("--tiny", action="store_true", help="the tiny shape only (checks the script)")
    p.add_argument("--root", default="/tmp/compeft-fullbench")
    p.add_argument("--device", default="cpu")
    p.add_argument("--density", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=0, help="torch threads in the children (0: torch's default)")
    p.add_argument("--apply", action="store_true", help="also time apply/revert on a resident base")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--keep", action="store_true", help="keep the made pairs")
    p.add_argument("--reuse", action="store_true", help="use the pairs an earlier --keep run left under --root")
    p.add_argument("--no-decompress", action="store_true", help="skip decompress (its CPU decode takes minutes at 7B)")
    p.add_argument("--no-exact", action="store_true", help="skip the apply/revert exactness check (needs a decompress)")
    p.add_argument("--exact-dense", action="store_true", help="with --no-exact: check the in-place apply against the "
                   "dense path on the device and its revert against the base (no decompress)")
    p.add_argument("--dense-anchor", action="store_true", help="also time the dense apply path in the same run")
    p.add_argument("--profile", default="", help="write the compress child's main-thread cProfile summary here "
                   "(SIZE is replaced by the size)")
    p.add_argument("--compress-repeats", type=int, default=1, help="time the compress this many times (the row "
                   "holds the fastest; a --profile run comes on top)")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    from bench.fullpair import MODEL_SHAPES, pair_dirs, write_pair

    sizes = ["tiny"] if args.tiny else args.sizes.split(",")
    root = Path(args.root)
    rows = []
    for size in sizes:
        shape = MODEL_SHAPES[size]
        t = time.perf_counter()
        ft, base = pair_dirs(shape, root)
        if not (args.reuse and all((d / "model.safetensors.index.json").is_file() for d in (ft, base))):
            ft, base = write_pair(shape, root, device="cuda" if args.device.startswith("cuda") else "cpu")
        made = time.perf_counter() - t
        os.sync()  # the just-written pair's writeback would otherwise run on these cores during the timed compress
        art, out = root / f"{size}-art", root / f"{size}-out"
        threads = f"torch.set_num_threads({args.threads}); " if args.threads else ""
        call = (f"{threads}compeft.compress({str(ft)!r}, {str(art)!r}, base={str(base)!r}, density={args.density}, "
                f"device={args.device!r}, progress=True)")
        runs = []
        for i in range(args.compress_repeats + bool(args.profile)):
            shutil.rmtree(art, ignore_errors=True)
            profiled = args.profile and i == args.compress_repeats  # an extra run: cProfile slows what it watches
            runs.append(child(call, args.profile.replace("SIZE", size) if profiled else ""))
        comp = min(runs[:args.compress_repeats], key=lambda r: r["wall"])
        rate = read_rate([ft, base])
        rate_threads = read_rate([ft, base], threads=8)
        shutil.rmtree(out, ignore_errors=True)
        skipped = {"wall": 0.0, "cpu": 0.0, "anon_base": 0, "anon_peak": 0}
        call = f"{threads}compeft.decompress({str(art)!r}, {str(out)!r}, base={str(base)!r}, device={args.device!r})"
        dec = skipped if args.no_decompress else child(call)
        ft_bytes = sum(f.stat().st_size for f in ft.glob("*.safetensors"))
        shard = max(f.stat().st_size for f in ft.glob("*.safetensors"))
        row = {"size": size, "params": shape.params, "ft_bytes": ft_bytes, "largest_shard": shard, "make_s": made,
               "page_cache_read_GBps": rate, "page_cache_read_GBps_8_threads": rate_threads,
               "compress_walls_s": [r["wall"] for r in runs[:args.compress_repeats]],
               "artifact_bytes": (art / "compeft.safetensors").stat().st_size,
               **{f"compress_{k}": v for k, v in comp.items()}, **{f"decompress_{k}": v for k, v in dec.items()}}
        row["compress_MBps_per_core"] = ft_bytes / comp["cpu"] / 1e6
        row["compress_MBps_wall"] = ft_bytes / comp["wall"] / 1e6
        row["compress_anon_over_base_MB"] = (comp["anon_peak"] - comp["anon_base"]) / 1e6
        row["decompress_anon_over_base_MB"] = (dec["anon_peak"] - dec["anon_base"]) / 1e6
        shutil.rmtree(out, ignore_errors=True)
        if args.apply:
            print(json.dumps(row), flush=True)  # the compress figures, should the apply run out of time
            row |= apply_bench(base, art / "compeft.safetensors", args.device, args.repeats, not args.no_exact,
                               args.exact_dense, args.dense_anchor)
        rows.append(row)
        print(json.dumps(row), flush=True)
        if not args.keep:
            for d in (ft, base, art):
                shutil.rmtree(d, ignore_errors=True)
    meta = {"device": args.device, "cpus": os.cpu_count(), "density": args.density,
            "host_maxrss_MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3}
    try:
        import torch

        meta["torch"] = torch.__version__
        if torch.cuda.is_available():
            meta["gpu"] = torch.cuda.get_device_name()
    except ImportError:
        pass
    if args.out:
        Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
