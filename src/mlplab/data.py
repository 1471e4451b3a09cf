"""Synthetic data generated from a seed, and the DataModule that serves it.

Everything random here draws from explicit `torch.Generator`s, never from the global RNG: the
samples and splits from `seed` (the dataset: `data.seed`), the batch order from `shuffle_seed`
(the run's `seed`, like the initialisation), so several seeds of one config train on the same
data. The same seeds give the same samples, splits and batch order in any engine, in any
process, whatever else has consumed random numbers before.

The samples are computed in float64 and rounded to float32 once, at the end. In float32,
torch picks its sampling and sine kernels by what the CPU offers (`ATEN_CPU_CAPABILITY`:
AVX2, AVX-512 or plain C), and those round differently: the same seed gave different data in
different processes. In float64 the kernels differ by an ulp at most, far below float32's.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator

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
    directions, frequency, f64 = 16, 1.5, torch.float64
    x = torch.randn(num_samples, in_features, generator=generator, dtype=f64)
    w = torch.randn(in_features, directions, generator=generator, dtype=f64)
    w = w / math.sqrt(in_features)
    phase = torch.rand(directions, generator=generator, dtype=f64) * 2 * math.pi
    a = torch.randn(directions, 1, generator=generator, dtype=f64)
    y = torch.sin(frequency * x @ w + phase) @ a
    y = (y - y.mean()) / y.std()
    y = y + noise * torch.randn(num_samples, 1, generator=generator, dtype=f64)
    return x.float(), y.float()


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
    f64 = torch.float64
    labels = torch.arange(num_samples) % num_classes
    t = torch.rand(num_samples, generator=generator, dtype=f64)  # position along the arm
    angle = 2 * math.pi * (labels / num_classes + 1.25 * t)
    radius = 2 * t  # 0 = the centre
    plane = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)
    x = torch.cat([plane, torch.zeros(num_samples, in_features - 2, dtype=f64)], dim=1)
    x = x + noise * torch.randn(num_samples, in_features, generator=generator, dtype=f64)
    mixing = torch.randn(in_features, in_features, generator=generator, dtype=f64)
    rotation, _ = torch.linalg.qr(mixing)
    return (x @ rotation).float(), labels


def make_task_data(
    task: str,
    num_samples: int,
    in_features: int,
    out_features: int,
    noise: float,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """The samples for `task`, targets shaped for its loss (see `mlplab.tasks.LOSSES`).

    For classification, `out_features` is the number of classes (spiral arms).
    """
    if task == "regression":
        return make_regression_data(num_samples, in_features, noise, generator)
    if task == "classification":
        return make_spiral_data(num_samples, in_features, out_features, noise, generator)
    if task == "binary":
        x, labels = make_spiral_data(num_samples, in_features, 2, noise, generator)
        return x, labels.float().unsqueeze(1)
    raise ValueError(f"unknown task {task!r}")


class TensorBatches(Dataset):
    """Tensors indexed a whole batch at a time: `ds.__getitems__(index) -> (x[index], y[index])`.

    One gather (`index_select`) per batch instead of one `__getitem__` per sample plus a
    collate: the data path then costs a few microseconds per batch, not a large share of a
    training step. torch's DataLoader calls `__getitems__` with each index batch.
    """

    def __init__(self, x: Tensor, y: Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.x[index], self.y[index]

    def __getitems__(self, index: Tensor) -> tuple[Tensor, Tensor]:
        return self.x.index_select(0, index), self.y.index_select(0, index)


class EpochOrder(Sampler[int]):
    """The order in which one epoch visits the samples; a new permutation each epoch.

    With `shuffle`, epoch e's order is a permutation drawn from a generator seeded by
    (seed, e) alone: it does not depend on how many epochs were iterated before, so a
    resumed run replays exactly the order an uninterrupted run would have seen. Like
    torch's DistributedSampler, it is told the epoch: Lightning calls `set_epoch` itself,
    a hand-written loop at the top of each epoch.
    """

    def __init__(self, num_samples: int, shuffle: bool, seed: int) -> None:
        self.num_samples, self.shuffle, self.seed = num_samples, shuffle, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order comes next."""
        self.epoch = epoch

    def order(self) -> Tensor:
        """All sample indices in the order this epoch visits them."""
        if not self.shuffle:
            return torch.arange(self.num_samples)
        # Mix seed and epoch into one 63-bit seed (golden-ratio multiply) so (seed, epoch)
        # pairs do not collide the way seed + epoch would.
        mixed = (self.seed * 0x9E3779B97F4A7C15 + self.epoch) % 2**63
        return torch.randperm(self.num_samples, generator=torch.Generator().manual_seed(mixed))

    def __iter__(self) -> Iterator[int]:
        return iter(self.order().tolist())

    def __len__(self) -> int:
        return self.num_samples


class EpochBatchSampler(Sampler[Tensor]):
    """Cuts each epoch's order (`self.sampler`) into index tensors of `batch_size`.

    The last batch is shorter if samples run out. Data-parallel: with `world_size`
    processes, each step consumes one global batch of `world_size × batch_size` consecutive
    samples of the order, and process `rank` trains on its `rank`-th slice, so the processes
    together see what one process with the global batch would. A last, partial global batch
    is dropped: it could not be split evenly.
    """

    def __init__(self, sampler: EpochOrder, batch_size: int, world_size: int = 1, rank: int = 0):
        self.sampler = sampler
        self.batch_size = batch_size
        self.world_size, self.rank = world_size, rank
        self.resume = (0, 0)  # (epoch, batches of it already trained on before a resume)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches come next."""
        self.sampler.set_epoch(epoch)

    def resume_at(self, epoch: int, batch: int) -> None:
        """Continue a run stopped after `batch` batches of `epoch`: start there, then go on."""
        self.resume = (epoch, batch)

    def skipped(self) -> int:
        """Batches of the current epoch that a resumed run has already trained on."""
        epoch, batch = self.resume
        return batch if epoch == self.sampler.epoch else 0

    def spans(self) -> Iterator[tuple[int, int]]:
        """(start, stop) positions in the order of this process's batches, from the resume point."""
        size = self.batch_size * self.world_size
        first = self.skipped() * size + self.rank * self.batch_size
        for start in range(first, self.num_batches() * size, size):
            yield start, min(start + self.batch_size, self.sampler.num_samples)

    def __iter__(self) -> Iterator[Tensor]:
        order = self.sampler.order()  # drawn now, after any set_epoch
        return (order[start:stop] for start, stop in self.spans())

    def num_batches(self) -> int:
        """Batches in a whole epoch, for this process."""
        if self.world_size == 1:
            return math.ceil(self.sampler.num_samples / self.batch_size)
        return self.sampler.num_samples // (self.batch_size * self.world_size)

    def __len__(self) -> int:
        return self.num_batches()


def keep_batch(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """The loader's collate step: the dataset already returns a finished batch."""
    return batch


class EpochLoader(DataLoader):
    """A DataLoader of `TensorBatches` batched by an `EpochBatchSampler`, resumable mid-epoch.

    `state_dict`/`load_state_dict` (the interface Lightning saves and restores a loader's
    position with) record the epoch and how many of its batches were served, so a run
    resumed from a mid-epoch checkpoint carries on with the very next batch.

    With worker processes it is torch's own loader. Without (the default: the data are in
    memory) it skips that machinery: it gathers the epoch's order once, then yields
    consecutive slices, which are views, not copies. Same batches, bit for bit.
    """

    dataset: TensorBatches
    batch_sampler: EpochBatchSampler

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        # A generator: nothing is drawn (and no worker starts) before the first batch is
        # asked for, after any set_epoch or load_state_dict.
        sampler = self.batch_sampler
        batches = super().__iter__() if self.num_workers > 0 else self._slices()
        self.served = (sampler.sampler.epoch, sampler.skipped())
        for batch in batches:
            self.served = (self.served[0], self.served[1] + 1)
            yield batch

    def _slices(self) -> Iterator[tuple[Tensor, Tensor]]:
        sampler, data = self.batch_sampler, self.dataset
        x, y = data.x, data.y
        if sampler.sampler.shuffle:
            order = sampler.sampler.order()
            # index_select: the same rows as x[order], ~15x faster for narrow float rows
            x, y = x.index_select(0, order), y.index_select(0, order)
        for start, stop in sampler.spans():
            yield x[start:stop], y[start:stop]

    def state_dict(self) -> dict[str, int]:
        """Where the loader stands: the epoch, and how many of its batches were served."""
        epoch, served = getattr(self, "served", (self.batch_sampler.sampler.epoch, 0))
        return {"epoch": epoch, "batches_served": served}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Serve the rest of the recorded epoch next (the following epochs as usual).

        The epoch is set here too, not only by Lightning's `set_epoch`: Lightning creates
        the first iterator (and loader workers prefetch from it) before it calls that.
        """
        self.batch_sampler.sampler.set_epoch(state["epoch"])
        self.batch_sampler.resume_at(state["epoch"], state["batches_served"])


# The last dataset generated is kept: the replicas of a job (a DataModule each, one `data.seed`)
# share one copy of it, generated once. Nothing writes into these tensors.
@functools.lru_cache(maxsize=1)
def generate_splits(
    task: str,
    in_features: int,
    out_features: int,
    num_samples: int,
    noise: float,
    seed: int,
    val_fraction: float,
    test_fraction: float,
) -> dict[str, TensorBatches]:
    """The samples of `task` drawn from `seed`, split into "train", "val" and "test"."""
    generator = torch.Generator().manual_seed(seed)
    x, y = make_task_data(task, num_samples, in_features, out_features, noise, generator)
    num_val = int(num_samples * val_fraction)
    num_test = int(num_samples * test_fraction)
    order = torch.randperm(num_samples, generator=generator)
    parts = order.split([num_samples - num_val - num_test, num_val, num_test])
    names = ("train", "val", "test")
    return {
        name: TensorBatches(x[index], y[index]) for name, index in zip(names, parts, strict=True)
    }


class SyntheticDataModule(L.LightningDataModule):
    """Generates one task's data from `seed`, splits it, and serves train/val/test loaders.

    The training batches are shuffled in an order drawn from `shuffle_seed` (`seed` if None):
    the configs set it to the run's seed, so that `seed` varies how a model trains and
    `data.seed` what it trains on.

    Under data parallelism the training loader shards each global batch itself (so the
    Trainer runs with `use_distributed_sampler=False`, as `configs/accelerator/ddp*.yaml` set).
    """

    def __init__(
        self,
        task: str,
        in_features: int,
        out_features: int,
        num_samples: int,
        noise: float,
        seed: int = 0,
        shuffle_seed: int | None = None,
        batch_size: int = 64,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.task = task
        self.in_features = in_features
        self.out_features = out_features  # the number of classes, for classification
        self.num_samples = num_samples
        self.noise = noise
        self.seed = seed
        self.shuffle_seed = seed if shuffle_seed is None else shuffle_seed
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.num_workers = num_workers
        self.splits: dict[str, TensorBatches] = {}

    def setup(self, stage: str | None = None) -> None:
        """Generate and split the samples (once; later calls reuse them)."""
        if not self.splits:
            self.splits = generate_splits(
                self.task,
                self.in_features,
                self.out_features,
                self.num_samples,
                self.noise,
                self.seed,
                self.val_fraction,
                self.test_fraction,
            )

    def loader(self, split: str, shuffle: bool = False, world_size: int = 1, rank: int = 0):
        """A loader over one split, in batches of `batch_size`."""
        dataset = self.splits[split]
        order = EpochOrder(len(dataset), shuffle, self.shuffle_seed)
        sampler = EpochBatchSampler(order, self.batch_size, world_size=world_size, rank=rank)
        return EpochLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=keep_batch,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> EpochLoader:
        """Shuffled each epoch; this process's slice of each global batch under DDP.

        `trainer.overfit_batches` asks for the same batches every epoch: no shuffling then.
        """
        trainer = self.trainer
        if trainer is None:  # the raw loop, or a test
            return self.loader("train", shuffle=True)
        return self.loader(
            "train",
            shuffle=not trainer.overfit_batches,
            world_size=trainer.world_size,
            rank=trainer.global_rank,
        )

    def val_dataloader(self) -> EpochLoader:
        return self.loader("val")

    def test_dataloader(self) -> EpochLoader:
        return self.loader("test")
