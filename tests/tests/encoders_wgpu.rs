//! One small Hyper-ResNet on wgpu (Mesa lavapipe in CI): the same checkpoint gives the same features
//! as on the CPU backend, and the features follow `i`.

use ail_augment::device::{DeviceChoice, select};
use ail_core::checkpoint::{self, CheckpointMeta};
use ail_core::{EncoderConfig, Family, ModelKind};
use burn::module::Module;
use burn::prelude::*;
use burn::tensor::{Distribution, TensorData};

#[test]
fn hyper_resnet_on_wgpu_matches_the_cpu() {
    let gpu = match select(DeviceChoice::Wgpu) {
        Ok(d) => d.device,
        Err(e) if std::env::var("AIL_SKIP_GPU_TESTS").as_deref() == Ok("1") => {
            eprintln!("skipping: {e}");
            return;
        }
        Err(e) => panic!("{e} (set AIL_SKIP_GPU_TESTS=1 to skip the GPU tests)"),
    };
    let cpu = Device::flex();
    let mut config = EncoderConfig::new(ModelKind::HyperResnet18, 2).with_width(0.0625).with_image_size(8);
    config.hidden = 4;
    let dir = tempfile::tempdir().unwrap();
    let meta = CheckpointMeta { encoder: config.clone(), family: Some(Family::Groups), step: 0, normalization: None, audio: None };
    cpu.seed(1);
    checkpoint::save(dir.path(), &config.init(&cpu).unwrap(), &meta, None).unwrap();

    let x: Vec<f32> = Tensor::<4>::random([2, 3, 8, 8], Distribution::Normal(0.0, 1.0), &cpu).into_data().try_to_vec().unwrap();
    let run = |device: &Device, i: [f32; 2]| -> Vec<f32> {
        let model = checkpoint::load(dir.path(), device).unwrap().encoder;
        let images = Tensor::<4>::from_data(TensorData::new(x.clone(), [2, 3, 8, 8]), device);
        model.valid().forward_features(images, Tensor::from_floats(i, device)).into_data().try_to_vec().unwrap()
    };
    for i in [[1.0, 0.0], [0.0, 1.0]] {
        let (a, b) = (run(&cpu, i), run(&gpu, i));
        let worst = a.iter().zip(&b).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
        assert!(worst < 1e-3, "i = {i:?}: cpu and wgpu differ by {worst}");
    }
    let (a, b) = (run(&gpu, [1.0, 0.0]), run(&gpu, [0.0, 1.0]));
    assert!(a.iter().zip(&b).any(|(p, q)| (p - q).abs() > 1e-4), "wgpu features do not depend on i");
}
