"""Writing files so that a crash never leaves a torn one behind, without stalling training."""

from __future__ import annotations

import io
import json
import os
import threading
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


class CheckpointWriter:
    """Saves checkpoints atomically in a background thread; the newest one always wins.

    Serializing and fsyncing a checkpoint takes milliseconds (far more on a busy disk), a
    real cost when epochs are short. So `save` serializes into memory (the file is then the
    state at the moment of the call: well under a millisecond for mlplab's models) and
    returns; a thread writes and fsyncs. Should saves come faster than
    the disk takes them, a save still waiting is replaced by the newer one: `last.ckpt`
    lags by at most one, and is at every moment a whole, consistent checkpoint. `wait`
    (and `close`) block until the newest save is on disk; an error in a write is raised
    by the next `save` or by `wait`.
    """

    def __init__(self) -> None:
        self.condition = threading.Condition()
        self.waiting: tuple[bytes, Path] | None = None
        self.busy = False
        self.error: BaseException | None = None

    def save(self, payload: dict[str, Any], path: Path) -> None:
        self.raise_error()
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        with self.condition:
            self.waiting = (buffer.getvalue(), Path(path))
            if not self.busy:
                self.busy = True
                threading.Thread(target=self.drain, name="checkpoint-writer", daemon=True).start()

    def drain(self) -> None:
        """The writer thread: write the waiting checkpoint until none is left."""
        while True:
            with self.condition:
                if self.waiting is None:
                    self.busy = False
                    self.condition.notify_all()
                    return
                (data, path), self.waiting = self.waiting, None
            try:
                replace_atomically(path, lambda file, data=data: file.write(data))
            except BaseException as error:  # reported to the training thread
                self.error = error

    def wait(self) -> None:
        """Block until the newest checkpoint is on disk; raise a write's error, if any."""
        with self.condition:
            self.condition.wait_for(lambda: not self.busy)
        self.raise_error()

    def raise_error(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def __enter__(self) -> CheckpointWriter:
        return self

    def __exit__(self, *exception: object) -> None:
        self.wait()


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, made atomic and moved off the training thread."""

    def __init__(self) -> None:
        self.writer = CheckpointWriter()

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        self.writer.save(checkpoint, Path(path))

    def teardown(self) -> None:
        """Called by Lightning at the end of fit (also after an error): finish the writes."""
        self.writer.wait()
