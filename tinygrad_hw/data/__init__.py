"""Data: CIFAR-10 loading, a prefetching DataLoader and batched augmentations on the backend."""
from . import transforms
from .cifar import CIFAR10, CLASSES, DatasetError, default_cache_dir, download_cifar10
from .loader import DataLoader

__all__ = ["CIFAR10", "CLASSES", "DatasetError", "DataLoader", "transforms", "default_cache_dir",
           "download_cifar10"]
