"""Regenerates the PyTorch fixtures of tests/fixtures/torch (needs torch):

    python3 python/make_fixtures.py           # write them
    python3 python/make_fixtures.py --check   # regenerate in memory and compare with the committed ones

Two fixtures, each with images and the features PyTorch computes for them at several descriptors,
which `crates/cli/tests/torch_interop.rs` compares with ail's own features (within 1e-4) without
PyTorch installed:

- `export/`: a small Hyper-ResNet-18 (2 base channels, 16 px, K = 2) in the layout `ail export
  --torch` writes (config.json + model.safetensors), built and given BatchNorm statistics here;
  `ail import --torch` must read it, and `ail export --torch` must write it back unchanged.
- `export-vit/`: a Prompt-ViT-Tiny (8 px, patches of 4, 3 projectors, K = 2) whose weights come
  from a formula (`formula_value`, repeated in the Rust test) rather than a committed file (its
  5.9 million values would take 24 MB): config.json, images and features only.
- `release/`: a Hyper-ResNet-50 of one base channel (72 px, ImageNet stem, K = 2) saved with
  `torch.save` as the authors' MoCo-v2 training script saves theirs: `{'epoch', 'arch',
  'state_dict', 'optimizer', 'scaler'}`, the state_dict holding `module.base_encoder.*` (with the
  unused `bn_down` of every Bottleneck and the `predictor_b` projection heads), a momentum
  encoder's tensor and the queues. `ail import --release` must read it.

Everything is drawn from fixed seeds, so a rerun gives the same bytes.
"""

import argparse
import io
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ail_torch  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "torch")
DESCRIPTORS = [[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.5, 0.5], [0.2, 0.9]]
CIFAR_NORM = {"mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26]}
IMAGENET_NORM = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def give_statistics(model, size, seed):
    """Running statistics from a few batches at each descriptor (cumulative averages), then
    affine parameters away from 1 and 0, so that no BatchNorm is an identity."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        for i in DESCRIPTORS:
            x = torch.rand(8, 3, size, size, generator=g)
            model(model.normalize(x), torch.tensor(i))
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
    model.eval()


def images(n, size, seed):
    """`[n, 3, size, size]` in [0, 1], on the u8 grid (as images are)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g).float() / 255.0


def features(model, x):
    with torch.no_grad():
        return torch.stack([model(model.normalize(x), torch.tensor(i)) for i in DESCRIPTORS])


def safetensors_bytes(tensors):
    """A safetensors file, written by hand (no extra package needed)."""
    header, data, offset = {}, bytearray(), 0
    for name, t in tensors.items():
        b = t.detach().contiguous().to(torch.float32).numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
        data += b
        offset += len(b)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return len(h).to_bytes(8, "little") + h + bytes(data)


def export_fixture():
    torch.manual_seed(0)
    arch = {"family": "resnet", "block": "basic", "layers": [2, 2, 2, 2], "base_channels": 2, "in_channels": 3, "cifar_stem": True,
            "num_invariances": 2, "hidden": 32, "condition_stem": False, "feature_dim": 16, "eps": 1e-5}
    model = ail_torch.build(arch, normalization=CIFAR_NORM)
    give_statistics(model, 16, 1)
    config = {
        "format": "ail-torch", "version": 1, "arch": arch,
        "encoder": {"kind": "hyper-resnet18", "width": 0.03125, "num_invariances": 2, "image_size": 16,
                    "in_channels": 3, "hidden": 32, "condition_stem": False, "patch_size": None, "num_projectors": None},
        "family": "groups", "step": 0, "normalization": CIFAR_NORM,
    }
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    x = images(4, 16, 2)
    files = {
        "export/config.json": (json.dumps(config, indent=2) + "\n").encode(),
        "export/model.safetensors": safetensors_bytes(state),
        "export/inputs.safetensors": safetensors_bytes({"images": x, "descriptors": torch.tensor(DESCRIPTORS)}),
        "export/features.safetensors": safetensors_bytes({"features": features(model, x)}),
    }
    return files


def formula_value(name, shape):
    """Deterministic weights from a formula that Rust repeats (crates/cli/tests/torch_interop.rs),
    so that a ViT's fixture needs no committed tensors: the k-th value of a tensor is `a (2 u - 1)`
    with `u = fract(43758.5453 sin(0.37 k + s))` (a classic shader hash, uniform in [0, 1)), `s` a
    checksum of the name and `a` a scale fit for the tensor's role (ten times larger for the
    invariance projectors)."""
    s = sum((j + 1) * b for j, b in enumerate(name.encode())) % 1000
    n = 1
    for d in shape:
        n *= d
    k = torch.arange(n, dtype=torch.float64)
    h = torch.sin(0.37 * k + s) * 43758.5453
    wave = 2.0 * (h - torch.floor(h)) - 1.0
    if name.endswith(("norm1.weight", "norm2.weight")) or name == "norm.weight":
        v = 1.0 + 0.1 * wave
    elif name.endswith(".bias") or name in ("cls_token", "pos_embed"):
        v = 0.1 * wave
    else:
        v = (3.0 / (n // shape[0])) ** 0.5 * wave
    if name.startswith("inv_fc."):
        v = 10.0 * v  # a strong prompt, so that the descriptor visibly moves the features
    return v.to(torch.float32).reshape(shape)


def vit_fixture():
    arch = {"family": "vit", "embed_dim": 192, "depth": 12, "num_heads": 3, "patch_size": 4, "image_size": 8,
            "in_channels": 3, "mlp_ratio": 4, "num_invariances": 2, "num_projectors": 3, "block_eps": 1e-5, "norm_eps": 1e-6}
    model = ail_torch.build(arch, normalization=CIFAR_NORM)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            t.copy_(formula_value(name, list(t.shape)))
    model.eval()
    config = {
        "format": "ail-torch", "version": 1, "arch": arch,
        "encoder": {"kind": "prompt-vit-tiny", "width": 1.0, "num_invariances": 2, "image_size": 8,
                    "in_channels": 3, "hidden": 32, "condition_stem": False, "patch_size": None, "num_projectors": 3},
        "family": "groups", "step": 0, "normalization": CIFAR_NORM,
    }
    x = images(3, 8, 20)
    return {
        "export-vit/config.json": (json.dumps(config, indent=2) + "\n").encode(),
        "export-vit/inputs.safetensors": safetensors_bytes({"images": x, "descriptors": torch.tensor(DESCRIPTORS)}),
        "export-vit/features.safetensors": safetensors_bytes({"features": features(model, x)}),
    }


def release_fixture():
    torch.manual_seed(10)
    arch = {"family": "resnet", "block": "bottleneck", "layers": [3, 4, 6, 3], "base_channels": 1, "in_channels": 3, "cifar_stem": False,
            "num_invariances": 2, "hidden": 32, "condition_stem": False}
    model = ail_torch.build(arch, normalization=IMAGENET_NORM)
    give_statistics(model, 72, 11)
    g = torch.Generator().manual_seed(12)
    state = {}
    for k, v in model.state_dict().items():
        if k in ("mean", "std"):
            continue
        state["module.base_encoder." + k] = v
        # hyper_resnet.Bottleneck builds a `bn_down` in every block and never calls it.
        if k.endswith(".bn1.weight") and k.startswith("layer"):
            block = k[: -len("bn1.weight")]
            c = model.state_dict()[block + "bn3.weight"].shape[0]
            bn = torch.nn.BatchNorm2d(c)
            for name, t in bn.state_dict().items():
                state["module.base_encoder." + block + "bn_down." + name] = t
    for n in range(3):  # one projection head per descriptor (MoCo_ResNet's predictor_b)
        state[f"module.base_encoder.predictor_b.{n}.0.weight"] = torch.randn(32, 32, generator=g)
        state[f"module.base_encoder.predictor_b.{n}.0.bias"] = torch.randn(32, generator=g)
        state[f"module.base_encoder.predictor_b.{n}.2.weight"] = torch.randn(8, 32, generator=g)
        state[f"module.base_encoder.predictor_b.{n}.2.bias"] = torch.randn(8, generator=g)
    state["module.momentum_encoder.conv1.weight"] = torch.randn(1, 3, 7, 7, generator=g)
    for q in ("dorsal", "ventral", "default"):
        state[f"module.queue_{q}"] = torch.randn(8, 16, generator=g)
        state[f"module.queue_ptr_{q}"] = torch.zeros(1, dtype=torch.long)
    checkpoint = {"epoch": 300, "arch": "resnet50", "state_dict": state, "optimizer": {"state": {}, "param_groups": []},
                  "scaler": {"scale": 65536.0}}
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    x = images(2, 72, 13)
    return {
        "release/hyper_resnet50_tiny-moco_2_checkpoint_0300.pth.tar": buffer.getvalue(),
        "release/inputs.safetensors": safetensors_bytes({"images": x, "descriptors": torch.tensor(DESCRIPTORS)}),
        "release/features.safetensors": safetensors_bytes({"features": features(model, x)}),
    }


def check_release_loads(files):
    """The release checkpoint, read back the way the authors' downstream code reads it, gives the
    features stored beside it."""
    ckpt = torch.load(io.BytesIO(files["release/hyper_resnet50_tiny-moco_2_checkpoint_0300.pth.tar"]), weights_only=True)
    prefix = "module.base_encoder."
    state = {k[len(prefix):]: v for k, v in ckpt["state_dict"].items()
             if k.startswith(prefix) and ".bn_down." not in k and not k[len(prefix):].startswith("predictor_b.")}
    model = ail_torch.HyperResNet("bottleneck", [3, 4, 6, 3], base_channels=1, cifar_stem=False, num_invariances=2,
                                  normalization=IMAGENET_NORM)
    ail_torch.load_state_dict_checked(model, state).eval()
    x = ail_torch.read_safetensors_bytes(files["release/inputs.safetensors"])["images"]
    expected = ail_torch.read_safetensors_bytes(files["release/features.safetensors"])["features"]
    assert torch.allclose(features(model, x), expected, atol=1e-6), "the release fixture does not load back"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare with the committed fixtures instead of writing")
    args = parser.parse_args()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    files = {**export_fixture(), **vit_fixture(), **release_fixture()}
    check_release_loads(files)
    if args.check:
        bad = []
        for name, data in files.items():
            path = os.path.join(ROOT, name)
            if name.endswith(".safetensors") and os.path.exists(path):
                ours = ail_torch.read_safetensors_bytes(data)
                theirs = ail_torch.read_safetensors(path)
                same = ours.keys() == theirs.keys() and all(torch.allclose(ours[k], theirs[k], atol=1e-6, rtol=1e-5) for k in ours)
            elif name.endswith(".pth.tar") and os.path.exists(path):
                # torch.save's archive records a random serialisation id: compare what it holds.
                ours = torch.load(io.BytesIO(data), weights_only=True)["state_dict"]
                theirs = torch.load(path, weights_only=True)["state_dict"]
                same = ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
            else:
                same = os.path.exists(path) and open(path, "rb").read() == data
            print(f"{'same' if same else 'DIFFERENT'}  {name}")
            if not same:
                bad.append(name)
        if bad:
            sys.exit(f"{len(bad)} fixture(s) differ from the committed ones: {bad}")
        print("every fixture equals the committed one")
        return
    for name, data in files.items():
        path = os.path.join(ROOT, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        print(f"wrote {path} ({len(data)} bytes)")
    model = ail_torch.load(os.path.join(ROOT, "export"))
    x = ail_torch.read_safetensors(os.path.join(ROOT, "export", "inputs.safetensors"))["images"]
    expected = ail_torch.read_safetensors(os.path.join(ROOT, "export", "features.safetensors"))["features"]
    assert torch.allclose(features(model, x), expected, atol=1e-6), "the export fixture does not load back"


if __name__ == "__main__":
    main()
