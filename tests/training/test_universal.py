from __future__ import annotations

import json
import warnings

import torch

from qimia.attention.universal import UniversalTransformer, UTConfig, ponder_loss
from qimia.cli import main
from qimia.data.sequence_tasks import sample_sequences
from qimia.training.universal import SequenceLabellingModule


def test_ponder_cost_is_added_with_weight_tau():
    torch.manual_seed(0)
    net = UniversalTransformer(UTConfig(vocab=6, d_model=8, num_heads=2, d_ff=8, max_steps=3))
    batch = sample_sequences("reverse", 4, 2, 5, 6, torch.Generator().manual_seed(0))
    losses = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # self.log without a trainer
        for tau in (0.0, 0.5):
            losses[tau] = SequenceLabellingModule(net, tau=tau, optimizer=torch.optim.Adam).step(batch, "train")
    _, info = net(batch[0], batch[2])
    torch.testing.assert_close(losses[0.5] - losses[0.0], ponder_loss(info, 0.5, batch[2].float()))


def test_ut_act_learns_reverse_clearly_above_chance(tmp_path):
    """150 steps on reversing 2-4 tokens of 4 symbols: token accuracy far above chance (0.25)."""
    assert main(["memory", "ut", "models=[ut_act]", "data.steps=150", "data.min_len=2", "data.max_len=4",
                 "data.test_len=5", "data.vocab=5", "data.eval_batches=2", "trainer.val_check_interval=50",
                 "net.d_model=16", "net.num_heads=2", "net.d_ff=32", "net.max_steps=2", "threads=1", "logger=[csv]",
                 "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp_path}"]) == 0
    summary = json.loads((tmp_path / "results.json").read_text())["summary"]["ut_act"]
    assert summary["in_range_token_acc"]["mean"] > 0.5
    assert 1 <= summary["in_range_ponder_steps"]["mean"] <= 2
