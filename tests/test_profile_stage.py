"""bench/profile_stage.py: a command run whole under torch.profiler, its GPU kernels summed by kind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT, load_script

SCRIPT = ROOT / "bench" / "profile_stage.py"


def profile_stage():
    return load_script(SCRIPT)


@pytest.mark.parametrize(
    ("kernel", "kind"),
    [
        ("void kDequantizeBlockwise<__nv_bfloat16, 512, 64, 8, 2>(float*, ...)", "4-bit dequantize"),
        ("nvjet_tst_128x256_64x4_1x2_h_bz_coopA_NNT", "matmul"),
        ("void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<256, 64>>", "attention"),
        ("_fused_linear_cross_entropy_kernel", "loss"),
        ("void at::native::(anonymous namespace)::multi_tensor_apply_kernel<...>", "optimizer"),
        ("void syevj_parallel_order_set_kernel<float>", "SVD"),
        (
            "void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<float>>",
            "element-wise",
        ),
        ("something_new", "other"),
    ],
)
def test_kernels_are_told_apart_by_kind(kernel, kind):
    assert profile_stage().kind(kernel).startswith(kind)


def test_a_command_runs_whole_and_says_when_no_gpu_kernel_ran(project, tmp_path):
    out = tmp_path / "profile"
    run = subprocess.run(
        [sys.executable, str(SCRIPT), str(out), "model"],
        cwd=project,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert Path(project / "models" / "base" / "config.json").exists()  # the command's own outputs
    text = (out / "model.txt").read_text()
    assert text.startswith("# ftbench model\nprofiled wall ") and "no GPU kernels ran" in text
