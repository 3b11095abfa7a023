"""Resident memory over training steps of a QIMIA LM on each depth memory: a leak shows as growth.

Each memory kind (``preallocated``, the default; ``autograd``; ``stacked``) trains the same
depth-8 component-wise QIMIA Transformer LM (d=64, 4 heads, batch 16 x 128 tokens, AdamW) for
``--steps`` steps in a fresh process, recording the peak resident set size (``ru_maxrss``) after
the first step and after the last. Steady state means the two agree up to allocator noise; the
preallocated memory once grew by ~30 MB per step here (its graph lived in a reference cycle).

    python benchmarks/depth_memory_growth.py                  # 40 steps per memory kind
    python benchmarks/depth_memory_growth.py --steps 200

Writes ``benchmarks/results/depth_memory_growth_cpu.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
KINDS = ("preallocated", "autograd", "stacked")


def measure(kind: str, steps: int) -> dict[str, float]:
    """In this process: the peak RSS (MB) after step 1 and after ``steps`` steps."""
    import resource

    import torch

    from qimia.layers import QIMIA
    from qimia.models import create_model

    torch.manual_seed(0)
    torch.set_num_threads(1)
    net = create_model("transformer_lm", vocab_size=100, block_size=128, dim=64, depth=8, heads=4, key_dim=16,
                       mixer="qimia", granularity="component")
    for module in net.modules():
        if isinstance(module, QIMIA):
            module.memory_kind = kind
    optimizer = torch.optim.AdamW(net.parameters())
    tokens = torch.randint(0, 100, (16, 128))
    peak = []
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(net(tokens).flatten(0, 1), tokens.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        peak.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"first_mb": peak[0], "last_mb": peak[-1], "growth_mb_per_step": (peak[-1] - peak[0]) / max(1, steps - 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--measure", choices=KINDS, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.steps)))
        return
    rows = {}
    for kind in KINDS:
        out = subprocess.run([sys.executable, __file__, "--measure", kind, "--steps", str(args.steps)],
                             check=True, capture_output=True, text=True).stdout
        rows[kind] = json.loads(out.strip().splitlines()[-1])
        print(kind, rows[kind], flush=True)
    RESULTS.mkdir(exist_ok=True)
    record = {"steps": args.steps, "machine": platform.platform(), "python": platform.python_version(), "rows": rows}
    (RESULTS / "depth_memory_growth_cpu.json").write_text(json.dumps(record, indent=1))
    lines = [f"# Peak RSS over {args.steps} training steps (depth-8 QIMIA LM, d=64, batch 16 x 128)", "",
             "| memory | after step 1 (MB) | after the last (MB) | growth (MB / step) |", "|---|---:|---:|---:|"]
    lines += [f"| {k} | {r['first_mb']:.0f} | {r['last_mb']:.0f} | {r['growth_mb_per_step']:.2f} |" for k, r in rows.items()]
    lines += ["", f"`python benchmarks/depth_memory_growth.py --steps {args.steps}`", ""]
    (RESULTS / "depth_memory_growth_cpu.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
