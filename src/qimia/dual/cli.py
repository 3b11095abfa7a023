"""``qimia dual <command>``: experiments and tools of the dual form of gradient descent.

    qimia dual mnist      --seeds 0 1 2 3 4 --out reports/dual/mnist     # Table 1 + figures
    qimia dual multitask  --mode continual --out reports/dual/continual  # task shares + masking
    qimia dual lm         --text FILE --prompt "..." --out reports/dual/lm
    qimia dual verify     STORE                                         # checksums + exact reconstruction
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def _add_mnist(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mnist", help="single-task MNIST: record, Table 1, figures",
                       description="Train the 784-800-800-10 MLP with SGD while recording its dual-form memory, "
                                   "then run the Table 1 procedure and draw the paper's figures.")
    p.add_argument("--data", choices=["mnist", "digits"], default="mnist",
                   help="real MNIST (local pickle) or sklearn digits upsampled to 28x28 (quick)")
    p.add_argument("--mnist", default=None, help="path of mnist.pkl.gz (default ../shared/data or $QIMIA_MNIST)")
    p.add_argument("--hidden", type=int, nargs="+", default=[800, 800])
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--momentum", type=float, default=0.0)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32", help="store dtype")
    p.add_argument("--test-subset", type=int, default=1000, help="Table 1 on this many fixed test examples (0=all)")
    p.add_argument("--scores", nargs="+", choices=["contribution", "key"], default=["contribution", "key"])
    p.add_argument("--device", default="cpu", help="device for scoring (cpu or cuda)")
    p.add_argument("--figures", type=int, default=2, help="number of test examples to plot")
    p.add_argument("--store-dir", default="runs/dual-mnist", help="where the per-seed stores are written")
    p.add_argument("--keep-stores", action="store_true", help="keep the stores (several GB each at full size)")
    p.add_argument("--out", default="reports/dual/mnist")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run_mnist)


def _run_mnist(a: argparse.Namespace) -> int:
    from qimia.dual.experiments.mnist import MnistConfig, run

    cfg = MnistConfig(data=a.data, mnist_path=a.mnist, hidden=tuple(a.hidden), batch_size=a.batch_size,
                      steps=a.steps, lr=a.lr, momentum=a.momentum, weight_decay=a.weight_decay,
                      seeds=tuple(a.seeds), dtype=a.dtype, test_subset=a.test_subset, scores=tuple(a.scores),
                      device=a.device, figures=a.figures, store_dir=a.store_dir, keep_stores=a.keep_stores,
                      progress=not a.no_progress)
    run(cfg, a.out)
    print(open(f"{a.out}/table1.md").read())
    return 0


def _add_verify(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="check a store's checksums and its exact reconstruction",
                       description="Verify every shard checksum, then rebuild W_T of every layer from W0 and the "
                                   "memory and compare it with the weights in the store's last checkpoint.")
    p.add_argument("store")
    p.set_defaults(func=_run_verify)


def _run_verify(a: argparse.Namespace) -> int:
    from qimia.dual.reconstruct import reconstruct_layer
    from qimia.dual.store import DualStore

    store = DualStore.open(a.store, verify="full")
    report = {"steps": store.num_steps, "bytes": store.nbytes(), "layers": {}}
    if not store.keys_only:
        state = store.load_checkpoint()["model"]
        for name in store.layer_names:
            spec = store.layer(name)
            W, _ = reconstruct_layer(store, name)
            ref = state[spec.weight].double()
            report["layers"][name] = {"slots": store.num_slots(name),
                                      "rel_err_W": float((W - ref).norm() / ref.norm())}
    print(json.dumps(report, indent=1))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qimia dual", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_mnist(sub)
    _add_verify(sub)
    return parser


def _extra_commands():
    from qimia.dual.experiments import cli_multitask, cli_lm  # noqa: F401  (registered below)

    return [cli_multitask.add_parser, cli_lm.add_parser]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
