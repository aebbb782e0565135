"""Data: CIFAR-10 loading, a prefetching DataLoader, batched augmentations on the backend, and
fixed subsets and seeds, each rank's share in data-parallel training."""
from . import transforms
from .cifar import CIFAR10, CLASSES, DatasetError, default_cache_dir, download_cifar10
from .cifar import MEAN as CIFAR10_MEAN
from .cifar import STD as CIFAR10_STD
from .loader import DataLoader
from .sampling import DistributedSampler, derived_seed, fixed_subset

__all__ = ["CIFAR10", "CLASSES", "CIFAR10_MEAN", "CIFAR10_STD", "DatasetError", "DataLoader",
           "transforms", "default_cache_dir", "download_cifar10", "fixed_subset", "derived_seed",
           "DistributedSampler"]
