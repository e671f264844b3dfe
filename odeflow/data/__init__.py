"""Datasets for the experiments (above the library line): IDX (MNIST, Fashion-MNIST),
scikit-learn's digits, seed A's augmentation and a deterministic batch loader. No
torchvision needed."""

from .augment import random_crop
from .datasets import DATASETS, ImageData, load_dataset
from .digits import load_digits
from .idx import IDXError, read_idx, write_idx
from .loader import BatchLoader
from .mnist import (
    FASHION_MNIST,
    IDX_DATASETS,
    MNIST,
    DataNotFoundError,
    IDXDataset,
    IDXFile,
    download,
    load_idx_dataset,
    locate,
)

__all__ = [
    "BatchLoader",
    "DATASETS",
    "DataNotFoundError",
    "FASHION_MNIST",
    "IDXDataset",
    "IDXError",
    "IDXFile",
    "IDX_DATASETS",
    "ImageData",
    "MNIST",
    "download",
    "load_dataset",
    "load_digits",
    "load_idx_dataset",
    "locate",
    "random_crop",
    "read_idx",
    "write_idx",
]
