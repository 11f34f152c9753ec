"""The first dense layer of the paper's flatten head for ResNet-50 (204,800 -> 256) at batch 1:
PyTorch's fp32 matrix-vector product against its bf16 linear and matmul, median ms of 20 calls
after 3 warm-up calls, 2 threads. docs/PERFORMANCE.md cites it."""
import pathlib
import statistics
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "peers"))
from common import timed  # noqa: E402  (the peers' timing: warm-up, then repetitions)


def median_ms(fn):
    return statistics.median(timed(fn, warmup=3, reps=20))


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
