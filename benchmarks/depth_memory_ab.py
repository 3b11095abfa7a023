"""The depth memory before and after a change, side by side in one process.

``benchmarks/depth_mixing.py`` compares mixers at one commit; this script compares one commit's QIMIA
with another's. ``--before REV`` exports that revision's ``src/qimia`` with ``git archive`` into a
temporary folder as the package ``qimia_before`` (its own ``qimia`` imports renamed), so both versions
are imported at once. Every network wraps the *same* ``TransformerBlock`` objects (the residual stack
too) and they are stepped round-robin (forward + backward, one thread); each round gives one ratio per
network to residual and one ratio after / before per granularity. The tables report the median and
interquartile range over rounds, with the machine's load average before and after.

    python benchmarks/depth_memory_ab.py --before 3eb5e91 --dim 128 --heads 4
    python benchmarks/depth_memory_ab.py --before 3eb5e91 --dim 512 --heads 8 --repeats 7
    python benchmarks/depth_memory_ab.py --before 3eb5e91 --dim 512 --blocks scale   # the container alone

Writes ``benchmarks/results/depth_memory_ab_cpu_d<dim>[_free].json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from depth_mixing import quartiles, write_results  # noqa: E402  (the main benchmark's statistics and files)

from qimia.layers import QIMIA, ResidualStack, TransformerBlock, TransformerBlockConfig  # noqa: E402

GRANULARITIES = {"layer": {}, "layer-causal": {"causal": True}, "component": {"granularity": "component"}}
IMPORT = re.compile(r"\b(from|import) qimia\b")


def import_revision(rev: str, root: Path) -> object:
    """``qimia.layers`` of git revision ``rev``, imported as ``qimia_before.layers``."""
    repo = Path(__file__).resolve().parents[1]
    archive = subprocess.run(["git", "-C", str(repo), "archive", rev, "src/qimia"], check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(root, filter="data")
    package = root / "qimia_before"
    (root / "src" / "qimia").rename(package)
    for path in package.rglob("*.py"):
        path.write_text(IMPORT.sub(r"\1 qimia_before", path.read_text()))
    sys.path.insert(0, str(root))
    return importlib.import_module("qimia_before.layers")


class Scale(torch.nn.Module):
    """A near-free block, ``x -> a x`` with one learned scalar: with it a step times the container alone."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


def step(net: torch.nn.Module, x: torch.Tensor) -> None:
    net.zero_grad(set_to_none=True)
    net(x, return_attention=False).output.square().mean().backward()


def measure(args: argparse.Namespace, before) -> dict:
    config = TransformerBlockConfig(dim=args.dim, heads=args.heads, causal=True)
    torch.manual_seed(0)
    blocks = [TransformerBlock(config) if args.blocks == "transformer" else Scale() for _ in range(args.depth)]
    nets: dict[str, torch.nn.Module] = {"residual": ResidualStack(blocks)}
    for name, kwargs in GRANULARITIES.items():
        for version, cls in (("before", before.QIMIA), ("after", QIMIA)):
            torch.manual_seed(0)
            nets[f"{name}-{version}"] = cls(blocks, args.dim, heads=4, **kwargs)
    x = torch.randn(args.batch, args.seq, args.dim, requires_grad=True)
    for net in nets.values():
        for _ in range(args.warmup):
            step(net, x)
    load_before = os.getloadavg()
    times: dict[str, list[float]] = {name: [] for name in nets}
    for _ in range(args.repeats):
        for name, net in nets.items():
            start = time.process_time()
            step(net, x)
            times[name].append(time.process_time() - start)
    rows = []
    for name in GRANULARITIES:
        row = {"variant": f"qimia-{name}"}
        for version in ("before", "after"):
            q1, median, q3 = quartiles([t / r for t, r in zip(times[f"{name}-{version}"], times["residual"])])
            row[f"{version}_ms"] = 1e3 * statistics.median(times[f"{name}-{version}"])
            row[f"{version}_ratio"], row[f"{version}_ratio_iqr"] = median, [q1, q3]
        q1, median, q3 = quartiles([a / b for a, b in zip(times[f"{name}-after"], times[f"{name}-before"])])
        row["after_over_before"], row["after_over_before_iqr"] = median, [q1, q3]
        rows.append(row)
    return {
        "setup": {"before": args.before, "after": "working tree", "blocks": args.blocks, "dim": args.dim, "heads": args.heads,
                  "depth": args.depth, "seq": args.seq, "batch": args.batch, "repeats": args.repeats,
                  "threads": torch.get_num_threads(), "torch": torch.__version__,
                  "device": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                  "load_before": load_before, "load_after": os.getloadavg(),
                  "residual_ms": 1e3 * statistics.median(times["residual"])},
        "time_ratio": "median over rounds of process CPU time / residual's (or / before's) in the same round",
        "rows": rows,
    }


def markdown(result: dict) -> str:
    s = result["setup"]
    load = lambda avg: "/".join(f"{v:.1f}" for v in avg)  # noqa: E731
    span = lambda r, key: f"{r[key]:.3f}x [{r[key + '_iqr'][0]:.3f}, {r[key + '_iqr'][1]:.3f}]"  # noqa: E731
    lines = [
        f"QIMIA at `{s['before']}` (before) and in the working tree (after), same "
        f"{'`TransformerBlock`s' if s['blocks'] == 'transformer' else 'near-free blocks (x -> a x)'}, one process "
        f"(d={s['dim']}, heads={s['heads']}, depth {s['depth']}, T={s['seq']}, B={s['batch']}, fp32; {s['device']}, "
        f"{s['threads']} thread(s), torch {s['torch']}; {s['repeats']} round-robin rounds; residual step "
        f"{s['residual_ms']:.1f} ms CPU time; load average {load(s['load_before'])} before, {load(s['load_after'])} "
        f"after, on {s['cpu_count']} CPUs).",
        "Ratios: median [interquartile range] over rounds of process CPU time.",
        "",
        "| variant | before ms | before / residual | after ms | after / residual | after / before |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(f"| {r['variant']} | {r['before_ms']:.1f} | {span(r, 'before_ratio')} | {r['after_ms']:.1f} | "
                     f"{span(r, 'after_ratio')} | {span(r, 'after_over_before')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="git revision to compare with (e.g. a commit or HEAD~1)")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4, help="attention heads of the blocks")
    parser.add_argument("--depth", type=int, default=24)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=11, help="round-robin rounds")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--blocks", choices=["transformer", "scale"], default="transformer",
                        help="scale: near-free blocks (x -> a x), so a step times the depth memory alone")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as root:
        result = measure(args, import_revision(args.before, Path(root)))
    write_results(f"depth_memory_ab_cpu_d{args.dim}" + ("_free" if args.blocks == "scale" else ""), result,
                  markdown(result))


if __name__ == "__main__":
    main()
