"""Scoring throughput vs the memory-bandwidth bound of streaming the keys.

Scoring ``M`` test queries against ``N`` stored keys must read every key once, so its time is
bounded below by ``key bytes / bandwidth``. This script measures, in the same run:

* the machine's memory bandwidth on a buffer as large as the keys (far larger than any cache),
  best of 3: copy traffic (``np.copyto`` reads and writes every byte, so ``2 x bytes / time``;
  write-allocate may add a third pass, so this is a lower estimate of the traffic) and read
  bandwidth (a memory-bound reduction: the faster of ``torch.sum`` and ``np.add.reduce``);
* the time of a full streamed explanation pass (top-10, per-class totals) of the
  :class:`~qimia.dual.explain.DualExplainer` over a store of ``N`` slots x ``d`` dims
  (page cache warm), for several ``M`` and both scores,

and reports key throughput (GB/s) and its fraction of the bound ``max(read, copy traffic)``
(scoring only reads the keys, so the bound is the fastest measured stream; goal on CPU: >= 50%
for small ``M``, where scoring is bandwidth-bound; large ``M`` becomes compute-bound).
With ``--device cuda`` the blocks are scored on the GPU and the bound is the measured
host-to-device copy bandwidth (keys stream from the host page cache).

    python benchmarks/dual_bandwidth.py [--device cuda]   # writes benchmarks/results/dual_bandwidth.{json,md}
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from qimia.dual.explain import DualExplainer
from qimia.dual.store import META_COLUMNS, DualStore, LayerSpec

RESULTS = Path(__file__).parent / "results"


def best_of(fn, n: int = 3) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return min(times)


def synthetic_store(root: Path, n: int, d: int, shard_rows: int = 65536) -> DualStore:
    """A store of ``n`` random slots with ``d``-dim keys and 10-dim values (one step per shard)."""
    spec = LayerSpec(name="fc", index=0, d_key=d, d_value=10, weight="fc.weight", bias="fc.bias")
    store = DualStore.create(root, [spec], w0={"fc.weight": torch.zeros(10, d), "fc.bias": torch.zeros(10)},
                             overwrite=True)
    rng = np.random.default_rng(0)
    group = {"lr": 0.1, "momentum": 0, "dampening": 0, "nesterov": False, "weight_decay": 0, "maximize": False}
    for step, lo in enumerate(range(0, n, shard_rows)):
        rows = min(shard_rows, n - lo)
        meta = np.zeros((rows, len(META_COLUMNS)), np.int64)
        meta[:, 0], meta[:, 1], meta[:, 2] = step, np.arange(lo, lo + rows), rng.integers(0, 10, rows)
        store.append([{"step": step, "groups": [group], "params": {"fc.weight": [0, 1.0], "fc.bias": [0, 1.0]}}],
                     {"fc": (rng.random((rows, d), dtype=np.float32), rng.standard_normal((rows, 10)).astype(np.float32),
                             meta)})
    return DualStore.open(root, verify="size")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--slots", type=int, default=262144)
    p.add_argument("--dim", type=int, default=800)
    p.add_argument("--queries", type=int, nargs="+", default=[1, 16, 128])
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=str(RESULTS / "dual_bandwidth"))
    a = p.parse_args()
    dev = torch.device(a.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but torch.cuda.is_available() is False on this machine.")
    tmp = Path(tempfile.mkdtemp(prefix="dual_bw_"))
    store = synthetic_store(tmp / "store", a.slots, a.dim)
    key_bytes = a.slots * a.dim * 4

    src = np.random.default_rng(1).random(a.slots * a.dim, dtype=np.float32)
    dst = np.empty_like(src)
    src_t = torch.from_numpy(src)
    copy_bw = 2 * key_bytes / best_of(lambda: np.copyto(dst, src))          # every byte read once, written once
    read_np = key_bytes / best_of(lambda: np.add.reduce(src))
    read_torch = key_bytes / best_of(lambda: src_t.sum())
    read_bw = max(read_np, read_torch)
    res: dict = {"config": vars(a), "torch_threads": torch.get_num_threads(), "key_bytes": key_bytes,
                 "copy_traffic_GBps": copy_bw / 1e9, "read_numpy_GBps": read_np / 1e9,
                 "read_torch_GBps": read_torch / 1e9, "read_GBps": read_bw / 1e9, "runs": []}
    bound = max(copy_bw, read_bw)
    res["bound_GBps"] = bound / 1e9
    if dev.type == "cuda":
        pinned = torch.from_numpy(src).pin_memory()
        res["h2d_GBps"] = key_bytes / best_of(lambda: pinned.to(dev, non_blocking=True)) / 1e9
        bound = res["h2d_GBps"] * 1e9
    del src, src_t, dst
    for score in ("key", "contribution"):
        ex = DualExplainer(store, 0, score=score, device=dev, max_block=1 << 24)
        for m in a.queries:
            q = torch.rand(m, a.dim)
            ex.explain(q, k=10, num_classes=10)                         # warm page cache / kernels
            t = best_of(lambda: ex.explain(q, k=10, num_classes=10))
            res["runs"].append({"score": score, "queries": m, "seconds": t, "key_GBps": key_bytes / t / 1e9,
                                "fraction_of_bound": key_bytes / t / bound})
    shutil.rmtree(tmp, ignore_errors=True)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1))
    bound_name = "host-to-device copy" if dev.type == "cuda" else "memory"
    md = [f"# Scoring throughput vs memory bandwidth ({a.slots} slots x {a.dim} dims fp32 = {key_bytes / 1e9:.2f} GB of "
          f"keys, device {a.device}, {torch.get_num_threads()} torch thread(s))", "",
          f"Command: `python benchmarks/dual_bandwidth.py {' '.join(sys.argv[1:])}`", "",
          f"Measured in the same run on a {key_bytes / 1e9:.2f} GB buffer: copy traffic {res['copy_traffic_GBps']:.2f} GB/s "
          f"(2 x bytes / time of np.copyto), read {res['read_torch_GBps']:.2f} GB/s (torch.sum) and "
          f"{res['read_numpy_GBps']:.2f} GB/s (np.add.reduce)"
          + (f", host-to-device {res['h2d_GBps']:.2f} GB/s" if "h2d_GBps" in res else "")
          + f". Bound used: {bound / 1e9:.2f} GB/s"
          + (" (host-to-device)." if dev.type == "cuda" else " (the fastest of these)."), "",
          f"| score | queries M | seconds per pass | key GB/s | fraction of {bound_name} bandwidth |", "|---|---|---|---|---|"]
    md += [f"| {r['score']}{' (approx.)' if r['score'] == 'key' else ''} | {r['queries']} | {r['seconds']:.3f} | "
           f"{r['key_GBps']:.2f} | {100 * r['fraction_of_bound']:.0f}% |" for r in res["runs"]]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
