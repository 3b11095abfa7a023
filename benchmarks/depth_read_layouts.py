"""Why per-position QIMIA reads are a broadcast multiply-and-sum, not a batched matmul.

One component-wise read, ``out[b,t,h] = sum_i softmax_i(q . k_i)[b,t,h] v_i[b,t,h]`` over ``l`` slots,
forward + backward, three ways, timed round-robin in one process:

* ``bmm``: keys/values in attention layout ``(B, T, H, l, d)``, two batched matmuls;
* ``sdpa``: the same layout through ``F.scaled_dot_product_attention``;
* ``slot_major``: what ``qimia.layers.depth_reads.PositionReads`` does: logits precomputed at write
  time, values slot-major ``(l, B, T, H, D_h)``, broadcast multiply and sum over slots.

    python benchmarks/depth_read_layouts.py [--device cuda]

Writes ``benchmarks/results/depth_read_layouts_<device>.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=32)
    parser.add_argument("--slots", type=int, default=12)
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    B, T, H, D, L = args.batch, args.seq, args.heads, args.head_dim, args.slots
    torch.manual_seed(0)
    keys = torch.randn(B, T, H, L, D, device=device, requires_grad=True)  # (B, T, H, l, d_k)
    values = torch.randn(B, T, H, L, D, device=device, requires_grad=True)  # (B, T, H, l, D_h)
    query = torch.randn(H, D, device=device, requires_grad=True)
    logits = torch.randn(L, B, T, H, device=device, requires_grad=True)  # precomputed q . k_i
    slot_values = torch.randn(L, B, T, H, D, device=device, requires_grad=True)  # (l, B, T, H, D_h)
    scale = D**-0.5

    def bmm() -> torch.Tensor:
        w = ((keys @ query.unsqueeze(-1)).squeeze(-1) * scale).softmax(-1)  # (B, T, H, l)
        return (w.unsqueeze(-2) @ values).squeeze(-2)  # (B, T, H, D_h)

    def sdpa() -> torch.Tensor:
        q = query.unsqueeze(-2).expand(B * T, H, 1, D)  # (BT, H, 1, d_k)
        return F.scaled_dot_product_attention(q, keys.flatten(0, 1), values.flatten(0, 1)).view(B, T, H, D)

    def slot_major() -> torch.Tensor:
        w = logits.softmax(0)  # (l, B, T, H)
        return (w.unsqueeze(-1) * slot_values).sum(0)  # (B, T, H, D_h)

    variants = {"bmm": bmm, "sdpa": sdpa, "slot_major": slot_major}
    grad = torch.randn(B, T, H, D, device=device)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for repeat in range(args.repeats + 3):
        for name, fn in variants.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn().backward(grad)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if repeat >= 3:  # warm-up
                times[name].append(time.perf_counter() - start)
    base = statistics.median(times["slot_major"])
    rows = [
        {"variant": name, "ms": 1e3 * statistics.median(t), "ratio_to_slot_major": statistics.median(t) / base}
        for name, t in times.items()
    ]
    result = {"setup": vars(args) | {"threads": torch.get_num_threads(), "torch": torch.__version__}, "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    tag = "cuda" if device.type == "cuda" else "cpu"
    (RESULTS / f"depth_read_layouts_{tag}.json").write_text(json.dumps(result, indent=2))
    lines = [
        f"One component-wise read over l={L} slots, fwd+bwd (B={B}, T={T}, H={H}, D_h={D}; {tag}, "
        f"{torch.get_num_threads()} threads, median of {args.repeats}).",
        "",
        "| variant | ms | / slot_major |",
        "|---|---:|---:|",
    ] + [f"| {r['variant']} | {r['ms']:.2f} | {r['ratio_to_slot_major']:.2f}x |" for r in rows]
    table = "\n".join(lines) + "\n"
    (RESULTS / f"depth_read_layouts_{tag}.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
