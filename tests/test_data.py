"""Synthetic data: deterministic from the seed, split cleanly, batched and shuffled as promised."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from mlplab.build import build_datamodule
from mlplab.data import (
    EpochBatchSampler,
    EpochOrder,
    generate_splits,
    make_regression_data,
    make_spiral_data,
)


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_same_seed_same_data_other_seed_other_data() -> None:
    a = make_regression_data(100, 4, 0.1, generator(1))
    b = make_regression_data(100, 4, 0.1, generator(1))
    c = make_regression_data(100, 4, 0.1, generator(2))
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert not torch.equal(a[1], c[1])


DATA_DIGEST = """
import hashlib, torch
from mlplab.data import make_task_data
digest = hashlib.sha256()
for task in ("regression", "classification", "binary"):
    for tensor in make_task_data(task, 4096, 8, 3, 0.1, torch.Generator().manual_seed(0)):
        digest.update(tensor.numpy().tobytes())
print(digest.hexdigest())
"""


def test_fresh_processes_make_bit_identical_data_whatever_the_cpu_kernels() -> None:
    # torch picks float32 sampling and sine kernels by CPU capability (AVX2, AVX-512, plain
    # C), and they round differently: float32 generation gave other data under each.
    digests = set()
    for capability, threads in (("default", "1"), ("avx2", "2")):  # plain C, then SIMD
        env = {**os.environ, "ATEN_CPU_CAPABILITY": capability, "OMP_NUM_THREADS": threads}
        result = subprocess.run(
            [sys.executable, "-c", DATA_DIGEST], env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        digests.add(result.stdout.strip())
    assert len(digests) == 1


def test_global_rng_does_not_leak_into_the_data(make_cfg) -> None:
    dm1 = build_datamodule(make_cfg())
    dm1.setup()
    torch.manual_seed(12345)
    torch.rand(10)
    generate_splits.cache_clear()  # generated anew, not the last dataset kept
    dm2 = build_datamodule(make_cfg())
    dm2.setup()
    for split in ("train", "val", "test"):
        assert torch.equal(dm1.splits[split].x, dm2.splits[split].x)


def test_regression_targets_are_standardised_with_noise() -> None:
    x, y = make_regression_data(20_000, 8, 0.0, generator(0))
    assert x.shape == (20_000, 8) and y.shape == (20_000, 1)
    assert abs(float(y.mean())) < 1e-4 and abs(float(y.std()) - 1) < 1e-4
    _, noisy = make_regression_data(20_000, 8, 0.5, generator(0))
    assert float((noisy - y).std()) == pytest.approx(0.5, rel=0.05)


def test_spirals_are_balanced_and_need_two_dimensions() -> None:
    x, labels = make_spiral_data(300, 5, 3, 0.05, generator(0))
    assert x.shape == (300, 5) and labels.dtype == torch.int64
    assert torch.bincount(labels).tolist() == [100, 100, 100]
    with pytest.raises(ValueError, match="in_features >= 2"):
        make_spiral_data(10, 1, 2, 0.1, generator(0))


@pytest.mark.parametrize(
    ("task", "target_dtype", "target_shape"),
    [
        ("regression", torch.float32, (1,)),
        ("binary", torch.float32, (1,)),
        ("classification", torch.int64, ()),
    ],
)
def test_datamodule_splits_without_overlap(make_cfg, task, target_dtype, target_shape) -> None:
    dm = build_datamodule(make_cfg(f"data={task}", "data.num_samples=1000"))
    dm.setup()
    sizes = {name: len(split) for name, split in dm.splits.items()}
    assert sizes == {"train": 600, "val": 200, "test": 200}
    rows = torch.cat([dm.splits[n].x for n in sizes])
    assert torch.unique(rows, dim=0).shape[0] == 1000  # every sample in exactly one split
    y = dm.splits["train"].y
    assert y.dtype == target_dtype and y.shape[1:] == target_shape


def first_epoch(dm) -> tuple[torch.Tensor, torch.Tensor]:
    """The training inputs in the order epoch 0 serves them, and the test targets."""
    generate_splits.cache_clear()  # generated anew, not the last dataset kept
    dm.setup()
    return torch.cat([x for x, _ in dm.train_dataloader()]), dm.splits["test"].y


def test_seed_changes_the_batch_order_data_seed_the_data(make_cfg) -> None:
    order, test = first_epoch(build_datamodule(make_cfg()))
    other_seed_order, other_seed_test = first_epoch(build_datamodule(make_cfg("seed=1")))
    assert torch.equal(other_seed_test, test)  # the same samples and splits ...
    assert torch.equal(other_seed_order.sort(0).values, order.sort(0).values)
    assert not torch.equal(other_seed_order, order)  # ... visited in another order
    other_data_order, other_data_test = first_epoch(build_datamodule(make_cfg("data.seed=1")))
    assert not torch.equal(other_data_test, test)  # another dataset
    assert not torch.equal(other_data_order.sort(0).values, order.sort(0).values)


def test_only_the_training_loader_shuffles(make_cfg) -> None:
    dm = build_datamodule(make_cfg())
    dm.setup()
    assert dm.train_dataloader().batch_sampler.sampler.shuffle
    for loader in (dm.val_dataloader(), dm.test_dataloader()):
        assert torch.equal(torch.cat(list(loader.batch_sampler)), torch.arange(40))


def test_each_epoch_visits_every_sample_once_in_a_new_order() -> None:
    sampler = EpochBatchSampler(EpochOrder(num_samples=50, shuffle=True, seed=3), batch_size=16)
    orders = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert [len(b) for b in batches] == [16, 16, 16, 2]
        assert len(sampler) == 4
        order = torch.cat(batches)
        assert torch.equal(order.sort().values, torch.arange(50))
        orders.append(order)
    assert not torch.equal(orders[0], orders[1]) and not torch.equal(orders[1], orders[2])
    sampler.set_epoch(1)  # an epoch's order depends on (seed, epoch) alone
    assert torch.equal(torch.cat(list(sampler)), orders[1])
    assert not torch.equal(EpochOrder(50, True, seed=4).order(), orders[0])


def test_loader_with_workers_yields_the_same_batches(make_cfg) -> None:
    dm0 = build_datamodule(make_cfg())
    dm2 = build_datamodule(make_cfg("data.num_workers=2"))
    for dm in (dm0, dm2):
        dm.setup()
    loaders = [dm0.train_dataloader(), dm2.train_dataloader()]
    for epoch in (0, 1):
        for loader in loaders:
            loader.batch_sampler.set_epoch(epoch)
        for (x0, y0), (x2, y2) in zip(*loaders, strict=True):
            assert torch.equal(x0, x2) and torch.equal(y0, y2)


@pytest.mark.parametrize(
    ("workers", "world_size", "served"), [(0, 1, 0), (0, 1, 2), (0, 2, 0), (0, 2, 3), (2, 2, 3)]
)
def test_loader_resumes_after_the_batches_its_state_says_were_served(
    make_cfg, workers, world_size, served
):
    """What Lightning saves of the loader mid-epoch (`state_dict`) brings a fresh loader back
    to the very next batch of the same epoch, and the following epochs are whole."""
    dm = build_datamodule(make_cfg(f"data.num_workers={workers}"))
    dm.setup()
    straight = dm.loader("train", shuffle=True, world_size=world_size, rank=world_size - 1)
    straight.batch_sampler.set_epoch(1)
    iterator = iter(straight)
    for _ in range(served):
        next(iterator)
    state = straight.state_dict()
    assert state == {"epoch": 1, "batches_served": served}
    rest = list(iterator)

    resumed = dm.loader("train", shuffle=True, world_size=world_size, rank=world_size - 1)
    resumed.load_state_dict(state)
    again = list(resumed)
    assert len(again) == len(rest) == len(straight) - served
    for (xa, ya), (xb, yb) in zip(rest, again, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert resumed.state_dict() == {"epoch": 1, "batches_served": len(straight)}
    resumed.batch_sampler.set_epoch(2)
    straight.batch_sampler.set_epoch(2)
    assert len(list(resumed)) == len(straight)  # the next epoch starts from its beginning
