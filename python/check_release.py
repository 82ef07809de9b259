"""The authors' own Hyper-ResNet-50 against `ail import --release`, end to end:

    git clone https://github.com/ruchikachavhan/amortized-invariance-learning-ssl /tmp/ail-release
    pip install torch "timm==0.6.13" pillow numpy
    python3 python/check_release.py --release-repo /tmp/ail-release [--ail target/release/ail]

Builds `hyper_resnet.resnet50(inv_dim=2)` from the release's own code (full width, 224 px, their
initialisation), gives its BatchNorm layers statistics from a few training-mode batches at the three
trained descriptors, saves it as their MoCo-v2 script saves checkpoints (`{'state_dict':
{'module.base_encoder.' + name: tensor}}`), imports it with `ail import --release`, embeds three
random 224 px images with `ail embed` (shared running statistics, as the release evaluates) at four
descriptors and prints the largest difference from the release's own features
(`forward_head(forward_features(x, i), pre_logits=True)`). Needs about 10 GB of memory (the
generators hold 774 million values) and a few minutes.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from PIL import Image

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
DESCRIPTORS = ["1,0", "0,1", "1,1", "0.3,0.6"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--release-repo", required=True, help="a checkout of the authors' release (holds hyper_resnet.py)")
    parser.add_argument("--ail", default="target/release/ail", help="the ail binary")
    args = parser.parse_args()
    sys.path.insert(0, args.release_repo)
    import hyper_resnet  # the release's module

    torch.manual_seed(0)
    model = hyper_resnet.resnet50(inv_dim=2, num_classes=128)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative averages
    g = torch.Generator().manual_seed(1)
    model.train()
    with torch.no_grad():
        for i in ([0.0, 1.0], [1.0, 0.0], [1.0, 1.0]):
            model.forward_features((torch.rand(4, 3, 224, 224, generator=g) - MEAN) / STD, torch.tensor(i))
    model.eval()

    work = tempfile.mkdtemp(prefix="ail-release-check-")
    checkpoint = os.path.join(work, "hyper_resnet50-moco_2_checkpoint.pth.tar")
    torch.save({"epoch": 0, "arch": "resnet50", "state_dict": {"module.base_encoder." + k: v for k, v in model.state_dict().items()}}, checkpoint)
    images = []
    os.makedirs(os.path.join(work, "imgs", "a"))
    for n in range(3):
        img = torch.randint(0, 256, (224, 224, 3), generator=g, dtype=torch.uint8)
        Image.fromarray(img.numpy()).save(os.path.join(work, "imgs", "a", f"{n}.png"))
        images.append(img.permute(2, 0, 1).float() / 255.0)
    x = (torch.stack(images) - MEAN) / STD

    ail = os.path.abspath(args.ail)
    run = lambda *a: subprocess.run([ail, *a], check=True, cwd=work)
    run("import", "--release", checkpoint, "--out", "imported")
    worst = 0.0
    for d in DESCRIPTORS:
        i = torch.tensor([float(v) for v in d.split(",")])
        with torch.no_grad():
            theirs = model.forward_head(model.forward_features(x, i), pre_logits=True).numpy()
        run("--device", "cpu", "embed", "--checkpoint", "imported", "--data", "imgs", "--val-fraction", "0", "--test-fraction", "0",
            "--split", "all", "--bn-statistics", "shared", "--invariance", d, "--out", f"emb-{d}")
        ours = np.load(os.path.join(work, f"emb-{d}", "features.npy"))
        rows = [int(os.path.splitext(os.path.basename(s))[0]) for s in json.load(open(os.path.join(work, f"emb-{d}", "sources.json")))]
        diff = np.abs(ours - theirs[rows]).max() / np.abs(theirs).max()
        worst = max(worst, diff)
        print(f"i = [{d}]: largest difference {diff:.2e} of the largest feature ({np.abs(theirs).mean():.3f} mean |feature|)")
    print(f"worst {worst:.2e}; files in {work}")
    sys.exit(0 if worst < 1e-4 else 1)


if __name__ == "__main__":
    main()
