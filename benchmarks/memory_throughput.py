"""Training throughput (sequences / second) of NTM, DNC and the LSTM baseline at batch 1 and 32.

One training step = forward + backward + Adam step (timed here by hand, outside Lightning, so the
numbers are the models' own cost) on a copy-task batch (8-bit vectors, length
``--length``, so ``T = 2 * length + 1`` time steps). Every configuration is timed in the same
process, interleaved round by round, and the median over rounds is reported.

    python benchmarks/memory_throughput.py                 # writes benchmarks/results/memory_throughput.{json,md}
    python benchmarks/memory_throughput.py --device cuda
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from qimia.data.algorithmic import CopyTask
from qimia.memory import create_memory_model
from qimia.training.sequence import sequence_metrics

SIZES = {"input_size": 9, "output_size": 8}  # copy with 8-bit vectors
MODELS = {  # the packaged defaults (conf/memory/model), the DNC with 64 slots
    "ntm": lambda: create_memory_model("ntm", **SIZES),
    "dnc": lambda: create_memory_model("dnc", memory_slots=64, **SIZES),
    "lstm": lambda: create_memory_model("lstm", **SIZES),  # parameter-matched to the NTM
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--length", type=int, default=20)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3, help="training steps per timed round")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default="benchmarks/results/memory_throughput")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    task = CopyTask(width=8)
    setups = {}
    for name, make in MODELS.items():
        model = make().to(args.device)
        opt = torch.optim.Adam(model.parameters(), 1e-4)
        for b in args.batches:
            batch = task.sample(b, args.length, torch.Generator().manual_seed(0))
            setups[(name, b)] = (model, opt, [t.to(args.device) for t in batch[:3]])

    def step(model, opt, batch) -> None:
        x, y, m = batch
        loss = sequence_metrics(model(x)[0], y, m).bits_per_sequence
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for setup in setups.values():  # warm-up
        step(*setup)
    times: dict[tuple[str, int], list[float]] = {k: [] for k in setups}
    for _ in range(args.rounds):
        for key, setup in setups.items():
            if args.device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(*setup)
            if args.device == "cuda":
                torch.cuda.synchronize()
            times[key].append((time.perf_counter() - t0) / args.steps)
    rows = []
    for (name, b), ts in times.items():
        med = statistics.median(ts)
        rows.append({"model": name, "batch": b, "seconds_per_step": med, "sequences_per_second": b / med,
                     "parameters": sum(p.numel() for p in setups[(name, b)][0].parameters()),
                     "spread_seconds": [min(ts), max(ts)]})
    meta = {"length": args.length, "time_steps": 2 * args.length + 1, "threads": args.threads,
            "device": args.device, "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
            "rounds": args.rounds, "steps_per_round": args.steps}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": rows}, indent=1))
    lines = [f"# Memory-model training throughput (copy, length {args.length}, T = {2 * args.length + 1}, "
             f"{args.device}, {args.threads} thread(s), torch {torch.__version__})", "",
             "| model | params | batch | s / step (median) | sequences / s | throughput vs smallest batch |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        base = next(x for x in rows if x["model"] == r["model"] and x["batch"] == min(args.batches))
        speedup = r["sequences_per_second"] / base["sequences_per_second"]
        lines.append(f"| {r['model']} | {r['parameters']} | {r['batch']} | {r['seconds_per_step']:.4f} | "
                     f"{r['sequences_per_second']:.1f} | {speedup:.1f}x |")
    lines += ["", "Median over rounds, all configurations interleaved in one process. The machine is shared, so "
              "absolute numbers are noisy; the ratios within one run are the comparable quantity."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
