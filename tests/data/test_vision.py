import numpy as np
import pytest
from PIL import Image

from qimia.data import ImageFolderDataModule


def _folder(root, splits=("train", "val"), classes=("cat", "dog"), per_class=3, size=(40, 36)):
    rng = np.random.default_rng(0)
    for split in splits:
        for cls in classes:
            (root / split / cls).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / cls / f"{i}.png")


def test_image_folder_module(tmp_path):
    _folder(tmp_path)
    dm = ImageFolderDataModule(root=str(tmp_path), image_size=32, batch_size=4)
    dm.setup()
    assert dm.net_kwargs == {"num_classes": 2, "in_chans": 3}
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 32, 32) and set(y.tolist()) <= {0, 1}
    assert dm.test_set is dm.val_set  # ImageNet convention without a test folder
    xv, _ = next(iter(dm.val_dataloader()))
    assert xv.shape == (4, 3, 32, 32)


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="train"):
        ImageFolderDataModule(root=str(tmp_path)).setup()
    _folder(tmp_path / "a", splits=("train",), classes=("x", "y"))
    _folder(tmp_path / "a", splits=("val",), classes=("x", "z"))
    with pytest.raises(ValueError, match="same class folders"):
        ImageFolderDataModule(root=str(tmp_path / "a")).setup()
