"""ail's encoders as PyTorch modules (Hyper-ResNet and ResNet, Prompt-ViT and ViT): load an `ail
export --torch` directory and compute the same features as `ail`.

    import torch, ail_torch
    model = ail_torch.load("exported/")            # eval mode, on the CPU
    x = model.normalize(images01)                  # [N, C, H, W] in [0, 1] -> normalised inputs
    f = model(x, torch.tensor([1.0, 0.0]))         # [N, feature_dim] at invariance i = [1, 0]

Plain encoders ignore `i`. `HyperResNet` mirrors ail's encoder (docs/method.md,
"Hyper-ResNet"): every conv of a residual block is generated from the block's embedding of `i`,
`z = emb1(i)` (`Linear(K -> 16)`, no bias), by `Linear(16 -> hidden) -> ReLU -> Linear(hidden ->
out * in * k * k)` viewed as `[out, in, k, k]`; BatchNorm is ordinary; features are the global
average of the last stage. Tensor names follow the authors' `hyper_resnet.py` (`emb1`,
`hypernet1..3`, `hypernet_down`, `downsample.1`) and torchvision elsewhere, so that the state
dict of their MoCo-v2 Hyper-ResNet-50 (prefix `module.base_encoder.` removed, `fc.*` and the
unused `bn_down.*` dropped) loads into `HyperResNet` too. `PromptViT` uses timm's names (fused
`qkv`) and the release's `inv_fc.{m}` projectors.

Needs torch only (safetensors files are read by hand).
"""

import json
import os
import struct

import torch
import torch.nn as nn
import torch.nn.functional as F

EMBED_DIM = 16


def register_normalization(module, normalization, in_channels):
    """The input statistics (`{"mean": [...], "std": [...]}`, identity when absent) as buffers
    `mean` and `std` of shape `[1, C, 1, 1]`, kept out of the state dict."""
    normalization = normalization or {}
    for name, default in (("mean", 0.0), ("std", 1.0)):
        values = torch.tensor(normalization.get(name, [default] * in_channels))
        module.register_buffer(name, values.view(1, -1, 1, 1), persistent=False)


class HyperNetwork(nn.Module):
    """Generates one conv kernel `[out, in, k, k]` from a block embedding `z` (`[16]`)."""

    def __init__(self, out_channels, in_channels, kernel, hidden=32):
        super().__init__()
        self.shape = (out_channels, in_channels, kernel, kernel)
        self.layer = nn.Sequential(
            nn.Linear(EMBED_DIM, hidden), nn.ReLU(), nn.Linear(hidden, out_channels * in_channels * kernel * kernel)
        )

    def forward(self, z):
        return self.layer(z).view(*self.shape)


class Block(nn.Module):
    """A BasicBlock (two 3x3 convs) or Bottleneck (1x1, strided 3x3, 1x1), static or generated."""

    def __init__(self, kind, in_channels, width, stride, num_invariances, hidden):
        super().__init__()
        out = width * (4 if kind == "bottleneck" else 1)
        if kind == "bottleneck":
            self.specs = [(in_channels, width, 1, 1), (width, width, 3, stride), (width, out, 1, 1)]
        else:
            self.specs = [(in_channels, out, 3, stride), (out, out, 3, 1)]
        self.hyper = num_invariances > 0
        if self.hyper:
            self.emb1 = nn.Linear(num_invariances, EMBED_DIM, bias=False)
        for n, (ci, co, k, s) in enumerate(self.specs, 1):
            if self.hyper:
                setattr(self, f"hypernet{n}", HyperNetwork(co, ci, k, hidden))
            else:
                setattr(self, f"conv{n}", nn.Conv2d(ci, co, k, s, k // 2, bias=False))
            setattr(self, f"bn{n}", nn.BatchNorm2d(co))
        self.down = None
        if stride != 1 or in_channels != out:
            self.down = (in_channels, out, 1, stride)
            if self.hyper:
                self.hypernet_down = HyperNetwork(out, in_channels, 1, hidden)
                self.downsample = nn.ModuleList([nn.Identity(), nn.BatchNorm2d(out)])
            else:
                self.downsample = nn.Sequential(nn.Conv2d(in_channels, out, 1, stride, 0, bias=False), nn.BatchNorm2d(out))

    def conv(self, n, x, z):
        ci, co, k, s = self.specs[n - 1]
        if self.hyper:
            return F.conv2d(x, getattr(self, f"hypernet{n}")(z), stride=s, padding=k // 2)
        return getattr(self, f"conv{n}")(x)

    def forward(self, x, i):
        z = self.emb1(i) if self.hyper else None
        out = x
        last = len(self.specs)
        for n in range(1, last + 1):
            out = getattr(self, f"bn{n}")(self.conv(n, out, z))
            if n < last:
                out = F.relu(out)
        if self.down is None:
            shortcut = x
        elif self.hyper:
            shortcut = self.downsample[1](F.conv2d(x, self.hypernet_down(z), stride=self.down[3]))
        else:
            shortcut = self.downsample(x)
        return F.relu(out + shortcut)


class HyperResNet(nn.Module):
    """A ResNet whose block convs are generated from the invariance descriptor `i` (`[K]`), or a
    plain ResNet when `num_invariances` is 0. `forward(x, i)` takes normalised `[N, C, H, W]`."""

    def __init__(self, block, layers, base_channels=64, in_channels=3, cifar_stem=True, num_invariances=2,
                 hidden=32, condition_stem=False, eps=1e-5, normalization=None, **_):
        super().__init__()
        self.num_invariances = num_invariances
        self.cifar_stem = cifar_stem
        k, s = (3, 1) if cifar_stem else (7, 2)
        self.stem = (in_channels, base_channels, k, s)
        self.condition_stem = condition_stem and num_invariances > 0
        if self.condition_stem:
            self.stem_emb = nn.Linear(num_invariances, EMBED_DIM, bias=False)
            self.stem_hypernet = HyperNetwork(base_channels, in_channels, k, hidden)
        else:
            self.conv1 = nn.Conv2d(in_channels, base_channels, k, s, k // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(base_channels)
        expansion = 4 if block == "bottleneck" else 1
        channels = base_channels
        for stage, count in enumerate(layers):
            width = base_channels << stage
            blocks = []
            for b in range(count):
                stride = 2 if stage > 0 and b == 0 else 1
                blocks.append(Block(block, channels, width, stride, num_invariances, hidden))
                channels = width * expansion
            setattr(self, f"layer{stage + 1}", nn.ModuleList(blocks))
        self.feature_dim = channels
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eps = eps
        register_normalization(self, normalization, in_channels)

    def normalize(self, x01):
        """`(x - mean) / std` per channel, with the statistics the encoder was trained with."""
        return (x01 - self.mean) / self.std

    def forward(self, x, i=None):
        if self.num_invariances > 0:
            if i is None:
                raise ValueError(f"this encoder takes an invariance descriptor i of length {self.num_invariances}")
            i = torch.as_tensor(i, dtype=x.dtype, device=x.device).reshape(self.num_invariances)
        if self.condition_stem:
            x = F.conv2d(x, self.stem_hypernet(self.stem_emb(i)), stride=self.stem[3], padding=self.stem[2] // 2)
        else:
            x = self.conv1(x)
        x = F.relu(self.bn1(x))
        if not self.cifar_stem:
            x = F.max_pool2d(x, 3, 2, 1)
        for stage in range(1, 5):
            for block in getattr(self, f"layer{stage}"):
                x = block(x, i)
        return x.mean(dim=(2, 3))


class Attention(nn.Module):
    """Multi-head self-attention with query, key and value stacked in one `qkv` Linear (timm)."""

    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        h = self.num_heads
        q, k, v = self.qkv(x).reshape(b, n, 3, h, c // h).permute(2, 0, 3, 1, 4)
        attn = ((q @ k.transpose(-2, -1)) / (c // h) ** 0.5).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: `x + attn(norm1(x))`, then `x + mlp(norm2(x))`."""

    def __init__(self, dim, num_heads, mlp_ratio, eps):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, mlp_ratio * dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, in_channels, dim, patch_size):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, patch_size, patch_size)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class PromptViT(nn.Module):
    """A ViT with an invariance prompt (docs/method.md, "Prompt-ViT"), or a plain ViT when
    `num_invariances` is 0. `M` projectors `Linear(K -> D) -> ReLU -> Linear(D -> D)` (`inv_fc`, the
    release's names) map `i` to tokens whose mean is one token appended after `[CLS]` and the
    patches once the position embeddings are added; features are the final-normed `[CLS]` output.
    `forward(x, i)` takes normalised `[N, C, H, W]`."""

    def __init__(self, embed_dim, depth, num_heads, patch_size, image_size, in_channels=3, mlp_ratio=4,
                 num_invariances=0, num_projectors=0, block_eps=1e-5, norm_eps=1e-6, normalization=None, **_):
        super().__init__()
        self.num_invariances = num_invariances
        self.feature_dim = embed_dim
        self.patch_embed = PatchEmbed(in_channels, embed_dim, patch_size)
        n = (image_size // patch_size) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + n, embed_dim))
        if num_invariances > 0:
            self.inv_fc = nn.ModuleList([
                nn.Sequential(nn.Linear(num_invariances, embed_dim), nn.ReLU(), nn.Linear(embed_dim, embed_dim))
                for _ in range(num_projectors)
            ])
        self.blocks = nn.ModuleList([TransformerBlock(embed_dim, num_heads, mlp_ratio, block_eps) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        register_normalization(self, normalization, in_channels)

    def normalize(self, x01):
        """`(x - mean) / std` per channel, with the statistics the encoder was trained with."""
        return (x01 - self.mean) / self.std

    def forward(self, x, i=None):
        b = x.shape[0]
        x = torch.cat([self.cls_token.expand(b, -1, -1), self.patch_embed(x)], dim=1) + self.pos_embed
        if self.num_invariances > 0:
            if i is None:
                raise ValueError(f"this encoder takes an invariance descriptor i of length {self.num_invariances}")
            i = torch.as_tensor(i, dtype=x.dtype, device=x.device).reshape(self.num_invariances)
            token = torch.stack([fc(i) for fc in self.inv_fc]).mean(0)
            x = torch.cat([x, token.view(1, 1, -1).expand(b, 1, -1)], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)[:, 0]


def build(arch, normalization=None):
    """The module an export's `arch` describes (`family`: `resnet` or `vit`)."""
    arch = dict(arch)
    family = arch.pop("family")
    if family == "resnet":
        return HyperResNet(**arch, normalization=normalization)
    if family == "vit":
        return PromptViT(**arch, normalization=normalization)
    raise ValueError(f"unknown architecture family {family!r}")


def read_safetensors(path):
    """The tensors of a safetensors file (read by hand: no extra package needed)."""
    with open(path, "rb") as f:
        return read_safetensors_bytes(f.read())


def read_safetensors_bytes(data):
    """The tensors of a safetensors file's bytes."""
    dtypes = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64, "I64": torch.int64}
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        t = torch.frombuffer(bytearray(body[start:end]), dtype=dtypes[info["dtype"]]) if end > start else torch.zeros(0)
        out[name] = t.reshape(info["shape"])
    return out


def load_state_dict_checked(model, state_dict):
    """`load_state_dict` that allows only BatchNorm's `num_batches_tracked` counters to be absent."""
    result = model.load_state_dict(state_dict, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise ValueError(f"state dict does not fit: missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}")
    return model


def load(directory, device="cpu"):
    """The encoder of an `ail export --torch` directory (config.json + model.safetensors), in eval
    mode. `model.config` holds the export's description (family, normalisation, step)."""
    with open(os.path.join(directory, "config.json")) as f:
        config = json.load(f)
    if config.get("format") != "ail-torch" or config.get("version") != 1:
        raise ValueError(f"{directory}: not an `ail export --torch` directory (format {config.get('format')!r})")
    model = build(config["arch"], normalization=config.get("normalization"))
    load_state_dict_checked(model, read_safetensors(os.path.join(directory, "model.safetensors")))
    model.config = config
    return model.to(device).eval()
