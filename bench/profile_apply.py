"""Device time per kernel of apply_residual / revert_residual (in place, pristine kept) on a resident base, from
torch.profiler: where an apply's milliseconds go (issue 17).

    python -m bench.profile_apply BASE_DIR ARTIFACT [--device cuda] [--out table.txt]
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("base")
    p.add_argument("artifact")
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    import torch
    from torch.profiler import ProfilerActivity, profile

    from compeft.checkpoint import Checkpoint
    from compeft.serving import ResidentResidual, apply_residual, revert_residual

    c = Checkpoint(Path(args.base))
    weights = {n: c.get(n).to(args.device) for n in c.names()}
    resident = ResidentResidual(args.artifact, args.device)
    for _ in range(2):  # compiled and allocated
        revert_residual(weights, apply_residual(weights, resident))
    torch.cuda.synchronize()
    tables = []
    for pristine in (True, False):
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            applied = apply_residual(weights, resident, pristine=pristine)
            torch.cuda.synchronize()
            revert_residual(weights, applied)
            torch.cuda.synchronize()
        tables.append(f"pristine={pristine}: apply then revert\n"
                      + prof.key_averages().table(sort_by="cuda_time_total", row_limit=25))
    text = "\n\n".join(tables)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
