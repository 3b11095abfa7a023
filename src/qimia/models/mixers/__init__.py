"""The depth mixers: one file per mixer, each declaring its :class:`MixerSpec`.

    build_mixer("qimia", blocks, dim, feature_dim=-1, qimia_heads=2)   # what every family calls
    mixer_names()                  # ['attnres', 'dwa', 'qimia', 'residual', 'rezero']
    mixer_spec("qimia").no_decay   # ('queries',)

Adding a mixer is one file in this package (its container, or an import of one from
:mod:`qimia.layers`, and a ``register_mixer(MixerSpec(...))`` call) plus its test: every module
of the package is imported here, so the new name reaches every family, ``qimia compare
compare.mixers=[...]``, the optimizer's parameter groups, the torchvision loader, attention
inspection and transfer taps. ``rezero.py`` is the worked example (docs/models.md).
"""

import importlib
import pkgutil

from qimia.models.mixers.spec import (
    FAMILY_OPTIONS,
    STRUCTURAL_OPTIONS,
    MixerSpec,
    build_mixer,
    container_classes,
    extra_parameters,
    mixer_names,
    mixer_spec,
    no_decay_parameters,
    register_mixer,
    width_multiple,
    writes_memory,
)

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "spec":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "FAMILY_OPTIONS",
    "STRUCTURAL_OPTIONS",
    "MixerSpec",
    "build_mixer",
    "container_classes",
    "extra_parameters",
    "mixer_names",
    "mixer_spec",
    "no_decay_parameters",
    "register_mixer",
    "width_multiple",
    "writes_memory",
]
