//! Every encoder behind `forward_features(images, i)`: shapes, conditioning, gradients with respect
//! to `i`, eval-mode determinism, checkpoint round trips and their errors, parameter counts.

use ail_core::checkpoint::{self, CheckpointMeta};
use ail_core::summary;
use ail_core::{Encoder, EncoderConfig, Family, ModelKind};
use burn::module::Module;
use burn::prelude::*;
use burn::tensor::Distribution;

fn tiny(kind: ModelKind) -> EncoderConfig {
    let mut c = EncoderConfig::new(kind, 2).with_width(0.0625).with_image_size(8);
    c.hidden = 4;
    c.num_projectors = Some(2);
    c
}

fn descriptor(kind: ModelKind, values: [f32; 2], device: &Device) -> Tensor<1> {
    if kind.is_amortised() { Tensor::from_floats(values, device) } else { Tensor::<1>::zeros([0], device) }
}

/// Two 3x8x8 images of fixed values: generated on the host, so that tests running in parallel
/// (which share the device's random generator) cannot change them.
fn images(device: &Device) -> Tensor<4> {
    let values: Vec<f32> = (0..2 * 3 * 8 * 8).map(|k| ((k as f32) * 0.731).sin() * 1.3 + ((k as f32) * 0.117).cos() * 0.4).collect();
    Tensor::<1>::from_floats(values.as_slice(), device).reshape([2, 3, 8, 8])
}

fn values(t: Tensor<2>) -> Vec<f32> {
    t.into_data().try_to_vec().unwrap()
}

#[test]
fn every_kind_builds_and_has_the_announced_feature_dim() {
    let _serial = ail_core::serial_draws();
    let device = Device::flex();
    for kind in ModelKind::ALL {
        let config = tiny(kind);
        let model = config.init(&device).unwrap();
        let f = model.forward_features(images(&device), descriptor(kind, [1.0, 0.0], &device));
        assert_eq!(f.dims(), [2, config.feature_dim()], "{kind}");
        assert!(values(f).iter().all(|v| v.is_finite()), "{kind}");
        assert_eq!(kind.name().parse::<ModelKind>().unwrap(), kind);
    }
    let msg = "hyper-resnet99".parse::<ModelKind>().unwrap_err().to_string();
    assert!(msg.contains("unknown model `hyper-resnet99`") && msg.contains("prompt-vit-tiny"), "{msg}");
}

#[test]
fn amortised_features_change_with_i_and_plain_ones_do_not_take_it() {
    let _serial = ail_core::serial_draws();
    let device = Device::flex();
    for kind in [ModelKind::HyperResnet18, ModelKind::HyperResnet50, ModelKind::PromptVitTiny] {
        let model = tiny(kind).init(&device).unwrap().valid();
        let x = images(&device);
        let a = values(model.forward_features(x.clone(), descriptor(kind, [1.0, 0.0], &device)));
        let b = values(model.forward_features(x, descriptor(kind, [0.0, 1.0], &device)));
        let diff = a.iter().zip(&b).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
        assert!(diff > 1e-4, "{kind}: features do not depend on i ({diff})");
    }
}

#[test]
fn eval_mode_uses_running_statistics_not_the_batch() {
    let _serial = ail_core::serial_draws();
    // In eval mode an image's features do not depend on the rest of its batch, and repeat exactly;
    // in train mode (batch statistics) they do depend on it.
    let device = Device::flex().autodiff();
    for kind in [ModelKind::HyperResnet18, ModelKind::PromptVitTiny] {
        let trained = tiny(kind).init(&device).unwrap();
        let plain = Device::flex();
        plain.seed(2);
        let x = Tensor::<4>::random([3, 3, 8, 8], Distribution::Normal(0.0, 1.0), &plain);
        let batch = |rows: [usize; 2]| Tensor::cat(rows.iter().map(|&r| x.clone().slice([r..r + 1])).collect(), 0);
        let first = |m: &Encoder, rows: [usize; 2]| values(m.forward_features(batch(rows), descriptor(kind, [0.3, 0.7], &plain)))[..8].to_vec();
        let eval = trained.valid();
        assert_eq!(first(&eval, [0, 1]), first(&eval, [0, 2]), "{kind}: eval features depend on the batch");
        assert_eq!(first(&eval, [0, 1]), first(&eval, [0, 1]), "{kind}");
        if kind == ModelKind::HyperResnet18 {
            let xa = batch([0, 1]).to_device(&device);
            let xb = batch([0, 2]).to_device(&device);
            let i = descriptor(kind, [0.3, 0.7], &device);
            let a = values(trained.forward_features(xa, i.clone()));
            let b = values(trained.forward_features(xb, i));
            assert_ne!(a[..8], b[..8], "train mode should use batch statistics");
        }
    }
}

/// Checks d objective / d i against central differences; `forward` maps (images, i) to features.
fn check_gradient(name: &str, forward: &dyn Fn(Tensor<4>, Tensor<1>) -> Tensor<2>, feature_dim: usize, device: &Device) {
    let x = images(device);
    let weights: Vec<f32> = (0..2 * feature_dim).map(|k| ((k as f32) * 1.37).sin()).collect();
    let weights = Tensor::<1>::from_floats(weights.as_slice(), device).reshape([2, feature_dim]);
    let objective = |i: Tensor<1>| (forward(x.clone(), i) * weights.clone()).sum();
    let i0 = [0.4f32, 0.6];
    let i = Tensor::<1>::from_floats(i0, device).require_grad();
    let grads = objective(i.clone()).backward();
    let analytic: Vec<f32> = i.grad(&grads).expect("i has a gradient").into_data().try_to_vec().unwrap();
    // Small steps: wider ones straddle ReLU kinks of the generators and projectors; much smaller
    // ones drown in f32 rounding. A central difference that happens to straddle a kink is off, so
    // each entry must agree with the difference at one of two step sizes. The error is measured
    // against the gradient's largest entry.
    let numeric = |h: f32| -> Vec<f32> {
        (0..2)
            .map(|k| {
                let at = |delta: f32| {
                    let mut v = i0;
                    v[k] += delta;
                    objective(Tensor::from_floats(v, device)).into_scalar::<f32>()
                };
                (at(h) - at(-h)) / (2.0 * h)
            })
            .collect()
    };
    let (wide, narrow) = (numeric(1e-3), numeric(5e-4));
    let scale = wide.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(analytic.iter().any(|g| g.abs() > 1e-4), "{name}: the gradient with respect to i is zero");
    for k in 0..2 {
        let rel = (analytic[k] - wide[k]).abs().min((analytic[k] - narrow[k]).abs()) / scale;
        assert!(
            rel < 0.02,
            "{name}: d/di_{k} analytic {} vs numeric {} / {} ({:.2}% of the largest entry)",
            analytic[k],
            wide[k],
            narrow[k],
            rel * 100.0
        );
    }
}

#[test]
fn gradient_with_respect_to_i_matches_central_differences() {
    let _serial = ail_core::serial_draws();
    let device = Device::flex().autodiff();
    device.seed(5);
    // Frozen, as downstream: no parameter gradients, BatchNorm on its running statistics.
    let config = tiny(ModelKind::HyperResnet18);
    let resnet = config.init(&device).unwrap().freeze();
    check_gradient("hyper-resnet18", &|x, i| resnet.forward_features(x, i), config.feature_dim(), &device);
    // A two-layer Prompt-ViT of width 32: small enough that f32 rounding stays far below 2%.
    let vit = ail_core::vit::VitConfig::new(32, 2, 2)
        .with_image_size(8)
        .with_num_invariances(2)
        .with_num_projectors(4)
        .init(&device)
        .freeze();
    check_gradient("prompt-vit", &|x, i| vit.forward_features(x, i), 32, &device);
}

fn meta(config: &EncoderConfig) -> CheckpointMeta {
    CheckpointMeta { encoder: config.clone(), family: Some(Family::Groups), step: 42, normalization: None, audio: None }
}

#[test]
fn checkpoint_round_trip_is_bit_identical() {
    let _serial = ail_core::serial_draws();
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    for kind in [ModelKind::HyperResnet18, ModelKind::Resnet50, ModelKind::PromptVitTiny] {
        let config = tiny(kind);
        let model = config.init(&device).unwrap();
        let path = dir.path().join(kind.name());
        checkpoint::save(&path, &model, &meta(&config), None).unwrap();
        let ckpt = checkpoint::load(&path, &device).unwrap();
        assert_eq!(ckpt.meta, meta(&config));
        assert!(ckpt.optimizer.is_none());
        let loaded = ckpt.encoder;
        let x = images(&device);
        let i = descriptor(kind, [0.25, 1.0], &device);
        assert_eq!(
            values(model.valid().forward_features(x.clone(), i.clone())),
            values(loaded.valid().forward_features(x, i)),
            "{kind}"
        );
    }
}

#[test]
fn truncated_or_mismatched_checkpoints_are_named() {
    let _serial = ail_core::serial_draws();
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let config = tiny(ModelKind::HyperResnet18);
    checkpoint::save(dir.path(), &config.init(&device).unwrap(), &meta(&config), None).unwrap();
    let tensors = dir.path().join(checkpoint::TENSORS_FILE);
    let bytes = std::fs::read(&tensors).unwrap();

    std::fs::write(&tensors, &bytes[..bytes.len() / 2]).unwrap();
    let msg = checkpoint::load(dir.path(), &device).err().unwrap().to_string();
    assert!(msg.contains("model.safetensors") && msg.contains("truncated"), "{msg}");

    // Config mismatch: the JSON claims twice the width of the stored tensors.
    std::fs::write(&tensors, &bytes).unwrap();
    let meta_path = dir.path().join(checkpoint::META_FILE);
    let json = std::fs::read_to_string(&meta_path).unwrap().replace("\"width\": 0.0625", "\"width\": 0.125");
    std::fs::write(&meta_path, json).unwrap();
    let msg = checkpoint::load(dir.path(), &device).err().unwrap().to_string();
    assert!(msg.contains("model.safetensors"), "{msg}");
    assert!(msg.contains("cannot hold") && msg.contains("not this model's tensors"), "{msg}");

    // Same size, other shapes: a narrower model's JSON over these tensors (the file is larger than
    // needed, so the shapes themselves are compared).
    let meta_json = std::fs::read_to_string(&meta_path).unwrap().replace("\"width\": 0.125", "\"width\": 0.03125");
    std::fs::write(&meta_path, meta_json).unwrap();
    let msg = checkpoint::load(dir.path(), &device).err().unwrap().to_string();
    assert!(msg.contains("model.safetensors") && (msg.contains("do not match") || msg.contains("not matching")), "{msg}");

    // A family whose K disagrees with the encoder's.
    let meta_json = std::fs::read_to_string(&meta_path).unwrap().replace("\"family\": \"groups\"", "\"family\": \"individual\"");
    std::fs::write(&meta_path, meta_json).unwrap();
    let msg = checkpoint::load(dir.path(), &device).err().unwrap().to_string();
    assert!(msg.contains("has K = 5 but the encoder takes K = 2"), "{msg}");

    // A version-1 file of the earlier K = 5 layout is refused with the reason and the fix; other
    // version-1 files still load.
    let v2 = std::fs::read_to_string(&meta_path).unwrap();
    let k5_v1 = v2.replace("\"version\": 2", "\"version\": 1").replace("\"num_invariances\": 2", "\"num_invariances\": 5");
    assert!(k5_v1.contains("\"version\": 1") && k5_v1.contains("\"num_invariances\": 5"), "{k5_v1}");
    std::fs::write(&meta_path, &k5_v1).unwrap();
    let msg = checkpoint::read_meta(dir.path()).err().unwrap().to_string();
    assert!(msg.contains("earlier `individual` entries") && msg.contains("crop, flip, colour-jitter, grayscale, blur"), "{msg}");
    assert!(msg.contains("ail pretrain --invariances individual"), "{msg}");
    let k5_v2 = k5_v1.replace("\"version\": 1", "\"version\": 2");
    std::fs::write(&meta_path, &k5_v2).unwrap();
    assert_eq!(checkpoint::read_meta(dir.path()).unwrap().family, Some(Family::Individual));
    std::fs::write(&meta_path, v2.replace("\"version\": 2", "\"version\": 1").replace("\"family\": \"individual\"", "\"family\": \"groups\"")).unwrap();
    assert_eq!(checkpoint::read_meta(dir.path()).unwrap().family, Some(Family::Groups));

    // Garbage JSON.
    std::fs::write(&meta_path, "{\"format\": 3}").unwrap();
    let msg = checkpoint::load(dir.path(), &device).err().unwrap().to_string();
    assert!(msg.contains("checkpoint.json") && msg.contains("not a valid checkpoint description"), "{msg}");
}

#[test]
fn analytic_parameter_counts_match_the_built_modules() {
    let _serial = ail_core::serial_draws();
    let device = Device::flex();
    for kind in ModelKind::ALL {
        let config = tiny(kind);
        let model = config.init(&device).unwrap();
        let s = summary::params(&config, 0);
        assert_eq!(model.num_params(), s.total() + s.running_stats, "{kind}: {s:?}");
    }
    let mut stem = tiny(ModelKind::HyperResnet34);
    stem.condition_stem = true;
    let s = summary::params(&stem, 0);
    assert_eq!(stem.init(&device).unwrap().num_params(), s.total() + s.running_stats);
}

#[test]
fn plain_resnets_match_torchvision_parameter_counts() {
    let _serial = ail_core::serial_draws();
    // torchvision.models.resnet18() / resnet50(): ImageNet stem, 1000-class head.
    for (kind, expected) in [(ModelKind::Resnet18, 11_689_512), (ModelKind::Resnet50, 25_557_032)] {
        let config = EncoderConfig::new(kind, 0).with_image_size(224);
        assert_eq!(summary::params(&config, 1000).total(), expected, "{kind}");
    }
    // ...and the built ResNet-18 agrees (plus its 1000-class head and BN running statistics).
    let config = EncoderConfig::new(ModelKind::Resnet18, 0).with_image_size(224);
    let model = config.init(&Device::flex()).unwrap();
    let s = summary::params(&config, 0);
    assert_eq!(model.num_params() + 512 * 1000 + 1000, 11_689_512 + s.running_stats);
}

#[test]
fn resnet_flops_match_the_known_totals() {
    let _serial = ail_core::serial_draws();
    // ResNet-50 at 224 px: 4.09 GMACs (fvcore / torchvision's model card), about 8.2 GFLOPs.
    let f = summary::flops(&EncoderConfig::new(ModelKind::Resnet50, 0).with_image_size(224));
    let gmacs = f.per_image as f64 / 2e9;
    assert!((4.05..4.15).contains(&gmacs), "ResNet-50: {gmacs} GMACs");
    let f = summary::flops(&EncoderConfig::new(ModelKind::Resnet18, 0).with_image_size(224));
    let gmacs = f.per_image as f64 / 2e9;
    assert!((1.80..1.83).contains(&gmacs), "ResNet-18: {gmacs} GMACs");
}

#[test]
fn optimiser_state_survives_a_checkpoint_and_resumes_identically() {
    let _serial = ail_core::serial_draws();
    use burn::optim::{AdamConfig, GradientsParams};
    let device = Device::flex().autodiff();
    device.seed(9);
    let config = tiny(ModelKind::HyperResnet18);
    let x = images(&device);
    let i = descriptor(ModelKind::HyperResnet18, [1.0, 1.0], &device);
    let step = |model: Encoder, optim: &mut burn::optim::ModuleOptimizer| {
        let loss = model.forward_features(x.clone(), i.clone()).powf_scalar(2.0).mean();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        optim.step(1e-2, model, grads)
    };
    let mut optim = AdamConfig::new().init();
    let model = step(config.init(&device).unwrap(), &mut optim);

    let dir = tempfile::tempdir().unwrap();
    checkpoint::save(dir.path(), &model, &meta(&config), Some(optim.to_record())).unwrap();
    let ckpt = checkpoint::load(dir.path(), &device).unwrap();
    let mut resumed_optim = AdamConfig::new().init().load_record(ckpt.optimizer.expect("optimiser state saved"));

    // One more step from the live state and from the checkpoint: the same parameters.
    let a = step(model, &mut optim);
    let b = step(ckpt.encoder, &mut resumed_optim);
    let plain = Device::flex();
    let probe = images(&plain);
    let i = descriptor(ModelKind::HyperResnet18, [1.0, 0.0], &plain);
    assert_eq!(values(a.valid().forward_features(probe.clone(), i.clone())), values(b.valid().forward_features(probe, i)));

    // A damaged optimiser file is named.
    let path = dir.path().join(checkpoint::OPTIMIZER_FILE);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 3]).unwrap();
    let msg = checkpoint::load(dir.path(), &device).err().unwrap().to_string();
    assert!(msg.contains("optimizer.bpk") && msg.contains("truncated or corrupt optimiser state"), "{msg}");
}

#[test]
fn every_parameter_receives_a_gradient() {
    let _serial = ail_core::serial_draws();
    use burn::optim::GradientsParams;
    use burn::store::ModuleSnapshot;
    let device = Device::flex().autodiff();
    for kind in [ModelKind::HyperResnet18, ModelKind::HyperResnet50, ModelKind::PromptVitTiny, ModelKind::Resnet18] {
        let model = tiny(kind).init(&device).unwrap();
        let loss = model.forward_features(images(&device), descriptor(kind, [1.0, 1.0], &device)).powf_scalar(2.0).mean();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let trainable = model
            .collect(None, None, false)
            .iter()
            .filter(|t| !t.name.ends_with("running_mean") && !t.name.ends_with("running_var"))
            .count();
        assert_eq!(grads.len(), trainable, "{kind}: some parameters do not train");
    }
}
