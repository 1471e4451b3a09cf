"""A run directory is data, not code: nothing read from it may execute."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import yaml

from mlplab.train import train

from . import forked
from .conftest import ROOT

pytestmark = pytest.mark.slow


class Payload:
    """Unpickling it writes a file: proof that code from the run directory ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


@pytest.fixture
def poisoned_run(make_cfg, tmp_path) -> tuple[Path, Path]:
    """A finished run whose config.yaml was edited to torch.load a pickle beside it."""
    train(make_cfg("trainer.max_steps=-1", "trainer.max_epochs=1", name="run"))
    run, marker = tmp_path / "run", tmp_path / "pwned"
    (run / "notes.pt").write_bytes(pickle.dumps(Payload(marker)))
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["activation"] = {
        "_target_": "torch.load",
        "f": str(run / "notes.pt"),
        "weights_only": False,
    }
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    return run, marker


@pytest.mark.parametrize(
    "command",
    [["eval.py", "run={run}"], ["train.py", "resume={run}", "trainer.max_epochs=2"]],
    ids=["eval", "resume"],
)
def test_a_saved_config_never_runs_an_arbitrary_callable(poisoned_run, command) -> None:
    run, marker = poisoned_run
    done = forked.run(
        ROOT, ROOT / command[0], *(a.format(run=run) for a in command[1:]), timeout=300
    )
    assert done.returncode == 2, done.stderr
    assert "activation._target_=torch.load is not allowed" in done.stderr
    assert not marker.exists()  # the payload never ran
