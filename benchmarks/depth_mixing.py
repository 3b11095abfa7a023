"""Step time and activation memory of every depth mixer against the residual stack.

All mixers wrap the *same* transformer blocks (``qimia.layers.TransformerBlock``); for each
depth they are timed round-robin in one process (forward + backward, median over repeats), so
the ratios to ``residual`` are measured side by side. Activation memory is what autograd saves
for backward (distinct storages, exact on any device); on CUDA the peak allocated memory of a
step is reported too.

    python benchmarks/depth_mixing.py                      # CPU: d=128, T=128, B=4
    python benchmarks/depth_mixing.py --device cuda        # GPU: d=512, T=1024, B=8, bf16

``qimia-layer`` pools keys over the whole sequence (one read per sample, the fused SDPA path);
``qimia-layer-causal`` pools with a running mean, as a causal LM must, which makes its reads
per position like ``qimia-component``. Timing does not depend on what the blocks compute, so
both are measured on the same causal blocks.

Writes ``benchmarks/results/depth_mixing_<device>[_<tag>].json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from qimia.layers import MIXERS, TransformerBlock, TransformerBlockConfig, make_depth_mixer
from qimia.params import count_parameters

RESULTS = Path(__file__).parent / "results"
GOALS = {  # at depth 24, relative to residual
    "qimia-layer": {"time": 1.10, "memory": 1.15},
    "qimia-component": {"time": 1.35},
}
VARIANTS = {
    "residual": ("residual", {}),
    "qimia-layer": ("qimia", {"granularity": "layer", "heads": 4}),
    "qimia-layer-causal": ("qimia", {"granularity": "layer", "causal": True, "heads": 4}),
    "qimia-component": ("qimia", {"granularity": "component", "heads": 4}),
    "attnres": ("attnres", {}),
    "dwa": ("dwa", {}),
}
assert {mixer for mixer, _ in VARIANTS.values()} == set(MIXERS)


def build(variant: str, depth: int, config: TransformerBlockConfig, device: torch.device) -> torch.nn.Module:
    mixer, kwargs = VARIANTS[variant]
    torch.manual_seed(0)
    blocks = [TransformerBlock(config) for _ in range(depth)]
    return make_depth_mixer(mixer, blocks, config.dim, **kwargs).to(device)


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


def measure(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if args.bf16 else None

    def autocast():
        return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    config = TransformerBlockConfig(dim=args.dim, heads=args.heads, causal=True)
    rows = []
    for depth in args.depths:
        nets = {name: build(name, depth, config, device) for name in VARIANTS}
        x = torch.randn(args.batch, args.seq, args.dim, device=device, requires_grad=True)
        times: dict[str, list[float]] = {name: [] for name in nets}
        for name, net in nets.items():  # warm-up
            for _ in range(args.warmup):
                step(net, x, autocast)
        sync()
        for _ in range(args.repeats):  # round-robin: every mixer sees the same machine state
            for name, net in nets.items():
                sync()
                start = time.perf_counter()
                step(net, x, autocast)
                sync()
                times[name].append(time.perf_counter() - start)
        for name, net in nets.items():
            peak = None
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
                step(net, x, autocast)
                sync()
                peak = torch.cuda.max_memory_allocated()
            rows.append(
                {
                    "depth": depth,
                    "variant": name,
                    "params": count_parameters(net),
                    "step_s": statistics.median(times[name]),
                    "saved_bytes": saved_bytes(net, x, autocast),
                    "peak_bytes": peak,
                }
            )
        print(f"depth {depth}: " + ", ".join(f"{r['variant']} {r['step_s'] * 1e3:.1f} ms" for r in rows[-len(nets):]))
    base = {(r["depth"]): r for r in rows if r["variant"] == "residual"}
    for r in rows:
        ref = base[r["depth"]]
        r["time_ratio"] = r["step_s"] / ref["step_s"]
        r["memory_ratio"] = r["saved_bytes"] / ref["saved_bytes"]
        r["peak_ratio"] = r["peak_bytes"] / ref["peak_bytes"] if r["peak_bytes"] else None
    return {
        "setup": {
            "device": torch.cuda.get_device_name(device) if cuda else platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "dim": args.dim,
            "heads": args.heads,
            "seq": args.seq,
            "batch": args.batch,
            "bf16": args.bf16,
            "repeats": args.repeats,
        },
        "goals_at_depth_24": GOALS,
        "rows": rows,
    }


def markdown(result: dict) -> str:
    s = result["setup"]
    lines = [
        f"Depth mixers vs residual, same `TransformerBlock`s (d={s['dim']}, heads={s['heads']}, "
        f"T={s['seq']}, B={s['batch']}, {'bf16 autocast' if s['bf16'] else 'fp32'}; {s['device']}, "
        f"{s['threads']} threads, torch {s['torch']}, median of {s['repeats']} round-robin steps).",
        "",
        "| depth | variant | params | fwd+bwd ms | time / residual | saved MiB | memory / residual |"
        + (" peak / residual |" if any(r["peak_ratio"] for r in result["rows"]) else ""),
        "|---:|---|---:|---:|---:|---:|---:|" + ("---:|" if any(r["peak_ratio"] for r in result["rows"]) else ""),
    ]
    for r in result["rows"]:
        line = (
            f"| {r['depth']} | {r['variant']} | {r['params']:,} | {r['step_s'] * 1e3:.1f} | {r['time_ratio']:.2f}x "
            f"| {r['saved_bytes'] / 2**20:.1f} | {r['memory_ratio']:.2f}x |"
        )
        if r["peak_ratio"]:
            line += f" {r['peak_ratio']:.2f}x |"
        lines.append(line)
    lines += ["", "Goals at depth 24: " + "; ".join(
        f"{v} time <= {g['time']}x" + (f", memory <= {g['memory']}x" if "memory" in g else "") for v, g in GOALS.items()
    ) + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--depths", type=int, nargs="+", default=[6, 12, 24, 48])
    parser.add_argument("--dim", type=int)
    parser.add_argument("--heads", type=int)
    parser.add_argument("--seq", type=int)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction)
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--tag", default="", help="suffix of the result files, e.g. d512")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    gpu = args.device.startswith("cuda")
    defaults = dict(dim=512, heads=8, seq=1024, batch=8, bf16=True) if gpu else dict(dim=128, heads=4, seq=128, batch=4, bf16=False)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    result = measure(args)
    RESULTS.mkdir(exist_ok=True)
    tag = ("cuda" if gpu else "cpu") + (f"_{args.tag}" if args.tag else "")
    (RESULTS / f"depth_mixing_{tag}.json").write_text(json.dumps(result, indent=2))
    table = markdown(result)
    (RESULTS / f"depth_mixing_{tag}.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
