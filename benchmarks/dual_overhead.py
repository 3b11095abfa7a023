"""Recording overhead: the same SGD training of the MNIST MLP with and without the dual recorder.

Runs are interleaved (plain, recorded fp32, recorded fp16, repeated ``--repeats`` times) in
one process so that they see the same machine load; the median per-step time of each is
reported with the ratio to plain training (goal: <= 1.3x). The recorded time includes
writing the shards (fsync) and resume checkpoints to disk. MNIST is read from ``--data-path``
(default ``$QIMIA_DATA_DIR/mnist.pkl.gz``, else ``data/mnist.pkl.gz``).

    python benchmarks/dual_overhead.py      # writes benchmarks/results/dual_overhead.{json,md}
    python benchmarks/dual_overhead.py --data digits --steps 10 --repeats 1 --hidden 64 64 \
        --out /tmp/dual_overhead            # a quick check (seconds), results elsewhere
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from qimia.data.image_tasks import index_batches, load_task
from qimia.dual.experiments.common import make_mlp
from qimia.dual.recorder import DualRecorder

RESULTS = Path(__file__).parent / "results"


def train(xtr: torch.Tensor, ytr: torch.Tensor, steps: int, batch: int, hidden: list[int],
          record: str | None, tmp: Path) -> float:
    """Seconds per step of ``steps`` SGD steps on ``xtr (N, 1, 28, 28)``, ``ytr (N,)`` (``record``:
    None, "float32" or "float16"); every run draws the same batches."""
    torch.manual_seed(0)
    model = make_mlp(784, hidden, 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rec = DualRecorder(model, opt, str(tmp / "store"), dtype=record, overwrite=True) if record else None
    batches = index_batches(len(ytr), batch, seed=0)
    t0 = time.perf_counter()
    for _ in range(steps):
        idx = next(batches)
        if rec is not None:
            rec.set_batch(idx, ytr[idx])
        loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    if rec is not None:
        rec.close()
    secs = (time.perf_counter() - t0) / steps
    shutil.rmtree(tmp / "store", ignore_errors=True)
    return secs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", choices=["mnist", "digits"], default="mnist")
    p.add_argument("--data-path", default=str(Path(os.environ.get("QIMIA_DATA_DIR", "data")) / "mnist.pkl.gz"),
                   help="mnist.pkl.gz (--data mnist)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--hidden", type=int, nargs="+", default=[800, 800])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(RESULTS / "dual_overhead"))
    a = p.parse_args()
    (xtr, ytr), _ = load_task(a.data, a.data_path)                               # images (N, 1, 28, 28)
    tmp = Path(tempfile.mkdtemp(prefix="dual_overhead_"))
    times: dict[str, list[float]] = {"plain": [], "recorded_fp32": [], "recorded_fp16": []}
    for _ in range(a.repeats):
        times["plain"].append(train(xtr, ytr, a.steps, a.batch_size, a.hidden, None, tmp))
        times["recorded_fp32"].append(train(xtr, ytr, a.steps, a.batch_size, a.hidden, "float32", tmp))
        times["recorded_fp16"].append(train(xtr, ytr, a.steps, a.batch_size, a.hidden, "float16", tmp))
    med = {k: statistics.median(v) for k, v in times.items()}
    res = {"config": vars(a), "torch_threads": torch.get_num_threads(), "sec_per_step": times,
           "median_sec_per_step": med,
           "ratio_fp32": med["recorded_fp32"] / med["plain"], "ratio_fp16": med["recorded_fp16"] / med["plain"]}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1))
    md = [f"# Recording overhead (MLP 784-{'-'.join(map(str, a.hidden))}-10, batch {a.batch_size}, {a.steps} steps "
          f"x {a.repeats} interleaved repeats, {torch.get_num_threads()} torch thread(s), data={a.data})", "",
          f"Command: `python benchmarks/dual_overhead.py {' '.join(sys.argv[1:])}`", "",
          "| run | median ms / step | ratio to plain |", "|---|---|---|"]
    md += [f"| {k} | {1000 * v:.1f} | {v / med['plain']:.2f}x |" for k, v in med.items()]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
