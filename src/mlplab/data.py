"""Synthetic data generated from a seed, and the DataModule that serves it.

Everything random here draws from explicit `torch.Generator`s seeded from `seed`, never from
the global RNG: the same seed gives the same samples, splits and batch order in any engine,
in any process, whatever else has consumed random numbers before.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator
from typing import TypeVar

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler


def make_regression_data(
    num_samples: int, in_features: int, noise: float, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Inputs x ~ N(0, I) and targets from a random smooth nonlinear teacher, plus noise.

    The teacher is a sum of sines of random projections, y = Σ_k a_k sin(1.5 w_k·x + φ_k),
    scaled to unit variance: curved everywhere, so a piecewise-linear ReLU net and a smooth
    Tanh/GELU net fit it visibly differently (frequency 1.5: hard enough that optimizers and
    activations separate within the default 20 epochs, easy enough that they all learn).
    Returns x (n, d) and y (n, 1), float32.
    """
    directions, frequency = 16, 1.5
    x = torch.randn(num_samples, in_features, generator=generator)
    w = torch.randn(in_features, directions, generator=generator) / math.sqrt(in_features)
    phase = torch.rand(directions, generator=generator) * 2 * math.pi
    a = torch.randn(directions, 1, generator=generator)
    y = torch.sin(frequency * x @ w + phase) @ a
    y = (y - y.mean()) / y.std()
    y = y + noise * torch.randn(num_samples, 1, generator=generator)
    return x, y


def make_spiral_data(
    num_samples: int, in_features: int, num_classes: int, noise: float, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Interleaved spiral arms, one per class, hidden in a random rotation of `in_features` dims.

    Each arm turns 1.25 times around the origin in a plane; the remaining dimensions carry
    only Gaussian noise, and a random orthogonal map mixes all of them so no single input
    feature gives the plane away. Returns x (n, d) float32 and labels (n,) int64.
    """
    if in_features < 2:
        raise ValueError(f"spiral data needs in_features >= 2, got {in_features}")
    labels = torch.arange(num_samples) % num_classes
    t = torch.rand(num_samples, generator=generator)  # position along the arm, 0 = centre
    angle = 2 * math.pi * (labels / num_classes + 1.25 * t)
    radius = 2 * t
    plane = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)
    x = torch.cat([plane, torch.zeros(num_samples, in_features - 2)], dim=1)
    x = x + noise * torch.randn(num_samples, in_features, generator=generator)
    rotation, _ = torch.linalg.qr(torch.randn(in_features, in_features, generator=generator))
    return x @ rotation, labels


def make_task_data(
    task: str,
    num_samples: int,
    in_features: int,
    noise: float,
    num_classes: int | None,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """The samples for `task`, targets shaped for its loss (see `mlplab.tasks.LOSSES`)."""
    if task == "regression":
        return make_regression_data(num_samples, in_features, noise, generator)
    if task == "classification":
        return make_spiral_data(num_samples, in_features, num_classes, noise, generator)
    if task == "binary":
        x, labels = make_spiral_data(num_samples, in_features, 2, noise, generator)
        return x, labels.float().unsqueeze(1)
    raise ValueError(f"unknown task {task!r}")


T = TypeVar("T")


def chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of `size` items, the last one shorter if items run out."""
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


class TensorBatches(Dataset):
    """Tensors indexed a whole batch at a time: `ds[index_tensor] -> (x[index], y[index])`.

    One gather (`index_select`) per batch instead of one `__getitem__` per sample plus a
    collate: the data path then costs a few microseconds per batch, not a large share of a
    training step. A list of index tensors gives the list of their batches.
    """

    def __init__(self, x: Tensor, y: Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, index: Tensor | list[Tensor]):
        if isinstance(index, list):
            return [self[i] for i in index]
        return self.x.index_select(0, index), self.y.index_select(0, index)


class EpochBatchSampler(Sampler[Tensor]):
    """Yields index tensors of `batch_size`, the last one shorter if samples run out.

    With `shuffle`, epoch e's order is a permutation drawn from a generator seeded by
    (seed, e) alone: it does not depend on how many epochs were iterated before, so a
    resumed run replays exactly the order an uninterrupted run would have seen. Lightning
    calls `set_epoch` itself; a hand-written loop calls it at the top of each epoch.

    Data-parallel: with `replicas` processes, each step consumes one global batch of
    `replicas × batch_size` consecutive samples of the order, and process `rank` trains on
    its `rank`-th slice, so the processes together see what one process with the global
    batch would. A last, partial global batch is dropped: it could not be split evenly.

    With `batches_per_item` k > 1 it yields lists of k consecutive batches' index tensors
    (an epoch's last list may be shorter): one item per Lightning iteration, several
    optimizer steps each (see `mlplab.module.ChunkedMLPModule`). The batches are the same.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        shuffle: bool,
        seed: int,
        replicas: int = 1,
        rank: int = 0,
    ) -> None:
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.replicas, self.rank = replicas, rank
        self.batches_per_item = 1
        self.epoch = 0
        self.resume_batch = 0  # batches of `self.epoch` already trained on before a resume

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next iteration yields."""
        if epoch != self.epoch:
            self.resume_batch = 0
        self.epoch = epoch

    def resume_at(self, epoch: int, batch: int) -> None:
        """Continue a run stopped after `batch` batches of `epoch`: start there, then go on.

        Setting the epoch here, not only in `set_epoch`, matters: Lightning creates the
        first iterator (and loader workers prefetch from it) before it calls `set_epoch`.
        """
        self.epoch, self.resume_batch = epoch, batch

    def order(self) -> Tensor:
        """All sample indices in the order this epoch visits them."""
        if not self.shuffle:
            return torch.arange(self.num_samples)
        # Mix seed and epoch into one 63-bit seed (golden-ratio multiply) so (seed, epoch)
        # pairs do not collide the way seed + epoch would.
        mixed = (self.seed * 0x9E3779B97F4A7C15 + self.epoch) % 2**63
        return torch.randperm(self.num_samples, generator=torch.Generator().manual_seed(mixed))

    def spans(self) -> Iterator[tuple[int, int]]:
        """(start, stop) positions in `order()` of this process's batches, from the resume point."""
        size = self.batch_size * self.replicas
        first = self.resume_batch * size + self.rank * self.batch_size
        for start in range(first, self.num_batches() * size, size):
            yield start, min(start + self.batch_size, self.num_samples)

    def items(self, batches: Iterable[T]) -> Iterator[T] | Iterator[list[T]]:
        """`batches` as this sampler yields them: one by one, or in lists of `batches_per_item`."""
        if self.batches_per_item == 1:
            return iter(batches)
        return chunks(batches, self.batches_per_item)

    def __iter__(self) -> Iterator[Tensor] | Iterator[list[Tensor]]:
        order = self.order()  # drawn now, after any set_epoch
        return self.items(order[start:stop] for start, stop in self.spans())

    def num_batches(self) -> int:
        """Batches (optimizer steps) in a whole epoch, for this process."""
        if self.replicas == 1:
            return math.ceil(self.num_samples / self.batch_size)
        return self.num_samples // (self.batch_size * self.replicas)

    def __len__(self) -> int:
        """Items in a whole epoch: batches, or lists of `batches_per_item` batches."""
        return math.ceil(self.num_batches() / self.batches_per_item)


def keep_batch(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """The loader's collate step: the dataset already returns a finished batch."""
    return batch


class EpochLoader(DataLoader):
    """A DataLoader of `TensorBatches` batched by an `EpochBatchSampler`.

    With worker processes it is torch's own loader. Without (the default: the data are
    in memory) it skips that machinery: it gathers the epoch's order once, then yields
    consecutive slices, which are views, not copies. Same batches, bit for bit; a few
    microseconds per batch instead of tens.
    """

    dataset: TensorBatches
    sampler: EpochBatchSampler

    def __iter__(self):
        if self.num_workers > 0:
            return super().__iter__()
        return self.sampler.items(self._slices())

    def _slices(self) -> Iterator[tuple[Tensor, Tensor]]:
        # A generator: the order is drawn at the first batch, after any set_epoch.
        sampler, data = self.sampler, self.dataset
        x, y = data.x, data.y
        if sampler.shuffle:
            order = sampler.order()
            # index_select: the same rows as x[order], ~15x faster for narrow float rows
            x, y = x.index_select(0, order), y.index_select(0, order)
        for start, stop in sampler.spans():
            yield x[start:stop], y[start:stop]


class SyntheticDataModule(L.LightningDataModule):
    """Generates one task's data from `seed`, splits it, and serves train/val/test loaders."""

    def __init__(
        self,
        task: str,
        num_samples: int,
        in_features: int,
        noise: float,
        num_classes: int | None,
        val_fraction: float,
        test_fraction: float,
        batch_size: int,
        num_workers: int,
        seed: int,
    ) -> None:
        super().__init__()
        self.task = task
        self.num_samples = num_samples
        self.in_features = in_features
        self.noise = noise
        self.num_classes = num_classes
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.splits: dict[str, TensorBatches] = {}
        self.resume_position = (0, 0)  # (epoch, batch) the training loader starts at
        self.replicas, self.rank = 1, 0  # data-parallel processes, and which one this is
        self.batches_per_item = 1  # training batches per loader item (see `group`)

    def resume_at(self, epoch: int, batch: int) -> None:
        """Make the training loader start after `batch` batches of `epoch` (for a resumed run)."""
        self.resume_position = (epoch, batch)

    def group(self, batches_per_item: int) -> None:
        """Serve the training batches in lists of `batches_per_item` consecutive ones."""
        self.batches_per_item = batches_per_item

    def shard(self, replicas: int, rank: int) -> None:
        """Serve process `rank` of `replicas` its slice of every training batch."""
        self.replicas, self.rank = replicas, rank

    def setup(self, stage: str | None = None) -> None:
        """Generate and split the samples (once; later calls reuse them)."""
        if self.splits:
            return
        generator = torch.Generator().manual_seed(self.seed)
        x, y = make_task_data(
            self.task, self.num_samples, self.in_features, self.noise, self.num_classes, generator
        )
        num_val = int(self.num_samples * self.val_fraction)
        num_test = int(self.num_samples * self.test_fraction)
        order = torch.randperm(self.num_samples, generator=generator)
        parts = order.split([self.num_samples - num_val - num_test, num_val, num_test])
        for name, index in zip(("train", "val", "test"), parts, strict=True):
            self.splits[name] = TensorBatches(x[index], y[index])

    def loader(self, split: str) -> EpochLoader:
        """A loader over one split; only "train" is shuffled."""
        dataset = self.splits[split]
        sampler = EpochBatchSampler(len(dataset), self.batch_size, split == "train", self.seed)
        return EpochLoader(
            dataset,
            batch_size=None,  # the sampler already yields whole batches of indices
            sampler=sampler,
            collate_fn=keep_batch,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> EpochLoader:
        loader = self.loader("train")
        loader.sampler.replicas, loader.sampler.rank = self.replicas, self.rank
        loader.sampler.batches_per_item = self.batches_per_item
        loader.sampler.resume_at(*self.resume_position)
        return loader

    def steps_per_epoch(self) -> int:
        """Optimizer steps in one epoch: the number of training batches (of each process)."""
        return self.train_dataloader().sampler.num_batches()

    def val_dataloader(self) -> EpochLoader:
        return self.loader("val")

    def test_dataloader(self) -> EpochLoader:
        return self.loader("test")
