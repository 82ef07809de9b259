"""The AI-SimCLR pretraining step of `ail bench pretrain`, written in PyTorch, timed.

Same architecture and initialisation as ail's Hyper-ResNet-18 (crates/core/src/{hypernet,resnet}.rs):
CIFAR stem (static 3x3 conv), BasicBlocks whose convs (shortcut included) are generated per step by
`Linear(16 -> hidden) -> ReLU -> Linear(hidden -> out*in*k*k)` from the block's embedding
`Linear(K -> 16, no bias)` of the descriptor i; BatchNorm shared; last BN gamma 0; generator output
bias = a Kaiming fan-out draw, output weight N(0, kaiming^2 / hidden); the ImageNet stem (7x7/2 +
max-pool) above 64 px. Projection head Linear -> BN -> ReLU -> Linear, NT-Xent (T = 0.2), AdamW.
Step s uses descriptor s % 3 of [1,0], [0,1], [1,1] and the two views come from torchvision's
augmentation set of that descriptor (spatial, appearance, or both), applied per image in a
DataLoader with one worker per core, as a PyTorch training script would do it.

Prints one JSON line: median seconds per step and peak resident memory.
Usage: bench_pytorch_pretrain.py --width 0.25 --batch-size 64 --image-size 32 --steps 5 --warmup 2

With --fit it times the downstream step of `ail bench fit` instead: the network frozen in eval
mode, the descriptor i requiring a gradient, a linear head, cross-entropy, AdamW on the head and
Adam on i. With --profile it instead times each kind of work of the step alone, forward and backward, at the
step's shapes (the rows of `ail bench profile`, same names), and prints them as one JSON object of
median seconds.
"""
import argparse
import json
import math
import os
import resource
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2 as T

EMBED = 16


class HyperConv(nn.Module):
    def __init__(self, cin, cout, k, stride, hidden):
        super().__init__()
        self.shape = (cout, cin, k, k)
        self.stride, self.pad = stride, k // 2
        n = cout * cin * k * k
        std = math.sqrt(2.0 / (cout * k * k))
        self.hidden = nn.Linear(EMBED, hidden)
        self.out = nn.Linear(hidden, n)
        nn.init.normal_(self.out.weight, 0.0, std / math.sqrt(hidden))
        nn.init.normal_(self.out.bias, 0.0, std)

    def forward(self, x, z):
        w = self.out(F.relu(self.hidden(z))).view(self.shape)
        return F.conv2d(x, w, stride=self.stride, padding=self.pad)


class Block(nn.Module):
    def __init__(self, cin, cout, stride, k_inv, hidden):
        super().__init__()
        self.emb = nn.Linear(k_inv, EMBED, bias=False)
        self.c1, self.b1 = HyperConv(cin, cout, 3, stride, hidden), nn.BatchNorm2d(cout)
        self.c2, self.b2 = HyperConv(cout, cout, 3, 1, hidden), nn.BatchNorm2d(cout)
        nn.init.zeros_(self.b2.weight)
        self.proj = None
        if stride != 1 or cin != cout:
            self.proj, self.pb = HyperConv(cin, cout, 1, stride, hidden), nn.BatchNorm2d(cout)

    def forward(self, x, i):
        z = self.emb(i.view(1, -1))
        out = F.relu(self.b1(self.c1(x, z)))
        out = self.b2(self.c2(out, z))
        sc = self.pb(self.proj(x, z)) if self.proj is not None else x
        return F.relu(out + sc)


class HyperResNet18(nn.Module):
    def __init__(self, width, k_inv, image_size, hidden=32):
        super().__init__()
        w = max(1, int(math.floor(64 * width + 0.5)))  # Rust's round(): halves away from zero
        self.imagenet_stem = image_size > 64
        self.stem = nn.Conv2d(3, w, 7, 2, 3, bias=False) if self.imagenet_stem else nn.Conv2d(3, w, 3, 1, 1, bias=False)
        nn.init.kaiming_normal_(self.stem.weight, mode="fan_out", nonlinearity="relu")
        self.bn = nn.BatchNorm2d(w)
        blocks, cin = [], w
        for stage in range(4):
            cout = w << stage
            for b in range(2):
                blocks.append(Block(cin, cout, 2 if stage > 0 and b == 0 else 1, k_inv, hidden))
                cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.feature_dim = cin

    def forward(self, x, i):
        x = F.relu(self.bn(self.stem(x)))
        if self.imagenet_stem:
            x = F.max_pool2d(x, 3, 2, 1)
        for b in self.blocks:
            x = b(x, i)
        return x.mean((2, 3))


def nt_xent(z1, z2, t):
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = z1.shape[0]
    sim = z @ z.t() / t
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(sim, target)


DESCRIPTORS = [(1.0, 0.0), (0.0, 1.0), (1.0, 1.0)]


def pipeline(side, spatial, appearance):
    k = max(3, int(0.1 * side) + (1 - int(0.1 * side) % 2))
    ops = [T.ToDtype(torch.float32, scale=True)]
    if spatial:
        ops += [T.RandomResizedCrop(side, scale=(0.08, 1.0), antialias=True), T.RandomHorizontalFlip()]
    if appearance:
        ops += [T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), T.RandomGrayscale(p=0.2),
                T.RandomApply([T.GaussianBlur(k, sigma=(0.1, 2.0))], p=0.5), T.RandomSolarize(0.5, p=0.2)]
    return T.Compose(ops)


class TwoViews(Dataset):
    """Item n belongs to batch n // batch_size, whose descriptor is (n // batch_size) % 3."""

    def __init__(self, images, side, batch_size):
        self.images, self.batch_size = images, batch_size
        self.pipelines = [pipeline(side, s > 0, a > 0) for s, a in DESCRIPTORS]

    def __len__(self):
        return len(self.images)

    def __getitem__(self, idx):
        t = self.pipelines[(idx // self.batch_size) % 3]
        x = self.images[idx]
        return t(x), t(x)


def median_of(runs, work):
    work()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        work()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def convs_with_sides(model, side):
    """(conv module or HyperConv, input side) for every conv, in order."""
    out = [(model.stem, side)]
    side //= model.stem.stride[0]
    for b in model.blocks:
        stride = b.c1.stride
        out.append((b.c1, side))
        out.append((b.c2, side // stride))
        if b.proj is not None:
            out.append((b.proj, side))
        side //= stride
    return out


def profile(a):
    torch.manual_seed(0)
    runs, n, side = a.steps, a.batch_size, a.image_size
    model = HyperResNet18(a.width, 2, side)
    head = nn.Sequential(nn.Linear(model.feature_dim, 512, bias=False), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, 128))
    rows = {}
    conv_time, bn_time, conv_forward, weight_backward = 0.0, 0.0, 0.0, 0.0
    for conv, s in convs_with_sides(model, side):
        if isinstance(conv, HyperConv):
            cout, cin, k, _ = conv.shape
            stride, pad = conv.stride, conv.pad
        else:
            cout, cin, k, _ = conv.weight.shape
            stride, pad = conv.stride[0], conv.padding[0]
        x = torch.randn(2 * n, cin, s, s, requires_grad=True)
        w = (torch.randn(cout, cin, k, k) * 0.1).requires_grad_()

        def conv_work():
            x.grad, w.grad = None, None
            F.conv2d(x, w, stride=stride, padding=pad).sum().backward()
            w.grad.sum().item()
        conv_time += median_of(runs, conv_work)
        conv_forward += median_of(runs, lambda: F.conv2d(x.detach(), w.detach(), stride=stride, padding=pad).sum().item())
        xc = x.detach()

        def weight_work():
            w.grad = None
            F.conv2d(xc, w, stride=stride, padding=pad).sum().backward()
            w.grad.sum().item()
        weight_backward += median_of(runs, weight_work)
        bn = nn.BatchNorm2d(cout)
        y = torch.randn(2 * n, cout, s // stride, s // stride, requires_grad=True)

        def bn_work():
            y.grad = None
            bn(y).sum().backward()
            y.grad.sum().item()
        bn_time += median_of(runs, bn_work)
    rows["convs (fwd + bwd)"] = conv_time
    rows["  of which forward"] = conv_forward
    rows["  forward + kernel gradient"] = weight_backward
    rows["batch norms (fwd + bwd)"] = bn_time
    emb = nn.Linear(2, EMBED, bias=False)
    hyper = [m for b in model.blocks for m in (b.c1, b.c2, b.proj) if m is not None]
    i = torch.tensor([1.0, 1.0])

    def generator_work():
        emb.zero_grad(set_to_none=True)
        z = emb(i.view(1, -1))
        sum(h.out(F.relu(h.hidden(z))).sum() for h in hyper).backward()
        emb.weight.grad.sum().item()
    rows["kernel generators (fwd + bwd)"] = median_of(runs, generator_work)
    feats = torch.randn(2 * n, model.feature_dim, requires_grad=True)

    def head_work():
        feats.grad = None
        z = head(feats)
        nt_xent(z[:n], z[n:], 0.2).backward()
        feats.grad.sum().item()
    rows["head + NT-Xent (fwd + bwd)"] = median_of(runs, head_work)
    x = torch.randn(2 * n, 3, side, side)
    d = torch.tensor([1.0, 1.0])

    def forward_work():
        z = head(model(x, d))
        nt_xent(z[:n], z[n:], 0.2).item()
    xt = x.clone().requires_grad_()

    def step_work():
        xt.grad = None
        z = head(model(xt, d))
        nt_xent(z[:n], z[n:], 0.2).backward()
        xt.grad.sum().item()
    params = list(model.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-4)
    times = []
    for run in range(runs + 1):
        opt.zero_grad(set_to_none=True)
        z = head(model(x[:8], d))
        nt_xent(z[:4], z[4:], 0.2).backward()
        t0 = time.perf_counter()
        opt.step()
        params[-1].sum().item()
        if run > 0:
            times.append(time.perf_counter() - t0)
    rows["AdamW over all parameters"] = statistics.median(times)
    images = torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8)
    both = pipeline(side, True, True)

    def augment_work():
        # per image, as a DataLoader worker does it, on this process's threads
        torch.stack([both(im) for im in images])
        torch.stack([both(im) for im in images])
    rows["augmentation (2 views)"] = median_of(runs, augment_work)
    rows["forward (encoder + head + loss)"] = median_of(runs, forward_work)
    rows["forward + backward"] = median_of(runs, step_work)
    rows["threads"] = torch.get_num_threads()
    print(json.dumps(rows))


def fit_step(a):
    torch.manual_seed(0)
    dev = torch.device(a.device)
    model = HyperResNet18(a.width, 2, a.image_size).to(dev).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    head = nn.Linear(model.feature_dim, 10).to(dev)
    i = torch.tensor([0.5, 0.5], device=dev, requires_grad=True)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3)
    opt_i = torch.optim.Adam([i], lr=0.01)
    x = torch.randn(a.batch_size, 3, a.image_size, a.image_size, device=dev)
    y = torch.arange(a.batch_size, device=dev) % 10
    times = []
    for step in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        loss = F.cross_entropy(head(model(x, i)), y)
        opt.zero_grad(set_to_none=True)
        opt_i.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        opt_i.step()
        with torch.no_grad():
            i.clamp_(0.0, 1.0)
        i.sum().item()  # waits for the step
        if step >= a.warmup:
            times.append(time.perf_counter() - t0)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"median_s": statistics.median(times), "peak_rss_mib": peak_kib / 1024,
                      "torch": torch.__version__, "threads": torch.get_num_threads()}))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--device", default="cpu", help="cpu or cuda (the device ail measured on)")
    p.add_argument("--profile", action="store_true", help="time each kind of work alone (CPU)")
    p.add_argument("--fit", action="store_true", help="time the downstream fit step instead")
    a = p.parse_args()
    if a.fit:
        fit_step(a)
        return
    if a.profile:
        profile(a)
        return
    torch.manual_seed(0)
    dev = torch.device(a.device)
    model = HyperResNet18(a.width, 2, a.image_size)
    head = nn.Sequential(nn.Linear(model.feature_dim, 512, bias=False), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, 128))
    model, head = model.to(dev), head.to(dev)
    params = list(model.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-4)
    images = torch.randint(0, 256, (a.batch_size * (a.steps + a.warmup), 3, a.image_size, a.image_size), dtype=torch.uint8)
    loader = iter(DataLoader(TwoViews(images, a.image_size, a.batch_size), batch_size=a.batch_size, num_workers=a.workers))
    descriptors = [torch.tensor(d, device=dev) for d in DESCRIPTORS]
    times = []
    for step in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        v1, v2 = next(loader)
        i = descriptors[step % 3]
        z = head(model(torch.cat([v1, v2]).to(dev), i))
        loss = nt_xent(z[: a.batch_size], z[a.batch_size:], 0.2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()  # waits for the step, as ail's timing does
        if step >= a.warmup:
            times.append(time.perf_counter() - t0)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"median_s": statistics.median(times), "peak_rss_mib": peak_kib / 1024,
                      "torch": torch.__version__, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
