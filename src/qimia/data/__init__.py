"""Data modules (Lightning) and the data sets behind them.

Every module exposes ``net_kwargs`` (what the network must be built with) after ``setup()``;
text modules also ``task_kwargs`` (``chars_per_token``) for the language-modelling metrics.
"""

from qimia.data.base import EpochSeededSampler, SplitDataModule
from qimia.data.denoising import DenoisingDataModule, GaussianNoise, NaturalImagesDataModule
from qimia.data.digits import DigitsDataModule
from qimia.data.mnist import MNISTDataModule, load_mnist_idx, load_mnist_pkl
from qimia.data.text import BPETokenizer, CharTokenizer, PythonDocs, TextDataModule, TextFile, WikiText
from qimia.data.vision import CIFAR10DataModule, ImageFolderDataModule

__all__ = [
    "BPETokenizer",
    "CharTokenizer",
    "CIFAR10DataModule",
    "DenoisingDataModule",
    "DigitsDataModule",
    "EpochSeededSampler",
    "GaussianNoise",
    "ImageFolderDataModule",
    "MNISTDataModule",
    "NaturalImagesDataModule",
    "PythonDocs",
    "SplitDataModule",
    "TextDataModule",
    "TextFile",
    "WikiText",
    "load_mnist_idx",
    "load_mnist_pkl",
]
