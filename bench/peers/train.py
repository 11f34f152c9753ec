"""Peer: one ResNet-50 training step at batch 8, 320x320, eager fp32 (MSLE + Adam), as a
PyTorch user would write it."""
import argparse
import os

import torch

from common import report, timed
from models import ResNet50Regressor, msle


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--impl", default="pytorch-eager-fp32",
                    help="name of this row (scripts/bench names the run with glibc tuned so)")
    args = ap.parse_args()
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    torch.manual_seed(0)
    model = ResNet50Regressor().train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(args.batch, 1, 320, 320)
    y = torch.rand(args.batch) * 200 + 10

    def step():
        opt.zero_grad()
        loss = msle(model(x), y) + 0.01 * model.head[7].weight.pow(2).sum()
        loss.backward()
        opt.step()

    report(args.impl, f"resnet50 train b{args.batch}", "ms/step",
           timed(step, args.warmup, args.reps))


if __name__ == "__main__":
    main()
