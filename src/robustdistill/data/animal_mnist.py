"""Animal-MNIST (pip package `animal_mnist`): 10,000 28x28 animal silhouettes, 1,000 in each of 10 classes.

The package ships two gzipped pickles, read here with the restricted unpickler without
importing the package's own loader (which imports TensorFlow); the dataset is registered at the end.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from robustdistill.data.idx import check_labels
from robustdistill.data.registry import SPLITS, register_dataset
from robustdistill.data.safe_pickle import safe_load_file
from robustdistill.data.splits import duplicate_groups, stratified_split
from robustdistill.errors import DataError

DATA_FILE = "animal_data_version_3.gz"
LABEL_FILE = "animal_label_version_3.gz"
# Names read off the images of each label; they are in alphabetical order, as labels usually are.
ANIMAL_CLASSES = ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]


def animal_mnist_dir() -> Path:
    """`animal_mnist/data/Animal_MNIST` of the installed package, found without importing it."""
    spec = importlib.util.find_spec("animal_mnist")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the animal-mnist data needs the 'animal_mnist' package; run `pip install animal-mnist`.")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "Animal_MNIST"


def read_animal_pool(folder: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """All 10,000 images `(N, 1, 28, 28)` uint8 and labels 0..9, before splitting."""
    folder = Path(folder) if folder is not None else animal_mnist_dir()
    data_path, label_path = folder / DATA_FILE, folder / LABEL_FILE
    images = safe_load_file(data_path)
    labels = safe_load_file(label_path)
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 3:
        raise DataError(f"{data_path} must hold a uint8 array (N, H, W), got {getattr(images, 'shape', images)!r}.")
    if not isinstance(labels, np.ndarray) or labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{label_path} must hold a 1-D integer array.")
    if labels.shape[0] != images.shape[0]:
        raise DataError(f"{label_path} has {labels.shape[0]} labels but {data_path} has {images.shape[0]} images.")
    labels = labels.astype(np.int64)
    check_labels(labels, 10, label_path)
    return images[:, None], labels


def read_animal_mnist(split: str, folder: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A split of Animal-MNIST: per class about 80% train / 20% test, by `stratified_split(seed=0)`.

    The pool holds 284 pairs of byte-identical images (same label); each pair is kept on one side
    of the split, so no test image has an exact copy in train.
    """
    images, labels = read_animal_pool(folder)
    keep = stratified_split(labels, split, groups=duplicate_groups(images))
    return np.ascontiguousarray(images[keep]), labels[keep]


def _read(located: None, split: str) -> tuple[np.ndarray, np.ndarray, None]:
    return (*read_animal_mnist(split), None)


register_dataset(
    "animal-mnist",
    num_classes=10,
    shape=(1, 28, 28),
    mean=(0.2726,),
    std=(0.4056,),
    classes=tuple(ANIMAL_CLASSES),
    default_eps=0.1,
    augment={"padding": 2, "flip": True},  # animals face both ways in the data
    files={split: "nothing (pip install animal-mnist)" for split in SPLITS},
    read=_read,
    sizes={"train": 8005, "test": 1995},
    aliases=("animal_mnist", "animalmnist"),
)
