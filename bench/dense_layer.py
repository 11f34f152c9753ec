"""The first dense layer of the paper's flatten head for ResNet-50 (204,800 -> 256) at batch 1:
PyTorch's fp32 matrix-vector product against its bf16 linear and matmul, median ms of 20 calls
after 3 warm-up calls, 2 threads. docs/PERFORMANCE.md cites it."""
import time

import torch


def median_ms(fn, reps=20, warmup=3):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return sorted(times)[len(times) // 2]


def main():
    torch.set_num_threads(2)
    w = torch.randn(256, 204800) * 0.01
    b = torch.randn(256)
    x = torch.randn(1, 204800)
    wb, bb, xb = w.bfloat16(), b.bfloat16(), x.bfloat16()
    print(f"fp32 addmv          {median_ms(lambda: torch.addmv(b, w, x[0])):7.2f} ms")
    print(f"bf16 linear         {median_ms(lambda: torch.nn.functional.linear(xb, wb, bb)):7.2f} ms")
    print(f"bf16 matmul x @ w.T {median_ms(lambda: torch.matmul(xb, wb.t())):7.2f} ms")
    exact = torch.addmv(b, w, x[0])
    rounded = torch.nn.functional.linear(xb, wb, bb).float()[0]
    print(f"bf16 relative error {((exact - rounded).abs().max() / exact.abs().max()).item():.4f}")


if __name__ == "__main__":
    main()
