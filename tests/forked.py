"""`python train.py …` for the tests, without paying for torch's and Lightning's imports each time.

Importing torch, Lightning, Hydra and torchmetrics takes ~5 s of a small job's ~7 s on a 2-core
machine, and the suite starts about a hundred jobs. So each pytest worker keeps one server
process (`python tests/forked.py`) that has imported them once; for every job it forks a child
(~1 s for that small job) that does what `python <script> <arguments>` would: it changes to
the job's directory, points stdin at /dev/null and stdout/stderr at files, sets `sys.argv`,
reseeds `random`, and runs the script as `__main__`. The child then exits as an interpreter
does (SystemExit's code, 1 and a traceback for an exception, SIGINT for Ctrl-C, atexit
handlers run), and is a process of its own: a real pid, to signal or SIGKILL, in a new session
if asked. What such a child cannot differ in (a PYTHONPATH, flags read at start-up, a first
import) stays with `subprocess`.

    job = start(tmp_path, "train.py", "trainer.max_epochs=1")   # a Popen-like `Job`
    done = run(ROOT, "train.py", "optimizer=sgd")                 # a CompletedProcess
"""

from __future__ import annotations

import atexit
import gc
import importlib
import itertools
import json
import logging
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

# ---- the server: `python tests/forked.py` ----

PRELOADED = ("mlplab.cli", "mlplab.train", "torch.utils.tensorboard")  # paid for once, here


def preload() -> None:
    """Import what every job imports, leaving the process as a fresh one would be."""
    # Lightning gives its loggers a handler of their own when it is imported before logging is
    # set up; `python train.py` imports it after Hydra did. A stand-in handler prevents that.
    stand_in = logging.NullHandler()
    logging.getLogger().addHandler(stand_in)
    for name in PRELOADED:
        importlib.import_module(name)
    logging.getLogger().removeHandler(stand_in)
    # What the imports made stays out of every collection: a child's garbage collector (and
    # its exit) would otherwise touch, and so copy, the whole heap: 1.7 s per job, not 0.3.
    gc.freeze()


def serve() -> None:
    """Read one JSON request per line on stdin; fork a child for each; report pids and exits."""
    protocol = os.dup(1)
    os.dup2(2, 1)  # anything an import prints goes to stderr, not into the protocol
    preload()

    def send(message: dict) -> None:
        os.write(protocol, (json.dumps(message) + "\n").encode())

    selector = selectors.DefaultSelector()
    selector.register(0, selectors.EVENT_READ)
    children: dict[int, tuple[int, int]] = {}  # pidfd → (pid, request id)
    pending = b""
    while True:
        for key, _ in selector.select():
            if key.fd != 0:  # a child exited
                pid, job = children.pop(key.fd)
                selector.unregister(key.fd)
                os.close(key.fd)
                _, status = os.waitpid(pid, 0)
                send({"exited": job, "returncode": os.waitstatus_to_exitcode(status)})
                continue
            data = os.read(0, 65536)
            if not data:  # the tests are over: end what is left
                for pid, _ in children.values():
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                return
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                request = json.loads(line)
                # fork() copies only this thread: no other Python thread may exist. (The native
                # pools that importing torch and scipy's OpenBLAS start are remade in the child,
                # as in the DataLoader workers torch forks from a training process.)
                assert threading.active_count() == 1, "the server started a Python thread"
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    selector.close()
                    for pidfd in children:
                        os.close(pidfd)
                    os.close(protocol)
                    child(request)  # runs the script; ends the process as an interpreter would
                pidfd = os.pidfd_open(pid)
                children[pidfd] = (pid, request["id"])
                selector.register(pidfd, selectors.EVENT_READ)
                send({"started": request["id"], "pid": pid})


def child(request: dict) -> None:
    """In the forked child: become `python <script> <arguments>` run in `cwd`."""
    import random
    import runpy

    if request["new_session"]:
        os.setsid()
    # Ctrl-C raises KeyboardInterrupt, as in `python` started from a terminal, even when the
    # tests were started with SIGINT ignored (a background job of a shell: `make test &`).
    # A FreshJob inherits the ignored SIGINT: the Ctrl-C tests need forked jobs (Linux).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for name, value in request["env"].items():  # for what this process starts: see `start`
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    os.chdir(request["cwd"])
    null = os.open(os.devnull, os.O_RDONLY)
    stdout = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    # merged (stderr=STDOUT): one open file, so both write at one position, as a shared pipe
    stderr = (
        os.dup(stdout)
        if request["merge_output"]
        else (os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC))
    )
    for fd, target in ((null, 0), (stdout, 1), (stderr, 2)):
        os.dup2(fd, target)
        os.close(fd)
    random.seed()  # as a new interpreter would be: not the server's state
    script = os.path.abspath(request["argv"][0])  # as a script's __file__ is
    sys.argv = [script, *request["argv"][1:]]
    sys.path[0] = os.path.dirname(script)
    runpy.run_path(script, run_name="__main__")
    raise SystemExit(0)


# ---- the client, in each pytest worker ----


class Server:
    """One forking server per pytest worker, started on first use."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=Path(__file__).parent,
        )
        self.lock = threading.Lock()
        self.changed = threading.Condition()
        self.jobs = itertools.count()
        self.pids: dict[int, int] = {}  # request id → pid, once started
        self.returncodes: dict[int, int] = {}  # request id → exit code, once ended
        self.alive = True
        threading.Thread(target=self.read, daemon=True).start()
        atexit.register(self.close)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()

    def read(self) -> None:
        for line in self.process.stdout:
            message = json.loads(line)
            with self.changed:
                if "started" in message:
                    self.pids[message["started"]] = message["pid"]
                else:
                    self.returncodes[message["exited"]] = message["returncode"]
                self.changed.notify_all()
        with self.changed:  # the server ended: nobody waits for it forever
            self.alive = False
            self.changed.notify_all()

    def fork(self, request: dict) -> tuple[int, int]:
        """Start a job; its request id and pid."""
        with self.lock:
            job = next(self.jobs)
            self.process.stdin.write((json.dumps({**request, "id": job}) + "\n").encode())
            self.process.stdin.flush()
        with self.changed:
            self.changed.wait_for(lambda: job in self.pids or not self.alive, timeout=120)
            if job not in self.pids:
                raise RuntimeError("the forking server (tests/forked.py) does not answer")
            return job, self.pids.pop(job)

    def returncode(self, job: int, timeout: float | None) -> int | None:
        with self.changed:
            self.changed.wait_for(lambda: job in self.returncodes or not self.alive, timeout)
            if job not in self.returncodes and not self.alive:
                raise RuntimeError("the forking server (tests/forked.py) died")
            return self.returncodes.pop(job, None)


_server: Server | None = None
_scratch: Path | None = None  # the jobs' stdout and stderr files, removed at exit


def output_directory() -> Path:
    """A new directory for one job's stdout and stderr."""
    global _scratch
    if _scratch is None:
        _scratch = Path(tempfile.mkdtemp(prefix="forked-"))
        atexit.register(shutil.rmtree, _scratch, ignore_errors=True)
    return Path(tempfile.mkdtemp(dir=_scratch))


class Job:
    """A started script: what the tests use of `subprocess.Popen`."""

    def __init__(
        self, argv: list[str], cwd: Path, new_session: bool, merge_output: bool, env: dict
    ) -> None:
        global _server
        if _server is None:
            _server = Server()
        self.args = argv
        self.outputs = output_directory()
        request = {
            "argv": argv,
            "cwd": str(cwd),
            "stdout": str(self.outputs / "stdout"),
            "stderr": str(self.outputs / "stderr"),
            "merge_output": merge_output,
            "new_session": new_session,
            "env": env,
        }
        self.job, self.pid = _server.fork(request)
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = _server.returncode(self.job, timeout=0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = _server.returncode(self.job, timeout)
            if self.returncode is None:
                raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def send_signal(self, signal_number: int) -> None:
        if self.poll() is None:  # (once reaped, the pid may be another process's)
            os.kill(self.pid, signal_number)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def output(self, name: str = "stdout") -> str:
        """What the job wrote to `name` (stdout, or stderr unless merged) so far."""
        path = self.outputs / name
        return path.read_text(errors="replace") if path.exists() else ""


class FreshJob(Job):
    """`Job` as a plain subprocess, a new interpreter at full cost: where it must be one, and
    where Linux's pidfd is missing (macOS)."""

    def __init__(
        self, argv: list[str], cwd: Path, new_session: bool, merge_output: bool, env: dict
    ) -> None:
        self.args, self.returncode = argv, None
        self.outputs = output_directory()
        with open(self.outputs / "stdout", "wb") as out, open(self.outputs / "stderr", "wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, *argv],
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT if merge_output else err,
                start_new_session=new_session,
                env={
                    name: value
                    for name, value in {**os.environ, **env}.items()
                    if value is not None
                },
            )
        self.pid = self.process.pid

    def poll(self) -> int | None:
        self.returncode = self.process.poll()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self.returncode = self.process.wait(timeout)
        return self.returncode

    def send_signal(self, signal_number: int) -> None:
        self.process.send_signal(signal_number)


def start(
    cwd: Path,
    *argv: str,
    new_session: bool = False,
    merge_output: bool = False,
    fresh: bool = False,
    env: dict[str, str | None] | None = None,
) -> Job:
    """Start `python <argv>` in `cwd` (see the module's docstring); forked, unless `fresh`.

    `env`: environment variables to set in the job (None: to remove), on top of this one's.
    A forked job gets them in `os.environ` only, after the server's start-up: what is read
    then (OMP_NUM_THREADS by torch, ATEN_CPU_CAPABILITY, PYTHONHASHSEED, PYTHONPATH) reaches
    the processes the job starts, not the job itself. For the job itself, use `fresh=True`.
    """
    kind = FreshJob if fresh or not hasattr(os, "pidfd_open") else Job
    return kind([str(a) for a in argv], Path(cwd), new_session, merge_output, env or {})


def run(
    cwd: Path, *argv: str, timeout: float = 600, env: dict[str, str | None] | None = None
) -> subprocess.CompletedProcess:
    """Run `python <argv>` in `cwd` to its end; its output, as `subprocess.run` gives it."""
    job = start(cwd, *argv, env=env)
    try:
        job.wait(timeout)
    except subprocess.TimeoutExpired:
        job.kill()
        raise
    return subprocess.CompletedProcess(
        job.args, job.returncode, job.output("stdout"), job.output("stderr")
    )


if __name__ == "__main__":
    serve()
