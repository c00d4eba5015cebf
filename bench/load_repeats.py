"""Cold (load_bytes) and resident loads of one 65B-shape artifact, 40 repeats each, with the compeft of the checkout
given (to compare two trees on one machine, one process each):

    python3 bench/load_repeats.py CHECKOUT_DIR 0.1
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


def main(tree: str, density: float) -> None:
    sys.path.insert(0, tree)
    from bench.synth import SHAPES, lora_tensors, write_adapter_dir
    from compeft import api
    from compeft.container import container_path, read_bytes
    from compeft.fastload import ResidentArtifact, load_bytes

    dev = torch.device("cuda")
    with tempfile.TemporaryDirectory() as tmp:
        tensors = {n: t.cpu() for n, t in lora_tensors(SHAPES["65B"], seed=0, device=dev).items()}
        src = write_adapter_dir(Path(tmp) / "a", tensors, SHAPES["65B"])
        del tensors
        api.compress(src, Path(tmp) / "art", density=density, device="cuda")
        host = read_bytes(container_path(Path(tmp) / "art"), pin=True)
    art = ResidentArtifact(host, verify=False)
    figures = []
    for name, fn in (("cold", lambda: load_bytes(host, dev, verify=False)), ("resident", lambda: art.load(dev))):
        for _ in range(5):
            fn()
        times = []
        for _ in range(40):
            torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            times.append(1e3 * (time.perf_counter() - start))
        q1, _, q3 = statistics.quantiles(times, n=4)
        figures.append(f"{name} median {statistics.median(times):.2f} p25 {q1:.2f} p75 {q3:.2f} min {min(times):.2f} ms")
    print(tree, density, "; ".join(figures), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]))
