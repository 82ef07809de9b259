"""Open an ail checkpoint with PyTorch: `python3 scripts/check_safetensors_torch.py CHECKPOINT_DIR`.

Loads model.safetensors with safetensors.torch.load_file, prints the tensor count, the parameter
count (BatchNorm running statistics excluded, as torchvision counts) and a few names and shapes.
Needs `pip install torch safetensors`.
"""
import json
import sys

from safetensors.torch import load_file

ckpt = sys.argv[1]
tensors = load_file(f"{ckpt}/model.safetensors")
meta = json.load(open(f"{ckpt}/checkpoint.json"))
params = sum(t.numel() for name, t in tensors.items() if not name.endswith(("running_mean", "running_var")))
print(f"{meta['encoder']['kind']}: {len(tensors)} tensors, {params} parameters")
for name in list(tensors)[:4]:
    print(f"  {name}: {tuple(tensors[name].shape)} {tensors[name].dtype}")
