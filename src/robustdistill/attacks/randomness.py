"""Random starts that do not depend on how a batch is split across processes.

Outside any context the attacks draw their random starts from torch's global generator (or from
an explicit `generator`), as usual. Inside `shared_random_starts(seed, rank=r, world_size=w)`,
which the training loop opens around every step with a seed that is a pure function of
`(run seed, step)`, every start without an explicit generator is drawn from a generator seeded
with `seed`: a rank holding `n` rows draws the `w * n` rows of the global batch and keeps its
slice `[r * n, (r + 1) * n)`. Rank `r` of a distributed run therefore starts its samples exactly
where a single process holding the whole global batch would (the data loader gives rank `r` the
same slice of each global batch), and a resumed run redraws the starts of an interrupted one.

Cost: each rank draws `w` times the random numbers it keeps, negligible next to a forward pass.
A batch that is not "one row per sample of the global batch slice" (for instance the two
concatenated branches of `paths`) still gets valid independent starts, just not the ones a
single process would have drawn for those samples.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Literal

import torch
from torch import Tensor

__all__ = ["batch_noise", "shared_random_starts"]


class _SharedStream:
    def __init__(self, seed: int, rank: int, world_size: int) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size), got rank {rank} of {world_size}")
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self._generators: dict[str, torch.Generator] = {}

    def generator(self, device: torch.device) -> torch.Generator:
        key = str(device)
        if key not in self._generators:
            generator = torch.Generator(device=device)
            generator.manual_seed(self.seed)
            self._generators[key] = generator
        return self._generators[key]


_ACTIVE: ContextVar[_SharedStream | None] = ContextVar("robustdistill_shared_random_starts", default=None)


@contextmanager
def shared_random_starts(seed: int, *, rank: int = 0, world_size: int = 1) -> Iterator[None]:
    """Draw the random starts inside this block from `seed`, sliced for `rank` of `world_size`."""
    token = _ACTIVE.set(_SharedStream(seed, rank, world_size))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def batch_noise(
    kind: Literal["uniform", "normal"],
    shape: Sequence[int],
    *,
    device: torch.device,
    dtype: torch.dtype,
    generator: torch.Generator | None = None,
) -> Tensor:
    """`torch.rand` ("uniform") or `torch.randn` ("normal") of `shape`, whose first dimension is the batch.

    With an explicit `generator`, or outside `shared_random_starts`, exactly that call; inside the
    context, this rank's rows of the global batch's draw (see the module docstring).
    """
    draw = torch.rand if kind == "uniform" else torch.randn
    shape = tuple(int(s) for s in shape)
    shared = _ACTIVE.get()
    if generator is not None or shared is None:
        return draw(shape, generator=generator, device=device, dtype=dtype)
    rows = shape[0]
    full = draw(
        (shared.world_size * rows, *shape[1:]),
        generator=shared.generator(torch.device(device)),
        device=device,
        dtype=dtype,
    )
    if shared.world_size == 1:
        return full
    return full[shared.rank * rows : (shared.rank + 1) * rows]
