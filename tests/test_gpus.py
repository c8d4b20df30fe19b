"""GPU claims (ftbench.common.gpus) on the CPU, with fake device ids: processes side by side never share
a device, one waits while none is free, and a killed process frees what it held."""

import os
import signal
import subprocess
import sys
import time

import pytest

from ftbench.common import gpus
from ftbench.common.errors import UserError

# A process that claims `wanted` GPUs, prints them, and holds them until its stdin closes
HOLDER = """
import sys
from ftbench.common import gpus, progress
progress.configure()
held = gpus.claim(gpus.pool(), sys.argv[1], "test")
import os
print(os.environ["CUDA_VISIBLE_DEVICES"], flush=True)
sys.stdin.read()
"""


@pytest.fixture
def fake_gpus(tmp_path, monkeypatch):
    monkeypatch.setenv(gpus.DEVICES_ENV, "0,1")
    monkeypatch.setenv(gpus.LOCKS_ENV, str(tmp_path / "locks"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return tmp_path


def holder(wanted="1") -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER, wanted],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_processes_side_by_side_never_share_a_device_and_one_waits_for_a_free_one(fake_gpus):
    first, second = holder(), holder()
    ids = [first.stdout.readline().strip(), second.stdout.readline().strip()]
    assert sorted(ids) == ["0", "1"]
    third = holder()
    time.sleep(1.5)
    assert third.poll() is None  # both held: it waits
    first.stdin.close()
    first.wait()
    assert third.stdout.readline().strip() == ids[0]  # the one the first let go
    third.stdin.close()
    third.wait()
    err = third.stderr.read()
    assert "waiting for 1 free GPU(s) of 0,1" in err and "free, starting" in err
    second.stdin.close()
    second.wait()


def test_a_killed_process_frees_its_devices(fake_gpus):
    both = holder("2")
    assert both.stdout.readline().strip() == "0,1"
    both.send_signal(signal.SIGKILL)
    both.wait()
    after = holder("auto")  # all of them
    assert after.stdout.readline().strip() == "0,1"
    after.stdin.close()
    after.wait()


def test_a_stage_never_holds_part_of_what_it_waits_for(fake_gpus):
    one = holder("1")
    assert one.stdout.readline().strip() == "0"
    assert gpus.try_lock(gpus.lock_dir(), ["0", "1"], 2) == []
    held = gpus.try_lock(gpus.lock_dir(), ["0", "1"], 1)
    assert [device for device, _ in held] == ["1"]  # the one it let go is free
    for _, fd in held:
        os.close(fd)
    one.stdin.close()
    one.wait()


def test_more_gpus_than_the_machine_has_is_one_line(fake_gpus):
    with pytest.raises(UserError, match="resources.gpus: 3, but this machine has 2 GPU"):
        gpus.claim(gpus.pool(), 3, "train")


def test_the_pool_is_the_visible_devices_and_nothing_without_gpus(monkeypatch):
    monkeypatch.delenv(gpus.DEVICES_ENV, raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert gpus.pool() == ["2", "3"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert gpus.pool() == []  # this machine: no NVIDIA driver
    assert gpus.claim(gpus.pool(), 1, "train") == []


def test_torchruns_ranks_use_their_launchers_claim(fake_gpus, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert gpus.claim(gpus.pool(), 2, "train") == []


def test_help_never_waits_for_a_gpu(fake_gpus, monkeypatch):
    monkeypatch.setenv(gpus.DEVICES_ENV, "0")
    held = holder()
    assert held.stdout.readline().strip() == "0"
    done = subprocess.run(
        [sys.executable, "-m", "ftbench", "train", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "waiting" not in done.stderr
    held.stdin.close()
    held.wait()
