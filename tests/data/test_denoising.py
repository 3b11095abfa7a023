import numpy as np
import pytest
import torch
from PIL import Image

from qimia.data import DenoisingDataModule, DigitsDataModule, GaussianNoise, NaturalImagesDataModule


def test_gaussian_noise_statistics_and_fixed_evaluation_noise():
    clean = torch.rand(200, 1, 16, 16)
    ds = GaussianNoise(list(zip(clean, range(200))), sigma=0.2, fixed=True, seed=7)
    noisy, target = ds[3]
    assert torch.equal(target, clean[3])
    assert torch.equal(ds[3][0], noisy)  # evaluation pairs never change
    residual = torch.stack([ds[i][0] - clean[i] for i in range(200)])
    assert abs(residual.std().item() - 0.2) < 0.005 and abs(residual.mean().item()) < 0.005
    train = GaussianNoise(list(zip(clean, range(200))), sigma=0.2, fixed=False)
    assert not torch.equal(train[3][0], train[3][0])  # fresh noise every draw


def test_denoising_module_over_digits():
    dm = DenoisingDataModule(DigitsDataModule(normalize=False), sigma=0.3, batch_size=16)
    dm.setup()
    noisy, clean = next(iter(dm.val_dataloader()))
    assert noisy.shape == clean.shape == (16, 1, 8, 8)
    assert clean.min() >= 0 and clean.max() <= 1
    assert dm.net_kwargs == {"in_chans": 1}
    with pytest.raises(ValueError, match="normalize=false"):
        DenoisingDataModule(DigitsDataModule(normalize=True))


def test_natural_images_from_folder(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(tmp_path / f"{i}.jpg")
    dm = NaturalImagesDataModule(root=str(tmp_path), patch_size=16, grayscale=False, patches_per_image=4, batch_size=4)
    dm.setup()
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 16, 16) and 0 <= x.min() and x.max() <= 1
    assert len(dm.val_set) == 2 * 3  # a 40x50 image holds a 2x3 grid of 16-pixel patches
    train, val, test = dm._splits()
    assert (len(train), len(val), len(test)) == (3, 1, 1)  # disjoint: no image in two splits
    ids = [{im.data_ptr() for im in split} for split in (train, val, test)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    wrapped = DenoisingDataModule(dm, sigma=0.1, batch_size=4)
    assert wrapped.net_kwargs == {"in_chans": 3}


def test_natural_images_default_sklearn_photographs():
    dm = NaturalImagesDataModule(patch_size=32, patches_per_image=2)
    dm.setup()
    assert len(dm.train_set) == 4 and dm.train_set[0][0].shape == (1, 32, 32)
    assert len(dm.test_set) > 0
