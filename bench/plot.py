"""Plot load time vs adapter size (original dense vs ComPEFT-compressed, ours and the paper's Table 5).

    python -m bench.plot bench/results/gpu/results.json docs/benchmarks_load.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(src: str = "bench/results/gpu/results.json", dst: str = "docs/benchmarks_load.png") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bench.run import PAPER_LOAD_MS

    results = json.loads(Path(src).read_text())
    rows = [r for r in results["rows"] if r["shape"] in PAPER_LOAD_MS]
    shapes = sorted({r["shape"] for r in rows}, key=lambda s: next(r["params"] for r in rows if r["shape"] == s))
    size_gb = {s: 2 * next(r["params"] for r in rows if r["shape"] == s) / 1e9 for s in shapes}
    fig, ax = plt.subplots(figsize=(10.5, 4.8))
    xs = [size_gb[s] for s in shapes]
    dense = [1e3 * min(r["load"]["dense_s"] for r in rows if r["shape"] == s) for s in shapes]
    ax.plot(xs, dense, "o-", color="tab:red", label="original bf16, ours (pinned → GPU)")
    ax.plot(xs, [PAPER_LOAD_MS[s][0] for s in shapes], "o--", color="tab:red", alpha=0.45, label="original, paper Table 5")
    ax.plot(xs, [PAPER_LOAD_MS[s][1] for s in shapes], "s--", color="tab:blue", alpha=0.45, label="ComPEFT, paper Table 5")
    markers = {0.05: "v", 0.1: "s", 0.2: "^"}
    for k in sorted({r["density"] for r in rows}):
        case = {s: next(r["load"] for r in rows if r["shape"] == s and r["density"] == k) for s in shapes}
        if all("resident_load_s" in case[s] for s in shapes):
            ys = [1e3 * case[s]["resident_load_s"] for s in shapes]
            ax.plot(xs, ys, marker=markers.get(k, "s"), color="tab:green", label=f"ComPEFT golomb k={k}, ours, resident (checked once)")
        ys = [1e3 * case[s]["load_s"] for s in shapes]
        ax.plot(xs, ys, marker=markers.get(k, "s"), color="tab:blue", label=f"ComPEFT golomb k={k}, ours, cold (parse + check + decode)")
    bw = results.get("bandwidth", {})
    if bw:
        k0 = 0.1 if any(r["density"] == 0.1 for r in rows) else rows[0]["density"]
        lim = [
            1e3 * (r["compress"]["payload_bytes"] / (bw["h2d_GBps"] * 1e9) + 2 * r["compress"]["d"] / (bw["fill_GBps"] * 1e9))
            for s in shapes
            for r in rows
            if r["shape"] == s and r["density"] == k0
        ]
        ax.plot(xs, lim, ":", color="gray", label=f"limit k={k0}: payload over PCIe + bf16 write")
    ax.axhline(5.0, color="black", lw=0.8, ls="-.", alpha=0.6, label="issue 3 target: ≤ 5 ms (65B)")
    for s, x in zip(shapes, xs):
        ax.annotate(f"LLaMA-{s}", (x, 0.35), ha="center", fontsize=8, color="dimgray")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("dense LoRA r=64 adapter size, bf16 (GB)")
    ax.set_ylabel("load time to GPU (ms)")
    ax.set_title(f"Load time vs adapter size — {results['machine'].get('gpu', 'CPU')}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dst, dpi=130)
    print(f"wrote {dst}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
