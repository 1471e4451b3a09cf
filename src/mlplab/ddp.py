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

LAUNCH_VARIABLES = (
    "MASTER_ADDR",
    "MASTER_PORT",
    "WORLD_SIZE",
    "NODE_RANK",
    "LOCAL_RANK",
    "GLOO_SOCKET_IFNAME",
)


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


def loopback_listener() -> socket.socket:
    """A listening socket on the loopback interface, on a free port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    return listener


def join_process_group(listener: socket.socket, world_size: int, backend: str) -> None:
    """Rank 0: open the rendezvous store on `listener` and join the default process group.

    torch's TCPStore, created from MASTER_ADDR, listens on every interface; given a socket
    already bound to the loopback, it listens there only. The other ranks connect to it as
    usual (env://, as Lightning starts them), and Lightning finds the group already there.
    """
    import torch.distributed as dist

    store = dist.TCPStore(
        "127.0.0.1",
        listener.getsockname()[1],
        world_size,
        is_master=True,
        master_listen_fd=listener.fileno(),
    )
    # env:// puts the default group's keys under this prefix: the other ranks look there.
    prefixed = dist.PrefixStore("default_pg", store)
    dist.init_process_group(backend, store=prefixed, rank=0, world_size=world_size)


@contextlib.contextmanager
def workers(cfg: DictConfig, job_dir: Path, ckpt_path: Path | None) -> Iterator[None]:
    """Start ranks 1…n-1 of `cfg` (n = `local_processes(cfg)`); make this process rank 0.

    On leaving, waits for the workers; a worker that failed makes this raise.
    """
    count = local_processes(cfg)
    if count == 1:
        yield
        return
    listener = loopback_listener()
    shared = {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(listener.getsockname()[1]),
        "WORLD_SIZE": str(count),
        "NODE_RANK": "0",
        # gloo's own connections: on the loopback too, unless the user chose an interface
        "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo"),
    }
    command = [sys.executable, "-m", "mlplab.train", str(job_dir)]  # see mlplab.train.worker
    if ckpt_path is not None:
        command.append(str(ckpt_path))
    processes = [
        subprocess.Popen(command, env={**os.environ, **shared, "LOCAL_RANK": str(rank)})
        for rank in range(1, count)
    ]
    previous = {name: os.environ.get(name) for name in LAUNCH_VARIABLES}
    os.environ.update(shared, LOCAL_RANK="0")
    try:
        gpu = cfg.trainer.accelerator in ("gpu", "cuda")
        join_process_group(listener, count, "nccl" if gpu else "gloo")
        yield
    except BaseException:
        for process in processes:
            process.kill()
        raise
    finally:
        codes = [process.wait() for process in processes]
        listener.close()
        for name, value in previous.items():  # as they were before this job
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()  # the next job of a sweep starts a group of its own
    if any(codes):
        raise RuntimeError(f"data-parallel workers exited with codes {codes}")
