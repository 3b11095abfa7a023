from __future__ import annotations

import json

import pytest
import torch

from qimia.attention.ram import RAMConfig, RecurrentAttentionModel
from qimia.cli import main
from qimia.training.ram import RAMModule


def _module() -> RAMModule:
    torch.manual_seed(0)
    net = RecurrentAttentionModel(RAMConfig(patch=4, scales=1, glimpse_hidden=8, glimpse_size=8, hidden=8, glimpses=3))
    return RAMModule(net, eval_seed=5, optimizer=torch.optim.Adam)


def test_evaluation_restarts_its_first_locations_every_epoch():
    module, images = _module(), torch.rand(4, 1, 8, 8)
    module.on_validation_epoch_start()
    logits, locations = module.classify(images)
    drawn_on = module.classify(images)[1]
    module.on_test_epoch_start()
    again, locations_again = module.classify(images)
    assert not torch.equal(locations[:, 0], drawn_on[:, 0])  # the generator moves on within an evaluation
    torch.testing.assert_close(again, logits, rtol=0, atol=0)  # ... and restarts at eval_seed
    torch.testing.assert_close(locations_again, locations, rtol=0, atol=0)


def test_training_step_is_the_hybrid_loss_with_gradients_for_every_part():
    module, images, labels = _module(), torch.rand(6, 1, 8, 8), torch.randint(0, 10, (6,))
    with pytest.warns(UserWarning, match="self.log"):  # no trainer attached
        loss = module.step((images, labels), "train")
    loss.backward()
    for part in ("classifier", "location_net", "baseline_net", "core_h"):
        assert getattr(module.net, part).weight.grad.abs().sum() > 0


def test_ram_learns_digits_clearly_above_chance(tmp_path):
    """Four epochs on scikit-learn's digits: the policy-mean test error falls well below chance (0.9)."""
    assert main(["memory", "ram", "ram_experiment=digits", "trainer.max_epochs=4", "threads=1", "logger=[csv]",
                 "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp_path}"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["test"]["test/error"] < 0.65
    assert results["best_val_error"] == min(row["val/error"] for row in results["curve"])
