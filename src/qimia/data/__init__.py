"""Data modules (Lightning) and the data sets behind them.

Every module exposes ``net_kwargs`` (what the network must be built with) after ``setup()``;
text modules also ``task_kwargs`` (``chars_per_token``) for the language-modelling metrics; the
generated chunking task also ``monitor`` (answer accuracy).
"""

from qimia.data.base import EpochSeededSampler, SplitDataModule
from qimia.data.chunking import ChunkingDataModule, ChunkingTask
from qimia.data.denoising import DenoisingDataModule, GaussianNoise, NaturalImagesDataModule
from qimia.data.digits import DigitsDataModule
from qimia.data.mnist import MNISTDataModule, load_mnist_idx, load_mnist_pkl
from qimia.data.text import (PG19, BPETokenizer, CharTokenizer, PythonDocs, TextDataModule, TextFile, WikiText,
                             WordTokenizer)
from qimia.data.vision import CIFAR10DataModule, ImageFolderDataModule

__all__ = [
    "BPETokenizer",
    "CharTokenizer",
    "ChunkingDataModule",
    "ChunkingTask",
    "CIFAR10DataModule",
    "DenoisingDataModule",
    "DigitsDataModule",
    "EpochSeededSampler",
    "GaussianNoise",
    "ImageFolderDataModule",
    "MNISTDataModule",
    "NaturalImagesDataModule",
    "PG19",
    "PythonDocs",
    "SplitDataModule",
    "TextDataModule",
    "TextFile",
    "WikiText",
    "WordTokenizer",
    "load_mnist_idx",
    "load_mnist_pkl",
]
