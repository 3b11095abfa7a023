from __future__ import annotations

import gzip
import json
import pickle

import numpy as np

from qimia.models.transfer_experiment import main


def fake_mnist(path, n: int = 200) -> None:
    rng = np.random.default_rng(0)

    def split():
        y = rng.integers(0, 10, n)
        x = rng.random((n, 784), dtype=np.float32) * 0.1
        x[np.arange(n), y * 70] = 1.0  # a class-dependent pixel, so there is something to learn
        return x, y

    with gzip.open(path, "wb") as f:
        pickle.dump((split(), split(), split()), f)


def test_every_recipe_runs_and_is_reported(tmp_path):
    data = tmp_path / "mnist.pkl.gz"
    fake_mnist(data)
    out = tmp_path / "out"
    args = ["--out", str(out), "--data", str(data), "--base-width", "4", "--base-train", "60", "--base-epochs", "1",
            "--train", "30", "--test", "30", "--epochs", "1", "--dim", "8", "--seeds", "2"]
    main(args)
    results = json.loads((out / "results.json").read_text())
    assert set(results["recipes"]) == {"linear_probe", "transfer_head", "transfer_head (matched)", "concat_transfer_head",
                                       "qimia_transfer_head", "attnres_transfer_head", "fine_tune"}
    for entry in results["recipes"].values():
        assert len(entry["accuracy"]) == 2 and 0.0 <= entry["mean"] <= 1.0 and entry["trainable"] > 0
    assert "| qimia_transfer_head |" in (out / "results.md").read_text()
    # --reuse-base loads the saved base instead of training it again.
    main([*args, "--reuse-base", "--seeds", "2"])
    again = json.loads((out / "results.json").read_text())
    assert again["base_accuracy"] == results["base_accuracy"]
