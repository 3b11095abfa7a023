import pytest
import torch

from qimia.data.base import EpochSeededSampler, split_indices


def test_sampler_depends_only_on_seed_and_epoch():
    data = list(range(50))
    a, b = EpochSeededSampler(data, seed=3), EpochSeededSampler(data, seed=3)
    torch.manual_seed(0)
    first = list(a)
    torch.manual_seed(123)  # the global RNG must not matter
    assert list(b) == first
    assert sorted(first) == data
    a.set_epoch(1)
    assert list(a) != first
    assert list(EpochSeededSampler(data, seed=4)) != first


def test_split_indices_partition_and_errors():
    parts = split_indices(100, (0.1, 0.2), split_seed=0)
    assert [len(p) for p in parts] == [10, 20, 70]
    assert sorted(torch.cat(parts).tolist()) == list(range(100))
    with pytest.raises(ValueError, match="fractions"):
        split_indices(10, (0.6, 0.5), split_seed=0)


def test_distributed_evaluation_counts_every_sample_once():
    from types import SimpleNamespace

    from qimia.data import DigitsDataModule

    dm = DigitsDataModule(batch_size=64)
    dm.setup("fit")
    n = len(dm.test_set)
    seen = []
    for rank in range(4):  # 4 processes: the test set does not split evenly
        dm.trainer = SimpleNamespace(world_size=4, global_rank=rank)
        seen += list(dm.test_dataloader().sampler)
    assert n % 4 != 0 and sorted(seen) == list(range(n))  # no padding, no repeats
    dm.trainer = None
    assert dm.test_dataloader().sampler.__class__.__name__ == "SequentialSampler"
