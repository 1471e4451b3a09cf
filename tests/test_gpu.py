"""GPU training: runs where CUDA is, skips cleanly (with its reason) where it is not."""

from __future__ import annotations

import pytest
import torch

from mlplab.fit import fit_lightning, fit_raw
from mlplab.train import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "16-mixed"])
def test_training_on_the_gpu_completes_in_each_precision(make_cfg, precision) -> None:
    metrics = train(
        make_cfg(
            "accelerator=gpu",
            f"trainer.precision={precision}",
            "trainer.max_steps=-1",
            "trainer.max_epochs=3",
        )
    )
    assert metrics["val/loss"] == metrics["val/loss"]  # not NaN


def test_lightning_matches_the_raw_loop_on_the_gpu(make_cfg) -> None:
    """Same kernels on both sides; CUDA may pick other algorithms run to run, so to 1e-5."""
    cfg = make_cfg("accelerator=gpu", "logger=none", "trainer.enable_checkpointing=false")
    lightning, raw = fit_lightning(cfg, []), fit_raw(cfg, [])
    torch.testing.assert_close(lightning.step_losses, raw.step_losses, rtol=1e-5, atol=1e-6)
    for (name, a), b in zip(
        lightning.model.state_dict().items(), raw.model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a.cpu(), b.cpu(), rtol=1e-5, atol=1e-6, msg=name)
