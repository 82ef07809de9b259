//! PyTorch's conventions for the encoders, both ways: every tensor of a checkpoint named as in a
//! torchvision / timm state_dict, with Linear weights as `[out, in]`. ViTs: see [`vit_names`]
//! (timm's names, query / key / value stacked in `qkv`, the M projectors split into `inv_fc.{m}`).
//!
//! ResNets: the names are those of the authors' Hyper-ResNet (`hyper_resnet.py` of their release) where it
//! has the tensor, torchvision's elsewhere, so that a release checkpoint maps with a prefix strip
//! and `python/ail_torch.py` loads an export with `load_state_dict`:
//!
//! | here | PyTorch |
//! |---|---|
//! | `ResNet.stem.Static.weight`, `ResNet.stem_bn.*` | `conv1.weight`, `bn1.*` |
//! | `ResNet.blocks.{b}.embedding.weight` `[K, 16]` | `layer{s}.{j}.emb1.weight` `[16, K]` |
//! | `...body.{n}.conv.Static.weight` | `layer{s}.{j}.conv{n+1}.weight` |
//! | `...body.{n}.conv.Hyper.hidden.*`, `.output.*` | `layer{s}.{j}.hypernet{n+1}.layer.0.*`, `.layer.2.*` |
//! | `...body.{n}.bn.*` | `layer{s}.{j}.bn{n+1}.*` |
//! | `...shortcut.conv.Static.weight` / `.Hyper.*` | `layer{s}.{j}.downsample.0.weight` / `hypernet_down.*` |
//! | `...shortcut.bn.*` | `layer{s}.{j}.downsample.1.*` |
//! | BatchNorm `gamma`, `beta`, `running_mean`, `running_var` | `weight`, `bias`, `running_mean`, `running_var` |
//!
//! (`b` counts blocks over the whole network; `s` is the stage from 1, `j` the block within it. A
//! generated stem, `condition_stem`, is `stem_emb` and `stem_hypernet`.) A generator's output
//! bias and the rows of its output weight are the kernel `[out, in, k, k]` flattened row-major in
//! both, as `view(out, in, k, k)` reads them.

use std::collections::{BTreeMap, BTreeSet};

use crate::arrays::{Array, Values};
use crate::encoder::{ArchConfig, EncoderConfig};
use crate::hypernet::EMBED_DIM;
use crate::resnet::ConvSpec;
use crate::CoreError;

/// A block of a tensor along its first axis (`axis 0`) or, for a 2-D tensor, its columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    pub index: usize,
    pub count: usize,
    /// Columns of a 2-D tensor rather than rows.
    pub columns: bool,
}

/// One tensor (or one block of one) in both conventions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorName {
    /// The name in our checkpoints (`model.safetensors`).
    pub ours: String,
    /// The name in a PyTorch state_dict.
    pub torch: String,
    /// The whole tensor's shape in our checkpoints.
    pub shape: Vec<usize>,
    /// The whole tensor's shape in PyTorch.
    pub torch_shape: Vec<usize>,
    /// The block of our tensor this entry moves (None: all of it).
    pub ours_part: Option<Part>,
    /// The block of the PyTorch tensor it becomes (None: all of it).
    pub torch_part: Option<Part>,
    /// The (2-D) block is transposed on the way: Linear weights are `[in, out]` here, `[out, in]`
    /// in PyTorch.
    pub transpose: bool,
}

impl TensorName {
    /// A whole tensor, the same shape in both (transposed when `transpose`).
    fn whole(ours: String, torch: String, shape: Vec<usize>, transpose: bool) -> Self {
        let torch_shape = if transpose { vec![shape[1], shape[0]] } else { shape.clone() };
        Self { ours, torch, shape, torch_shape, ours_part: None, torch_part: None, transpose }
    }
}

/// The architecture facts a PyTorch module needs to rebuild the network (written beside an export,
/// so that no rounding of the width multiplier has to be repeated in Python).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "family", rename_all = "lowercase")]
pub enum TorchArch {
    ResNet {
        /// `basic` or `bottleneck`.
        block: String,
        /// Blocks per stage.
        layers: [usize; 4],
        /// Channels of the stem (the first stage's block width).
        base_channels: usize,
        in_channels: usize,
        /// 3x3 stride-1 stem without max-pool (true) or 7x7 stride-2 stem with a 3x3 max-pool.
        cifar_stem: bool,
        /// K (0: a plain ResNet).
        num_invariances: usize,
        /// Hidden units of every kernel generator.
        hidden: usize,
        condition_stem: bool,
        feature_dim: usize,
        /// BatchNorm's epsilon.
        eps: f64,
    },
    Vit {
        embed_dim: usize,
        depth: usize,
        num_heads: usize,
        patch_size: usize,
        image_size: usize,
        in_channels: usize,
        mlp_ratio: usize,
        /// K (0: a plain ViT).
        num_invariances: usize,
        /// M, the averaged invariance projectors.
        num_projectors: usize,
        /// LayerNorm's epsilon inside the blocks and in the final norm.
        block_eps: f64,
        norm_eps: f64,
    },
}

/// The architecture facts of an encoder.
pub fn torch_arch(config: &EncoderConfig) -> TorchArch {
    match config.arch() {
        ArchConfig::ResNet(c) => TorchArch::ResNet {
            block: match c.block {
                crate::resnet::BlockKind::Basic => "basic".into(),
                crate::resnet::BlockKind::Bottleneck => "bottleneck".into(),
            },
            layers: c.layers,
            base_channels: c.base_channels,
            in_channels: c.in_channels,
            cifar_stem: c.cifar_stem,
            num_invariances: c.num_invariances,
            hidden: c.hidden,
            condition_stem: c.condition_stem,
            feature_dim: c.feature_dim(),
            eps: crate::norm::BatchNorm2dConfig::new(1).epsilon,
        },
        ArchConfig::Vit(v) => TorchArch::Vit {
            embed_dim: v.embed_dim,
            depth: v.depth,
            num_heads: v.num_heads,
            patch_size: v.patch_size,
            image_size: v.image_size,
            in_channels: v.in_channels,
            mlp_ratio: v.mlp_ratio,
            num_invariances: v.num_invariances,
            num_projectors: if v.num_invariances > 0 { v.num_projectors } else { 0 },
            block_eps: crate::vit::BLOCK_EPS,
            norm_eps: crate::vit::NORM_EPS,
        },
    }
}

/// The tensors of a ViT: timm's names (`patch_embed.proj`, `cls_token`, `pos_embed`,
/// `blocks.{l}.norm1`, `.attn.qkv` (query, key and value stacked by rows), `.attn.proj`, `.norm2`,
/// `.mlp.fc1`, `.mlp.fc2`, `norm`) and the release's `inv_fc.{m}.0` / `.2` for the M projectors,
/// which are one `Linear(K -> M D)` and one `[M, D, D]` weight here.
fn vit_names(v: &crate::vit::VitConfig) -> Vec<TensorName> {
    let d = v.embed_dim;
    let mut names = Vec::new();
    let whole = |ours: &str, torch: &str, shape: Vec<usize>, transpose: bool| TensorName::whole(ours.into(), torch.into(), shape, transpose);
    names.push(whole("Vit.patch_embed.weight", "patch_embed.proj.weight", vec![d, v.in_channels, v.patch_size, v.patch_size], false));
    names.push(whole("Vit.patch_embed.bias", "patch_embed.proj.bias", vec![d], false));
    names.push(whole("Vit.cls_token", "cls_token", vec![1, 1, d], false));
    names.push(whole("Vit.pos_embed", "pos_embed", vec![1, 1 + v.num_patches(), d], false));
    if v.num_invariances > 0 {
        let (k, m) = (v.num_invariances, v.num_projectors);
        for j in 0..m {
            let part = |columns| Some(Part { index: j, count: m, columns });
            let piece = |ours: &str, shape: Vec<usize>, torch: String, torch_shape: Vec<usize>, columns: bool, transpose: bool| TensorName {
                ours: ours.into(),
                torch,
                shape,
                torch_shape,
                ours_part: part(columns),
                torch_part: None,
                transpose,
            };
            names.push(piece("Vit.prompt.first.weight", vec![k, m * d], format!("inv_fc.{j}.0.weight"), vec![d, k], true, true));
            names.push(piece("Vit.prompt.first.bias", vec![m * d], format!("inv_fc.{j}.0.bias"), vec![d], false, false));
            names.push(piece("Vit.prompt.second_weight", vec![m, d, d], format!("inv_fc.{j}.2.weight"), vec![d, d], false, true));
            names.push(piece("Vit.prompt.second_bias", vec![m, d], format!("inv_fc.{j}.2.bias"), vec![d], false, false));
        }
    }
    let hidden = v.mlp_ratio * d;
    for l in 0..v.depth {
        let (o, t) = (format!("Vit.encoder.layers.{l}"), format!("blocks.{l}"));
        // burn's pre-norm layer normalises with `norm_2` before attention and `norm_1` before the
        // MLP: timm's `norm1` and `norm2`, in that order.
        for (ours, torch) in [("norm_2", "norm1"), ("norm_1", "norm2")] {
            names.push(whole(&format!("{o}.{ours}.gamma"), &format!("{t}.{torch}.weight"), vec![d], false));
            names.push(whole(&format!("{o}.{ours}.beta"), &format!("{t}.{torch}.bias"), vec![d], false));
        }
        for (q, which) in ["query", "key", "value"].into_iter().enumerate() {
            let part = Some(Part { index: q, count: 3, columns: false });
            names.push(TensorName {
                ours: format!("{o}.mha.{which}.weight"),
                torch: format!("{t}.attn.qkv.weight"),
                shape: vec![d, d],
                torch_shape: vec![3 * d, d],
                ours_part: None,
                torch_part: part,
                transpose: true,
            });
            names.push(TensorName {
                ours: format!("{o}.mha.{which}.bias"),
                torch: format!("{t}.attn.qkv.bias"),
                shape: vec![d],
                torch_shape: vec![3 * d],
                ours_part: None,
                torch_part: part,
                transpose: false,
            });
        }
        for (ours, torch, shape) in [("mha.output", "attn.proj", [d, d]), ("pwff.linear_inner", "mlp.fc1", [d, hidden]), ("pwff.linear_outer", "mlp.fc2", [hidden, d])] {
            names.push(whole(&format!("{o}.{ours}.weight"), &format!("{t}.{torch}.weight"), shape.to_vec(), true));
            names.push(whole(&format!("{o}.{ours}.bias"), &format!("{t}.{torch}.bias"), vec![shape[1]], false));
        }
    }
    names.push(whole("Vit.norm.gamma", "norm.weight", vec![d], false));
    names.push(whole("Vit.norm.beta", "norm.bias", vec![d], false));
    names
}

/// Every tensor of the encoder `config` describes, with its name in both conventions.
pub fn tensor_names(config: &EncoderConfig) -> Vec<TensorName> {
    let c = match config.arch() {
        ArchConfig::ResNet(c) => c,
        ArchConfig::Vit(v) => return vit_names(&v),
    };
    let mut names = Vec::new();
    let mut push = |ours: String, torch: String, shape: Vec<usize>, transpose: bool| names.push(TensorName::whole(ours, torch, shape, transpose));
    let k = c.num_invariances;
    let hidden = c.hidden;
    let conv = |push: &mut dyn FnMut(String, String, Vec<usize>, bool), ours: &str, torch_static: &str, torch_hyper: &str, spec: &ConvSpec| {
        if spec.conditioned {
            push(format!("{ours}.Hyper.hidden.weight"), format!("{torch_hyper}.layer.0.weight"), vec![EMBED_DIM, hidden], true);
            push(format!("{ours}.Hyper.hidden.bias"), format!("{torch_hyper}.layer.0.bias"), vec![hidden], false);
            push(format!("{ours}.Hyper.output.weight"), format!("{torch_hyper}.layer.2.weight"), vec![hidden, spec.numel()], true);
            push(format!("{ours}.Hyper.output.bias"), format!("{torch_hyper}.layer.2.bias"), vec![spec.numel()], false);
        } else {
            let shape = vec![spec.out_channels, spec.in_channels, spec.kernel, spec.kernel];
            push(format!("{ours}.Static.weight"), format!("{torch_static}.weight"), shape, false);
        }
    };
    let bn = |push: &mut dyn FnMut(String, String, Vec<usize>, bool), ours: &str, torch: &str, channels: usize| {
        for (a, b) in [("gamma", "weight"), ("beta", "bias"), ("running_mean", "running_mean"), ("running_var", "running_var")] {
            push(format!("{ours}.{a}"), format!("{torch}.{b}"), vec![channels], false);
        }
    };
    let stem = c.stem();
    if stem.conditioned {
        push("ResNet.stem_embedding.weight".into(), "stem_emb.weight".into(), vec![k, EMBED_DIM], true);
    }
    conv(&mut push, "ResNet.stem", "conv1", "stem_hypernet", &stem);
    bn(&mut push, "ResNet.stem_bn", "bn1", stem.out_channels);
    let blocks = c.blocks();
    let mut b = 0;
    for (s, &count) in c.layers.iter().enumerate() {
        for j in 0..count {
            let block = &blocks[b];
            let (ours, torch) = (format!("ResNet.blocks.{b}"), format!("layer{}.{j}", s + 1));
            if k > 0 {
                push(format!("{ours}.embedding.weight"), format!("{torch}.emb1.weight"), vec![k, EMBED_DIM], true);
            }
            for (n, spec) in block.body.iter().enumerate() {
                let (o, t) = (format!("{ours}.body.{n}"), format!("{torch}.conv{}", n + 1));
                conv(&mut push, &format!("{o}.conv"), &t, &format!("{torch}.hypernet{}", n + 1), spec);
                bn(&mut push, &format!("{o}.bn"), &format!("{torch}.bn{}", n + 1), spec.out_channels);
            }
            if let Some(spec) = &block.shortcut {
                conv(&mut push, &format!("{ours}.shortcut.conv"), &format!("{torch}.downsample.0"), &format!("{torch}.hypernet_down"), spec);
                bn(&mut push, &format!("{ours}.shortcut.bn"), &format!("{torch}.downsample.1"), spec.out_channels);
            }
            b += 1;
        }
    }
    names
}

/// `[r, c]` row-major into `[c, r]`.
fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

/// The block `part` of a tensor of `shape`: its values and shape.
fn take(values: &[f32], shape: &[usize], part: Option<Part>) -> (Vec<f32>, Vec<usize>) {
    let Some(p) = part else { return (values.to_vec(), shape.to_vec()) };
    if p.columns {
        let (rows, cols) = (shape[0], shape[1]);
        let w = cols / p.count;
        let out = (0..rows).flat_map(|r| values[r * cols + p.index * w..r * cols + (p.index + 1) * w].iter().copied()).collect();
        (out, vec![rows, w])
    } else {
        let len = values.len() / p.count;
        let mut s = shape.to_vec();
        s[0] /= p.count;
        if s[0] == 1 && s.len() > 1 {
            s.remove(0);
        }
        (values[p.index * len..(p.index + 1) * len].to_vec(), s)
    }
}

/// Writes `piece` into the block `part` of `values` (a tensor of `shape`).
fn put(values: &mut [f32], shape: &[usize], part: Option<Part>, piece: &[f32]) {
    let Some(p) = part else { return values.copy_from_slice(piece) };
    if p.columns {
        let (rows, cols) = (shape[0], shape[1]);
        let w = cols / p.count;
        for r in 0..rows {
            values[r * cols + p.index * w..r * cols + (p.index + 1) * w].copy_from_slice(&piece[r * w..(r + 1) * w]);
        }
    } else {
        let len = values.len() / p.count;
        values[p.index * len..(p.index + 1) * len].copy_from_slice(piece);
    }
}

fn bad(source: &str, reason: String) -> CoreError {
    CoreError::Checkpoint { path: source.into(), reason }
}

/// Moves tensors into the other convention, block by block; every expected tensor must be there
/// with its shape, and nothing else.
fn convert(names: &[TensorName], arrays: Vec<Array>, to_torch: bool, ignore: &dyn Fn(&str) -> bool, source: &str) -> Result<Vec<Array>, CoreError> {
    let mut by_name: BTreeMap<String, Array> = BTreeMap::new();
    for a in arrays {
        if ignore(&a.name) {
            continue;
        }
        if by_name.contains_key(&a.name) {
            return Err(bad(source, format!("tensor `{}` appears twice", a.name)));
        }
        by_name.insert(a.name.clone(), a);
    }
    // Every source tensor, checked once; then every target, assembled from its blocks.
    let mut targets: Vec<(String, Vec<usize>)> = Vec::new();
    let mut used = BTreeSet::new();
    for n in names {
        let (from, from_shape, to, to_shape) = if to_torch { (&n.ours, &n.shape, &n.torch, &n.torch_shape) } else { (&n.torch, &n.torch_shape, &n.ours, &n.shape) };
        let a = by_name.get(from).ok_or_else(|| bad(source, format!("tensor `{from}` {from_shape:?} is missing (it becomes `{to}`)")))?;
        if &a.shape != from_shape {
            return Err(bad(source, format!("tensor `{from}` has shape {:?}, this model needs {from_shape:?}", a.shape)));
        }
        if matches!(a.values, Values::I64(_)) {
            return Err(bad(source, format!("tensor `{from}` holds integers, not floating-point values")));
        }
        used.insert(from.clone());
        if !targets.iter().any(|(t, _)| t == to) {
            targets.push((to.clone(), to_shape.clone()));
        }
    }
    let extra: Vec<&Array> = by_name.values().filter(|a| !used.contains(&a.name)).collect();
    if !extra.is_empty() {
        let first: Vec<String> = extra.iter().take(5).map(|a| format!("`{}` {:?}", a.name, a.shape)).collect();
        return Err(bad(source, format!(
            "{} tensor(s) are not part of a model with this description: {}{}",
            extra.len(),
            first.join(", "),
            if extra.len() > 5 { ", ..." } else { "" }
        )));
    }
    // Each source tensor is dropped once its last block has moved: a large model is held about
    // twice, not three times.
    let mut uses: BTreeMap<&String, usize> = BTreeMap::new();
    for n in names {
        *uses.entry(if to_torch { &n.ours } else { &n.torch }).or_default() += 1;
    }
    let mut out = Vec::with_capacity(targets.len());
    for (to, to_shape) in targets {
        let mut values = vec![0f32; to_shape.iter().product()];
        for n in names.iter().filter(|n| if to_torch { n.torch == to } else { n.ours == to }) {
            let (from, from_shape, from_part, to_part) =
                if to_torch { (&n.ours, &n.shape, n.ours_part, n.torch_part) } else { (&n.torch, &n.torch_shape, n.torch_part, n.ours_part) };
            let Some(Values::F32(v)) = by_name.get(from).map(|a| &a.values) else { unreachable!("checked above") };
            let (piece, shape) = take(v, from_shape, from_part);
            let piece = if n.transpose { transpose(&piece, shape[0], shape[1]) } else { piece };
            put(&mut values, &to_shape, to_part, &piece);
            let left = uses.get_mut(from).expect("counted above");
            *left -= 1;
            if *left == 0 {
                by_name.remove(from);
            }
        }
        out.push(Array::f32(&to, &to_shape, values));
    }
    Ok(out)
}

/// Our checkpoint's tensors in PyTorch's names and layouts.
pub fn to_torch(config: &EncoderConfig, ours: Vec<Array>, source: &str) -> Result<Vec<Array>, CoreError> {
    convert(&tensor_names(config), ours, true, &|_| false, source)
}

/// A PyTorch state_dict's tensors in our names and layouts; tensors for which `ignore` holds are
/// dropped first (`num_batches_tracked`, a projection head, ...).
pub fn from_torch(config: &EncoderConfig, torch: Vec<Array>, ignore: &dyn Fn(&str) -> bool, source: &str) -> Result<Vec<Array>, CoreError> {
    convert(&tensor_names(config), torch, false, ignore, source)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ModelKind;
    use burn::prelude::Device;

    /// The table above is the model's own: same names and shapes as a saved checkpoint.
    #[test]
    fn names_and_shapes_are_those_of_saved_checkpoints() {
        let _serial = crate::serial_draws();
        let device = Device::flex();
        let configs = [
            EncoderConfig::new(ModelKind::HyperResnet18, 2).with_width(0.0625).with_image_size(16),
            EncoderConfig::new(ModelKind::Resnet18, 0).with_width(0.0625).with_image_size(16),
            EncoderConfig::new(ModelKind::HyperResnet50, 5).with_width(0.03125).with_image_size(72),
            EncoderConfig { condition_stem: true, ..EncoderConfig::new(ModelKind::HyperResnet34, 2).with_width(0.03125).with_image_size(16) },
            EncoderConfig { num_projectors: Some(3), ..EncoderConfig::new(ModelKind::PromptVitTiny, 2).with_image_size(8) },
            EncoderConfig::new(ModelKind::VitTiny, 0).with_image_size(8),
        ];
        for config in configs {
            let encoder = config.init(&device).unwrap();
            let saved = crate::checkpoint::tensors(&encoder).unwrap();
            let mut expected: Vec<(String, Vec<usize>)> = tensor_names(&config).into_iter().map(|n| (n.ours, n.shape)).collect();
            let mut actual: Vec<(String, Vec<usize>)> = saved.iter().map(|a| (a.name.clone(), a.shape.clone())).collect();
            expected.sort();
            expected.dedup();
            actual.sort();
            assert_eq!(expected, actual, "{}", config.kind);
            // And back: to PyTorch and home again gives the same values.
            let torch = to_torch(&config, saved.clone(), "test").unwrap();
            let home = from_torch(&config, torch, &|_| false, "test").unwrap();
            let sorted = |mut v: Vec<Array>| {
                v.sort_by(|a, b| a.name.cmp(&b.name));
                v
            };
            assert_eq!(sorted(home), sorted(saved));
        }
    }

    #[test]
    fn linear_weights_are_transposed_and_kernels_keep_their_layout() {
        let config = EncoderConfig::new(ModelKind::HyperResnet18, 2).with_width(0.0625).with_image_size(16);
        let names = tensor_names(&config);
        let emb = names.iter().find(|n| n.torch == "layer1.0.emb1.weight").unwrap();
        assert_eq!((emb.shape.clone(), emb.torch_shape.clone(), emb.transpose), (vec![2, 16], vec![16, 2], true));
        let out = names.iter().find(|n| n.torch == "layer2.0.hypernet_down.layer.2.bias").unwrap();
        assert_eq!(out.ours, "ResNet.blocks.2.shortcut.conv.Hyper.output.bias");
        assert_eq!(out.shape, vec![8 * 4]);
        let t = transpose(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3);
        assert_eq!(t, vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    }

    /// The M projectors and the stacked query / key / value land where PyTorch reads them.
    #[test]
    fn vit_blocks_are_split_and_stacked() {
        let config = EncoderConfig { num_projectors: Some(2), ..EncoderConfig::new(ModelKind::PromptVitTiny, 2).with_image_size(8) };
        let names = tensor_names(&config);
        let d = 192;
        // Ours: values numbered by position, so that every block can be traced.
        let ours: Vec<Array> = {
            let mut seen = BTreeSet::new();
            names
                .iter()
                .filter(|n| seen.insert(n.ours.clone()))
                .map(|n| Array::f32(&n.ours, &n.shape, (0..n.shape.iter().product::<usize>()).map(|v| v as f32).collect()))
                .collect()
        };
        let torch = to_torch(&config, ours, "test").unwrap();
        let get = |name: &str| torch.iter().find(|a| a.name == name).unwrap_or_else(|| panic!("{name}"));
        // inv_fc.1.0.weight[r][c] = first.weight[c][D + r] (first.weight is [2, 2 D]).
        let w = get("inv_fc.1.0.weight");
        assert_eq!(w.shape, vec![d, 2]);
        assert_eq!(w.as_f32().unwrap()[3 * 2 + 1], (2 * d + d + 3) as f32);
        // inv_fc.1.2.weight[r][c] = second_weight[1][c][r].
        let w = get("inv_fc.1.2.weight");
        assert_eq!(w.as_f32().unwrap()[5 * d + 7], (d * d + 7 * d + 5) as f32);
        // qkv rows D..2D are the key's weight, transposed: qkv[D + r][c] = key[c][r].
        let qkv = get("blocks.0.attn.qkv.weight");
        assert_eq!(qkv.shape, vec![3 * d, d]);
        assert_eq!(qkv.as_f32().unwrap()[(d + 2) * d + 9], (9 * d + 2) as f32);
        assert_eq!(get("blocks.0.attn.qkv.bias").as_f32().unwrap()[2 * d + 4], 4.0);
    }

    #[test]
    fn errors_name_the_tensor() {
        let config = EncoderConfig::new(ModelKind::Resnet18, 0).with_width(0.0625).with_image_size(16);
        let names = tensor_names(&config);
        let mut torch: Vec<Array> = names.iter().map(|n| Array::f32(&n.torch, &n.torch_shape.clone(), vec![0.0; n.torch_shape.clone().iter().product()])).collect();
        torch.push(Array::f32("fc.weight", &[10, 32], vec![0.0; 320]));
        let e = from_torch(&config, torch.clone(), &|_| false, "x.pth").unwrap_err().to_string();
        assert!(e.contains("`fc.weight` [10, 32]") && e.contains("not part of"), "{e}");
        assert!(from_torch(&config, torch.clone(), &|n| n.starts_with("fc."), "x.pth").is_ok());
        torch.retain(|a| a.name != "layer3.1.bn2.running_var");
        let e = from_torch(&config, torch.clone(), &|n| n.starts_with("fc."), "x.pth").unwrap_err().to_string();
        assert!(e.contains("`layer3.1.bn2.running_var` [16] is missing"), "{e}");
        let conv = torch.iter_mut().find(|a| a.name == "conv1.weight").unwrap();
        *conv = Array::f32("conv1.weight", &[4, 3, 7, 7], vec![0.0; 4 * 3 * 49]);
        let e = from_torch(&config, torch, &|n| n.starts_with("fc."), "x.pth").unwrap_err().to_string();
        assert!(e.contains("`conv1.weight` has shape [4, 3, 7, 7], this model needs [4, 3, 3, 3]"), "{e}");
    }
}
