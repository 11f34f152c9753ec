"""Peer: ResNet-50 inference at 320x320 in Python, eager fp32 and the best a user could do
(TorchScript frozen, channels-last, bf16 autocast where the CPU has native bf16)."""
import argparse
import copy

import torch

from common import report, timed
from models import ResNet50Regressor


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--batches", default="1,8")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    else:
        import os
        torch.set_num_threads(len(os.sched_getaffinity(0)))
    torch.manual_seed(0)
    model = ResNet50Regressor().eval()

    for batch in [int(b) for b in args.batches.split(",")]:
        x = torch.rand(batch, 1, 320, 320)
        with torch.no_grad():
            ms = timed(lambda: model(x), args.warmup, args.reps)
        report("pytorch-eager-fp32", f"resnet50 infer b{batch}", "ms/image", [t / batch for t in ms])

        xcl = x.contiguous(memory_format=torch.channels_last)
        # PyTorch's recipe for autocast with TorchScript on CPU: trace without the weight-cast
        # cache (with it the trace check fails: the cached casts differ between invocations),
        # then freeze; the casts are in the graph, and freezing folds those of the weights.
        with torch.no_grad():
            with torch.cpu.amp.autocast(dtype=torch.bfloat16, cache_enabled=False):
                # a copy: .to(memory_format) changes a module in place, and eager must stay as built
                cl_model = copy.deepcopy(model).to(memory_format=torch.channels_last)
                traced = torch.jit.trace(cl_model, xcl)
            frozen = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
            ms = timed(lambda: frozen(xcl), args.warmup, args.reps)
        report("pytorch-frozen-bf16-cl", f"resnet50 infer b{batch}", "ms/image", [t / batch for t in ms])


if __name__ == "__main__":
    main()
