"""Data-parallel training on one machine: the job's process is rank 0 and starts the others.

Lightning's own launcher for `strategy=ddp` re-runs the command line in each new process.
Under Hydra that re-runs the whole `-m` sweep in every child, or creates directories of its
own (lightning-hydra-template #393, Lightning #11300). Here the job starts its workers the
way `torchrun` would: each gets the job's saved config and the usual environment
(`MASTER_ADDR`, `MASTER_PORT`, `WORLD_SIZE`, `NODE_RANK`, `LOCAL_RANK`), which Lightning
recognises as processes launched for it. The workers write nothing: logs, checkpoints and
metrics.json are rank 0's. On a cluster (SLURM, torchrun), the scheduler starts every
process and this module stays out of the way.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from omegaconf import DictConfig

LAUNCH_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "NODE_RANK", "LOCAL_RANK")


def local_processes(cfg: DictConfig) -> int:
    """How many processes this machine must start for `cfg` (1: no data parallelism)."""
    if not str(cfg.trainer.get("strategy", "auto")).startswith("ddp"):
        return 1
    if "LOCAL_RANK" in os.environ or int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        return 1  # launched from outside: torchrun, SLURM, or we are a worker ourselves
    devices = cfg.trainer.devices
    if devices in ("auto", -1):
        import torch

        devices = torch.cuda.device_count() if cfg.trainer.accelerator in ("gpu", "cuda") else 1
    return int(devices)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def workers(cfg: DictConfig, job_dir: Path, ckpt_path: Path | None) -> Iterator[None]:
    """Start ranks 1…n-1 of `cfg` (n = `local_processes(cfg)`); make this process rank 0.

    On leaving, waits for the workers; a worker that failed makes this raise.
    """
    count = local_processes(cfg)
    if count == 1:
        yield
        return
    shared = {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "WORLD_SIZE": str(count),
        "NODE_RANK": "0",
    }
    command = [sys.executable, "-m", "mlplab.train", str(job_dir)]  # see mlplab.train.worker
    if ckpt_path is not None:
        command.append(str(ckpt_path))
    processes = [
        subprocess.Popen(command, env={**os.environ, **shared, "LOCAL_RANK": str(rank)})
        for rank in range(1, count)
    ]
    os.environ.update(shared, LOCAL_RANK="0")
    try:
        yield
    except BaseException:
        for process in processes:
            process.kill()
        raise
    finally:
        codes = [process.wait() for process in processes]
        for name in LAUNCH_VARIABLES:
            os.environ.pop(name, None)
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()  # the next job of a sweep starts a group of its own
    if any(codes):
        raise RuntimeError(f"data-parallel workers exited with codes {codes}")
