"""Each reader against small files written in the dataset's exact official on-disk format."""

from __future__ import annotations

import gzip
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from robustdistill.data import (
    read_cifar10,
    read_cifar100,
    read_idx_images,
    read_idx_labels,
    read_imagefolder,
    read_mnist,
    read_stl10,
    read_svhn,
    read_tiny_imagenet,
    safe_loads,
    tiny_imagenet_classes,
)
from robustdistill.errors import DataError

RNG = np.random.default_rng(1234)


def one_line_error(excinfo: pytest.ExceptionInfo[DataError], *needles: str | Path) -> str:
    message = str(excinfo.value)
    assert "\n" not in message, message
    for needle in needles:
        assert str(needle) in message, f"{needle!s} not in: {message}"
    return message


# --- IDX (MNIST, Fashion-MNIST) ---------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    magic = bytes([0, 0, 0x08, array.ndim])
    dims = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return magic + dims + array.astype(np.uint8).tobytes()


def write_idx_split(folder: Path, split: str, images: np.ndarray, labels: np.ndarray, gz: bool) -> None:
    prefix = "train" if split == "train" else "t10k"
    folder.mkdir(parents=True, exist_ok=True)
    for stem, array in ((f"{prefix}-images-idx3-ubyte", images), (f"{prefix}-labels-idx1-ubyte", labels)):
        blob = idx_bytes(array)
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(blob))
        else:
            (folder / stem).write_bytes(blob)


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("split", ["train", "test"])
def test_idx_reader_returns_exactly_what_was_written(tmp_path: Path, gz: bool, split: str) -> None:
    images = RNG.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labels = RNG.integers(0, 10, 7).astype(np.uint8)
    write_idx_split(tmp_path, split, images, labels, gz)
    got_images, got_labels = read_mnist(tmp_path, split)
    assert got_images.shape == (7, 1, 28, 28) and got_images.dtype == np.uint8
    np.testing.assert_array_equal(got_images[:, 0], images)
    assert got_labels.dtype == np.int64
    np.testing.assert_array_equal(got_labels, labels)


def test_idx_bad_magic_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(idx_bytes(np.zeros(5, dtype=np.uint8)))  # a labels file (magic 2049) in its place
    with pytest.raises(DataError) as excinfo:
        read_idx_images(path)
    one_line_error(excinfo, path, "magic")
    path.write_bytes(b"\x12\x34\x56\x78" + bytes(20))
    with pytest.raises(DataError) as excinfo:
        read_idx_images(path)
    one_line_error(excinfo, path)


def test_idx_truncated_raw_and_gz_name_the_file(tmp_path: Path) -> None:
    blob = idx_bytes(RNG.integers(0, 256, (4, 28, 28), dtype=np.uint8))
    raw = tmp_path / "t10k-images-idx3-ubyte"
    raw.write_bytes(blob[:-100])
    with pytest.raises(DataError) as excinfo:
        read_idx_images(raw)
    one_line_error(excinfo, raw, "truncated")
    gz = tmp_path / "t10k-images-idx3-ubyte.gz"
    gz.write_bytes(gzip.compress(blob)[:-40])
    with pytest.raises(DataError) as excinfo:
        read_idx_images(gz)
    one_line_error(excinfo, gz)
    header_only = tmp_path / "short"
    header_only.write_bytes(blob[:6])
    with pytest.raises(DataError) as excinfo:
        read_idx_images(header_only)
    one_line_error(excinfo, header_only)


def test_idx_labels_out_of_range_and_count_mismatch(tmp_path: Path) -> None:
    write_idx_split(tmp_path, "train", np.zeros((3, 28, 28), np.uint8), np.array([1, 12, 3], np.uint8), True)
    with pytest.raises(DataError) as excinfo:
        read_mnist(tmp_path, "train")
    one_line_error(excinfo, "train-labels-idx1-ubyte.gz", "12")
    write_idx_split(tmp_path, "train", np.zeros((3, 28, 28), np.uint8), np.array([1, 2], np.uint8), True)
    with pytest.raises(DataError) as excinfo:
        read_mnist(tmp_path, "train")
    one_line_error(excinfo, "train-labels-idx1-ubyte.gz")


def test_idx_missing_file_is_named(tmp_path: Path) -> None:
    write_idx_split(tmp_path, "train", np.zeros((3, 28, 28), np.uint8), np.zeros(3, np.uint8), True)
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as excinfo:
        read_mnist(tmp_path, "train")
    one_line_error(excinfo, "train-labels-idx1-ubyte")


# --- CIFAR python pickles ----------------------------------------------------------------------


def cifar_batch(n: int, label_key: str, num_classes: int, *, bytes_keys: bool) -> tuple[dict, np.ndarray, list]:
    images = RNG.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    labels = [int(v) for v in RNG.integers(0, num_classes, n)]
    # The official row layout: 1024 red, 1024 green, 1024 blue values, each row-major.
    data = np.stack([np.concatenate([img[c].ravel() for c in range(3)]) for img in images])
    batch = {"batch_label": "batch", "labels" if label_key == "labels" else label_key: labels, "data": data}
    if label_key == "fine_labels":
        batch["coarse_labels"] = [v // 5 for v in labels]
    batch["filenames"] = [f"img_{i}.png" for i in range(n)]
    if bytes_keys:  # what Python 2's cPickle wrote: str keys and values are bytes
        batch = {k.encode(): (v.encode() if isinstance(v, str) else v) for k, v in batch.items()}
        batch[b"filenames"] = [f.encode() for f in batch[b"filenames"]]
    return batch, images, labels


def write_cifar10(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    base = folder / "cifar-10-batches-py"
    base.mkdir(parents=True)
    expected: dict[str, list] = {"train": [[], []], "test": [[], []]}
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        batch, images, labels = cifar_batch(3, "labels", 10, bytes_keys=True)
        (base / name).write_bytes(pickle.dumps(batch, protocol=2))
        split = "test" if name == "test_batch" else "train"
        expected[split][0].append(images)
        expected[split][1].extend(labels)
    (base / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"airplane"] * 10}, protocol=2))
    return {s: (np.concatenate(v[0]), np.array(v[1])) for s, v in expected.items()}


def write_cifar100(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    base = folder / "cifar-100-python"
    base.mkdir(parents=True)
    expected = {}
    for name in ("train", "test"):
        batch, images, labels = cifar_batch(5, "fine_labels", 100, bytes_keys=False)
        (base / name).write_bytes(pickle.dumps(batch))  # a modern protocol and str keys also work
        expected[name] = (images, np.array(labels))
    return expected


def make_tar(folder: Path, member_root: str, archive: Path) -> None:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder / member_root, arcname=member_root)


@pytest.mark.parametrize("split", ["train", "test"])
def test_cifar10_from_folder_parent_and_archive(tmp_path: Path, split: str) -> None:
    expected = write_cifar10(tmp_path / "extracted")
    archive = tmp_path / "cifar-10-python.tar.gz"
    make_tar(tmp_path / "extracted", "cifar-10-batches-py", archive)
    images, labels = expected[split]
    assert images.shape[0] == (15 if split == "train" else 3)
    for source in (tmp_path / "extracted", tmp_path / "extracted" / "cifar-10-batches-py", archive):
        got_images, got_labels = read_cifar10(source, split)
        assert got_images.dtype == np.uint8 and got_images.shape == images.shape
        np.testing.assert_array_equal(got_images, images)
        np.testing.assert_array_equal(got_labels, labels)
        assert got_labels.dtype == np.int64


@pytest.mark.parametrize("split", ["train", "test"])
def test_cifar100_fine_labels_from_folder_and_archive(tmp_path: Path, split: str) -> None:
    expected = write_cifar100(tmp_path / "x")
    archive = tmp_path / "cifar-100-python.tar.gz"
    make_tar(tmp_path / "x", "cifar-100-python", archive)
    for source in (tmp_path / "x" / "cifar-100-python", archive):
        images, labels = read_cifar100(source, split)
        np.testing.assert_array_equal(images, expected[split][0])
        np.testing.assert_array_equal(labels, expected[split][1])  # fine, not coarse, labels


def test_cifar_corrupt_pickles_name_the_file(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    batch_file = tmp_path / "cifar-10-batches-py" / "test_batch"
    blob = batch_file.read_bytes()
    batch_file.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError) as excinfo:
        read_cifar10(tmp_path, "test")
    one_line_error(excinfo, batch_file)

    batch, _, _ = cifar_batch(2, "labels", 10, bytes_keys=True)
    batch[b"labels"] = [3, 10]
    batch_file.write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DataError) as excinfo:
        read_cifar10(tmp_path, "test")
    one_line_error(excinfo, batch_file, "10")

    batch, _, _ = cifar_batch(2, "labels", 10, bytes_keys=True)
    batch[b"data"] = batch[b"data"][:, :1000]
    batch_file.write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DataError) as excinfo:
        read_cifar10(tmp_path, "test")
    one_line_error(excinfo, batch_file, "3072")

    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(DataError) as excinfo:
        read_cifar10(tmp_path, "train")
    one_line_error(excinfo, "data_batch_4")


def test_cifar_truncated_archive_and_missing_member(tmp_path: Path) -> None:
    write_cifar10(tmp_path / "x")
    archive = tmp_path / "cifar-10-python.tar.gz"
    make_tar(tmp_path / "x", "cifar-10-batches-py", archive)
    blob = archive.read_bytes()
    archive.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError) as excinfo:
        read_cifar10(archive, "train")
    one_line_error(excinfo, archive)
    wrong = tmp_path / "other.tar.gz"
    make_tar(tmp_path / "x", "cifar-10-batches-py", wrong)
    with pytest.raises(DataError) as excinfo:
        read_cifar100(wrong, "train")
    one_line_error(excinfo, wrong, "cifar-100-python/train")


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # what a malicious "dataset" file would do
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_arbitrary_globals(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    blob = pickle.dumps({"data": _Exploit(marker), "labels": [0]}, protocol=2)
    with pytest.raises(DataError) as excinfo:
        safe_loads(blob, "evil_batch")
    one_line_error(excinfo, "evil_batch", "system")
    assert not marker.exists()
    for dangerous in (pickle.dumps(Path("x")), pickle.dumps(eval), pickle.dumps(np.load)):
        with pytest.raises(DataError):
            safe_loads(dangerous, "x")
    cifar_dir = tmp_path / "cifar-10-batches-py"
    cifar_dir.mkdir()
    (cifar_dir / "test_batch").write_bytes(blob)
    with pytest.raises(DataError) as excinfo:
        read_cifar10(tmp_path, "test")
    one_line_error(excinfo, cifar_dir / "test_batch")
    assert not marker.exists()


def test_restricted_unpickler_keeps_plain_data() -> None:
    value = {
        "a": [1, 2.5, "s", b"b", None, True, (1, 2)],
        "arr": np.arange(6, dtype=np.int16).reshape(2, 3),
        "f": np.float32(1.5),
    }
    for protocol in (2, 4, 5):
        got = safe_loads(pickle.dumps(value, protocol=protocol))
        assert got["a"] == value["a"]
        np.testing.assert_array_equal(got["arr"], value["arr"])
        assert got["arr"].dtype == np.int16
        assert got["f"] == 1.5


# --- SVHN .mat ---------------------------------------------------------------------------------


def test_svhn_mat_reader_transposes_and_maps_label_10_to_0(tmp_path: Path) -> None:
    images = RNG.integers(0, 256, (6, 3, 32, 32), dtype=np.uint8)
    digits = np.array([0, 1, 9, 0, 5, 3])
    x = np.ascontiguousarray(np.moveaxis(images, (0, 1, 2, 3), (3, 2, 0, 1)))  # (32, 32, 3, N): HWCN
    assert x[4, 7, 2, 5] == images[5, 2, 4, 7]
    stored = np.where(digits == 0, 10, digits).astype(np.uint8)[:, None]  # the file stores 10 for "0"
    path = tmp_path / "test_32x32.mat"
    scipy.io.savemat(path, {"X": x, "y": stored})
    got_images, got_labels = read_svhn(path)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, digits)
    assert got_labels.dtype == np.int64


def test_svhn_corrupt_and_out_of_range(tmp_path: Path) -> None:
    path = tmp_path / "train_32x32.mat"
    path.write_bytes(b"MATLAB 5.0 MAT-file" + bytes(50))
    with pytest.raises(DataError) as excinfo:
        read_svhn(path)
    one_line_error(excinfo, path)
    scipy.io.savemat(path, {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[1], [11]], np.uint8)})
    with pytest.raises(DataError) as excinfo:
        read_svhn(path)
    one_line_error(excinfo, path, "11")
    scipy.io.savemat(path, {"X": np.zeros((32, 32, 2), np.uint8), "y": np.array([[1]], np.uint8)})
    with pytest.raises(DataError) as excinfo:
        read_svhn(path)
    one_line_error(excinfo, path)


# --- STL-10 binary -----------------------------------------------------------------------------


def write_stl10(folder: Path, split: str, images: np.ndarray, labels_1_to_10: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    # Official layout: per image, per channel, the 96x96 plane in column-major (Fortran) order.
    blob = b"".join(img[c].tobytes(order="F") for img in images for c in range(3))
    (folder / f"{split}_X.bin").write_bytes(blob)
    (folder / f"{split}_y.bin").write_bytes(labels_1_to_10.astype(np.uint8).tobytes())


def test_stl10_reader_undoes_column_major_and_shifts_labels(tmp_path: Path) -> None:
    images = RNG.integers(0, 256, (3, 3, 96, 96), dtype=np.uint8)
    images[0, 0, 0, 1] = 250  # row 0, column 1 ...
    images[0, 0, 1, 0] = 5  # ... and its transpose must not be confused
    write_stl10(tmp_path / "stl10_binary", "train", images, np.array([1, 10, 4]))
    got_images, got_labels = read_stl10(tmp_path / "stl10_binary", "train")
    np.testing.assert_array_equal(got_images, images)
    assert got_images[0, 0, 0, 1] == 250 and got_images[0, 0, 1, 0] == 5
    np.testing.assert_array_equal(got_labels, [0, 9, 3])


def test_stl10_truncated_and_bad_labels(tmp_path: Path) -> None:
    folder = tmp_path / "stl10_binary"
    write_stl10(folder, "test", RNG.integers(0, 256, (2, 3, 96, 96), dtype=np.uint8), np.array([1, 2]))
    x_path = folder / "test_X.bin"
    x_path.write_bytes(x_path.read_bytes()[:-10])
    with pytest.raises(DataError) as excinfo:
        read_stl10(folder, "test")
    one_line_error(excinfo, x_path, "truncated")
    write_stl10(folder, "test", np.zeros((2, 3, 96, 96), np.uint8), np.array([0, 2]))
    with pytest.raises(DataError) as excinfo:
        read_stl10(folder, "test")
    one_line_error(excinfo, folder / "test_y.bin")
    (folder / "test_y.bin").write_bytes(bytes([1]))
    with pytest.raises(DataError) as excinfo:
        read_stl10(folder, "test")
    one_line_error(excinfo, folder / "test_y.bin")


# --- Tiny-ImageNet and ImageFolder trees -------------------------------------------------------


def save_image(path: Path, array: np.ndarray, format: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=format)


def decoded(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB")).transpose(2, 0, 1)


def write_tiny(root: Path) -> dict[str, tuple[list[np.ndarray], list[int]]]:
    """Three classes, listed unsorted in wnids.txt; PNG data and real JPEGs (one grayscale)."""
    wnids = ["n03000000", "n01000000", "n02000000"]  # sorted order: n01 -> 0, n02 -> 1, n03 -> 2
    root.mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    label_of = {w: i for i, w in enumerate(sorted(wnids))}
    train: tuple[list[np.ndarray], list[int]] = ([], [])
    for wnid in sorted(wnids):
        for k in range(2):
            array = RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)
            path = root / "train" / wnid / "images" / f"{wnid}_{k}.JPEG"
            if wnid == "n02000000":
                save_image(path, array, "JPEG")  # lossy: expect what PIL decodes
                train[0].append(decoded(path))
            else:
                save_image(path, array, "PNG")  # lossless: expect exactly what was written
                train[0].append(array.transpose(2, 0, 1))
            train[1].append(label_of[wnid])
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
    val: tuple[list[np.ndarray], list[int]] = ([], [])
    lines = []
    for i, wnid in enumerate(["n02000000", "n03000000", "n01000000", "n03000000"]):
        name = f"val_{i}.JPEG"
        if i == 3:  # a grayscale image, as Tiny-ImageNet contains some
            gray = RNG.integers(0, 256, (64, 64), dtype=np.uint8)
            save_image(root / "val" / "images" / name, gray, "PNG")
            val[0].append(np.repeat(gray[None], 3, axis=0))
        else:
            array = RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)
            save_image(root / "val" / "images" / name, array, "PNG")
            val[0].append(array.transpose(2, 0, 1))
        val[1].append(label_of[wnid])
        lines.append(f"{name}\t{wnid}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return {"train": train, "test": val}


@pytest.mark.parametrize("split", ["train", "test"])
def test_tiny_imagenet_reader(tmp_path: Path, split: str) -> None:
    expected = write_tiny(tmp_path / "tiny-imagenet-200")
    images, labels = read_tiny_imagenet(tmp_path / "tiny-imagenet-200", split)
    assert images.shape == (len(expected[split][1]), 3, 64, 64)
    np.testing.assert_array_equal(images, np.stack(expected[split][0]))
    np.testing.assert_array_equal(labels, expected[split][1])
    assert tiny_imagenet_classes(tmp_path / "tiny-imagenet-200") == ["n01000000", "n02000000", "n03000000"]


def test_tiny_imagenet_bad_annotation_missing_image_and_wrong_size(tmp_path: Path) -> None:
    root = tmp_path / "tiny-imagenet-200"
    write_tiny(root)
    annotations = root / "val" / "val_annotations.txt"
    annotations.write_text("val_0.JPEG\tn09999999\t0\t0\t1\t1\n")
    with pytest.raises(DataError) as excinfo:
        read_tiny_imagenet(root, "test")
    one_line_error(excinfo, annotations, "line 1")
    annotations.write_text("val_99.JPEG\tn01000000\t0\t0\t1\t1\n")
    with pytest.raises(DataError) as excinfo:
        read_tiny_imagenet(root, "test")
    one_line_error(excinfo, "val_99.JPEG")
    bad = root / "train" / "n01000000" / "images" / "n01000000_0.JPEG"
    save_image(bad, np.zeros((32, 32, 3), np.uint8), "PNG")
    with pytest.raises(DataError) as excinfo:
        read_tiny_imagenet(root, "train")
    one_line_error(excinfo, bad)
    bad.write_bytes(b"not an image")
    with pytest.raises(DataError) as excinfo:
        read_tiny_imagenet(root, "train")
    one_line_error(excinfo, bad)


def test_imagefolder_sorted_classes_exact_pixels_and_grayscale(tmp_path: Path) -> None:
    expected_images, expected_labels = [], []
    for name in ["cat", "ant", "bee"]:  # created out of order: labels follow sorted names
        for k in range(2):
            array = RNG.integers(0, 256, (10, 12, 3), dtype=np.uint8)
            save_image(tmp_path / name / f"{k}.png", array)
    (tmp_path / "ant" / "notes.txt").write_text("ignored")
    for label, name in enumerate(["ant", "bee", "cat"]):
        for k in range(2):
            with Image.open(tmp_path / name / f"{k}.png") as image:
                expected_images.append(np.asarray(image).transpose(2, 0, 1))
            expected_labels.append(label)
    images, labels = read_imagefolder(tmp_path)
    assert images.shape == (6, 3, 10, 12)
    np.testing.assert_array_equal(images, np.stack(expected_images))
    np.testing.assert_array_equal(labels, expected_labels)

    gray_root = tmp_path / "gray"
    gray = RNG.integers(0, 256, (2, 5, 5), dtype=np.uint8)
    save_image(gray_root / "a" / "x.png", gray[0])
    save_image(gray_root / "b" / "y.bmp", gray[1])
    images, labels = read_imagefolder(gray_root)
    assert images.shape == (2, 1, 5, 5)
    np.testing.assert_array_equal(images[:, 0], gray)


def test_imagefolder_sizes_resize_and_errors(tmp_path: Path) -> None:
    save_image(tmp_path / "a" / "1.png", np.full((8, 8, 3), 200, np.uint8))
    save_image(tmp_path / "b" / "2.png", np.full((16, 12, 3), 100, np.uint8))
    with pytest.raises(DataError) as excinfo:
        read_imagefolder(tmp_path)
    one_line_error(excinfo, tmp_path / "b" / "2.png", "resize")
    images, labels = read_imagefolder(tmp_path, resize=(6, 4))
    assert images.shape == (2, 3, 6, 4) and labels.tolist() == [0, 1]
    assert (images[0] == 200).all() and (images[1] == 100).all()  # flat colours survive resizing
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as excinfo:
        read_imagefolder(tmp_path, resize=4)
    one_line_error(excinfo, tmp_path / "empty")


def test_gzip_detection_does_not_depend_on_the_suffix(tmp_path: Path) -> None:
    labels = np.array([3, 1, 4], np.uint8)
    path = tmp_path / "labels-without-suffix"
    path.write_bytes(gzip.compress(idx_bytes(labels)))
    np.testing.assert_array_equal(read_idx_labels(path), labels)
