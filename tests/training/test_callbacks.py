import random

import numpy as np
import torch

from qimia.training import ClassificationModule, FitClock, RNGState, Throughput
from qimia.training.callbacks import batch_items


def test_rng_state_roundtrip_and_weights_only_loadable(tmp_path):
    cb = RNGState()
    state = cb.state_dict()
    torch.save(state, tmp_path / "s.pt")
    expected = (random.random(), np.random.rand(), torch.rand(3))
    loaded = torch.load(tmp_path / "s.pt", weights_only=True)  # no pickled numpy/functools objects
    cb.load_state_dict(loaded)
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert expected[0] == again[0] and expected[1] == again[1] and torch.equal(expected[2], again[2])


def test_throughput_counts_items(adam, image_loader, trainer_factory, tiny_classifier):
    meter = Throughput("samples", warmup=1)
    module = ClassificationModule(tiny_classifier(), num_classes=3, optimizer=adam)
    trainer_factory(max_epochs=2, callbacks=[meter]).fit(module, image_loader)
    assert meter.steps == 6 and meter.items == [8] * 5
    assert meter.per_second == 8 / sorted(meter.seconds)[2]  # median step time
    assert batch_items((torch.zeros(4, 16, dtype=torch.long),), "tokens") == 64


def test_fit_clock_adds_the_seconds_of_the_parts_before_a_resume(adam, image_loader, trainer_factory, tiny_classifier):
    first = FitClock()
    module = ClassificationModule(tiny_classifier(), num_classes=3, optimizer=adam)
    trainer_factory(max_epochs=1, callbacks=[first]).fit(module, image_loader)
    part = first.seconds
    assert part > 0 and first.state_dict() == {"seconds": part}  # stopped at the fit's end
    resumed = FitClock()
    resumed.load_state_dict({"seconds": part + 100.0})  # a checkpoint of an earlier part that took 100 s more
    assert resumed.seconds == part + 100.0  # before its fit starts: the earlier parts only
    trainer_factory(max_epochs=1, callbacks=[resumed]).fit(module, image_loader)
    assert part + 100.0 < resumed.seconds < part + 100.0 + 60.0
