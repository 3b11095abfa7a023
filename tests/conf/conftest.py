from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def offline_data(tmp_path_factory):
    """Small generated stand-ins for the data sets that need a download or a path."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    splits = tuple((rng.random((k, 784), dtype=np.float32), rng.integers(0, 10, k)) for k in (64, 32, 32))
    with gzip.open(root / "mnist.pkl.gz", "wb") as f:
        pickle.dump(splits, f)
    for split in ("train", "val"):
        for cls in ("a", "b"):
            (root / "imagenet" / split / cls).mkdir(parents=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(root / "imagenet" / split / cls / f"{i}.png")
    (root / "wikitext").mkdir()
    text = "".join(f" = Section {i} = \n The {i}th article says hello world . \n" for i in range(300))
    for split in ("train", "valid", "test"):
        (root / "wikitext" / f"wiki.{split}.raw").write_text(text)
    return root
