"""torchvision's equivalent of ail's default two-view augmentation pipeline, timed.

Called by `ail bench augment`; prints one JSON line. The pipeline is SimCLR / MoCo-v2's (docs/method.md):
RandomResizedCrop(scale 0.08-1) + horizontal flip, colour jitter (0.4, 0.4, 0.4, 0.1) p=0.8,
grayscale p=0.2, gaussian blur (sigma 0.1-2, kernel ~10% of the side) p=0.5, solarize p=0.2, applied
to each image twice, on uint8 CHW tensors converted to float in [0, 1] as ail does. The images are
spread over `--workers` processes (a DataLoader with persistent workers), as a training script would.

Usage: bench_torchvision_augment.py --images images.u8 --shape N C H W --runs R [--workers W]
"""
import argparse
import json
import os
import statistics
import time

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2 as T


def pipeline(side):
    k = max(3, int(0.1 * side) + (1 - int(0.1 * side) % 2))
    return T.Compose([
        T.ToDtype(torch.float32, scale=True),
        T.RandomResizedCrop(side, scale=(0.08, 1.0), antialias=True),
        T.RandomHorizontalFlip(),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        T.RandomGrayscale(p=0.2),
        T.RandomApply([T.GaussianBlur(k, sigma=(0.1, 2.0))], p=0.5),
        T.RandomSolarize(0.5, p=0.2),
    ])


class TwoViews(Dataset):
    def __init__(self, images, transform):
        self.images = images
        self.transform = transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        x = self.images[i]
        return self.transform(x), self.transform(x)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--images", required=True)
    p.add_argument("--shape", type=int, nargs=4, required=True)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--workers", type=int, default=os.cpu_count())
    a = p.parse_args()
    n, c, h, w = a.shape
    raw = open(a.images, "rb").read()
    images = torch.frombuffer(bytearray(raw), dtype=torch.uint8).reshape(n, c, h, w)
    # One batch per worker, so that every worker has work in each run.
    per_worker = max(1, -(-n // max(1, a.workers)))
    loader = DataLoader(TwoViews(images, pipeline(h)), batch_size=per_worker, num_workers=a.workers,
                        persistent_workers=a.workers > 0)
    times = []
    for run in range(a.runs + 1):
        t0 = time.perf_counter()
        seen = 0
        for v1, v2 in loader:
            assert v1.shape[1:] == (c, h, w) and v2.shape == v1.shape
            seen += v1.shape[0]
        assert seen == n
        if run > 0:  # the first run is the warm-up (and starts the workers)
            times.append(time.perf_counter() - t0)
    print(json.dumps({"median_s": statistics.median(times), "images": n, "workers": a.workers,
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
