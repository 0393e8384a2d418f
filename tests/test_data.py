"""ArrayDataset, the dataset registry, root discovery, downloads, and the bundled/real datasets."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import pickle
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from robustdistill import data
from robustdistill.data import download as download_module
from robustdistill.data.download import Resource
from robustdistill.errors import ConfigError, DataError

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
NAMES = [
    "mnist",
    "fashion-mnist",
    "cifar10",
    "cifar100",
    "svhn",
    "stl10",
    "tiny-imagenet",
    "imagefolder",
    "digits",
    "animal-mnist",
]


@pytest.fixture(autouse=True)
def isolated_roots(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No ROBUSTDISTILL_DATA from the environment and a throw-away home (hence cache) directory."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.delenv("ROBUSTDISTILL_DATA", raising=False)
    monkeypatch.setenv("HOME", str(home))
    return home


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(folder: Path, n: int = 6, size: int = 28, label_max: int = 9, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
    for prefix in ("train", "t10k"):
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
        labels = np.minimum(np.arange(n), label_max).astype(np.uint8)
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    return images


def write_cifar10(folder: Path, fill: int) -> None:
    base = folder / "cifar-10-batches-py"
    base.mkdir(parents=True)
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        batch = {b"data": np.full((2, 3072), fill, np.uint8), b"labels": [1, 2]}
        (base / name).write_bytes(pickle.dumps(batch, protocol=2))


# --- ArrayDataset --------------------------------------------------------------------------------


def make(**overrides) -> data.ArrayDataset:
    fields = {
        "images": torch.zeros(4, 1, 5, 5, dtype=torch.uint8),
        "labels": torch.tensor([0, 1, 2, 1]),
        "num_classes": 3,
        "name": "toy",
        "split": "train",
        "mean": (0.5,),
        "std": (0.25,),
        "classes": None,
    }
    fields.update(overrides)
    return data.ArrayDataset(**fields)


def test_array_dataset_accepts_valid_data_and_numpy() -> None:
    ds = make(images=np.zeros((4, 1, 5, 5), np.uint8), labels=np.array([0, 1, 2, 1]), mean=[0.5])
    assert len(ds) == 4 and ds.shape == (1, 5, 5) and ds.mean == (0.5,)
    assert isinstance(ds.images, torch.Tensor) and ds[2][1] == 2
    assert "n=4" in repr(ds)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"images": torch.zeros(4, 1, 5, 5)}, "uint8"),
        ({"images": torch.zeros(4, 5, 5, dtype=torch.uint8)}, "(N, C, H, W)"),
        ({"labels": torch.tensor([0, 1, 2, 1], dtype=torch.int32)}, "int64"),
        ({"labels": torch.tensor([0, 1, 2])}, "shape"),
        ({"labels": torch.tensor([0, 1, 3, 1])}, "label 3"),
        ({"labels": torch.tensor([0, -1, 2, 1])}, "label -1"),
        ({"num_classes": 0}, "num_classes"),
        ({"mean": (0.5, 0.5)}, "per channel"),
        ({"std": (0.0,)}, "positive"),
        ({"classes": ["a", "b"]}, "class names"),
    ],
)
def test_array_dataset_validation(overrides: dict, needle: str) -> None:
    with pytest.raises(DataError) as excinfo:
        make(**overrides)
    assert needle in str(excinfo.value) and "\n" not in str(excinfo.value)


# --- registry, info, errors ----------------------------------------------------------------------


def test_available_and_info() -> None:
    assert set(NAMES) <= set(data.available())
    for name in NAMES:
        meta = data.info(name)
        assert {"num_classes", "shape", "mean", "std", "files", "augment"} <= set(meta)
        assert set(meta["files"]) == {"train", "test"}
    cifar = data.info("CIFAR-10")
    assert cifar["name"] == "cifar10" and cifar["num_classes"] == 10 and cifar["shape"] == (3, 32, 32)
    assert cifar["mean"] == (0.4914, 0.4822, 0.4465) and cifar["std"] == (0.2471, 0.2435, 0.2616)
    assert data.info("fashion-mnist")["mean"] == (0.2860,) and data.info("mnist")["std"] == (0.3081,)
    assert data.info("mnist")["augment"] == {"padding": 2, "flip": False}
    assert data.info("svhn")["augment"]["flip"] is False and data.info("cifar100")["augment"]["flip"] is True
    assert data.info("cifar100")["num_classes"] == 100 and len(data.info("cifar100")["classes"]) == 100
    assert "cifar-10-python.tar.gz" in data.info("cifar10")["files"]["train"]
    assert data.info("cifar10")["downloadable"] and not data.info("imagefolder")["downloadable"]


def test_aliases_are_their_dataset_entry_so_they_share_every_fact() -> None:
    for name in data.available():
        spec = data.get_spec(name)
        assert spec.name == name
        for alias in spec.aliases:
            assert data.get_spec(alias) is spec and data.info(alias) == data.info(name), alias
    assert data.get_spec("fmnist").default_eps == 0.1
    assert data.get_spec("cifar-10").default_eps == pytest.approx(8 / 255)
    assert data.get_spec("image_folder").needs_data_dir and data.get_spec("imagefolder").locate is not None


@pytest.mark.parametrize(
    ("facts", "needle"),
    [
        ({}, "exactly one of read and build"),
        ({"read": lambda located, split: None, "build": lambda split: None}, "exactly one of read and build"),
        ({"read": lambda located, split: None, "mean": (0.5,)}, "both mean and std"),
        ({"read": lambda located, split: None, "shape": (3, 4, 4), "mean": (0.5,), "std": (0.2,)}, "3 values"),
        ({"read": lambda located, split: None, "num_classes": 3, "classes": ("a", "b")}, "2 class names"),
        ({"read": lambda located, split: None, "default_eps": 0.0}, "default_eps"),
        ({"read": lambda located, split: None, "needs_data_dir": True}, "locate"),
    ],
)
def test_register_dataset_refuses_inconsistent_facts(facts: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        data.register_dataset("never-registered", files={"train": "x", "test": "y"}, **facts)
    assert "never-registered" not in data.DATASETS
    with pytest.raises(TypeError):
        data.register_dataset("never-registered", files={"train": "x", "test": "y"}, eps=0.1)


def test_imagefolder_is_located_like_any_other_dataset(tmp_path: Path) -> None:
    from PIL import Image

    for split in ("train", "val"):
        (tmp_path / split / "cat").mkdir(parents=True)
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / split / "cat" / "x.png")
    assert data.locate("imagefolder", "test", tmp_path) == tmp_path / "val"
    assert data.source_files("imagefolder", "train", tmp_path) == [str((tmp_path / "train").resolve())]
    assert data.locate("imagefolder", "test") is None and data.info("imagefolder")["search_dirs"] == []
    with pytest.raises(DataError, match="only place looked") as excinfo:
        data.load("imagefolder", data_dir=tmp_path / "train" / "cat")  # files but no class folders
    assert "drop --data-dir" not in str(excinfo.value)


def test_unknown_name_split_and_option() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'cifar10'"):
        data.load("cifr10")
    with pytest.raises(ConfigError, match="split"):
        data.load("digits", "holdout")
    with pytest.raises(ConfigError, match="resize"):
        data.load("digits", resize=4)


def test_missing_files_give_one_line_with_files_dirs_and_remedy(
    tmp_path: Path, isolated_roots: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROBUSTDISTILL_DATA", str(tmp_path / "env"))
    with pytest.raises(DataError) as excinfo:
        data.load("cifar10", "test")
    message = str(excinfo.value)
    assert "\n" not in message
    for needle in (
        "cifar-10-batches-py/test_batch",
        "cifar-10-python.tar.gz",
        str(tmp_path / "env"),
        str(isolated_roots / ".cache" / "robustdistill" / "cifar10"),
        "--data-dir",
        "ROBUSTDISTILL_DATA",
        "--download",
    ):
        assert needle in message, needle
    with pytest.raises(DataError) as excinfo:  # an explicit --data-dir is the only place named (and looked)
        data.load("cifar10", "test", data_dir=tmp_path)
    message = str(excinfo.value)
    assert str(tmp_path) in message and "only place looked" in message and "--download" in message
    assert ".cache" not in message and "env" not in message
    with pytest.raises(DataError, match="--data-dir"):
        data.load("imagefolder")


def test_load_from_data_dir_for_every_file_format(tmp_path: Path) -> None:
    images = write_mnist(tmp_path / "m" / "MNIST" / "raw")  # torchvision's layout is found too
    ds = data.load("mnist", "test", data_dir=tmp_path / "m")
    assert (ds.name, ds.split, len(ds), ds.num_classes, ds.mean) == ("mnist", "test", 6, 10, (0.1307,))
    torch.testing.assert_close(ds.images[:, 0], torch.from_numpy(images))

    write_cifar10(tmp_path / "c", fill=7)
    ds = data.load("cifar-10", data_dir=tmp_path / "c")
    assert len(ds) == 10 and ds.shape == (3, 32, 32) and int(ds.images.max()) == 7
    assert ds.classes is not None and ds.classes[0] == "airplane"

    x = np.zeros((32, 32, 3, 3), np.uint8)
    (tmp_path / "s").mkdir()
    scipy.io.savemat(tmp_path / "s" / "train_32x32.mat", {"X": x, "y": np.array([[10], [1], [2]])})
    assert data.load("svhn", data_dir=tmp_path / "s").labels.tolist() == [0, 1, 2]

    stl = tmp_path / "stl" / "stl10_binary"
    stl.mkdir(parents=True)
    (stl / "test_X.bin").write_bytes(bytes(2 * 3 * 96 * 96))
    (stl / "test_y.bin").write_bytes(bytes([3, 10]))
    ds = data.load("stl10", "test", data_dir=tmp_path / "stl")
    assert ds.shape == (3, 96, 96) and ds.labels.tolist() == [2, 9]


def test_load_tiny_imagenet_tree_and_cifar100_archive(tmp_path: Path) -> None:
    import tarfile

    from PIL import Image

    root = tmp_path / "tiny" / "tiny-imagenet-200"
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("n02\nn01\n")
    for wnid, value in (("n01", 30), ("n02", 60)):
        folder = root / "train" / wnid / "images"
        folder.mkdir(parents=True)
        Image.fromarray(np.full((64, 64, 3), value, np.uint8)).save(folder / f"{wnid}_0.JPEG", format="PNG")
    val_image = root / "val" / "images" / "val_0.JPEG"
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(val_image, format="PNG")
    (root / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn02\t0\t0\t10\t10\n")
    train = data.load("tiny-imagenet", data_dir=tmp_path / "tiny")
    assert train.classes == ["n01", "n02"] and train.labels.tolist() == [0, 1] and train.shape == (3, 64, 64)
    assert train.images[:, 0, 0, 0].tolist() == [30, 60]
    # Tiny-ImageNet ships its labelled held-out images as val/: they are our test split.
    test = data.load("tiny-imagenet", "test", data_dir=tmp_path / "tiny")
    assert (test.split, test.labels.tolist(), int(test.images.max())) == ("test", [1], 90)

    base = tmp_path / "c100" / "cifar-100-python"
    base.mkdir(parents=True)
    for name, label in (("train", 99), ("test", 42)):
        batch = {"data": np.full((1, 3072), 5, np.uint8), "fine_labels": [label], "coarse_labels": [1]}
        (base / name).write_bytes(pickle.dumps(batch))
    with tarfile.open(tmp_path / "cifar-100-python.tar.gz", "w:gz") as tar:
        tar.add(base, arcname="cifar-100-python")
    ds = data.load("cifar100", "test", data_dir=tmp_path)  # the archive itself, not extracted
    assert ds.labels.tolist() == [42] and ds.num_classes == 100 and ds.classes[42] == "leopard"


def test_shape_mismatch_is_reported(tmp_path: Path) -> None:
    write_mnist(tmp_path, size=32)
    with pytest.raises(DataError) as excinfo:
        data.load("mnist", data_dir=tmp_path)
    assert "(1, 32, 32)" in str(excinfo.value) and str(tmp_path) in str(excinfo.value)


def test_imagefolder_through_load_uses_split_folders(tmp_path: Path) -> None:
    from PIL import Image

    for split, value in (("train", 10), ("test", 20)):
        for cls in ("b", "a"):
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            Image.fromarray(np.full((6, 6, 3), value, np.uint8)).save(folder / "x.png")
    ds = data.load("imagefolder", "test", data_dir=tmp_path, resize=4)
    assert ds.classes == ["a", "b"] and ds.num_classes == 2 and ds.shape == (3, 4, 4)
    assert int(ds.images.max()) == 20
    assert ds.mean[0] == pytest.approx(20 / 255)


def test_env_var_discovery_and_data_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_root = tmp_path / "env"
    write_cifar10(env_root / "cifar10", fill=1)  # $ROBUSTDISTILL_DATA/cifar10/cifar-10-batches-py
    monkeypatch.setenv("ROBUSTDISTILL_DATA", str(env_root))
    assert int(data.load("cifar10", "test").images.max()) == 1
    explicit = tmp_path / "explicit"
    write_cifar10(explicit, fill=2)
    assert int(data.load("cifar10", "test", data_dir=explicit).images.max()) == 2
    assert data.locate("cifar10", "test") == env_root / "cifar10" / "cifar-10-batches-py"
    # files directly under the env root work as well
    write_mnist(env_root)
    assert len(data.load("mnist", data_dir=None)) == 6


def test_cache_dir_is_searched_last(tmp_path: Path, isolated_roots: Path) -> None:
    cache = data.cache_dir("mnist")
    assert cache == isolated_roots / ".cache" / "robustdistill" / "mnist"
    write_mnist(cache, n=3)
    assert len(data.load("mnist")) == 3
    write_mnist(tmp_path, n=5)
    assert len(data.load("mnist", data_dir=tmp_path)) == 5


class _FakeResponse(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *args) -> None:
        self.close()


def svhn_test_file(tmp_path: Path) -> bytes:
    path = tmp_path / "made.mat"
    scipy.io.savemat(path, {"X": np.full((32, 32, 3, 2), 9, np.uint8), "y": np.array([[10], [3]], np.uint8)})
    return path.read_bytes()


def svhn_served_as(resource: Resource) -> str:
    """A dataset registered with svhn's facts and reader whose only official file is `resource`."""
    name = f"svhn-served-{resource.md5}"
    if name not in data.DATASETS:
        spec = data.get_spec("svhn")
        facts = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec) if f.name != "name"}
        data.register_dataset(name, **{**facts, "resources": (resource,), "aliases": (), "folders": ()})
    return name


def test_download_verifies_checksum_then_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_roots: Path
) -> None:
    blob = svhn_test_file(tmp_path)
    good = Resource("test_32x32.mat", ("http://example.invalid/test_32x32.mat",), hashlib.md5(blob).hexdigest())
    name = svhn_served_as(good)  # a registered dataset downloads through its own resources, no table elsewhere
    assert data.info(name)["downloadable"] and data.info(name)["urls"] == list(good.urls)
    calls = []

    def fake_urlopen(url: str, timeout: float = 0):
        calls.append(url)
        return _FakeResponse(blob)

    monkeypatch.setattr(download_module.urllib.request, "urlopen", fake_urlopen)
    with pytest.raises(DataError, match="--download"):
        data.load(name, "test")  # download is off by default
    assert calls == []
    ds = data.load(name, "test", download=True)
    assert calls == ["http://example.invalid/test_32x32.mat"]
    assert ds.labels.tolist() == [0, 3] and int(ds.images.max()) == 9
    assert sorted(p.name for p in (isolated_roots / ".cache" / "robustdistill" / name).iterdir()) == ["test_32x32.mat"]


def test_download_checksum_mismatch_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blob = svhn_test_file(tmp_path)
    wrong = Resource("test_32x32.mat", ("http://example.invalid/t.mat",), "0" * 32)
    name = svhn_served_as(wrong)
    monkeypatch.setattr(download_module.urllib.request, "urlopen", lambda url, timeout=0: _FakeResponse(blob))
    with pytest.raises(DataError) as excinfo:
        data.load(name, "test", download=True)
    message = str(excinfo.value)
    assert "test_32x32.mat" in message and "MD5" in message and "\n" not in message
    assert not list(data.cache_dir(name).glob("*"))  # the bad download left nothing behind, not even a temporary


def test_the_atomic_writer_keeps_the_old_file_when_the_writer_fails(tmp_path: Path) -> None:
    from robustdistill.utils import atomic_writer

    target = tmp_path / "file.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_writer(target) as handle:
        handle.write(b"new, half written")
        raise RuntimeError("the download broke off")
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["file.bin"]
    with atomic_writer(target) as handle:
        handle.write(b"new")
    assert target.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["file.bin"]


def test_download_offline_gives_the_missing_files_message(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(url: str, timeout: float = 0):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(download_module.urllib.request, "urlopen", offline)
    with pytest.raises(DataError) as excinfo:
        data.load("mnist", "test", download=True)
    message = str(excinfo.value)
    assert "\n" not in message
    assert "download failed" in message and "t10k-images-idx3-ubyte.gz" in message and "--data-dir" in message


def test_extract_refuses_members_escaping_the_destination(tmp_path: Path) -> None:
    import tarfile

    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    (tmp_path / "out").mkdir()
    with pytest.raises(DataError, match="outside"):
        download_module.extract(archive, tmp_path / "out")
    assert not (tmp_path / "escaped.txt").exists()


# --- real and bundled datasets -------------------------------------------------------------------


@pytest.mark.skipif(not DEBIAN_FASHION.is_dir(), reason=f"Fashion-MNIST not installed at {DEBIAN_FASHION}")
def test_real_fashion_mnist_from_the_debian_location() -> None:
    train = data.load("fashion-mnist", "train")
    test = data.load("fmnist", "test")
    assert (len(train), len(test)) == (60000, 10000)
    assert train.shape == test.shape == (1, 28, 28) and train.num_classes == 10
    assert torch.bincount(train.labels).tolist() == [6000] * 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    mean, std = data.channel_stats(train.images)
    assert mean[0] == pytest.approx(0.2860, abs=5e-4) and std[0] == pytest.approx(0.3530, abs=5e-4)


def test_digits_split_is_deterministic_disjoint_and_complete() -> None:
    from sklearn.datasets import load_digits

    train, test = data.load("digits", "train"), data.load("digits", "test")
    assert (len(train), len(test)) == (
        data.info("digits")["sizes"]["train"],
        data.info("digits")["sizes"]["test"],
    )
    assert len(train) + len(test) == 1797 and train.shape == (1, 8, 8)
    assert int(train.images.max()) == 255 and int(train.images.min()) == 0
    assert len(test) / 1797 == pytest.approx(0.2, abs=0.01)
    torch.testing.assert_close(train.images, data.load("digits").images)
    pool = {tuple(row) for row in np.rint(load_digits().images.reshape(-1, 64) * 255 / 16).astype(int).tolist()}
    seen = {tuple(row) for row in torch.cat([train.images, test.images]).reshape(-1, 64).tolist()}
    assert seen == pool
    mean, std = data.channel_stats(train.images)
    assert (mean[0], std[0]) == pytest.approx((train.mean[0], train.std[0]), abs=1e-3)


def test_animal_mnist_contents_and_split() -> None:
    train, test = data.load("animal-mnist", "train"), data.load("animal_mnist", "test")
    assert (len(train), len(test)) == (8005, 1995) and len(train) + len(test) == 10000
    assert train.shape == (1, 28, 28) and train.num_classes == 10 and train.classes[0] == "bear"
    assert all(795 <= c <= 805 for c in torch.bincount(train.labels).tolist())
    assert all(195 <= c <= 205 for c in torch.bincount(test.labels, minlength=10).tolist())
    # the pool has byte-identical pairs; the split keeps each pair on one side
    train_bytes = set(map(bytes, train.images.numpy()))
    assert not any(bytes(image) in train_bytes for image in test.images.numpy())
    mean, std = data.channel_stats(train.images)
    assert (mean[0], std[0]) == pytest.approx((train.mean[0], train.std[0]), abs=1e-3)
    torch.testing.assert_close(test.images, data.load("animal-mnist", "test").images)


def test_stratified_split_keeps_duplicate_groups_together() -> None:
    from robustdistill.data.splits import stratified_split

    labels = np.repeat(np.arange(2), 50)
    groups = np.arange(100) // 2  # pairs
    test = stratified_split(labels, "test", groups=groups)
    train = stratified_split(labels, "train", groups=groups)
    assert sorted([*test, *train]) == list(range(100))
    assert set(groups[test]).isdisjoint(groups[train])
    assert len(test) == 2 * 2 * round(0.2 * 25)


def test_animal_mnist_is_read_without_importing_its_tensorflow_loader() -> None:
    import sys

    data.read_animal_mnist("test")
    assert "animal_mnist.dataset_Loader" not in sys.modules


def test_synthetic_dataset_is_a_pure_function_of_its_arguments() -> None:
    a = data.synthetic(num_classes=7, shape=(3, 8, 6), n=50, seed=3)
    b = data.load("synthetic", num_classes=7, shape=(3, 8, 6), n=50, seed=3)
    assert a.name == "synthetic" and a.shape == (3, 8, 6) and len(a) == 50 and a.num_classes == 7
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, data.synthetic(7, (3, 8, 6), 50, seed=4).images)
    test = data.load("synthetic", "test", num_classes=7, shape=(3, 8, 6), n=50, seed=3)
    assert not torch.equal(a.images, test.images)
    assert int(a.labels.max()) < 7
