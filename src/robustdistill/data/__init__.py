"""Datasets as in-memory uint8 tensors: official-format readers, registry, subsets, augmentation, loader.

ds = data.load("cifar10", "train", data_dir="~/data")
loader = data.Loader(data.subset(ds, 5000), 128, augment=data.info("cifar10")["augment"])

Each reader module registers its datasets (`register_dataset(...)` next to the reader): importing
it, as this package does, is what puts them in the registry.
"""

from robustdistill.data.animal_mnist import read_animal_mnist
from robustdistill.data.augment import apply_crop_flip, random_crop_flip, sample_crop_flip
from robustdistill.data.cifar import read_cifar10, read_cifar100
from robustdistill.data.dataset import ArrayDataset, channel_stats
from robustdistill.data.digits import read_digits
from robustdistill.data.idx import read_idx, read_idx_images, read_idx_labels, read_mnist
from robustdistill.data.imagefolder import imagefolder_classes, read_imagefolder
from robustdistill.data.loader import Loader
from robustdistill.data.loading import info, load
from robustdistill.data.registry import DATASETS, DatasetSpec, available, get_spec, register_dataset
from robustdistill.data.roots import cache_dir, locate, search_dirs, source_files
from robustdistill.data.safe_pickle import safe_load_file, safe_loads
from robustdistill.data.stl10 import read_stl10
from robustdistill.data.subset import subset
from robustdistill.data.svhn import read_svhn
from robustdistill.data.synthetic import synthetic
from robustdistill.data.tiny_imagenet import read_tiny_imagenet, tiny_imagenet_classes
from robustdistill.data.validation import default_validation_size, split_validation

__all__ = [
    "DATASETS",
    "ArrayDataset",
    "DatasetSpec",
    "Loader",
    "apply_crop_flip",
    "available",
    "cache_dir",
    "channel_stats",
    "default_validation_size",
    "get_spec",
    "imagefolder_classes",
    "info",
    "load",
    "locate",
    "random_crop_flip",
    "read_animal_mnist",
    "read_cifar10",
    "read_cifar100",
    "read_digits",
    "read_idx",
    "read_idx_images",
    "read_idx_labels",
    "read_imagefolder",
    "read_mnist",
    "read_stl10",
    "read_svhn",
    "read_tiny_imagenet",
    "register_dataset",
    "safe_load_file",
    "safe_loads",
    "sample_crop_flip",
    "search_dirs",
    "source_files",
    "split_validation",
    "subset",
    "synthetic",
    "tiny_imagenet_classes",
]
