"""Dual form vs captum's TracInCP / TracInCPFast: wall time and agreement on the same MLP and data.

Both methods score the same test examples against the same training examples (the
``--n-train`` MNIST examples the MLP was trained on, each seen several times):

* dual (exact): for each training example, minus the first-order effect of all its recorded
  slots on the test loss, ``-sum_i g . e_i (c_i x_i.x + c^b_i)``, from the memory recorded
  during training (every SGD step counts, exact coefficients). Summed over examples it
  reproduces ``-g . (W_T x + b_T - a W_0 x - a b_0)`` exactly (checked below).
* TracInCPFast (final layer) and TracInCP (all layers), with ``--checkpoints`` evenly spaced
  checkpoints (the final model included), lr-weighted as captum does.

Agreement: Spearman rank correlation between the per-training-example scores of each test
example, mean +- std over test examples. MNIST is read from ``--data-path`` (default
``$QIMIA_DATA_DIR/mnist.pkl.gz``, else ``data/mnist.pkl.gz``). Run:

    python benchmarks/dual_tracin.py            # writes benchmarks/results/dual_tracin.{json,md}
    python benchmarks/dual_tracin.py --data digits --n-train 500 --n-test 10 --steps 20 --hidden 64 64 \
        --out /tmp/dual_tracin                  # a quick check (seconds), results elsewhere
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr

from qimia.data.image_tasks import index_batches, load_task
from qimia.dual.experiments.common import accuracy, make_mlp
from qimia.dual.explain import example_scores, layer_inputs_and_errors
from qimia.dual.recorder import DualRecorder
from qimia.dual.reconstruct import layer_coefficients

RESULTS = Path(__file__).parent / "results"


def spearman_rows(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    return [float(spearmanr(a[i].numpy(), b[i].numpy()).statistic) for i in range(a.shape[0])]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", choices=["mnist", "digits"], default="mnist")
    p.add_argument("--data-path", default=str(Path(os.environ.get("QIMIA_DATA_DIR", "data")) / "mnist.pkl.gz"),
                   help="mnist.pkl.gz (--data mnist)")
    p.add_argument("--n-train", type=int, default=5000)
    p.add_argument("--n-test", type=int, default=100)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--hidden", type=int, nargs="+", default=[800, 800])
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--checkpoints", type=int, default=1, help="TracIn checkpoints (evenly spaced, final included)")
    p.add_argument("--device", default="cpu", help="device for the dual scoring")
    p.add_argument("--skip-tracincp", action="store_true", help="skip the slow all-layer TracInCP")
    p.add_argument("--out", default=str(RESULTS / "dual_tracin"))
    a = p.parse_args()

    (xtr, ytr), (xte, yte) = load_task(a.data, a.data_path)                      # images (N, 1, 28, 28)
    xtr, ytr, xte, yte = xtr[: a.n_train], ytr[: a.n_train], xte[: a.n_test], yte[: a.n_test]
    if a.batch_size > len(ytr):
        p.error(f"--batch-size {a.batch_size} exceeds the {len(ytr)} training examples (--n-train).")
    torch.manual_seed(0)
    model = make_mlp(784, a.hidden, 10)
    opt = torch.optim.SGD(model.parameters(), lr=a.lr)
    tmp = Path(tempfile.mkdtemp(prefix="dual_tracin_"))
    rec = DualRecorder(model, opt, str(tmp / "store"))
    ckpt_steps = sorted({int(round(a.steps * (j + 1) / a.checkpoints)) for j in range(a.checkpoints)})
    ckpts = []
    batches = index_batches(len(ytr), a.batch_size, seed=0)
    for step in range(a.steps):
        idx = next(batches)
        rec.set_batch(idx, ytr[idx])
        loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step + 1 in ckpt_steps:
            ckpts.append(str(tmp / f"ckpt{step + 1}.pt"))
            torch.save(model.state_dict(), ckpts[-1])
    store = rec.close()
    layers = store.layer_names
    res: dict = {"config": vars(a), "test_acc": accuracy(model, xte, yte), "slots_per_layer": store.num_slots(0),
                 "params": sum(p.numel() for p in model.parameters())}

    # ---- dual: warm the page cache once, then time
    def dual(all_layers: bool) -> torch.Tensor:
        q, g = layer_inputs_and_errors(model, xte, yte, layers)
        names = layers if all_layers else layers[-1:]
        return sum(example_scores(store, n, q[n], g[n], len(xtr), device=a.device) for n in names)

    dual(True)
    timings = {}
    t0 = time.perf_counter()
    dual_last = dual(False)
    timings["dual_last_layer"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    dual_all = dual(True)
    timings["dual_all_layers"] = time.perf_counter() - t0

    # exactness of the decomposition (final layer)
    q, g = layer_inputs_and_errors(model, xte, yte, layers)
    name = layers[-1]
    spec, co, w0 = store.layer(name), layer_coefficients(store, name), store.w0()
    y_out = model.get_submodule(name)(q[name]).detach()
    base = co.a_w * q[name] @ w0[spec.weight].T + co.a_b * w0[spec.bias]
    res["dual_decomposition_max_abs_err"] = float((dual_last.sum(1) + (g[name] * (y_out - base)).sum(1)).abs().max())

    # ---- captum
    from captum.influence import TracInCP, TracInCPFast

    train_ds = torch.utils.data.TensorDataset(xtr, ytr)

    def load(m: torch.nn.Module, path: str) -> float:
        m.load_state_dict(torch.load(path))
        return a.lr

    loss_sum = torch.nn.CrossEntropyLoss(reduction="sum")
    fast = TracInCPFast(model, layers[-1], train_ds, ckpts, checkpoints_load_func=load, loss_fn=loss_sum,
                        batch_size=500, vectorize=False)
    fast.influence((xte, yte))                      # warm-up
    t0 = time.perf_counter()
    cap_fast = fast.influence((xte, yte))
    timings["captum_TracInCPFast"] = time.perf_counter() - t0
    res["spearman_dual_last_vs_TracInCPFast"] = spearman_rows(dual_last, cap_fast)
    if not a.skip_tracincp:
        try:
            full = TracInCP(model, train_ds, ckpts, checkpoints_load_func=load, loss_fn=loss_sum, batch_size=100,
                            sample_wise_grads_per_batch=True)
            t0 = time.perf_counter()
            cap_full = full.influence((xte, yte))
            timings["captum_TracInCP"] = time.perf_counter() - t0
            res["spearman_dual_all_vs_TracInCP"] = spearman_rows(dual_all, cap_full)
        except Exception as exc:  # report the exact failure rather than hiding it
            res["captum_TracInCP_error"] = f"{type(exc).__name__}: {exc}"
    model.load_state_dict(torch.load(ckpts[-1]))
    res["timings_s"] = timings
    res["speedup_last_layer"] = timings["captum_TracInCPFast"] / timings["dual_last_layer"]
    if "captum_TracInCP" in timings:
        res["speedup_all_layers"] = timings["captum_TracInCP"] / timings["dual_all_layers"]
    for k in [k for k in res if k.startswith("spearman")]:
        v = np.array(res[k])
        res[k] = {"mean": float(v.mean()), "std": float(v.std()), "n": len(v)}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1))
    md = [f"# Dual form vs captum TracIn ({a.data}, MLP 784-{'-'.join(map(str, a.hidden))}-10, {res['params']} "
          f"params, {a.n_train} train examples, {a.steps} SGD steps x {a.batch_size}, {a.n_test} test examples, "
          f"{a.checkpoints} TracIn checkpoint(s))", "",
          f"Command: `python benchmarks/dual_tracin.py {' '.join(sys.argv[1:])}`", "",
          "| method | wall time (s) |", "|---|---|"]
    md += [f"| {k} | {v:.3f} |" for k, v in timings.items()]
    md += ["", f"Speed-up of the dual form: final layer {res['speedup_last_layer']:.1f}x"
           + (f", all layers {res['speedup_all_layers']:.1f}x" if "speedup_all_layers" in res else ""), ""]
    for k in [k for k in res if k.startswith("spearman")]:
        md.append(f"- {k}: Spearman {res[k]['mean']:.3f} +- {res[k]['std']:.3f} over {res[k]['n']} test examples")
    if "captum_TracInCP_error" in res:
        md.append(f"- captum TracInCP failed: `{res['captum_TracInCP_error']}`")
    md.append(f"- dual decomposition exactness (final layer): max |sum of scores - (-g.(W_T x + b_T - a W0 x - a b0))| "
              f"= {res['dual_decomposition_max_abs_err']:.2e}")
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
