"""NaN soak of the NTM and the DNC: long training on random inputs with random state resets,
counting non-finite values in the outputs, the loss and the gradients (issue 12). A script, not a
test: the default 10^5 steps per model take hours on a CPU.

Every step draws a random length ``1..--max-len`` and random inputs of a random kind (bits, a
standard normal scaled by 1, 10 or 100, all zeros, all ones), and with probability
``--carry`` continues from the previous step's final state (detached: truncated BPTT) instead of
the fresh initial state. Targets are random bits, the loss is bits per sequence, Adam updates the
model after a gradient-norm clip, as in ``qimia memory``. Nothing is skipped: a step with a
non-finite value is counted, and its update is not applied (so one fault does not poison the
counts of every later step).

    python benchmarks/memory_soak.py                       # 10^5 steps each for NTM and DNC
    python benchmarks/memory_soak.py --steps 2000          # a short soak
    python benchmarks/memory_soak.py --device cuda --out benchmarks/results/memory_soak.json
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from pathlib import Path
from typing import Any

import torch

from qimia.memory import create_memory_model
from qimia.training.sequence import sequence_metrics

INPUT_KINDS = ("bits", "normal", "normal_x10", "normal_x100", "zeros", "ones")


def detach(state: Any) -> Any:
    """A model state (nested tuples / NamedTuples of tensors) cut from the graph."""
    if isinstance(state, torch.Tensor):
        return state.detach()
    if isinstance(state, tuple):
        parts = [detach(s) for s in state]
        return type(state)(*parts) if hasattr(state, "_fields") else tuple(parts)
    return state


def random_inputs(kind: str, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    if kind == "bits":
        return torch.randint(0, 2, shape, generator=gen).float()
    if kind.startswith("normal"):
        scale = float(kind.partition("_x")[2] or 1)
        return torch.randn(shape, generator=gen) * scale
    return torch.full(shape, 0.0 if kind == "zeros" else 1.0)


def soak(name: str, steps: int, batch: int, max_len: int, carry: float, seed: int, device: str) -> dict[str, Any]:
    """Train model ``name`` for ``steps`` random steps; count the non-finite values."""
    torch.manual_seed(seed)
    rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
    width = 8
    model = create_memory_model(name, input_size=width + 1, output_size=width).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    counts = {"steps_with_nonfinite_output": 0, "steps_with_nonfinite_loss": 0, "steps_with_nonfinite_grad": 0,
              "nonfinite_output_values": 0, "nonfinite_grad_values": 0, "carried_states": 0}
    first_fault: dict[str, Any] | None = None
    state = None
    start = time.perf_counter()
    for step in range(steps):
        length, kind = rng.randint(1, max_len), rng.choice(INPUT_KINDS)
        inputs = random_inputs(kind, (batch, length, width + 1), gen).to(device)
        targets = torch.randint(0, 2, (batch, length, width), generator=gen).float().to(device)
        carried = state is not None and rng.random() < carry
        counts["carried_states"] += carried
        logits, final = model(inputs, detach(state) if carried else None)
        loss = sequence_metrics(logits, targets, torch.ones(batch, length, device=device)).bits_per_sequence
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        bad_out = int((~torch.isfinite(logits)).sum())
        bad_grad = sum(int((~torch.isfinite(p.grad)).sum()) for p in model.parameters() if p.grad is not None)
        bad_loss = not bool(torch.isfinite(loss))
        counts["nonfinite_output_values"] += bad_out
        counts["nonfinite_grad_values"] += bad_grad
        counts["steps_with_nonfinite_output"] += bad_out > 0
        counts["steps_with_nonfinite_grad"] += bad_grad > 0
        counts["steps_with_nonfinite_loss"] += bad_loss
        if bad_out or bad_grad or bad_loss:
            first_fault = first_fault or {"step": step, "input": kind, "length": length, "carried": carried}
            state = None  # the fault is counted; start the next step from a clean state
            continue
        optimizer.step()
        state = final
    return {"model": name, "steps": steps, "batch": batch, "max_len": max_len, "carry": carry, "seed": seed,
            "parameters": sum(p.numel() for p in model.parameters()), **counts, "first_fault": first_fault,
            "seconds": time.perf_counter() - start}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100_000, help="training steps per model (default 10^5)")
    ap.add_argument("--models", nargs="+", default=["ntm", "dnc"])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--max-len", type=int, default=20, help="sequence lengths are drawn from 1..max-len")
    ap.add_argument("--carry", type=float, default=0.5, help="probability of continuing from the last state")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default="benchmarks/results/memory_soak.json")
    args = ap.parse_args()
    if args.steps < 1:
        ap.error(f"--steps must be >= 1, got {args.steps}")
    torch.set_num_threads(args.threads)
    runs = [soak(m, args.steps, args.batch, args.max_len, args.carry, args.seed, args.device) for m in args.models]
    meta = {"device": args.device, "threads": args.threads, "torch": torch.__version__,
            "machine": platform.processor() or platform.machine(), "inputs": list(INPUT_KINDS)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "runs": runs}, indent=1))
    for r in runs:
        print(f"{r['model']}: {r['steps']} steps in {r['seconds']:.0f} s; steps with non-finite outputs "
              f"{r['steps_with_nonfinite_output']}, loss {r['steps_with_nonfinite_loss']}, gradients "
              f"{r['steps_with_nonfinite_grad']} (first: {r['first_fault']})")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
