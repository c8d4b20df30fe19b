"""varlen_attn vs sdpa row by row on the GPU: forward and backward, Gemma-3-1B heads."""

import inspect
import time

import torch
from torch.nn.attention.varlen import varlen_attn

from ftbench import packing

print("varlen_attn", inspect.signature(varlen_attn))
torch.manual_seed(0)
lengths = [300, 17, 512, 88, 140, 33, 260]
T = sum(lengths)
bounds = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device="cuda")
for window in (None, 128):
    q = torch.randn(T, 4, 256, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(T, 1, 256, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(T, 1, 256, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    outs, grads = [], []
    for fn in (packing._varlen, packing._row_by_row):
        args = (
            (q, k, v, bounds, max(lengths), 1 / 16, window)
            if fn is packing._varlen
            else (q, k, v, bounds, 1 / 16, window)
        )
        o = fn(*args)
        o.float().square().sum().backward()
        outs.append(o.detach().float())
        grads.append([t.grad.float().clone() for t in (q, k, v)])
        for t in (q, k, v):
            t.grad = None

    def rel(a, b):
        return ((a - b).norm() / b.norm()).item()

    grad_rel = [rel(a, b) for a, b in zip(*grads, strict=True)]
    print({"window": window, "out_rel": rel(*outs), "grad_rel": grad_rel})
    for fn, args in (
        (packing._varlen, (q, k, v, bounds, max(lengths), 1 / 16, window)),
        (packing._row_by_row, (q, k, v, bounds, 1 / 16, window)),
    ):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(20):
            fn(*args).sum().backward()
        torch.cuda.synchronize()
        print(fn.__name__, "fwd+bwd ms", round((time.perf_counter() - t0) / 20 * 1000, 2))
