from __future__ import annotations

import json

import pytest
import torch

from qimia.attention.ram import RAMConfig, RecurrentAttentionModel, ram_loss
from qimia.cli import main
from qimia.training.ram import RAMModule


def _module(location_hidden: int = 0, **kwargs) -> RAMModule:
    torch.manual_seed(0)
    net = RecurrentAttentionModel(RAMConfig(patch=4, scales=1, glimpse_hidden=8, glimpse_size=8, hidden=8, glimpses=3,
                                            location_hidden=location_hidden))
    return RAMModule(net, eval_seed=5, optimizer=torch.optim.Adam, **kwargs)


def test_monte_carlo_evaluation_averages_the_log_probabilities_of_sampled_trajectories():
    module, images = _module(mc_samples=3), torch.rand(4, 1, 8, 8)
    module.on_test_epoch_start()
    log_probs, locations = module.classify(images)
    assert log_probs.shape == (4, 10) and locations.shape == (4, 3, 2)
    # by hand: the same draws from a fresh evaluation generator, trajectory by trajectory
    generator = torch.Generator().manual_seed(5)
    repeated = images.repeat(3, 1, 1, 1)
    state = module.net.initial_state(repeated, generator)
    logits, _, _, paths = module.net(repeated, sample=True, state=state, generator=generator)
    expected = logits.log_softmax(-1).view(3, 4, 10).mean(0)
    torch.testing.assert_close(log_probs, expected, rtol=0, atol=0)
    assert not torch.equal(paths[:4, 1:], paths[4:8, 1:])  # the trajectories differ: sampled, not the mean
    module.on_test_epoch_start()
    torch.testing.assert_close(module.classify(images)[0], log_probs, rtol=0, atol=0)  # reproducible
    with pytest.raises(ValueError, match="mc_samples"):
        _module(mc_samples=-1)


def test_reinforce_weight_scales_only_the_reinforce_term():
    images, labels = torch.rand(6, 1, 8, 8), torch.randint(0, 10, (6,))
    totals = {}
    for weight in (1.0, 0.01):
        module = _module(reinforce_weight=weight)
        torch.manual_seed(1)
        with pytest.warns(UserWarning, match="self.log"):
            totals[weight] = module.step((images, labels), "train")
    net = _module().net
    torch.manual_seed(1)
    logits, log_probs, baselines, _ = net(images)
    loss = ram_loss(logits, labels, log_probs, baselines)
    torch.testing.assert_close(totals[1.0], loss.total)
    torch.testing.assert_close(totals[0.01], loss.classification + 0.01 * loss.reinforce + loss.baseline)


def test_the_location_network_may_have_a_hidden_layer():
    module = _module(location_hidden=5)
    assert [m.out_features for m in module.net.location_net if hasattr(m, "out_features")] == [5, 2]
    with pytest.warns(UserWarning, match="self.log"):
        module.step((torch.rand(6, 1, 8, 8), torch.randint(0, 10, (6,))), "train").backward()
    assert module.net.location_net[0].weight.grad.abs().sum() > 0


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
    assert [row["lr"] for row in results["curve"]] == [2e-3] * 4  # scheduler=none: the rate it trained with


def test_the_curve_keeps_each_epochs_rate_under_the_plateau_scheduler(tmp_path):
    """``scheduler=plateau`` halves the rate after every epoch whose val/error is no new best."""
    assert main(["memory", "ram", "ram_experiment=digits", "trainer.max_epochs=5", "threads=1", "logger=[]",
                 "scheduler=plateau", "scheduler.patience=0", "scheduler.factor=0.5", "optimizer.lr=0.5",
                 "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp_path}"]) == 0
    curve = json.loads((tmp_path / "results.json").read_text())["curve"]
    best, expected = float("inf"), [0.5]
    for row in curve[:-1]:
        improved = row["val/error"] < best * (1 - 1e-4)  # ReduceLROnPlateau's default relative threshold
        best = min(best, row["val/error"])
        expected.append(expected[-1] * (1.0 if improved else 0.5))
    assert [row["lr"] for row in curve] == pytest.approx(expected)
    assert expected[-1] < 0.5  # lr 0.5 diverges: some epoch was no new best
