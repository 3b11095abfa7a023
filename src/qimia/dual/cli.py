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
    p.add_argument("--test-subset", type=int, default=500, help="Table 1 on this many fixed test examples (0=all)")
    p.add_argument("--scores", nargs="+", choices=["contribution", "key"], default=["contribution", "key"])
    p.add_argument("--device", default="cpu", help="device for scoring (cpu or cuda)")
    p.add_argument("--figures", type=int, default=2, help="number of test examples to plot")
    p.add_argument("--store-dir", default="runs/dual-mnist", help="where the per-seed stores are written")
    p.add_argument("--keep-stores", action="store_true", help="keep the stores (several GB each at full size)")
    p.add_argument("--out", default="reports/dual/mnist")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--report-only", action="store_true",
                   help="only rewrite OUT/table1.md (and the aggregate in OUT/table1.json) from OUT/table1.json")
    p.set_defaults(func=_run_mnist)


def _run_mnist(a: argparse.Namespace) -> int:
    from qimia.dual.experiments.mnist import MnistConfig, rewrite_summary, run

    if a.report_only:
        rewrite_summary(a.out)
        print(open(f"{a.out}/table1.md").read())
        return 0
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


def _add_multitask(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("multitask", help="two tasks (joint or continual): task shares and masking",
                       description="Train on MNIST + a second task with 10 shared outputs, jointly or one after the "
                                   "other, then measure per-task attention shares and the accuracy of the model "
                                   "rebuilt with one task's slots masked out.")
    p.add_argument("--mode", choices=["continual", "joint"], default="continual")
    p.add_argument("--data", choices=["mnist", "digits"], default="mnist", help="task 0")
    p.add_argument("--task2", choices=["permuted", "fashion"], default="permuted",
                   help="task 1: MNIST with permuted pixels (local) or Fashion-MNIST (torchvision, --fashion-root)")
    p.add_argument("--fashion-root", default=None)
    p.add_argument("--mnist", default=None)
    p.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    p.add_argument("--steps-per-task", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test-subset", type=int, default=200, help="test examples per task for the shares")
    p.add_argument("--device", default="cpu")
    p.add_argument("--store-dir", default="runs/dual-multitask")
    p.add_argument("--out", default="reports/dual/multitask")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run_multitask)


def _run_multitask(a: argparse.Namespace) -> int:
    from qimia.dual.experiments.multitask import MultitaskConfig, run, to_markdown

    cfg = MultitaskConfig(mode=a.mode, data=a.data, task2=a.task2, fashion_root=a.fashion_root, mnist_path=a.mnist,
                          hidden=tuple(a.hidden), batch_size=a.batch_size, steps_per_task=a.steps_per_task, lr=a.lr,
                          momentum=a.momentum, weight_decay=a.weight_decay, seed=a.seed, test_subset=a.test_subset,
                          device=a.device, store_dir=a.store_dir, progress=not a.no_progress)
    print(to_markdown(run(cfg, a.out)))
    return 0


def _add_lm(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lm", help="LSTM language model: top training passages for prompts",
                       description="Train a character LSTM built from nn.Linear cells with recording, then report "
                                   "for each prompt the top training passages (with corpus positions) and the "
                                   "attention grouped by position in the training corpus.")
    p.add_argument("--text", default=None, help="local text file (default: stdlib docstrings)")
    p.add_argument("--dataset", choices=["stdlib", "wikitext2"], default="stdlib",
                   help="corpus when --text is not given (wikitext2 needs HF datasets and its cache)")
    p.add_argument("--max-chars", type=int, default=200_000)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--embed", type=int, default=32)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--lr", type=float, default=1.0)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prompt", action="append", default=None, help="prompt (repeatable)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--store-dir", default="runs/dual-lm")
    p.add_argument("--out", default="reports/dual/lm")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run_lm)


def _run_lm(a: argparse.Namespace) -> int:
    from qimia.dual.experiments.lstm_lm import LMConfig, run

    cfg = LMConfig(text=a.text, dataset=a.dataset, max_chars=a.max_chars, seq_len=a.seq_len,
                   batch_size=a.batch_size, steps=a.steps, embed=a.embed, hidden=a.hidden, lr=a.lr, clip=a.clip,
                   seed=a.seed, device=a.device, store_dir=a.store_dir, progress=not a.no_progress,
                   **({"prompts": tuple(a.prompt)} if a.prompt else {}))
    run(cfg, a.out)
    print(open(f"{a.out}/lm_report.md").read())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qimia dual", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_mnist, _add_multitask, _add_lm, _add_verify):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one sub-command; user errors (bad input, missing or corrupt files) exit with status 2."""
    from qimia.dual.errors import DualFormError

    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        return int(args.func(args) or 0)
    except (DualFormError, FileNotFoundError, ValueError) as exc:
        print(f"qimia dual {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
