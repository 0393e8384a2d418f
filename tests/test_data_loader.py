"""subset, augmentation and Loader: balance, reproducibility, resuming and rank sharding."""

from __future__ import annotations

import pytest
import torch

from robustdistill import data
from robustdistill.data import (
    ArrayDataset,
    Loader,
    apply_crop_flip,
    random_crop_flip,
    sample_crop_flip,
    subset,
)
from robustdistill.errors import ConfigError, DataError


def toy(n: int = 103, num_classes: int = 5, shape: tuple[int, int, int] = (3, 6, 6)) -> ArrayDataset:
    """Image i is filled with i % 256 (plus a gradient) so batches can be traced back to indices."""
    base = torch.arange(n, dtype=torch.int64).remainder(256).view(n, 1, 1, 1)
    ramp = torch.arange(shape[1] * shape[2]).view(1, 1, shape[1], shape[2])
    images = (base + ramp).remainder(256).to(torch.uint8).expand(n, *shape).contiguous()
    labels = torch.arange(n) % num_classes
    return ArrayDataset(images, labels, num_classes, "toy", "train", (0.5,) * shape[0], (0.25,) * shape[0], None)


def collect(loader, **kwargs) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    return list(loader.iterate(**kwargs) if kwargs else loader)


# --- subset ----------------------------------------------------------------------------------------


def test_subset_is_class_balanced_and_deterministic() -> None:
    ds = toy(n=200, num_classes=10)
    part = subset(ds, 55, seed=3)
    counts = torch.bincount(part.labels, minlength=10)
    assert len(part) == 55 and counts.sum() == 55
    assert set(counts.tolist()) == {5, 6} and (counts == 6).sum() == 5
    again = subset(ds, 55, seed=3)
    assert torch.equal(part.images, again.images) and torch.equal(part.labels, again.labels)
    other = subset(ds, 55, seed=4)
    assert not torch.equal(part.images, other.images)
    assert (part.name, part.split, part.num_classes, part.mean) == (
        ds.name,
        ds.split,
        ds.num_classes,
        ds.mean,
    )
    # samples are real rows of the dataset, kept in dataset order
    values = part.images[:, 0, 0, 0].to(torch.int64)
    assert torch.all(values[1:] > values[:-1])


def test_subset_redistributes_when_a_class_is_small() -> None:
    labels = torch.cat([torch.zeros(2, dtype=torch.int64), torch.arange(1, 5).repeat_interleave(30)])
    ds = ArrayDataset(torch.zeros(len(labels), 1, 2, 2, dtype=torch.uint8), labels, 5, "t", "train", (0.5,), (0.2,))
    counts = torch.bincount(subset(ds, 50).labels, minlength=5).tolist()
    assert counts[0] == 2 and sum(counts) == 50 and max(counts[1:]) - min(counts[1:]) <= 1


def test_subset_edges() -> None:
    ds = toy(n=20)
    assert subset(ds, 20) is ds and subset(ds, 10_000) is ds
    for bad in (0, -3):
        with pytest.raises(DataError, match="n >= 1"):
            subset(ds, bad)


# --- augmentation ----------------------------------------------------------------------------------


def reference_crop_flip(x: torch.Tensor, padding: int, top, left, flip) -> torch.Tensor:
    """The obvious per-sample loop, to check the vectorised version against."""
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    out = []
    for b in range(x.shape[0]):
        crop = padded[b, :, top[b] : top[b] + x.shape[2], left[b] : left[b] + x.shape[3]]
        out.append(crop.flip(-1) if flip[b] else crop)
    return torch.stack(out)


def test_vectorised_crop_flip_matches_a_per_sample_loop() -> None:
    x = torch.rand(64, 3, 7, 5, generator=torch.Generator().manual_seed(0))
    params = sample_crop_flip(64, 3, True, torch.Generator().manual_seed(1))
    assert params.flip.any() and not params.flip.all() and params.top.max() == 6
    got = apply_crop_flip(x, 3, params)
    torch.testing.assert_close(got, reference_crop_flip(x, 3, params.top, params.left, params.flip), rtol=0, atol=0)


def test_random_crop_flip_is_reproducible_and_in_range() -> None:
    x = torch.rand(32, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    a = random_crop_flip(x, 4, True, torch.Generator().manual_seed(7))
    b = random_crop_flip(x, 4, True, torch.Generator().manual_seed(7))
    c = random_crop_flip(x, 4, True, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.dtype == x.dtype and a.min() >= 0 and a.max() <= 1
    assert torch.equal(random_crop_flip(x, 0, False), x)
    u8 = (x * 255).to(torch.uint8)
    assert random_crop_flip(u8, 2, True, torch.Generator().manual_seed(1)).dtype == torch.uint8


@pytest.mark.parametrize("flip", [False, True])
def test_crop_moves_content_by_at_most_padding(flip: bool) -> None:
    padding, n, size = 3, 400, 16
    x = torch.zeros(n, 1, size, size)
    x[:, 0, 6, 9] = 1.0  # a bright pixel with a dim one to its right: position and orientation
    x[:, 0, 6, 10] = 0.5
    out = random_crop_flip(x, padding, flip, torch.Generator().manual_seed(0))
    assert torch.all(out.flatten(1).sum(1) == 1.5)  # nothing is lost or invented
    bright = out[:, 0].flatten(1).argmax(1)
    dim = (out[:, 0] == 0.5).flatten(1).float().argmax(1)
    rows, cols = bright // size, bright % size
    flipped = dim % size < cols
    if flip:
        assert 0.4 < flipped.float().mean() < 0.6
        cols = torch.where(flipped, size - 1 - cols, cols)  # undo the mirror
    else:
        assert not flipped.any()
    dy, dx = rows - 6, cols - 9
    assert dy.abs().max() <= padding and dx.abs().max() <= padding
    assert set(dy.tolist()) == set(range(-padding, padding + 1))  # every shift occurs
    assert set(dx.tolist()) == set(range(-padding, padding + 1))


def test_flip_probability_is_one_half() -> None:
    params = sample_crop_flip(4000, 0, True, torch.Generator().manual_seed(0))
    assert 0.46 < params.flip.float().mean() < 0.54
    assert not sample_crop_flip(100, 0, False, torch.Generator().manual_seed(0)).flip.any()


# --- Loader ----------------------------------------------------------------------------------------


def test_each_index_once_per_epoch_and_batch_contents() -> None:
    ds = toy(103)
    loader = Loader(ds, 10, seed=1)
    batches = collect(loader)
    assert len(loader) == len(batches) == 11
    assert [len(i) for _, _, i in batches] == [10] * 10 + [3]
    index = torch.cat([i for _, _, i in batches])
    assert sorted(index.tolist()) == list(range(103))
    assert not torch.equal(index, torch.arange(103))  # shuffled
    for x, y, i in batches:
        assert x.dtype == torch.float32 and y.dtype == torch.int64 and i.dtype == torch.int64
        torch.testing.assert_close(x, ds.images[i].float() / 255)
        assert torch.equal(y, ds.labels[i])


def test_drop_last_and_no_shuffle() -> None:
    loader = Loader(toy(103), 10, drop_last=True, shuffle=False)
    batches = collect(loader)
    assert len(loader) == len(batches) == 10
    assert torch.equal(torch.cat([i for _, _, i in batches]), torch.arange(100))


def test_epochs_and_seeds_change_the_order_but_are_reproducible() -> None:
    ds = toy(103)
    loader = Loader(ds, 16, seed=5, augment={"padding": 2, "flip": True})
    loader.set_epoch(0)
    epoch0 = collect(loader)
    loader.set_epoch(1)
    epoch1 = collect(loader)
    assert not torch.equal(epoch0[0][2], epoch1[0][2])
    fresh = Loader(ds, 16, seed=5, augment={"padding": 2, "flip": True})
    fresh.set_epoch(1)
    for (xa, ya, ia), (xb, yb, ib) in zip(epoch1, collect(fresh), strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and torch.equal(ia, ib)
    other_seed = Loader(ds, 16, seed=6)
    other_seed.set_epoch(1)
    assert not torch.equal(collect(other_seed)[0][2], epoch1[0][2])
    # augmentation is on, values stay in [0, 1], and differ from the plain images
    x, _, i = epoch1[0]
    assert x.min() >= 0 and x.max() <= 1 and not torch.equal(x, ds.images[i].float() / 255)


def test_start_batch_skips_exactly_and_then_resets() -> None:
    ds = toy(103)
    loader = Loader(ds, 8, seed=2, augment={"padding": 1, "flip": True})
    loader.set_epoch(3)
    full = collect(loader)
    loader.start_batch = 5
    resumed = collect(loader)
    assert len(resumed) == len(full) - 5 and len(loader) == len(full)
    for (xa, _, ia), (xb, _, ib) in zip(full[5:], resumed, strict=True):
        assert torch.equal(ia, ib) and torch.equal(xa, xb)
    assert len(collect(loader)) == len(full)  # start_batch applied once
    loader.set_epoch(3, start_batch=12)
    assert torch.equal(collect(loader)[0][2], full[12][2])
    assert torch.equal(collect(loader, start_batch=len(full) - 1)[0][2], full[-1][2])
    assert collect(loader, start_batch=len(full)) == []


@pytest.mark.parametrize(("n", "drop_last"), [(96, False), (103, False), (103, True), (5, False)])
def test_rank_shards_are_slices_of_the_single_process_global_batch(n: int, drop_last: bool) -> None:
    ds = toy(n)
    per_rank, world = 4, 2
    augment = {"padding": 2, "flip": True}
    single = Loader(ds, per_rank * world, seed=11, augment=augment, drop_last=drop_last)
    ranks = [
        Loader(ds, per_rank, seed=11, augment=augment, drop_last=drop_last, rank=r, world_size=world) for r in range(2)
    ]
    for loader in (single, *ranks):
        loader.set_epoch(4)
    single_batches = collect(single)
    rank_batches = [collect(r) for r in ranks]
    assert len(ranks[0]) == len(ranks[1]) == len(single) == len(single_batches) == len(rank_batches[0])
    shard_indices = [torch.cat([i for _, _, i in rb]) for rb in rank_batches]
    assert len(shard_indices[0]) == len(shard_indices[1])  # equally sized shards
    for g, (xs, ys, iss) in enumerate(single_batches):
        (x0, y0, i0), (x1, y1, i1) = rank_batches[0][g], rank_batches[1][g]
        assert len(i0) == len(i1)
        union_i, union_x = torch.cat([i0, i1]), torch.cat([x0, x1])
        # exactly the global batch (the last one may carry wrapped padding beyond it)
        assert torch.equal(union_i[: len(iss)], iss)
        assert torch.equal(union_x[: len(iss)], xs)  # same sample, same augmentation
        assert torch.equal(torch.cat([y0, y1])[: len(iss)], ys)
        assert len(union_i) - len(iss) < world
    covered = set(torch.cat(shard_indices).tolist())
    if drop_last:
        assert len(covered) == len(shard_indices[0]) * 2 == (n // 8) * 8
    else:
        assert covered == set(range(n))
        overlap = set(shard_indices[0].tolist()) & set(shard_indices[1].tolist())
        assert len(overlap) <= (-n) % world  # only the wrap-around padding repeats


def test_three_ranks_without_shuffle_match_distributed_sampler_padding() -> None:
    ds = toy(10)
    ranks = [Loader(ds, 2, shuffle=False, rank=r, world_size=3) for r in range(3)]
    shards = [torch.cat([i for _, _, i in collect(r)]).tolist() for r in ranks]
    assert [len(s) for s in shards] == [4, 4, 4]
    assert shards == [[0, 1, 6, 7], [2, 3, 8, 9], [4, 5, 0, 1]]


def test_loader_argument_checks() -> None:
    ds = toy(10)
    with pytest.raises(ConfigError):
        Loader(ds, 0)
    with pytest.raises(ConfigError):
        Loader(ds, 2, rank=2, world_size=2)
    with pytest.raises(ConfigError, match="rotate"):
        Loader(ds, 2, augment={"padding": 2, "rotate": 5})
    with pytest.raises(ConfigError):
        Loader(ds, 2, augment={"padding": -1})
    assert Loader(ds, 2, augment={}).augment is None


def test_loader_works_with_info_defaults_and_subset() -> None:
    ds = data.load("synthetic", num_classes=10, shape=(1, 8, 8), n=300, seed=0)
    loader = Loader(subset(ds, 100), 32, augment=data.info("digits")["augment"], device="cpu")
    x, y, i = next(iter(loader))
    assert torch.equal(y, loader.dataset.labels[i])
    assert x.shape == (32, 1, 8, 8) and x.device.type == "cpu" and int(i.max()) < 100
    assert len(loader) == 4
