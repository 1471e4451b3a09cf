"""Writing files so that a crash never leaves a torn one behind."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO


def replace_atomically(path: Path, write: Any) -> None:
    """Call `write(file)` on a temporary file beside `path`, fsync it, then rename it over `path`.

    A reader (or a crash) sees the old file or the new one, never half of one: `os.replace`
    is atomic within a directory, and the temporary name starts with a dot so nothing that
    globs for `*.ckpt` or `*.json` picks it up.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # make the rename itself durable
    finally:
        os.close(directory)


def save_checkpoint(payload: dict[str, Any], path: Path) -> None:
    """`torch.save` made atomic."""
    replace_atomically(path, lambda file: torch.save(payload, file))


def write_json(data: dict[str, Any], path: Path) -> None:
    """Pretty JSON, made atomic."""
    text = json.dumps(data, indent=2, sort_keys=False) + "\n"
    replace_atomically(path, lambda file: file.write(text.encode()))


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, made atomic: a killed save leaves the previous file intact."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        save_checkpoint(checkpoint, Path(path))
