"""GaLore's projection refresh on the GPU: the 182 full SVDs of the Gemma-3-1B matrices one after another
(galore-torch) against side by side from N threads, a CUDA stream each; checks the bases are bitwise the
same. Session 29's figures: bench/h200-s29-levers.txt (`python3 bench/refresh_streams.py`)."""

import json
import time
from concurrent.futures import ThreadPoolExecutor

import torch

LAYER = [(1024, 1152), (256, 1152), (256, 1152), (1152, 1024), (6912, 1152), (6912, 1152), (1152, 6912)]
torch.manual_seed(0)
grads = [torch.randn(s, device="cuda") for s in LAYER * 26]


def clock() -> float:
    torch.cuda.synchronize()
    return time.perf_counter()


def svd(g: torch.Tensor, driver: str | None = None):
    return torch.linalg.svd(g, full_matrices=False, driver=driver)  # as galore-torch calls it


svd(grads[4])
t0 = clock()
reference = [svd(g) for g in grads]
print(json.dumps({"svd": "sequential", "seconds": round(clock() - t0, 2)}), flush=True)
for driver in ("gesvd", "gesvda"):  # other cuSOLVER drivers: other numbers, for scale only
    t0 = clock()
    for g in grads[:28]:
        svd(g, driver)
    print(json.dumps({"svd": f"driver {driver}, 4 layers x 6.5", "seconds": round((clock() - t0) * 6.5, 2)}))
main = torch.cuda.current_stream()
for n in (2, 4, 8, 16):
    streams = [torch.cuda.Stream() for _ in range(n)]

    def share(k: int, n: int = n, streams: list = streams) -> list:
        streams[k].wait_stream(main)
        with torch.cuda.stream(streams[k]):
            return [(i, svd(grads[i])) for i in range(k, len(grads), n)]

    t0 = clock()
    with ThreadPoolExecutor(n) as pool:
        got = dict(pair for part in pool.map(share, range(n)) for pair in part)
    for s in streams:
        main.wait_stream(s)
    seconds = clock() - t0
    same = all(
        torch.equal(ref[0], got[i][0]) and torch.equal(ref[2], got[i][2]) for i, ref in enumerate(reference)
    )
    print(
        json.dumps({"svd": f"{n} streams", "seconds": round(seconds, 2), "bitwise_equal": same}), flush=True
    )
