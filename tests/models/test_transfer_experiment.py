"""``qimia transfer`` (:mod:`qimia.experiment.transfer`): a tiny run of the real config on a fake
MNIST, its outputs and numbers, a round trip through a run folder, the reused base, the CLI's errors
and a 2-seed sweep."""

from __future__ import annotations

import json
import statistics

import pytest
import torch

from qimia.cli import main
from qimia.data.mnist import MNISTDataModule
from qimia.data.subsets import LabelSubsetDataModule
from qimia.experiment.train import load_run

TINY = ["threads=1", "base.kwargs.width=4", "base.train_size=60", "base.test_size=30", "base.epochs=1",
        "target.train_size=30", "target.test_size=30", "trainer.max_epochs=1", "head.dim=8", "head.depth=1",
        "trainer.enable_progress_bar=false"]


def tiny(data, *extra: str) -> list[str]:
    return [f"data.path={data}", *TINY, *extra]


@pytest.fixture(scope="module")
def run(fake_mnist, tmp_path_factory):
    """One good run of two recipes (one reading the base's whole depth), two seeds."""
    out = tmp_path_factory.mktemp("transfer")
    code = main(["transfer", *tiny(fake_mnist, "seeds=2", "only=[linear_probe,qimia_transfer_head]"),
                 f"hydra.run.dir={out}"])
    assert code == 0
    return out


def test_a_run_writes_results_figure_and_a_lightning_run_folder_per_network(run):
    results = json.loads((run / "results.json").read_text())
    assert list(results["recipes"]) == ["linear_probe", "qimia_transfer_head"]
    assert 0.0 <= results["base"]["accuracy"] <= 1.0
    for label, entry in results["recipes"].items():
        assert entry["seeds"] == [0, 1] and all(0.0 <= a <= 1.0 for a in entry["accuracy"])
        assert entry["mean"] == pytest.approx(statistics.fmean(entry["accuracy"]))
        assert entry["std"] == pytest.approx(statistics.stdev(entry["accuracy"]))  # ddof=1
        for seed in (0, 1):
            folder = run / label / f"seed{seed}"
            assert (folder / "checkpoints" / "last.ckpt").exists() and (folder / "config.yaml").exists()
            assert (folder / "net.yaml").exists()
            assert (folder / "csv" / "metrics.csv").exists()
    probe, qimia = (results["recipes"][name]["model"] for name in ("linear_probe", "qimia_transfer_head"))
    assert probe["depth"] == 0 and qimia["depth"] == 1  # the name's fixed kwarg wins over head.depth
    trainable = {label: e["trainable"] for label, e in results["recipes"].items()}
    assert 0 < trainable["linear_probe"] < trainable["qimia_transfer_head"]
    assert (run / "base" / "checkpoints" / "last.ckpt").exists()
    assert (run / "accuracy.png").stat().st_size > 0
    table = (run / "results.md").read_text()
    assert "| qimia_transfer_head |" in table and "Command: `qimia transfer" in table


def test_a_trained_recipe_is_rebuilt_from_its_run_folder_with_the_same_predictions(run, fake_mnist):
    results = json.loads((run / "results.json").read_text())
    net = load_run(run / "qimia_transfer_head" / "seed1")
    data = LabelSubsetDataModule(MNISTDataModule(path=str(fake_mnist)), [5, 6, 7, 8, 9], train_size=30,
                                 test_size=30, split_seed=1)
    data.setup("fit")
    images, labels = data.test_set.tensors
    with torch.no_grad():
        accuracy = (net(images).argmax(-1) == labels).float().mean().item()
    assert accuracy == pytest.approx(results["recipes"]["qimia_transfer_head"]["accuracy"][1], abs=1e-6)
    again = load_run(run / "qimia_transfer_head" / "seed1")
    with torch.no_grad():
        torch.testing.assert_close(net(images), again(images), rtol=0, atol=0)


def test_a_trained_base_is_reused_instead_of_trained_again(run, fake_mnist, tmp_path):
    checkpoint = run / "base" / "checkpoints" / "last.ckpt"
    code = main(["transfer", *tiny(fake_mnist, "seeds=1", "only=[linear_probe]", f"base.checkpoint={checkpoint}"),
                 f"hydra.run.dir={tmp_path}"])
    assert code == 0
    first, again = (json.loads((p / "results.json").read_text()) for p in (run, tmp_path))
    assert again["base"]["accuracy"] == pytest.approx(first["base"]["accuracy"])
    assert not (tmp_path / "base" / "checkpoints").exists()
    assert again["recipes"]["linear_probe"]["accuracy"] == [first["recipes"]["linear_probe"]["accuracy"][0]]


def test_a_typo_names_the_nearest_key(capsys):
    assert main(["transfer", "base.epoch=1"]) == 2
    assert "did you mean base.epochs" in capsys.readouterr().err


def test_a_wrong_type_names_the_key(capsys):
    assert main(["transfer", "seeds=abc"]) == 2
    err = capsys.readouterr().err
    assert "seeds='abc'" in err and "int" in err


def test_cfg_job_prints_the_config_and_runs_nothing(capsys, tmp_path):
    assert main(["transfer", "--cfg", "job", f"hydra.run.dir={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "recipes:" in out and "qimia_transfer_head" in out and "max_epochs: 10" in out
    assert not (tmp_path / "results.json").exists()


def test_bad_values_are_clean_errors(fake_mnist, tmp_path, capsys):
    assert main(["transfer", *tiny(fake_mnist, "only=[linear_prob]"), f"hydra.run.dir={tmp_path}"]) == 2
    assert "no recipes ['linear_prob']" in capsys.readouterr().err
    assert main(["transfer", *tiny(fake_mnist, "ckpt_path=some.ckpt"), f"hydra.run.dir={tmp_path}"]) == 2
    assert "ckpt_path=last" in capsys.readouterr().err
    assert main(["transfer", *TINY, f"data.path={tmp_path}/none.pkl.gz", f"hydra.run.dir={tmp_path}"]) == 2
    assert "no MNIST" in capsys.readouterr().err


def test_a_two_seed_sweep_makes_two_run_folders(fake_mnist, tmp_path):
    code = main(["transfer", "-m", "seed=0,1", *tiny(fake_mnist, "seeds=1", "only=[linear_probe]"),
                 f"hydra.sweep.dir={tmp_path}"])
    assert code == 0
    seeds = [json.loads((tmp_path / job / "results.json").read_text())["recipes"]["linear_probe"]["seeds"]
             for job in ("0", "1")]
    assert seeds == [[0], [1]]
