"""A stage command's hand-over to a warm server (ftbench/warm.py), at package import.

`python -m ftbench.<stage>` imports the ftbench package first; where FTBENCH_WARM names a server's socket,
the package's __init__ calls hand_over() before anything heavy is imported. The server forks a child
that runs the stage as this command would (arguments, working directory, environment, standard
streams), and this process passes signals on to it and exits with its status. No server there, or one
that declines: hand_over() returns and the command runs in its own process, as without it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys

import psutil

ENV = "FTBENCH_WARM"
STARTED_ENV = "FTBENCH_STARTED_AT"  # the command's own start: a stage's start-up counts from it
STAGES = ("model", "data", "train", "merge", "evaluate", "ensemble", "report")
HEADER = struct.Struct("!I")  # the request's length, sent with the command's three standard streams
COMMAND_STARTED_AT: float | None = None  # set in a server's child: when the command it runs started


def hand_over() -> None:
    """At package import: if this process is a stage command and a warm server takes it, exit with the
    status of the server's child; else return and let the command run here."""
    module = stage_module(sys.orig_argv)
    if module is None or "RANK" in os.environ:  # torchrun's ranks each need their own process
        return
    try:
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.connect(os.environ[ENV])
    except OSError:
        return
    env = {**os.environ, STARTED_ENV: str(process_start())}
    request = json.dumps({"module": module, "argv": sys.orig_argv, "cwd": os.getcwd(), "env": env}).encode()
    socket.send_fds(server, [HEADER.pack(len(request))], [0, 1, 2])
    server.sendall(request)
    replies = server.makefile("r")
    first = replies.readline().strip()
    if not first.isdigit():  # declined (its reason on the server's log), or the server died: run cold
        return
    child = int(first)
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, lambda signum, _: os.kill(child, signum))
    status = replies.readline().strip()
    code = int(status) if status.lstrip("-").isdigit() else 1
    if code < 0:  # the child was killed by a signal: so is this process, as DVC would see of a plain one
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(code)


def stage_module(argv: list[str]) -> str | None:
    """`ftbench.<stage>` when the interpreter was started as `python -m ftbench.<stage> ...`, else None."""
    if len(argv) < 3 or argv[1] != "-m":
        return None
    package, _, name = argv[2].partition(".")
    return argv[2] if package == "ftbench" and name in STAGES else None


def process_start() -> float:
    """This process's start time, as psutil gives it (seconds since the epoch)."""
    return psutil.Process().create_time()


def command_started_at() -> float:
    """When the command this process runs was started: the handed-over command's start in a server's
    child, else this process's own."""
    return COMMAND_STARTED_AT or process_start()
