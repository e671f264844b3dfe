"""Datasets for the experiments (above the library line): IDX (MNIST, Fashion-MNIST),
CIFAR-10's binary batches, scikit-learn's digits, augmentation and a deterministic batch
loader. No torchvision needed."""

from .augment import color_jitter, normalize, random_crop, random_hflip
from .cifar10 import (
    CIFAR10_CLASSES,
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFARError,
    CIFARNotFoundError,
    download_cifar10,
    load_cifar10,
    locate_cifar10,
    read_cifar_batch,
    write_cifar_batch,
)
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
    "CIFAR10_CLASSES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFARError",
    "CIFARNotFoundError",
    "color_jitter",
    "download_cifar10",
    "load_cifar10",
    "locate_cifar10",
    "normalize",
    "random_hflip",
    "read_cifar_batch",
    "write_cifar_batch",
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
