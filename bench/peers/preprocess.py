"""Peer: the paper's preprocessing with python3-opencv as a user would write it: find the
hand (background subtraction, Otsu, morphology, largest component), crop with a margin,
CLAHE, letterbox to 320x320, over the cores with a process pool."""
import argparse
import glob
import os
import time
from multiprocessing import Pool

import cv2
import numpy as np

from common import report


def find_hand(grey):
    h, w = grey.shape
    scale = 512.0 / max(h, w)
    small = cv2.resize(grey, (int(w * scale), int(h * scale)), interpolation=cv2.INTER_AREA)
    background = cv2.medianBlur(small, 31)
    corrected = cv2.subtract(small, background // 2)
    _, mask = cv2.threshold(corrected, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9))
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask)
    if n < 2:
        return 0, 0, w, h
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, bw, bh = stats[best, :4]
    return int(x / scale), int(y / scale), int(bw / scale), int(bh / scale)


def letterbox(img, size=320):
    h, w = img.shape
    s = min(size / w, size / h)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    resized = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
    out = np.zeros((size, size), np.uint8)
    y0, x0 = (size - nh) // 2, (size - nw) // 2
    out[y0:y0 + nh, x0:x0 + nw] = resized
    return out


CLAHE = None


def preprocess(path):
    global CLAHE
    if CLAHE is None:
        CLAHE = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
    grey = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    x, y, w, h = find_hand(grey)
    m = int(0.04 * max(w, h))
    x0, y0 = max(0, x - m), max(0, y - m)
    x1, y1 = min(grey.shape[1], x + w + m), min(grey.shape[0], y + h + m)
    crop = grey[y0:y1, x0:x1]
    return letterbox(CLAHE.apply(crop))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("images", help="folder of PNG radiographs")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    paths = sorted(glob.glob(os.path.join(args.images, "*.png")))
    rates = []
    with Pool(len(os.sched_getaffinity(0))) as pool:
        pool.map(preprocess, paths[:2])  # warm-up: workers started, modules loaded
        for _ in range(args.reps):
            t0 = time.perf_counter()
            pool.map(preprocess, paths, chunksize=1)
            rates.append(len(paths) / (time.perf_counter() - t0))
    report("python-opencv", "preprocess", "images/s", rates)


if __name__ == "__main__":
    main()
