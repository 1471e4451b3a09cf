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
import json
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


def serve() -> None:
    """Read one JSON request per line on stdin; fork a child for each; report pids and exits."""
    protocol = os.dup(1)
    os.dup2(2, 1)  # anything an import prints goes to stderr, not into the protocol
    for name in PRELOADED:
        importlib.import_module(name)
    # What the imports made stays out of every collection: a child's garbage collector (and
    # its exit) would otherwise touch, and so copy, the whole heap: 1.7 s per job, not 0.3.
    gc.freeze()

    def send(message: dict) -> None:
        os.write(protocol, (json.dumps(message) + "\n").encode())

    selector = selectors.DefaultSelector()
    selector.register(0, selectors.EVENT_READ)
    children: dict[int, int] = {}  # pidfd → pid
    pending = b""
    while True:
        for key, _ in selector.select():
            if key.fd != 0:  # a child exited
                pid = children.pop(key.fd)
                selector.unregister(key.fd)
                os.close(key.fd)
                _, status = os.waitpid(pid, 0)
                send({"exited": pid, "returncode": os.waitstatus_to_exitcode(status)})
                continue
            data = os.read(0, 65536)
            if not data:  # the tests are over: end what is left
                for pid in children.values():
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                return
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                request = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    selector.close()
                    for pidfd in children:
                        os.close(pidfd)
                    os.close(protocol)
                    child(request)  # runs the script; ends the process as an interpreter would
                pidfd = os.pidfd_open(pid)
                children[pidfd] = pid
                selector.register(pidfd, selectors.EVENT_READ)
                send({"started": pid})


def child(request: dict) -> None:
    """In the forked child: become `python <script> <arguments>` run in `cwd`."""
    import random
    import runpy

    if request["new_session"]:
        os.setsid()
    os.chdir(request["cwd"])
    null = os.open(os.devnull, os.O_RDONLY)
    stdout = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    stderr = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    for fd, target in ((null, 0), (stdout, 1), (stderr, 2)):
        os.dup2(fd, target)
        os.close(fd)
    random.seed()  # as a new interpreter would be: not the server's state
    script = request["argv"][0]
    sys.argv = list(request["argv"])
    sys.path[0] = os.path.dirname(os.path.abspath(script))
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
        self.started: list[int] = []
        self.returncodes: dict[int, int] = {}
        self.scratch = Path(tempfile.mkdtemp(prefix="forked-"))  # the jobs' stdout and stderr
        threading.Thread(target=self.read, daemon=True).start()
        atexit.register(self.close)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def read(self) -> None:
        for line in self.process.stdout:
            message = json.loads(line)
            with self.changed:
                if "started" in message:
                    self.started.append(message["started"])
                else:
                    self.returncodes[message["exited"]] = message["returncode"]
                self.changed.notify_all()

    def fork(self, request: dict) -> int:
        with self.lock:
            self.process.stdin.write((json.dumps(request) + "\n").encode())
            self.process.stdin.flush()
            with self.changed:
                if not self.changed.wait_for(lambda: self.started, timeout=120):
                    raise RuntimeError("the forking server does not answer")
                return self.started.pop()

    def returncode(self, pid: int, timeout: float | None) -> int | None:
        with self.changed:
            self.changed.wait_for(lambda: pid in self.returncodes, timeout=timeout)
            return self.returncodes.get(pid)


_server: Server | None = None


class Job:
    """A started script: what the tests use of `subprocess.Popen`."""

    def __init__(self, argv: list[str], cwd: Path, new_session: bool, merge_output: bool) -> None:
        global _server
        if _server is None:
            _server = Server()
        self.args = argv
        self.outputs = Path(tempfile.mkdtemp(dir=_server.scratch))
        out, err = self.outputs / "stdout", self.outputs / "stderr"
        request = {
            "argv": argv,
            "cwd": str(cwd),
            "stdout": str(out),
            "stderr": str(out if merge_output else err),
            "new_session": new_session,
        }
        self.pid = _server.fork(request)
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = _server.returncode(self.pid, timeout=0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = _server.returncode(self.pid, timeout)
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


def start(cwd: Path, *argv: str, new_session: bool = False, merge_output: bool = False) -> Job:
    """Start `python <argv>` in `cwd` (see the module's docstring)."""
    return Job([str(a) for a in argv], Path(cwd), new_session, merge_output)


def run(cwd: Path, *argv: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `python <argv>` in `cwd` to its end; its output, as `subprocess.run` gives it."""
    job = start(cwd, *argv)
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
