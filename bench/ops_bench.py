"""Similarity on compressed artifacts (issue 14): pair, from files, top-10 among many, and the registry search,
against the issue's anchors measured in the same run (dense bf16 cosine in torch; a naive byte-lookup-table
popcount over the packed planes).

    python -m bench.ops_bench --device cuda            # LLaMA-7B shape (160M entries), k = 0.1
    python -m bench.ops_bench --device cpu --cpu-threads 1
    python -m bench.ops_bench --tiny                   # the same code on small shapes (a smoke run)

Writes ops_DEVICE.json and ops_DEVICE.md to --out. CPU figures are CPU time with --cpu-threads torch threads (numpy
is single-threaded); GPU figures are wall time.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.run import machine_info
from bench.run import timed as run_timed
from bench.synth import SHAPES, lora_tensors, write_adapter_dir


def timed(fn, device: torch.device, repeats: int, warmup: int = 2) -> tuple[float, object]:
    """bench.run.timed with wall time on a GPU and the process's CPU time on the CPU (one thread: what one core
    spends, robust on a shared machine)."""
    return run_timed(fn, device, repeats, warmup, clock=time.perf_counter if device.type == "cuda" else time.process_time)


def make_pair(shape: str, density: float, root: Path, device: str) -> tuple[Path, Path]:
    """Two compressed synthetic adapters of ``shape``; the second is 70 % the first plus 30 % its own (cosine ~0.5)."""
    import compeft

    a = {k: v.cpu() for k, v in lora_tensors(SHAPES[shape], seed=0, device=device).items()}
    other = lora_tensors(SHAPES[shape], seed=1, device=device)
    b = {k: (0.7 * v.float() + 0.3 * other[k].float().cpu()).to(v.dtype) for k, v in a.items()}
    del other
    paths = []
    for name, tensors in (("a", a), ("b", b)):
        src = write_adapter_dir(root / f"{name}-src", tensors, SHAPES[shape])
        paths.append(Path(compeft.compress(src, root / name, density=density, device=device).path))
    return paths[0], paths[1]


# -- anchors ----------------------------------------------------------------------------------------
def dense_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """The anchor: cosine of two dense bf16 task vectors in torch."""
    return float((a @ b) / (a.norm() * b.norm()))


LUT = torch.tensor([bin(i).count("1") for i in range(256)], dtype=torch.int64)


def lut_counts(qs, qn, cs, cn, lut) -> tuple[int, int]:
    """The anchor: a naive torch popcount over the packed planes (a byte lookup table)."""
    both = (qs & cs).view(torch.uint8)
    dis = (qs & cs & (qn ^ cn)).view(torch.uint8)
    return int(lut[both.long()].sum()), int(lut[dis.long()].sum())


def pair_section(a_path: Path, b_path: Path, device: torch.device, repeats: int) -> dict:
    from compeft.ops.planes import open_planes
    from compeft.ops.popcount import pair_counts
    from compeft.ops.similar import measures, pair_similarity

    pa, pb = open_planes(a_path, device), open_planes(b_path, device)
    out: dict = {"d": pa.d, "kept": [pa.kept, pb.kept], "plane_bytes": 2 * 8 * pa.support.numel()}
    da = (pa.ternary(torch.bfloat16) * pa.scale).to(torch.bfloat16)
    db = (pb.ternary(torch.bfloat16) * pb.scale).to(torch.bfloat16)
    out["dense_bf16_ms"], dense = timed(lambda: dense_cosine(da, db), device, repeats)
    da = db = None  # noqa: F841 - free the dense vectors before the next measurements
    lut = LUT.to(device)
    out["lut_ms"], lut_result = timed(lambda: lut_counts(pa.support, pa.negative, pb.support, pb.negative, lut), device,
                                      repeats)
    out["resident_ms"], counts = timed(lambda: pair_counts(pa.support, pa.negative, pb.support, pb.negative), device,
                                       repeats * 4)
    common, disagree = counts
    assert (common, disagree) == lut_result, "popcount paths disagree"
    cosine = measures(pa.kept, pb.kept, common, disagree)[0]
    out["cosine"], out["dense_cosine_bf16"] = cosine, dense
    out.update(files_section(a_path, b_path, device, repeats, pair_similarity(pa, pb), (common, disagree)))
    out["from_memory_ms"] = from_memory(a_path, b_path, device, repeats)
    out["dense_cosine_check"] = abs(cosine - dense) < 2e-2
    return {k: v * 1000 if k.endswith("_ms") else v for k, v in out.items()}


def files_section(a_path: Path, b_path: Path, device: torch.device, repeats: int, expected, counts: tuple[int, int]) -> dict:
    """A pair from its files (in the page cache), decode included: the pipelined ``open_many`` (reads and hashes
    in worker threads, decodes queued without waiting) with checksums off, with every checksum hashed on each
    call, and with the files verified earlier in the process (``compeft.ops.similarity``'s steady state); the
    previous path (``open_planes`` one after the other) for comparison; and the pieces: both files' reads, one
    payload's sha256, and a profile of the pipelined calls."""
    import cProfile
    import hashlib
    import io
    import pstats

    from compeft.container import container_path, read_file
    from compeft.ops.files import _executor, forget_verified, open_many
    from compeft.ops.planes import open_planes
    from compeft.ops.popcount import pair_counts
    from compeft.ops.similar import pair_similarity, similarity

    name = str(device.type if device.type == "cpu" else device)
    paths = [a_path, b_path]
    out: dict = {}

    def unverified():
        return pair_similarity(*open_many(paths, device, verify=False))

    def verified_cold():
        forget_verified()
        return similarity(paths, device=name)[0]

    def sequential():
        x, y = (open_planes(p, device, verify=False) for p in paths)
        return pair_counts(x.support, x.negative, y.support, y.negative)

    out["files_unverified_ms"], result = timed(unverified, device, repeats)
    out["files_verified_cold_ms"], cold = timed(verified_cold, device, repeats)
    out["files_verified_ms"], warm = timed(lambda: similarity(paths, device=name)[0], device, repeats)
    assert result == cold == warm == expected, "the from-files paths disagree with the resident planes"
    out["files_sequential_unverified_ms"], seq = timed(sequential, device, repeats)
    assert seq == counts, "the sequential path disagrees"
    pin = device.type == "cuda"
    out["read_both_ms"], _ = timed(lambda: [f.result() for f in [_executor("files").submit(
        read_file, container_path(p), pin=pin, executor=_executor("pieces")) for p in paths]], device, repeats)
    payload = read_file(container_path(a_path))[0].numpy()
    clock = time.process_time()
    for _ in range(3):
        hashlib.sha256(payload).hexdigest()
    out["sha256_one_file_cpu_ms"] = (time.process_time() - clock) / 3
    profiles = {}
    for label, fn in (("checksums_off", unverified), ("checksums_every_call", verified_cold)):
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(5):
            fn()
        prof.disable()
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(18)
        profiles[label] = text.getvalue()
    out["profile"] = profiles
    return out


def from_memory(a_path: Path, b_path: Path, device: torch.device, repeats: int) -> float:
    """Both artifacts' container bytes already in (pinned) host memory: parse, decode on the device, pack, count."""
    from compeft.artifact import Artifact
    from compeft.container import container_path, parse_container, read_bytes
    from compeft.document import check
    from compeft.ops.planes import open_planes
    from compeft.ops.popcount import pair_counts

    images = [read_bytes(container_path(p), pin=device.type == "cuda") for p in (a_path, b_path)]

    def run():
        planes = []
        for image, path in zip(images, (a_path, b_path)):
            container = parse_container(image, path, verify=False)
            planes.append(open_planes(Artifact(container, *check(container)), device))
        return pair_counts(planes[0].support, planes[0].negative, planes[1].support, planes[1].negative)

    return timed(run, device, repeats)[0]


# -- many candidates ---------------------------------------------------------------------------------
def bank_records(d: int):
    from compeft.document import RecordColumns

    return RecordColumns(("x",), ((d,),), ("F32",), (0.0,), (0,), (d,))


def random_bank(n: int, words: int, device: torch.device, seed: int = 0):
    """n planes of ``words`` words, ~12.5 % support: 16 random rows, the rest rolled copies of them."""
    from compeft.ops.planes import layout_key
    from compeft.ops.similar import PlaneBank

    g = torch.Generator(device=device).manual_seed(seed)
    lo, hi = -(2**63), 2**63 - 1
    base_s = torch.empty(min(16, n), words, dtype=torch.int64, device=device)
    base_n = torch.empty_like(base_s)
    for i in range(base_s.shape[0]):
        r = [torch.randint(lo, hi, (words,), generator=g, device=device, dtype=torch.int64) for _ in range(4)]
        base_s[i] = r[0] & r[1] & r[2]
        base_n[i] = base_s[i] & r[3]
    support = torch.empty(n, words, dtype=torch.int64, device=device)
    negative = torch.empty_like(support)
    for i in range(n):
        shift = (i * 7919) % words
        support[i] = torch.roll(base_s[i % base_s.shape[0]], shift)
        negative[i] = torch.roll(base_n[i % base_n.shape[0]], shift)
    kept = torch.full((n,), float(words * 8))  # about 1/8 of the bits; timing only
    return PlaneBank.of_matrices(support, negative, kept, [str(i) for i in range(n)], layout_key(bank_records(words * 64)),
                                 words * 64)


def top_section(n: int, words: int, device: torch.device, repeats: int) -> dict:
    from compeft.ops.planes import TernaryPlanes

    bank = random_bank(n, words, device)
    query = TernaryPlanes(bank.support[3].clone(), bank.negative[3].clone(), bank.d, 1.0, words * 8,
                          bank_records(bank.d), "query")
    ms, top = timed(lambda: bank.top(query, 10), device, repeats)
    out = {"n": n, "words": words, "bank_gb": 2 * 8 * n * words / 1e9, "top10_ms": ms * 1000, "best": top[0][0]}
    bank = None  # noqa: F841 - free the planes before the next bank
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


# -- registry search: sketch shortlist + exact re-rank, and its recall ----------------------------
def synthetic_catalog(n: int, d: int, density: float, seed: int = 0):
    """n int8 ternary vectors, yielded one by one, in families: a family shares a base pattern and each member
    resamples a random share (2–90 %) of its positions; about a fifth of the catalog are singletons."""
    g = torch.Generator().manual_seed(seed)

    def fresh() -> torch.Tensor:
        kept = torch.rand(d, generator=g) < density
        sign = torch.where(torch.rand(d, generator=g) < 0.5, 1, -1).to(torch.int8)
        return sign * kept

    made = 0
    while made < n:
        base = fresh()
        size = 1 if torch.rand(1, generator=g).item() < 0.2 else int(torch.randint(2, 40, (1,), generator=g))
        for _ in range(min(size, n - made)):
            mix = 0.02 + 0.88 * torch.rand(1, generator=g).item()
            yield torch.where(torch.rand(d, generator=g) < mix, fresh(), base)
            made += 1


def search_section(n: int, d: int, density: float, queries: int, shortlist: int, device: torch.device) -> dict:
    """Recall@10 of the two-stage search (sketch shortlist, exact re-rank) against the exact top 10, and the time of
    the sketch stage over n signatures."""
    from compeft.ops.planes import planes_from_ternary
    from compeft.ops.similar import PlaneBank
    from compeft.ops.sketch import estimate, sketch_of

    t0 = time.perf_counter()
    records = bank_records(d)
    planes = [planes_from_ternary(t, scale=1.0, records=records, label=str(i))
              for i, t in enumerate(synthetic_catalog(n, d, density))]
    sketches = np.stack([sketch_of(p).sketch for p in planes]).astype(np.float32)
    bank = PlaneBank([p.to(device) for p in planes])
    build_s = time.perf_counter() - t0
    rng = np.random.default_rng(1)
    hits, stage_ms = [], []
    for q in rng.choice(n, size=queries, replace=False):
        exact = bank.cosines(planes[q].to(device)).cpu().numpy()
        exact[q] = -2
        truth = set(np.argsort(-exact, kind="stable")[:10].tolist())
        t = time.process_time()
        est = estimate(sketches[q], sketches)
        est[q] = -np.inf
        short = np.argpartition(-est, shortlist)[:shortlist]
        stage_ms.append((time.process_time() - t) * 1000)
        ranked = short[np.argsort(-exact[short], kind="stable")][:10]
        hits.append(len(truth & set(ranked.tolist())) / 10)
    return {"n": n, "d": d, "density": density, "queries": queries, "shortlist": shortlist,
            "recall_at_10": float(np.mean(hits)), "recall_min": float(np.min(hits)),
            "sketch_stage_ms": statistics.median(stage_ms), "build_s": build_s}


def rerank_section(a_path: Path, shortlist: int, n_signatures: int, device: torch.device, repeats: int) -> dict:
    """The registry search's cost for one query among n_signatures artifacts of the artifact's shape: the sketch
    estimate over all signatures, then ``shortlist`` candidates decoded from pinned container bytes and compared."""
    from compeft.artifact import Artifact
    from compeft.container import container_path, parse_container, read_bytes
    from compeft.document import check
    from compeft.ops.planes import open_planes
    from compeft.ops.popcount import pair_counts
    from compeft.ops.sketch import SKETCH_SIZE, estimate

    image = read_bytes(container_path(a_path), pin=device.type == "cuda")
    query = open_planes(a_path, device)
    sketches = np.random.default_rng(0).standard_normal((n_signatures, SKETCH_SIZE)).astype(np.float32)

    def run():
        est = estimate(sketches[0], sketches)
        np.argpartition(-est, shortlist)[:shortlist]
        for _ in range(shortlist):
            container = parse_container(image, a_path, verify=False)
            other = open_planes(Artifact(container, *check(container)), device)
            pair_counts(query.support, query.negative, other.support, other.negative)

    ms = timed(run, device, max(1, repeats // 2), warmup=1)[0] * 1000
    return {"signatures": n_signatures, "shortlist": shortlist, "total_ms": ms}


def to_markdown(results: dict) -> str:
    lines = [f"# Similarity benchmark ({results['device']})", "", f"`{results['command']}`", "",
             f"Machine: {json.dumps(results['machine'])}", ""]
    p = results.get("pair")
    if p:
        lines += [f"## Pair: d = {p['d']:,}, kept {p['kept'][0]:,} / {p['kept'][1]:,}, planes {p['plane_bytes'] / 1e6:.1f} MB "
                  "per artifact", "", "| what | ms |", "|---|---:|",
                  f"| anchor: dense bf16 cosine (torch) | {p['dense_bf16_ms']:.3f} |",
                  f"| anchor: naive byte-LUT popcount over the planes | {p['lut_ms']:.3f} |",
                  f"| **planes resident: hardware popcount** | **{p['resident_ms']:.3f}** |",
                  f"| container bytes in memory → decode → planes → counts | {p['from_memory_ms']:.3f} |",
                  "| from the files, one after the other (`open_planes(verify=False)` ×2: the previous path) | "
                  f"{p['files_sequential_unverified_ms']:.3f} |",
                  f"| **from the files, pipelined, checksums off** (`open_many(verify=False)`) | **{p['files_unverified_ms']:.3f}** |",
                  "| from the files, pipelined, every checksum hashed on each call (hashes in worker threads) | "
                  f"{p['files_verified_cold_ms']:.3f} |",
                  "| **from the files, every checksum, files verified earlier in this process** (`compeft.ops.similarity`) "
                  f"| **{p['files_verified_ms']:.3f}** |",
                  f"| (piece) both files read into pinned memory, in worker threads | {p['read_both_ms']:.3f} |",
                  f"| (piece) sha256 of one file, one core (CPU time) | {p['sha256_one_file_cpu_ms']:.3f} |",
                  "", f"cosine {p['cosine']:.6f} (dense bf16 anchor {p['dense_cosine_bf16']:.6f})", ""]
        for label, text in p.get("profile", {}).items():
            lines += [f"Profile, 5 pipelined calls, {label}:", "", "```", text.strip(), "```", ""]
    for t in results.get("top", []):
        lines += [f"Top-10 among {t['n']:,} resident ({t['bank_gb']:.1f} GB of planes): **{t['top10_ms']:.2f} ms**", ""]
    s = results.get("search")
    if s:
        lines += [f"Registry search recall: {s['n']:,} synthetic artifacts (d = {s['d']:,}, k = {s['density']}), "
                  f"{s['queries']} queries, shortlist {s['shortlist']}: recall@10 **{s['recall_at_10']:.3f}** (min "
                  f"{s['recall_min']:.1f}); sketch stage {s['sketch_stage_ms']:.2f} ms per query", ""]
    r = results.get("rerank")
    if r:
        lines += [f"One registry query among {r['signatures']:,} (sketch stage + {r['shortlist']} candidates decoded "
                  f"from memory and compared exactly): **{r['total_ms']:.1f} ms**", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import sys

    parser = argparse.ArgumentParser(prog="python -m bench.ops_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shape", default="7B", choices=sorted(SHAPES))
    parser.add_argument("--density", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--bank", default="1000", help="comma-separated candidate counts for the top-10 timing")
    parser.add_argument("--search-n", type=int, default=10_000)
    parser.add_argument("--search-d", type=int, default=1 << 18)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--shortlist", type=int, default=50)
    parser.add_argument("--cpu-threads", type=int, default=1)
    parser.add_argument("--skip", default="", help="comma-separated sections to skip: pair,top,search,rerank")
    parser.add_argument("--tiny", action="store_true", help="small shapes and counts (smoke run)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/ops"))
    args = parser.parse_args(argv)
    if args.tiny:
        args.shape, args.bank, args.search_n, args.search_d, args.queries, args.repeats = "tiny", "50", 300, 1 << 14, 20, 3
    torch.set_num_threads(args.cpu_threads)
    device = torch.device(args.device)
    skip = set(filter(None, args.skip.split(",")))
    results: dict = {"device": str(device), "command": "python -m bench.ops_bench " + " ".join(argv or sys.argv[1:]),
                     "machine": machine_info(device), "shape": args.shape, "density": args.density}
    results["machine"].pop("command", None)
    if device.type == "cuda":
        results["machine"]["gpu"] = torch.cuda.get_device_name(device)
    with tempfile.TemporaryDirectory() as tmp:
        a, b = make_pair(args.shape, args.density, Path(tmp), "cuda" if device.type == "cuda" else "cpu")
        if "pair" not in skip:
            results["pair"] = pair_section(a, b, device, args.repeats)
            print(json.dumps(results["pair"]), flush=True)
        if "rerank" not in skip:
            results["rerank"] = rerank_section(a, args.shortlist, args.search_n, device, args.repeats)
            print(json.dumps(results["rerank"]), flush=True)
        words = math.ceil(SHAPES[args.shape].params / 64)
    if "top" not in skip:
        results["top"] = [top_section(int(n), words, device, args.repeats) for n in args.bank.split(",")]
        print(json.dumps(results["top"]), flush=True)
    if "search" not in skip:
        results["search"] = search_section(args.search_n, args.search_d, args.density, args.queries, args.shortlist,
                                           device)
        print(json.dumps(results["search"]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"ops_{device.type}" + ("_tiny" if args.tiny else "")
    (args.out / f"{stem}.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (args.out / f"{stem}.md").write_text(to_markdown(results))
    print(to_markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
