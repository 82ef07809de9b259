#!/usr/bin/env bash
# Splits the CIFAR-10 training images (an ImageFolder: <train>/<class>/*.jpg, e.g. extracted from
# cifar10-train-jpeg.tar.gz) into a pretraining part and a held-out part, by hard links:
#   <out>/pretrain/<class>/  the first 4,000 files of each class in file-name order (40,000 images)
#   <out>/heldout/<class>/   the other 1,000 of each class (10,000 images), never pretrained on
# Usage: scripts/cifar-split.sh <train> <out>
set -euo pipefail
train="${1:?usage: scripts/cifar-split.sh <cifar10 train folder> <out>}"
out="${2:?usage: scripts/cifar-split.sh <cifar10 train folder> <out>}"
keep=4000
for dir in "$train"/*/; do
  class="$(basename "$dir")"
  mkdir -p "$out/pretrain/$class" "$out/heldout/$class"
  n=0
  while IFS= read -r f; do
    if [ "$n" -lt "$keep" ]; then part=pretrain; else part=heldout; fi
    ln -f "$dir$f" "$out/$part/$class/$f" 2>/dev/null || cp "$dir$f" "$out/$part/$class/$f"
    n=$((n + 1))
  done < <(ls "$dir" | LC_ALL=C sort)
  [ "$n" -gt "$keep" ] || { echo "$dir has $n files: expected more than $keep" >&2; exit 1; }
done
echo "pretrain: $(find "$out/pretrain" -type f | wc -l) images, heldout: $(find "$out/heldout" -type f | wc -l) images in $out"
