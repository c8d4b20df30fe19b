import json
import types

import pytest
import torch
from transformers import Gemma3TextConfig

from ftbench.common import paths, resources


def test_cpu_stage_record_has_time_memory_phases_and_null_gpu_fields(project):
    with resources.measure("demo") as record:
        with record.phase("load"):
            blob = bytearray(200 * 2**20)  # 200 MiB the sampler must see
        record["tokens"] = 10
    saved = json.loads((paths.RESOURCES / "demo.json").read_text())
    assert saved["wall_s"] > 0 and saved["cpu_s"] >= 0 and saved["device"].startswith("cpu: ")
    assert saved["peak_rss_gib"] > 0.2 and saved["peak_gpu_gib"] is None
    assert saved["torch_peak_allocated_gib"] is None and set(saved["phases_s"]) == {"load"}
    assert saved["tokens"] == 10
    # the versions the numbers came from, as the report's provenance lists them
    assert f"torch {torch.__version__}" in saved["packages"] and "galore-torch 1.0" in saved["packages"]
    # the CPU decides the kernels, and the whole environment is named by one digest
    assert f"{torch.get_num_threads()} threads" in saved["device"]
    assert saved["environment"] == resources.environment_digest() and len(saved["environment"]) == 16
    # the interpreter started before the stage's work: here, pytest's whole session so far
    # <=: both are rounded to 10 ms, and this stage's work can take less
    assert saved["startup_s"] > 0 and saved["started_at"] <= saved["finished_at"]
    assert saved["finished_at"] - saved["started_at"] == pytest.approx(saved["wall_s"], abs=0.02)
    del blob


def test_a_failed_stage_writes_no_record(project):
    with pytest.raises(RuntimeError), resources.measure("broken"):
        raise RuntimeError("boom")
    assert not (paths.RESOURCES / "broken.json").exists()


def fake_pynvml(used: list[int]):
    """A stand-in for NVML: memory used follows `used`, one process (this one), 250 J spent."""
    import os

    calls = iter(used)
    state = {"used": used[0], "energy": 1_000_000}

    def memory(_):
        state["used"] = next(calls, state["used"])
        return types.SimpleNamespace(used=state["used"], total=80 * 2**30)

    def energy(_):
        state["energy"] += 125_000
        return state["energy"]

    return types.SimpleNamespace(
        nvmlDeviceGetMemoryInfo=memory,
        nvmlDeviceGetComputeRunningProcesses=lambda _: [
            types.SimpleNamespace(pid=os.getpid(), usedGpuMemory=3 * 2**30)
        ],
        nvmlDeviceGetUtilizationRates=lambda _: types.SimpleNamespace(gpu=80),
        nvmlDeviceGetTotalEnergyConsumption=energy,
    )


def test_nvml_peak_is_above_the_baseline_with_process_usage_utilisation_and_energy():
    gib = 2**30
    gpu = resources._Nvml(fake_pynvml([1 * gib, 4 * gib, 9 * gib, 2 * gib]), handle=0)
    for _ in range(3):
        gpu.sample()
    fields = gpu.fields()
    assert fields["peak_gpu_gib"] == 8.0  # 9 GiB used at the peak, 1 GiB before the stage
    assert fields["peak_gpu_process_gib"] == 3.0 and fields["gpu_util_mean"] == 80
    assert fields["energy_j"] == 125.0


def test_each_phase_records_its_own_nvml_peak():
    """Which phase holds the stage's peak (GaLore's training, or a validation after it): each phase's
    highest reading above the baseline, phases that nest each with their own."""
    gib = 2**30
    record = resources.Record(stage="demo")
    readings = [1 * gib, 3 * gib, 9 * gib, 2 * gib, 5 * gib, 4 * gib]
    record.gpu = resources._Nvml(fake_pynvml(readings), handle=0)
    with record.phase("train"):  # reads 3 GiB at its start, then 9, and 2 at its end
        record.gpu.sample(full=False)
    # load reads 5 at its start, 4 at its end; merge, within it, 4 at its start and end (not load's 5)
    with record.phase("load"), record.phase("merge"):
        pass
    assert record["phase_peak_gpu_gib"] == {"train": 8.0, "merge": 3.0, "load": 4.0}
    assert set(record["phases_s"]) == {"train", "load", "merge"}


def test_training_flops_match_the_known_gemma3_1b_count():
    from ftbench.benchmark.measure import SHAPES

    cfg = Gemma3TextConfig(**SHAPES["gemma3-1b"])
    body, head = resources.matmul_params(cfg)
    assert (body + head) / 1e9 == pytest.approx(1.0, abs=0.01)  # Gemma-3-1B: 1.0B matmul weights
    # every token an answer token: 6.0 GFLOP a token with weight gradients, 4.0 without (shared/bench)
    assert resources.training_flops(cfg, True, 1, 1) / 1e9 == pytest.approx(6.0, abs=0.05)
    assert resources.training_flops(cfg, False, 1, 1) / 1e9 == pytest.approx(4.0, abs=0.05)
    assert resources.mfu(494.5e12, 989.0) == 0.5 and resources.mfu(1e12, None) is None
    assert resources.mfu(2 * 494.5e12, 989.0, devices=2) == 0.5  # the world's FLOPs over the world's peak


@pytest.mark.parametrize(
    "name, peak",
    [
        ("NVIDIA L40", 181.0),  # not the L4 that a substring match finds first
        ("NVIDIA L4", 121.0),
        ("NVIDIA L40S", 362.0),
        ("NVIDIA A10", 125.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA GeForce RTX 4090", 165.0),
        ("Tesla T4", None),  # no bf16 tensor cores: no invented figure
        ("NVIDIA A10G", None),  # another GPU: not the A10's figure
        ("Tesla V100-SXM2-16GB", None),
    ],
)
def test_gpu_peaks_match_whole_names_only(name, peak):
    assert resources.known_peak(name) == peak


def test_nvml_reads_the_gpu_torch_uses_under_cuda_visible_devices(monkeypatch):
    """Under CUDA_VISIBLE_DEVICES=1 torch's device 0 is NVML's device 1: the reading must follow the UUID,
    not the index (index 0 read the other GPU of the two-GPU H200 machine). No GPU here, so torch's
    device query and NVML are stand-ins with two GPUs."""
    gib = 2**30
    gpus = {"GPU-aaaa": fake_pynvml([5 * gib]), "GPU-bbbb": fake_pynvml([1 * gib, 7 * gib])}

    def on_the_handle_gpu(name: str):
        return lambda handle: getattr(gpus[handle], name)(handle)

    nvml = types.SimpleNamespace(
        nvmlInit=lambda: None,
        nvmlDeviceGetHandleByIndex=lambda i: list(gpus)[i],
        nvmlDeviceGetHandleByUUID=lambda uuid: uuid,
        **{name: on_the_handle_gpu(name) for name in vars(gpus["GPU-aaaa"])},
    )
    monkeypatch.setitem(__import__("sys").modules, "pynvml", nvml)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)  # the only GPU torch sees: NVML's second
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: types.SimpleNamespace(uuid="bbbb"))
    gpu = resources._Nvml.open()
    gpu.sample()
    assert gpu.handle == "GPU-bbbb" and gpu.fields()["peak_gpu_gib"] == 6.0


def test_the_environment_digest_changes_with_any_installed_version(monkeypatch):
    """Two records ran on the same environment exactly when their digests match: one package's version
    moves it, whatever the package."""
    from importlib import metadata

    before = resources.environment_digest()
    real = metadata.distributions

    def one_version_up():
        for d in real():
            if d.metadata["Name"].lower() == "zipp":
                yield type("Dist", (), {"metadata": {"Name": "zipp"}, "version": d.version + ".1"})()
            else:
                yield d

    monkeypatch.setattr(metadata, "distributions", one_version_up)
    assert resources.environment_digest() != before
