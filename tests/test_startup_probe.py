"""tools/startup_probe.py: the split of a stage's start-up, from a fresh interpreter."""

import json
import subprocess
import sys
from pathlib import Path

PROBE = Path(__file__).parents[1] / "tools" / "startup_probe.py"


def test_the_probe_splits_the_start_up_into_steps_that_add_up():
    out = subprocess.run([sys.executable, str(PROBE)], capture_output=True, text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    since, each = result["seconds_since_start"], result["seconds_each"]
    assert list(since) == [
        "interpreter",
        "torch",
        "transformers",
        "peft",
        "bitsandbytes",
        "galore_torch",
        "ftbench.stages.train",
    ]  # no CUDA here: no context step
    assert list(since.values()) == sorted(since.values()) and since["torch"] > 0
    assert abs(sum(each.values()) - since["ftbench.stages.train"]) < 0.05
    assert result["gpu_mib_and_listed"] == {}  # no GPU: nothing read
