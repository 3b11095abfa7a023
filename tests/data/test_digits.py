import pytest

from qimia.data import DigitsDataModule


def test_digits_splits_shapes_and_normalisation():
    dm = DigitsDataModule(batch_size=32)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (1257, 270, 270)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (32, 1, 8, 8) and y.shape == (32,)
    train_x = dm.train_set.tensors[0]
    assert abs(train_x.mean().item()) < 1e-5 and abs(train_x.std().item() - 1) < 1e-3
    assert dm.net_kwargs == {"num_classes": 10, "in_chans": 1}
    assert dm.task_kwargs == {"num_classes": 10}


def test_digits_raw_images_in_unit_range_and_fixed_split():
    a, b = DigitsDataModule(normalize=False, seed=0), DigitsDataModule(normalize=False, seed=5)
    a.setup(), b.setup()
    assert a.train_set.tensors[0].min() >= 0 and a.train_set.tensors[0].max() <= 1
    # the run seed shuffles training batches but never changes the split
    assert (a.test_set.tensors[1] == b.test_set.tensors[1]).all()


def test_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size"):
        DigitsDataModule(batch_size=0)
