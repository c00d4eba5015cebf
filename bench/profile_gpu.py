"""Profile the GPU compress stages and the fast loads (cold and resident) of one shape, for tuning.

    python -m bench.profile_gpu 65B 0.1 [--load-only]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.synth import SHAPES, lora_tensors, write_adapter_dir


def timeline(prof) -> None:
    """The device kernels and copies of a profile in start order (start µs, duration µs)."""
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    t0 = min((e.time_range.start for e in kernels), default=0)
    for e in sorted(kernels, key=lambda e: e.time_range.start):
        print(f"  {e.time_range.start - t0:9.1f} {e.time_range.elapsed_us():8.1f}  {e.name[:70]}")


def resident(host: torch.Tensor, dev: torch.device, repeats: int = 15) -> None:
    """ResidentArtifact.load: torch profiler table of the device work, and host stages (launch, views, wait)."""
    import gc
    import statistics

    from compeft.codecs.golomb_fast import decode_fast

    from compeft.fastload import ResidentArtifact

    art = ResidentArtifact(host, verify=False)
    for _ in range(3):
        art.load(dev)
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]) as prof:
        art.load(dev)
        torch.cuda.synchronize()
    print("resident load, device work:")
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25))
    print("resident load, device kernels and copies in launch order (start µs, duration µs):")
    timeline(prof)
    import cProfile
    import pstats

    cprof = cProfile.Profile()
    cprof.enable()
    for _ in range(10):
        art.load(dev)
    torch.cuda.synchronize()
    cprof.disable()
    pstats.Stats(cprof).sort_stats("tottime").print_stats(25)
    rows: dict[str, list[float]] = {}
    d = art.container.doc["d"]
    for _ in range(repeats):
        torch.cuda.synchronize()
        gc.disable()
        t = [time.perf_counter()]
        pending: list = []
        flat = decode_fast(art.container.payload, d, dev, art.values, table=art.table, deferred=pending, plan_columns=art._plan(dev))
        t.append(time.perf_counter())
        out = art.view_plan.views(flat)
        t.append(time.perf_counter())
        for check in pending:
            check()
        t.append(time.perf_counter())
        gc.enable()
        for name, a, b in zip(["launch decode", "views", "wait + checks"], t, t[1:]):
            rows.setdefault(name, []).append(b - a)
        rows.setdefault("total", []).append(t[-1] - t[0])
        del out, flat
    for name, v in rows.items():
        print(f"resident stage {name:16s} {1e3 * statistics.median(v):7.2f} ms")
    v = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        a = time.perf_counter()
        art.load(dev)
        torch.cuda.synchronize()
        v.append(time.perf_counter() - a)
    print(f"resident load median {1e3 * statistics.median(v):.2f} ms, min {1e3 * min(v):.2f} ms")


def main(shape: str = "65B", density: float = 0.1, load_only: bool = False) -> None:
    from compeft import api
    from compeft.codecs import get_codec
    from compeft.container import container_path, read_bytes
    from compeft.fastload import load_bytes
    from compeft.sparsify import ternarize
    from compeft.taskvector import build_task_vector

    dev = torch.device("cuda")
    tensors = lora_tensors(SHAPES[shape], seed=0, device=dev)
    tv = build_task_vector(tensors, dev)
    codec = get_codec("golomb")
    segs = [r.numel for r in tv.records]
    for _ in range(2):
        tern = ternarize(tv.tau, density)
        codec.encode(tern.signs, segs)
    torch.cuda.synchronize()
    if not load_only:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]) as prof:
            tern = ternarize(tv.tau, density)
            codec.encode(tern.signs, segs)
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25))
    with tempfile.TemporaryDirectory() as tmp:
        src = write_adapter_dir(Path(tmp) / "a", {k: v.cpu() for k, v in tensors.items()}, SHAPES[shape])
        del tensors, tv, tern
        api.compress(src, Path(tmp) / "art", density=density, device="cuda")
        host = read_bytes(container_path(Path(tmp) / "art"), pin=True)
    for _ in range(3):
        load_bytes(host, dev, verify=False)
    torch.cuda.synchronize()
    t = time.perf_counter()
    load_bytes(host, dev, verify=False)
    torch.cuda.synchronize()
    print(f"load {1e3 * (time.perf_counter() - t):.2f} ms")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]) as prof:
        load_bytes(host, dev, verify=False)
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=30))
    print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=15))
    print("cold load, device kernels and copies in launch order (start µs, duration µs):")
    timeline(prof)
    stages(host, dev, profile=not load_only)
    resident(host, dev)


def stages(host: torch.Tensor, dev: torch.device, repeats: int = 15, profile: bool = True) -> None:
    """Median host-side time of each stage of fastload.load_bytes (the device is synchronized once, at the end)."""
    import gc
    import statistics

    from compeft.codecs.golomb_fast import decode_fast

    from compeft.container import parse_container
    from compeft.document import check_records, record_kinds
    from compeft.fastload import Prefetch, value_table, views_of

    rows: dict[str, list[float]] = {}
    for _ in range(repeats):
        torch.cuda.synchronize()
        gc.disable()
        t = [time.perf_counter()]
        prefetched = Prefetch(dev)  # as load_bytes: the payload copy starts before the document is parsed
        c = parse_container(host, Path("<memory>"), verify=False, prefetch=prefetched)
        t.append(time.perf_counter())
        kinds = record_kinds(c)
        values = value_table(c.doc["scale"], 0.0, torch.bfloat16)
        pending: list = []
        flat = decode_fast(c.payload, c.doc["d"], dev, values, staged=prefetched.staged, deferred=pending)
        finish = lambda: [f() for f in pending]  # noqa: E731
        t.append(time.perf_counter())
        records = check_records(c)
        t.append(time.perf_counter())
        out = views_of(flat, records)
        t.append(time.perf_counter())
        finish()
        t.append(time.perf_counter())
        gc.enable()
        for name, a, b in zip(["parse container", "launch decode", "check_records", "views", "wait + checks"], t, t[1:]):
            rows.setdefault(name, []).append(b - a)
        rows.setdefault("total", []).append(t[-1] - t[0])
        del out, flat, kinds
    for name, v in rows.items():
        print(f"stage {name:16s} {1e3 * statistics.median(v):7.2f} ms")
    import cProfile
    import pstats

    from compeft.fastload import load_bytes

    prof = cProfile.Profile()
    prof.enable()
    for _ in range(20 if profile else 5):
        load_bytes(host, dev, verify=False)
    torch.cuda.synchronize()
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(30)
    pstats.Stats(prof).sort_stats("cumtime").print_stats(30)
    for flag in (True, False):
        v = []
        for _ in range(repeats):
            if flag:
                gc.enable()
            torch.cuda.synchronize()
            a = time.perf_counter()
            load_bytes(host, dev, verify=False)
            torch.cuda.synchronize()
            v.append(time.perf_counter() - a)
        print(f"load_bytes median {1e3 * statistics.median(v):.2f} ms, min {1e3 * min(v):.2f} ms ({'gc on outside' if flag else 'repeat'})")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--load-only"]
    main(*(args[:1] or ["65B"]), *(float(x) for x in args[1:2]), load_only="--load-only" in sys.argv)
