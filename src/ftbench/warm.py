"""A warm server for the stage commands: their imports paid once per `dvc repro`, not once per stage.

Every stage of dvc.yaml is its own `python -m ftbench.<stage>` process, and each spends seconds importing
torch, transformers and peft before its work: on the H200 12-20 s a stage, a quarter of a study's
`dvc repro` (BENCHMARKS.md). `python -m ftbench.warm dvc repro` starts this server, runs the command with
FTBENCH_WARM naming the server's socket, and stops the server when the command ends. Each stage command
then hands itself over at package import (ftbench/handover.py): the server, its imports done, forks a
child that runs the stage with the command's arguments, working directory, environment and standard
streams, and the command exits with the child's status. Signals to the command are passed on to the
child, and a command that dies takes its child with it, so DVC and a user's Ctrl-C see what they would
see of a plain process. A command whose import-time environment differs from the server's is declined
and runs in its own process, as every command does without a server.

Why fork and not a pool of fresh interpreters: a forked child shares the server's imported modules at no
cost. Its limit: torch refuses CUDA in a child forked after its parent initialised CUDA, and
`import bitsandbytes` (which peft imports) does initialise it. On a host with a GPU the server therefore
imports only what leaves CUDA alone (WARM_ON_GPU), and the rest is done ahead in a spare: a child forked
as soon as the last one took a command, which imports what every stage imports and waits for the next
command. On the H200 those imports were most of a GPU stage's 3-4 s start-up (bench/h200-s29-seed-study-
records.json), and the stage before runs for a minute or more. Imports start no CUDA context (they hold
no GPU memory: bench/startup_probe.py), so a spare adds nothing to the memory the running stage measures;
the stage starts its context itself. A command that finds no spare waiting (two at once) gets a child
forked for it, as before.

usage: python -m ftbench.warm COMMAND [ARG ...]     (e.g. dvc repro; exits with COMMAND's status)
       python -m ftbench.warm --serve PATH          (the server alone, until killed)
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import pkgutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

import torch

from ftbench import handover

# Environment the imported modules read once, at import (huggingface_hub's HF_HUB_OFFLINE, torch's
# allocator and thread settings): a command whose values differ is declined and runs cold.
IMPORT_TIME_ENV = ("HF_", "TRANSFORMERS_", "TOKENIZERS_", "PYTORCH_", "TORCH", "CUDA_", "OMP_", "MKL_")
# What the server imports on a GPU host: everything a stage loads that does not initialise CUDA
# (bench/h200-issue13-importtime-peft.txt: peft's cost is mostly these, pulled in through transformers).
WARM_ON_GPU = (
    "torch",
    "torch.distributed.tensor",
    "torch._dynamo",
    "transformers",
    "transformers.models.auto.modeling_auto",
    "transformers.generation",
    "transformers.models.gemma3.modeling_gemma3",
    "sklearn.metrics",
    "sacrebleu",
    "rouge_score.rouge_scorer",
)  # not galore_torch: it imports bitsandbytes (its 8-bit AdamW), which initialises CUDA (seen on the H200)


def serve(path: str) -> None:
    """Import, then run each stage command that connects to `path` in a child (a spare), until killed."""
    own_env = dict(os.environ)  # as a command has it at hand-over: before the stage modules' imports
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(f"{path}.new")
    listener.listen(16)
    # the path appears listening before the imports: run_warm starts the command then, and DVC's own start
    # overlaps the imports (a command connecting meanwhile waits in the backlog)
    os.replace(f"{path}.new", path)
    warm_imports()
    log(f"serving {path}")
    # Ctrl-C reaches every process of the terminal's group: the stages stop on it, the server serves on
    # until run_warm stops it (SIGTERM), and so passes on the stages' exit statuses. A `timeout` signals
    # its whole process group too, the server with the stages: SIGTERM therefore ends the serving, and the
    # server exits only once the children it forked have (report_exit's threads are joined at exit), so a
    # training stage saves its checkpoint and its command gets its status instead of being cut short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, stop_serving)
    children = Children(listener, own_env)
    try:
        while True:
            children.keep_a_spare()
            connection, _ = listener.accept()
            children.answer(connection)
    finally:
        children.end_spare()


def stop_serving(_signum, _frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one (run_warm's, after timeout's): no matter
    raise SystemExit(0)


def warm_imports() -> None:
    """Every stage's imports on a CPU host; on a GPU host those that leave CUDA uninitialised."""
    t0 = time.perf_counter()
    gpu = gpu_host()
    for name in WARM_ON_GPU if gpu else stage_modules():
        import_if_there(name)
        if torch.cuda.is_initialized():  # then no child could use CUDA (or a GPU that NVML did not see)
            raise SystemExit(f"ftbench.warm: importing {name} initialised CUDA; stages run without a server")
    host = "GPU host: CUDA left alone" if gpu else "CPU host"
    log(f"imported {len(sys.modules)} modules in {time.perf_counter() - t0:.1f} s ({host})")


def import_if_there(name: str) -> None:
    with contextlib.suppress(ImportError):  # one a stage would not import either
        importlib.import_module(name)


def stage_modules() -> list[str]:
    """The stage modules and recipes: all a stage imports."""
    folder = str(Path(__file__).parent / "recipes")
    recipes = [f"ftbench.recipes.{m.name}" for m in pkgutil.iter_modules([folder])]
    return [*(f"ftbench.{s}" for s in handover.STAGES), *recipes]


def gpu_host() -> bool:
    """Whether NVML sees a GPU; NVML, unlike torch.cuda, leaves CUDA uninitialised."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetCount() > 0
    except Exception:  # no driver, no library: no GPU
        return False


class Children:
    """How the server starts its children: in the spare that waits for the next command, or forked then."""

    def __init__(self, listener: socket.socket, own_env: dict) -> None:
        self.listener, self.own_env = listener, own_env
        self.spare: tuple[int, socket.socket] | None = None  # its pid, and the server's end of its socket
        self.spares_work = True

    def keep_a_spare(self) -> None:
        """Fork a spare if none waits."""
        if self.spare is None and self.spares_work:
            ours, its = socket.socketpair()
            pid = fork_quietly()
            if pid == 0:
                ours.close()
                self.listener.close()
                wait_as_spare(its)
            its.close()
            self.spare = (pid, ours)

    def end_spare(self) -> None:
        """At the server's exit: end the spare that waits (it holds nothing) and reap it."""
        if self.spare is not None:
            pid, ours = self.spare
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            ours.close()

    def answer(self, connection: socket.socket) -> None:
        """Run one command in the spare (or a child forked now), tell the command its pid, and its exit
        status when it ends."""
        head, fds, _, _ = socket.recv_fds(connection, handover.HEADER.size, 3)
        body = receive(connection, handover.HEADER.unpack(head)[0])
        request = json.loads(body)
        differs = [
            k
            for k in set(self.own_env) | set(request["env"])
            if k.startswith(IMPORT_TIME_ENV) and self.own_env.get(k) != request["env"].get(k)
        ]
        if differs:
            log(f"declined {request['module']}: {', '.join(sorted(differs))} differ from the server's")
            connection.sendall(b"declined\n")
            close(connection, fds)
            return
        child = self.hand_to_spare(head + body, [*fds, connection.fileno()])
        if child is None:
            child = fork_quietly()
            if child == 0:
                self.listener.close()
                run_child(request, fds, connection)
        for fd in fds:
            os.close(fd)
        log(f"{request['module']} (pid {child}) started")
        connection.sendall(f"{child}\n".encode())
        # not a daemon: the server's exit waits for it, so the child's status reaches its command
        threading.Thread(target=report_exit, args=(child, connection, request["module"])).start()

    def hand_to_spare(self, message: bytes, fds: list[int]) -> int | None:
        """The spare's pid once it has the command (the request and the command's streams and
        connection); None without a spare, or when it has died (no more spares are made then)."""
        if self.spare is None:
            return None
        (pid, ours), self.spare = self.spare, None
        try:
            socket.send_fds(ours, [message], fds)
            return pid
        except OSError:
            os.waitpid(pid, 0)
            log(f"the spare (process {pid}) had exited; stages start in children forked for them")
            self.spares_work = False
            return None
        finally:
            ours.close()


def fork_quietly() -> int:
    """os.fork, flushed first so that nothing buffered is written twice, with SIGTERM held back: its
    handler would otherwise run within an at-fork hook, which drops the SystemExit that ends the serving
    (a test's SIGTERM just after a stage had exited found the server serving on). The child starts with
    SIGTERM's default action."""
    sys.stdout.flush()
    sys.stderr.flush()
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, held)
    return pid


def wait_as_spare(its: socket.socket) -> None:
    """In a spare: do every stage's imports, then wait for a command and become it. The server's exit
    (its end of the socket closed) ends a spare that got none. Never returns."""
    t0 = time.perf_counter()
    try:
        for name in stage_modules():
            import_if_there(name)
    except BaseException:  # whatever an import raised: not back into the server's loop; the server then
        traceback.print_exc()  # finds this spare gone and forks children for the stages
        os._exit(1)
    log(f"a spare (process {os.getpid()}) is ready in {time.perf_counter() - t0:.1f} s")
    message, fds, _, _ = socket.recv_fds(its, 2**20, 4)
    if not message:
        os._exit(0)
    size = handover.HEADER.unpack(message[: handover.HEADER.size])[0]
    body = message[handover.HEADER.size :]
    body += receive(its, size - len(body))  # the rest of a request longer than one read
    its.close()
    run_child(json.loads(body), fds[:3], socket.socket(fileno=fds[3]))


def run_child(request: dict, fds: list[int], connection: socket.socket) -> None:
    """In the forked child: become the command (streams, directory, environment, argv), run the stage
    module's main(), exit with its status. Never returns."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    handover.COMMAND_STARTED_AT = float(os.environ.pop(handover.STARTED_ENV))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # the command holds the other end: when it dies (even by SIGKILL), recv returns and the child follows
    threading.Thread(target=die_with_command, args=(connection,), daemon=True).start()
    sys.argv = [request["module"], *request["argv"][3:]]  # as -m gives them: the arguments after it
    code = 0
    try:
        # each stage module runs main() as __main__; re-running the module's code would only repeat
        # its imports' work (and runpy warns of a module run that was imported before)
        importlib.import_module(request["module"]).main()
    except SystemExit as stop:
        code = exit_code(stop.code)
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def exit_code(code) -> int:
    """sys.exit's argument as the status a process would get: None 0, a message 1 (printed)."""
    if code is None or isinstance(code, int):
        return code or 0
    print(code, file=sys.stderr)
    return 1


def die_with_command(connection: socket.socket) -> None:
    connection.recv(1)
    os.kill(os.getpid(), signal.SIGKILL)


def report_exit(child: int, connection: socket.socket, module: str) -> None:
    _, status = os.waitpid(child, 0)
    code = os.waitstatus_to_exitcode(status)
    log(f"{module} (pid {child}) exited {code}")
    with contextlib.suppress(OSError):  # the command is gone (killed): its child went with it
        connection.sendall(f"{code}\n".encode())  # -N: killed by signal N
    connection.close()


def receive(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the command hung up")
        data += chunk
    return data


def close(connection: socket.socket, fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)
    connection.close()


def log(message: str) -> None:
    print(f"ftbench.warm: {message}", file=sys.stderr, flush=True)


def run_warm(command: list[str]) -> int:
    """Run `command` with a server for its stage commands; its exit status."""
    with tempfile.TemporaryDirectory(prefix="ftbench-warm-") as folder:
        path = str(Path(folder) / "socket")
        server = subprocess.Popen([sys.executable, "-m", "ftbench.warm", "--serve", path])
        try:
            # every stage gets the server: the command starts once it listens (its imports under way; a
            # stage that comes before they end waits for them), or without it if it failed
            while server.poll() is None and not os.path.exists(path):
                time.sleep(0.1)
            running = subprocess.Popen(command, env={**os.environ, handover.ENV: path})
            # a timeout's or a scheduler's signal is for the command (DVC stops its stages); Ctrl-C
            # reaches the command from the terminal itself
            for s in (signal.SIGTERM, signal.SIGHUP):
                signal.signal(s, lambda signum, _: running.send_signal(signum))
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            return running.wait()
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"] and len(sys.argv) == 3:
        serve(sys.argv[2])
    elif len(sys.argv) < 2 or sys.argv[1].startswith("-"):
        raise SystemExit(
            "usage: python -m ftbench.warm COMMAND [ARG ...]  |  python -m ftbench.warm --serve PATH"
        )
    else:
        raise SystemExit(run_warm(sys.argv[1:]))
