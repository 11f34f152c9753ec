"""Peer: `boneage predict` as a Python user would write it, one whole process: load a ResNet-50
with the paper's head, read each radiograph, crop the hand, CLAHE, letterbox to 320x320 (the
OpenCV steps of preprocess.py, over the cores with a process pool), then infer in batches of 16
and print one line per input. Two ways to run the network:
  eager  the model built in Python, its state dict loaded (torch.load), eager fp32
  best   a TorchScript module traced under bf16 autocast (where the CPU has native bf16) and
         frozen, channels-last, saved once by --save and loaded here (torch.jit.load), then
         torch.jit.optimize_for_inference
  python3 predict.py --save DIR                      # writes DIR/eager.pt and DIR/best.pt
  python3 predict.py --impl eager|best --model DIR IMAGE...
"""
import argparse
import copy
import os
import sys
from multiprocessing import Pool

import numpy as np

from preprocess import preprocess  # the crop, CLAHE and letterbox of the preprocessing peer


def native_bf16():
    with open("/proc/cpuinfo") as f:
        flags = f.read()
    return " avx512_bf16 " in flags or " amx_bf16 " in flags


def save(folder):
    import torch
    from models import ResNet50Regressor
    torch.manual_seed(0)
    model = ResNet50Regressor().eval()
    os.makedirs(folder, exist_ok=True)
    torch.save(model.state_dict(), os.path.join(folder, "eager.pt"))
    x = torch.rand(16, 1, 320, 320).contiguous(memory_format=torch.channels_last)
    cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    with torch.no_grad():
        if native_bf16():
            # PyTorch's recipe for autocast with TorchScript on CPU (infer.py).
            with torch.cpu.amp.autocast(dtype=torch.bfloat16, cache_enabled=False):
                traced = torch.jit.trace(cl, x)
        else:
            traced = torch.jit.trace(cl, x)
        frozen = torch.jit.freeze(traced)
    torch.jit.save(frozen, os.path.join(folder, "best.pt"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--save", help="write the two models into this folder and stop")
    ap.add_argument("--impl", choices=["eager", "best"], default="eager")
    ap.add_argument("--model", help="the folder --save wrote")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("images", nargs="*")
    args = ap.parse_args()
    if args.save:
        save(args.save)
        return
    cores = len(os.sched_getaffinity(0))
    # The pool starts before torch is imported: its workers are plain OpenCV processes.
    with Pool(cores) as pool:
        pending = pool.map_async(preprocess, args.images, chunksize=1)
        import torch
        torch.set_num_threads(cores)
        if args.impl == "eager":
            from models import ResNet50Regressor
            model = ResNet50Regressor().eval()
            model.load_state_dict(torch.load(os.path.join(args.model, "eager.pt")))
        else:
            model = torch.jit.optimize_for_inference(
                torch.jit.load(os.path.join(args.model, "best.pt")))
        images = pending.get()
    months = []
    with torch.no_grad():
        for start in range(0, len(images), args.batch):
            x = torch.from_numpy(np.stack(images[start:start + args.batch])).float().div_(255.0)
            x = x.unsqueeze(1)
            if args.impl == "best":
                x = x.contiguous(memory_format=torch.channels_last)
            months += model(x).float().tolist()
    for path, m in zip(args.images, months):
        sys.stdout.write(f"{path}: {m:.1f}\n")


if __name__ == "__main__":
    main()
