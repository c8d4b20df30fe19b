"""Step time of the real training loop (train.fit, QLoRA on a tiny random Gemma 3) with MLflow tracking
off and on: a SQLite store, with --server a local `mlflow server` too, and for comparison a SQLite store
written synchronously every step (ftbench before asynchronous logging). Modes alternate round by round,
so a machine that slows down part-way is shared by all of them. Prints one JSON line per mode and the
difference to tracking off.

usage: python bench/tracking_overhead.py [--tokenizer DIR] [--steps 50] [--rounds 3] [--server]
(without --tokenizer, the Gemma tokenizer is read from the embedded GGUF, as tests/conftest.py does)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ftbench import bench, config, recipes, tracking, train
from ftbench.loading import load_tokenizer

ROOT = Path(__file__).resolve().parents[1]


def tokenizer_from(folder: Path | None):
    if folder:
        return load_tokenizer(folder)
    from transformers import AutoTokenizer

    from ftbench.chat import ensure_chat_template
    from ftbench.model import embedded_gguf

    gguf = embedded_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    ensure_chat_template(tokenizer)
    return tokenizer


def timed_fit(model, optimizer, steps, p, pad_id: int, work: Path, blocking: bool) -> dict:
    """train.fit, logging every step through a real stage run. Returns seconds per optimizer step, seconds
    per step spent inside the logging call, and seconds of the stage run outside the loop (opening and
    closing the MLflow run, with its wait for queued metrics). `blocking` logs each step with a
    synchronous log_batch instead, as ftbench did before: the cost the loop paid then."""
    in_log = 0.0

    def log(step: int, metrics: dict) -> None:
        nonlocal in_log
        t = time.perf_counter()
        if blocking and st.tracker.run_id:
            st.tracker.client.log_batch(st.tracker.run_id, metrics=tracking._metrics(step, metrics))
        else:
            st.log_step(step, metrics)
        in_log += time.perf_counter() - t

    start = time.perf_counter()
    with (
        tracking.stage("bench-tracking", p, record_file=False) as st,
        contextlib.redirect_stdout(io.StringIO()),
    ):
        t0 = time.perf_counter()
        train.fit(model, optimizer, steps, "bench", p, pad_id, log, (work / "ckpt", "bench"))
        loop = time.perf_counter() - t0
    return {
        "step": loop / len(steps),
        "log": in_log / len(steps),
        "outside": time.perf_counter() - start - loop,
    }


def use(env: dict[str, str]) -> None:
    for key in ("FTBENCH_MLFLOW", "MLFLOW_TRACKING_URI"):
        os.environ.pop(key, None)
    os.environ.update(env)


@contextlib.contextmanager
def mlflow_server(work: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ]
        + [
            "--backend-store-uri",
            f"sqlite:///{work / 'server.db'}",
            "--artifacts-destination",
            str(work / "a"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while not tracking._reachable(uri):
            if time.time() > deadline or server.poll() is not None:
                raise SystemExit("mlflow server did not start")
            time.sleep(1)
        yield uri
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokenizer", type=Path)
    ap.add_argument("--steps", type=int, default=50, help="timed optimizer steps per mode and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--server", action="store_true", help="also log to a local `mlflow server`")
    args = ap.parse_args()

    p0 = config.load(ROOT / "params.yaml")
    p = p0.model_copy(update={"train": p0.train.model_copy(update={"checkpoint_every_s": 0, "log_every": 1})})
    # one-example steps: the shortest real steps, where logging's share of the step is largest
    method = p.methods["qlora"].model_copy(update={"batch_size": 1, "grad_accum": 1})
    tokenizer = tokenizer_from(args.tokenizer)
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        os.chdir(work)
        base = bench.build_model("tiny", tokenizer, work / "base")
        rows = bench.dataset_rows("builtin", tokenizer, p.data.max_length)
        steps = train.optimizer_steps(rows, method, p, seed=0)[: args.steps]
        model, optimizer, _ = recipes.get(method.recipe).setup(base, method, p, 0)
        sqlite = {"MLFLOW_TRACKING_URI": f"sqlite:///{work}/m.db"}
        modes = {"off": ({"FTBENCH_MLFLOW": "off"}, False), "sqlite": (sqlite, False)}
        if args.server:
            modes["server"] = ({"MLFLOW_TRACKING_URI": stack.enter_context(mlflow_server(work))}, False)
        modes["sqlite-blocking"] = (sqlite, True)
        for env, blocking in modes.values():  # warm-up: allocator, kernels, MLflow's store and thread
            use(env)
            timed_fit(model, optimizer, steps[:3], p, tokenizer.pad_token_id, work, blocking)
        timings: dict[str, list[dict]] = {mode: [] for mode in modes}
        for _ in range(args.rounds):
            for mode, (env, blocking) in modes.items():
                use(env)
                timings[mode].append(
                    timed_fit(model, optimizer, steps, p, tokenizer.pad_token_id, work, blocking)
                )
    off = statistics.mean(t["step"] for t in timings["off"])
    for mode, values in timings.items():
        mean = statistics.mean(t["step"] for t in values)
        line = {
            "mode": mode,
            "steps": len(steps) * args.rounds,
            "mean_step_ms": round(mean * 1000, 2),
            "per_round_step_ms": [round(t["step"] * 1000, 2) for t in values],
            "vs_off_ms": round((mean - off) * 1000, 2),
            "vs_off_pct": round(100 * (mean - off) / off, 2),
            "in_log_call_ms_per_step": round(statistics.mean(t["log"] for t in values) * 1000, 3),
            "stage_outside_loop_s": round(statistics.mean(t["outside"] for t in values), 2),
        }
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
