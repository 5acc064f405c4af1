#!/usr/bin/env python3
"""The CPU's practical SGEMM peak, to set CLNet's GEMM against (Benchmarks/RESULTS.md):
numpy's BLAS and PyTorch's `a @ b` on square float32 products, median of 7 after one warm-up.

Run it with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset, or numpy's OpenBLAS runs the kernel
those name instead of the machine's own:
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 Benchmarks/blas_peak.py 1024 1536 2048
"""
import statistics, sys, time

import numpy as np


def rate(matmul, a, b, n):
    matmul(a, b)
    times = []
    for _ in range(7):
        start = time.perf_counter()
        matmul(a, b)
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


sizes = [int(s) for s in sys.argv[1:]] or [1024, 1536, 2048]
for n in sizes:
    a, b = np.random.rand(n, n).astype(np.float32), np.random.rand(n, n).astype(np.float32)
    print(f"numpy {n}^3: {rate(np.matmul, a, b, n):.1f} GFLOP/s")
try:
    import torch
except ImportError:
    print("PyTorch is not installed; numpy only")
else:
    for n in sizes:
        a, b = torch.rand(n, n), torch.rand(n, n)
        print(f"torch {n}^3: {rate(torch.matmul, a, b, n):.1f} GFLOP/s ({torch.get_num_threads()} threads)")
