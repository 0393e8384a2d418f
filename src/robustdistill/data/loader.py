"""`Loader`: deterministic, resumable, rank-sharded batches of an `ArrayDataset`."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from robustdistill.data.augment import apply_crop_flip, check_augment, sample_crop_flip
from robustdistill.data.dataset import ArrayDataset
from robustdistill.errors import ConfigError

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]

_ORDER_STREAM, _AUGMENT_STREAM = 0, 1


def stream_seed(*keys: int) -> int:
    """A 63-bit seed that is a pure function of the integer `keys` (NumPy SeedSequence hashing)."""
    state = np.random.SeedSequence([int(k) % 2**64 for k in keys]).generate_state(2, np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


class Loader:
    """Iterate over `dataset` in batches `(x, y, index)`.

    `x` is float32 `images / 255` (then augmented), `y` int64 labels, `index` int64 positions in the
    dataset. Everything is built on the CPU and moved to `device` at the end.

    Determinism: the order of epoch `e` is a pure function of `(seed, e)` (`set_epoch`), and the
    augmentation of global batch `i` a pure function of `(seed, e, i)`.

    Sharding: the *global* batch has `batch_size * world_size` samples taken consecutively from the
    epoch order; rank `r` gets its slice `[r * b, (r + 1) * b]`, so the union over ranks of batch `i` is
    exactly batch `i` of a single-process loader with `batch_size * world_size` (same seed, epoch,
    shuffle), and each sample gets the same augmentation either way. Without `drop_last`, the last
    global batch is padded up to a multiple of `world_size` by wrapping to the start of the epoch
    order (like `DistributedSampler`), so all ranks see the same number of equally sized batches;
    with `drop_last`, incomplete global batches are dropped.

    Resuming: `start_batch` (or `set_epoch(e, start_batch=k)`) makes the next iteration skip its first
    `k` batches, yielding exactly what batches `k, k+1, ...` would have been; it then resets to 0.
    `iterate(start_batch=k)` does the same without touching the attribute. `len(loader)` is always the
    full number of batches per epoch for this rank.
    """

    def __init__(
        self,
        dataset: ArrayDataset,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        augment: dict[str, Any] | None = None,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        device: str | torch.device = "cpu",
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}.")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"rank must be in [0, world_size) with world_size >= 1, got rank {rank} of {world_size}.")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.augment = check_augment(augment)
        self.drop_last = bool(drop_last)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.device = torch.device(device)
        self.epoch = 0
        self.start_batch = 0

    @property
    def global_batch_size(self) -> int:
        """Samples per step over all ranks: `batch_size * world_size`."""
        return self.batch_size * self.world_size

    def __len__(self) -> int:
        n, size = len(self.dataset), self.global_batch_size
        return n // size if self.drop_last else math.ceil(n / size)

    def set_epoch(self, epoch: int, start_batch: int | None = None) -> None:
        """Select the epoch whose order is iterated next (and optionally the batch to resume at)."""
        self.epoch = int(epoch)
        if start_batch is not None:
            self.start_batch = int(start_batch)

    def order(self, epoch: int | None = None) -> torch.Tensor:
        """The epoch's sample order (a permutation of the dataset, or `arange` without shuffle)."""
        n = len(self.dataset)
        if not self.shuffle:
            return torch.arange(n)
        epoch = self.epoch if epoch is None else epoch
        generator = torch.Generator().manual_seed(stream_seed(self.seed, epoch, _ORDER_STREAM))
        return torch.randperm(n, generator=generator)

    def _slice(self, batch: int, order: torch.Tensor) -> tuple[torch.Tensor, int]:
        """This rank's dataset indices in global batch `batch`, and their offset in that batch."""
        n, size = order.numel(), self.global_batch_size
        chunk = order[batch * size : min((batch + 1) * size, n)]
        short = -chunk.numel() % self.world_size
        if short:
            chunk = torch.cat([chunk, order.repeat(math.ceil(short / n))[:short]])
        per_rank = chunk.numel() // self.world_size
        start = self.rank * per_rank
        return chunk[start : start + per_rank], start

    def _make(self, batch: int, order: torch.Tensor, epoch: int) -> Batch:
        index, offset = self._slice(batch, order)
        x = self.dataset.images[index]
        if self.augment is not None:
            generator = torch.Generator().manual_seed(stream_seed(self.seed, epoch, _AUGMENT_STREAM, batch))
            params = sample_crop_flip(self.global_batch_size, self.augment["padding"], self.augment["flip"], generator)
            x = apply_crop_flip(x, self.augment["padding"], params[offset : offset + index.numel()])
        x = x.to(torch.float32).div_(255.0)
        y = self.dataset.labels[index]
        if self.device.type == "cuda":
            x, y, index = x.pin_memory(), y.pin_memory(), index.pin_memory()
        if self.device.type != "cpu":
            x, y, index = (t.to(self.device, non_blocking=True) for t in (x, y, index))
        return x, y, index

    def iterate(self, start_batch: int = 0) -> Iterator[Batch]:
        """Batches `start_batch, ..., len(self) - 1` of the current epoch."""
        if start_batch < 0:
            raise ConfigError(f"start_batch must be >= 0, got {start_batch}.")
        epoch, order = self.epoch, self.order()
        for batch in range(start_batch, len(self)):
            yield self._make(batch, order, epoch)

    def __iter__(self) -> Iterator[Batch]:
        start, self.start_batch = self.start_batch, 0
        return self.iterate(start)
