"""Step time and activation memory of every depth mixer against the residual stack.

All mixers wrap the *same* transformer blocks (``qimia.layers.TransformerBlock``); for each
depth they are stepped round-robin in one process (forward + backward), and every round times
each mixer's step twice over: process CPU time and wall time. Each round gives one ratio to
``residual`` per mixer; the tables report the median and interquartile range (IQR) of these
per-round ratios, so a loaded machine widens the IQR instead of biasing one mixer. The machine's
load (``os.getloadavg``) before and after is part of the output. Activation memory is what
autograd saves for backward (distinct storages, exact on any device); on CUDA the peak allocated
memory of a step is reported too.

    python benchmarks/depth_mixing.py --threads 1 --depths 24        # CPU: d=128, T=128, B=4
    python benchmarks/depth_mixing.py --device cuda                  # GPU: d=512, T=1024, B=8, bf16
    python benchmarks/depth_mixing.py --threads 1 --depths 24 --key-dim 8 --tag kd8   # smaller QIMIA keys
    python benchmarks/depth_mixing.py --threads 1 --depths 24 --repeats 5 --profile   # where the time goes

``qimia-layer`` pools keys over the whole sequence (one read per sample); ``qimia-layer-causal``
pools with a running mean, as a causal LM must, which makes its reads per position like
``qimia-component``. Timing does not depend on what the blocks compute, so both are measured on
the same causal blocks. ``qimia-layer`` takes the default ``read_phase`` (two-phase reads of about
``sqrt(depth)`` readers for slots of 1 MiB or more, here d=512); ``qimia-layer-phase1`` and
``qimia-layer-phase5`` fix it to every reader alone and to phases of 5 readers (``sqrt(25)``). The
``*-autograd`` variants are the same networks on the previous depth memory (``memory="autograd"``:
autograd differentiates the reads, SDPA layer-wise reads), so one run gives the before/after table.

Writes ``benchmarks/results/depth_mixing_<device>[_<tag>].json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from qimia.layers import QIMIA, DepthWeightedAverage, ResidualStack, TransformerBlock, TransformerBlockConfig
from qimia.params import count_parameters

RESULTS = Path(__file__).parent / "results"
GOALS = {  # median CPU-time ratio to residual at depth 24, one thread (issue 11)
    128: {"qimia-layer": 1.05, "qimia-layer-causal": 1.10, "qimia-component": 1.15},
    512: {"qimia-layer": 1.03, "qimia-component": 1.08},
}
MEMORY_GOALS = {128: {"qimia-component": 1.10}}  # saved activations / residual
LAYER = {"granularity": "layer", "heads": 4}
CAUSAL = {"granularity": "layer", "causal": True, "heads": 4}
COMPONENT = {"granularity": "component", "heads": 4}
VARIANTS = {
    "residual": ("residual", {}),
    "qimia-layer": ("qimia", LAYER),
    "qimia-layer-causal": ("qimia", CAUSAL),
    "qimia-component": ("qimia", COMPONENT),
    "attnres": ("attnres", {}),
    "dwa": ("dwa", {}),
    "qimia-layer-phase1": ("qimia", LAYER | {"read_phase": 1}),
    "qimia-layer-phase5": ("qimia", LAYER | {"read_phase": 5}),
    "qimia-layer-autograd": ("qimia", LAYER | {"memory": "autograd"}),
    "qimia-layer-causal-autograd": ("qimia", CAUSAL | {"memory": "autograd"}),
    "qimia-component-autograd": ("qimia", COMPONENT | {"memory": "autograd"}),
    "attnres-autograd": ("attnres", {"memory": "autograd"}),
}
CONTAINERS = {  # the layers' own constructors (the model families pick them through qimia.models.mixers)
    "residual": lambda blocks, dim: ResidualStack(blocks),
    "dwa": lambda blocks, dim: DepthWeightedAverage(blocks),
    "qimia": lambda blocks, dim, **kw: QIMIA(blocks, dim, **kw),
    "attnres": lambda blocks, dim, **kw: QIMIA.attention_residuals(blocks, dim, **kw),
}


def build(variant: str, depth: int, config: TransformerBlockConfig, device: torch.device,
          key_dim: int | None = None) -> torch.nn.Module:
    """``variant`` around ``depth`` fresh blocks; ``key_dim`` sets QIMIA's per-head key size (default
    ``D / heads``: a ``D x D`` key projection per slot)."""
    mixer, kwargs = VARIANTS[variant]
    torch.manual_seed(0)
    blocks = [TransformerBlock(config) for _ in range(depth)]
    if key_dim is not None and mixer == "qimia":
        kwargs = kwargs | {"key_dim": key_dim}
    return CONTAINERS[mixer](blocks, config.dim, **kwargs).to(device)


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """(first quartile, median, third quartile)."""
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def saved_bytes(net: torch.nn.Module, x: torch.Tensor, autocast) -> int:
    """Bytes of the distinct storages autograd saves for backward in one forward pass."""
    storages: dict[tuple[str, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[(str(t.device), storage.data_ptr())] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast():
        net(x, return_attention=False).output.float().square().mean()
    return sum(storages.values())


def step(net: torch.nn.Module, x: torch.Tensor, autocast) -> None:
    net.zero_grad(set_to_none=True)
    with autocast():
        loss = net(x, return_attention=False).output.float().square().mean()
    loss.backward()


def autocast_factory(device: torch.device, bf16: bool):
    """A factory of the step's precision context: bf16 autocast, or nothing for fp32."""
    return (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else nullcontext


def measure(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    autocast = autocast_factory(device, args.bf16)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    config = TransformerBlockConfig(dim=args.dim, heads=args.heads, causal=True)
    load_before = os.getloadavg()
    rows = []
    for depth in args.depths:
        nets = {name: build(name, depth, config, device, args.key_dim) for name in args.variants}
        x = torch.randn(args.batch, args.seq, args.dim, device=device, requires_grad=True)
        cpu: dict[str, list[float]] = {name: [] for name in nets}
        wall: dict[str, list[float]] = {name: [] for name in nets}
        for net in nets.values():  # warm-up
            for _ in range(args.warmup):
                step(net, x, autocast)
        sync()
        for _ in range(args.repeats):  # round-robin: every mixer sees the same machine state
            for name, net in nets.items():
                sync()
                start_cpu, start_wall = time.process_time(), time.perf_counter()
                step(net, x, autocast)
                sync()
                cpu[name].append(time.process_time() - start_cpu)
                wall[name].append(time.perf_counter() - start_wall)
        for name, net in nets.items():
            peak = None
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
                step(net, x, autocast)
                sync()
                peak = torch.cuda.max_memory_allocated()
            row = {
                "depth": depth,
                "variant": name,
                "params": count_parameters(net),
                "cpu_ms": 1e3 * statistics.median(cpu[name]),
                "wall_ms": 1e3 * statistics.median(wall[name]),
                "saved_bytes": saved_bytes(net, x, autocast),
                "peak_bytes": peak,
            }
            for clock, times in (("cpu", cpu), ("wall", wall)):
                ratios = [t / r for t, r in zip(times[name], times["residual"])]  # one per round
                q1, median, q3 = quartiles(ratios)
                row[f"{clock}_ratio"], row[f"{clock}_ratio_iqr"] = median, [q1, q3]
            rows.append(row)
        print(f"depth {depth}: " + ", ".join(f"{r['variant']} {r['cpu_ratio']:.3f}x" for r in rows[-len(nets):]))
    base = {r["depth"]: r for r in rows if r["variant"] == "residual"}
    for r in rows:
        ref = base[r["depth"]]
        r["time_ratio"], r["time_ratio_iqr"] = r["cpu_ratio"], r["cpu_ratio_iqr"]
        r["memory_ratio"] = r["saved_bytes"] / ref["saved_bytes"]
        r["peak_ratio"] = r["peak_bytes"] / ref["peak_bytes"] if r["peak_bytes"] else None
    return {
        "setup": {
            "device": torch.cuda.get_device_name(device) if cuda else platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "dim": args.dim,
            "heads": args.heads,
            "key_dim": args.key_dim or args.dim // args.heads,
            "seq": args.seq,
            "batch": args.batch,
            "bf16": args.bf16,
            "repeats": args.repeats,
            "load_before": load_before,
            "load_after": os.getloadavg(),
            "cpu_count": os.cpu_count(),
        },
        "time_ratio": "median over rounds of (process CPU time / residual's in the same round)",
        "goals_at_depth_24": {"time": GOALS.get(args.dim, {}), "memory": MEMORY_GOALS.get(args.dim, {})},
        "rows": rows,
    }


def markdown(result: dict) -> str:
    s = result["setup"]
    peak = any(r["peak_ratio"] for r in result["rows"])
    load = lambda avg: "/".join(f"{v:.1f}" for v in avg)  # noqa: E731
    lines = [
        f"Depth mixers vs residual, same `TransformerBlock`s (d={s['dim']}, heads={s['heads']}, "
        f"QIMIA key dim {s['key_dim']} per head, "
        f"T={s['seq']}, B={s['batch']}, {'bf16 autocast' if s['bf16'] else 'fp32'}; {s['device']}, "
        f"{s['threads']} threads, torch {s['torch']}; {s['repeats']} round-robin rounds; load average "
        f"(1/5/15 min) {load(s['load_before'])} before, {load(s['load_after'])} after, on {s['cpu_count']} CPUs).",
        "Ratios are the median [interquartile range] over rounds of the step time / residual's step time in the "
        "same round.",
        "",
        "| depth | variant | params | CPU ms | CPU time / residual | wall ms | wall time / residual "
        "| saved MiB | memory / residual |" + (" peak / residual |" if peak else ""),
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if peak else ""),
    ]
    for r in result["rows"]:
        (c1, c3), (w1, w3) = r["cpu_ratio_iqr"], r["wall_ratio_iqr"]
        line = (
            f"| {r['depth']} | {r['variant']} | {r['params']:,} | {r['cpu_ms']:.1f} | {r['cpu_ratio']:.3f}x "
            f"[{c1:.3f}, {c3:.3f}] | {r['wall_ms']:.1f} | {r['wall_ratio']:.3f}x [{w1:.3f}, {w3:.3f}] "
            f"| {r['saved_bytes'] / 2**20:.1f} | {r['memory_ratio']:.2f}x |"
        )
        if peak:
            line += f" {r['peak_ratio']:.2f}x |" if r["peak_ratio"] else " |"
        lines.append(line)
    goals = result["goals_at_depth_24"]
    checks = []
    at24 = {r["variant"]: r for r in result["rows"] if r["depth"] == 24}
    for variant, goal in goals["time"].items():
        if variant in at24:
            got = at24[variant]["time_ratio"]
            checks.append(f"{variant} CPU time {got:.3f}x (goal <= {goal}x: {'met' if got <= goal else 'missed'})")
    for variant, goal in goals["memory"].items():
        if variant in at24:
            got = at24[variant]["memory_ratio"]
            checks.append(f"{variant} memory {got:.2f}x (goal <= {goal}x: {'met' if got <= goal else 'missed'})")
    if checks:
        lines += ["", "Goals at depth 24: " + "; ".join(checks) + "."]
    return "\n".join(lines) + "\n"


def profile(args: argparse.Namespace, top: int = 12) -> str:
    """Markdown: for each variant at the first depth, the ``top`` operators by self CPU time over
    ``args.repeats`` steps (torch.profiler), the difference to residual being what the mixer costs."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    device, depth = torch.device(args.device), args.depths[0]
    autocast = autocast_factory(device, args.bf16)
    config = TransformerBlockConfig(dim=args.dim, heads=args.heads, causal=True)
    x = torch.randn(args.batch, args.seq, args.dim, device=device, requires_grad=True)
    lines = [f"Operators by self CPU time, {args.repeats} steps each (d={args.dim}, heads={args.heads}, T={args.seq}, "
             f"B={args.batch}, {'bf16 autocast' if args.bf16 else 'fp32'}, depth {depth}, "
             f"{torch.get_num_threads()} threads; `--profile`).", ""]
    for name in args.variants:
        net = build(name, depth, config, device, args.key_dim)
        for _ in range(args.warmup):
            step(net, x, autocast)
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.repeats):
                step(net, x, autocast)
        events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        total = sum(e.self_cpu_time_total for e in events)
        lines += [f"### {name}: {total / 1e3 / args.repeats:.1f} ms of operator time per step", "",
                  "| operator | calls / step | self ms / step | share |", "|---|---:|---:|---:|"]
        lines += [f"| `{e.key}` | {e.count / args.repeats:.0f} | {e.self_cpu_time_total / 1e3 / args.repeats:.2f} | "
                  f"{e.self_cpu_time_total / total:.1%} |" for e in events[:top]]
        lines.append("")
    return "\n".join(lines)


def write_results(name: str, result: dict, table: str) -> None:
    """``benchmarks/results/<name>.json`` and ``.md``; the table is printed too."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2))
    (RESULTS / f"{name}.md").write_text(table)
    print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--depths", type=int, nargs="+", default=[6, 12, 24, 48])
    parser.add_argument("--dim", type=int)
    parser.add_argument("--heads", type=int)
    parser.add_argument("--key-dim", type=int, help="QIMIA's key size per head (default: dim / heads)")
    parser.add_argument("--seq", type=int)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction)
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=11, help="round-robin rounds")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--tag", default="", help="suffix of the result files, e.g. d512")
    parser.add_argument("--profile", action="store_true",
                        help="instead of timing: the top operators of each variant's step (torch.profiler), "
                             "written to depth_mixing_<device>[_<tag>]_profile.md")
    args = parser.parse_args()
    if "residual" not in args.variants:
        args.variants.insert(0, "residual")
    if args.threads:
        torch.set_num_threads(args.threads)
    gpu = args.device.startswith("cuda")
    defaults = dict(dim=512, heads=8, seq=1024, batch=8, bf16=True) if gpu else dict(dim=128, heads=4, seq=128, batch=4, bf16=False)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    tag = ("cuda" if gpu else "cpu") + (f"_{args.tag}" if args.tag else "")
    if args.profile:
        table = profile(args)
        (RESULTS / f"depth_mixing_{tag}_profile.md").write_text(table)
        print(table)
        return
    result = measure(args)
    write_results(f"depth_mixing_{tag}", result, markdown(result))


if __name__ == "__main__":
    main()
