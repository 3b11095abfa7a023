from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from qimia.data import DigitsDataModule
from qimia.data.translated_mnist import PlacedImages, TranslatedDataModule, place, random_offsets, translate


def test_translate_places_the_whole_digit_inside_the_canvas():
    digits = torch.rand(5, 1, 4, 4) + 0.1
    out = translate(digits, 10, torch.Generator().manual_seed(0))
    assert out.shape == (5, 1, 10, 10)
    torch.testing.assert_close(out.sum((1, 2, 3)), digits.sum((1, 2, 3)))  # every pixel landed, none twice
    with pytest.raises(ValueError, match="canvas 3 is smaller"):
        translate(digits, 3, torch.Generator())


def test_place_puts_the_top_left_corner_where_asked():
    digits = torch.arange(1.0, 5.0).view(1, 1, 2, 2).repeat(2, 1, 1, 1)
    out = place(digits, 5, torch.tensor([0, 3]), torch.tensor([1, 2]))
    torch.testing.assert_close(out[0, 0, 0:2, 1:3], digits[0, 0])
    torch.testing.assert_close(out[1, 0, 3:5, 2:4], digits[1, 0])
    assert out[0].sum() == out[1].sum() == digits[0].sum()


def test_offsets_cover_every_position():
    top, left = random_offsets(2000, 6, 4, 4, torch.Generator().manual_seed(0))
    assert set(top.tolist()) == set(left.tolist()) == {0, 1, 2}


def test_placed_images_are_fixed_by_the_generator():
    data = TensorDataset(torch.rand(6, 1, 3, 3), torch.arange(6))
    a, b = (PlacedImages(data, 8, torch.Generator().manual_seed(1)) for _ in range(2))
    assert len(a) == 6
    for i in range(6):
        torch.testing.assert_close(a[i][0], b[i][0])
        assert a[i][0].shape == (1, 8, 8) and a[i][1] == i


class _FakeTrainer:
    training, global_rank = True, 0

    def __init__(self, step: int) -> None:
        self.global_step = step


def test_training_batches_move_each_step_and_repeat_for_the_same_step():
    dm = TranslatedDataModule(DigitsDataModule(normalize=False, batch_size=16, seed=3), canvas=20)
    dm.setup()
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (16, 1, 8, 8)
    dm.trainer = _FakeTrainer(step=5)
    first, same_labels = dm.on_after_batch_transfer((images, labels), 0)
    again, _ = dm.on_after_batch_transfer((images, labels), 0)
    dm.trainer = _FakeTrainer(step=6)
    moved, _ = dm.on_after_batch_transfer((images, labels), 0)
    assert first.shape == (16, 1, 20, 20) and torch.equal(same_labels, labels)
    assert torch.equal(first, again) and not torch.equal(first, moved)
    val_images, _ = next(iter(dm.val_dataloader()))
    assert val_images.shape[-2:] == (20, 20)
    assert dm.net_kwargs == {"num_classes": 10, "in_chans": 1}


def test_a_trainer_sees_translated_training_and_validation_batches():
    import lightning as L

    from qimia.attention.ram import RAMConfig, RecurrentAttentionModel
    from qimia.training.ram import RAMModule

    shapes = []

    class Spy(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            shapes.append(("train", tuple(batch[0].shape)))

        def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
            shapes.append(("val", tuple(batch[0].shape)))

    dm = TranslatedDataModule(DigitsDataModule(normalize=False, batch_size=16), canvas=20)
    net = RecurrentAttentionModel(RAMConfig(patch=4, hidden=8, glimpse_hidden=8, glimpse_size=8, glimpses=2))
    trainer = L.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0, logger=False, accelerator="cpu",
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[Spy()])
    trainer.fit(RAMModule(net, optimizer=torch.optim.Adam), datamodule=dm)
    assert shapes == [("train", (16, 1, 20, 20)), ("train", (16, 1, 20, 20)), ("val", (16, 1, 20, 20))]
