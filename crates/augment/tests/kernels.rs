//! Every WGSL kernel: parsed and validated by naga (no GPU needed), then run on a wgpu adapter
//! (Mesa lavapipe in CI) and compared with its CPU reference within 1e-4 on awkward sizes:
//! batch 1, 3x7x5 images, 65-pixel images, more views than images.
//!
//! The GPU tests need a wgpu adapter; CI installs `mesa-vulkan-drivers`. Without one they fail
//! (they are the only check of the GPU path), unless `AIL_SKIP_GPU_TESTS=1` is set.
#![cfg(feature = "wgpu")]

use std::sync::OnceLock;

use ail_augment::affine::affine_reference;
use ail_augment::blur_solarize::blur_solarize_reference;
use ail_augment::color_jitter::color_jitter_reference;
use ail_augment::device::{DeviceChoice, select};
use ail_augment::gpu::{AugmentOps, Shader};
use ail_augment::{
    Affine, AugmentConfig, Augmenter, OpSet, PARAM_STRIDE, ViewParams, augment_reference, pack_params, pack_u8,
    sample_views,
};
use burn::backend::Dispatch;
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn::tensor::wgpu::wgpu::naga;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const TOLERANCE: f32 = 1e-4;

#[test]
fn every_shader_parses_and_validates_with_naga() {
    for shader in Shader::ALL {
        let src = shader.source();
        assert!(!src.contains("{{"), "{}: unfilled template value", shader.stem());
        let module = naga::front::wgsl::parse_str(&src)
            .unwrap_or_else(|e| panic!("{}.wgsl: {}", shader.stem(), e.emit_to_string(&src)));
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::default())
            .validate(&module)
            .unwrap_or_else(|e| panic!("{}.wgsl: {}", shader.stem(), e.emit_to_string(&src)));
        // The file on disk is the one compiled in.
        let on_disk = std::fs::read_to_string(format!("{}/../../shaders/{}.wgsl", std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()), shader.stem())).unwrap();
        assert_eq!(on_disk, shader.template());
    }
}

#[test]
fn shaders_read_the_parameter_offsets_that_pack_writes() {
    // ViewParams::pack: affine [0..12), jitter [12..16), order 16, jitter on 17, grayscale 18,
    // sigma 19, solarize 20. The kernels index params[q + k]; check each offset they use.
    let uses = |s: Shader, k: usize| s.template().contains(&format!("params[q + {k}u]")) || s.template().contains(&format!("stride + {k}u]"));
    for k in 0..12 {
        assert!(uses(Shader::Affine, k), "affine.wgsl does not read offset {k}");
    }
    for k in 12..19 {
        assert!(uses(Shader::ColorJitter, k), "color_jitter.wgsl does not read offset {k}");
    }
    assert!(uses(Shader::BlurSolarize, 19) && uses(Shader::BlurSolarize, 20));
    assert_eq!(PARAM_STRIDE % 4, 0);
}

fn gpu() -> Option<&'static Device> {
    static DEVICE: OnceLock<Option<Device>> = OnceLock::new();
    DEVICE
        .get_or_init(|| match select(DeviceChoice::Wgpu) {
            Ok(d) => {
                eprintln!("GPU kernel tests run on {}", d.description);
                Some(d.device)
            }
            Err(e) if std::env::var("AIL_SKIP_GPU_TESTS").as_deref() == Ok("1") => {
                eprintln!("skipping GPU kernel tests: {e}");
                None
            }
            Err(e) => panic!("{e} (set AIL_SKIP_GPU_TESTS=1 to skip the GPU tests)"),
        })
        .as_ref()
}

fn assert_close(gpu: &[f32], reference: &[f32], what: &str) {
    assert_eq!(gpu.len(), reference.len(), "{what}: lengths");
    let (worst, at) = gpu
        .iter()
        .zip(reference)
        .enumerate()
        .map(|(i, (a, b))| ((a - b).abs(), i))
        .fold((0.0f32, 0), |m, x| if x.0 > m.0 { x } else { m });
    assert!(
        worst <= TOLERANCE && gpu.iter().all(|v| v.is_finite()),
        "{what}: max |gpu - reference| = {worst} at {at} (gpu {}, reference {})",
        gpu[at],
        reference[at]
    );
}

fn random_u8(n: usize, rng: &mut impl Rng) -> Vec<u8> {
    (0..n).map(|_| rng.random()).collect()
}

fn random_unit(n: usize, rng: &mut impl Rng) -> Vec<f32> {
    (0..n).map(|_| rng.random()).collect()
}

fn to_vec(t: Tensor<4>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

/// `[batch, C, H, W]` shapes: batch 1 with 3x7x5 images, 65-pixel images (5x13), a 1-channel batch.
const SHAPES: [[usize; 4]; 4] = [[1, 3, 7, 5], [3, 3, 5, 13], [2, 3, 8, 8], [2, 1, 6, 9]];

fn all_ops() -> OpSet {
    OpSet { crop: true, flip: true, jitter: true, grayscale: true, blur: true, solarize: true }
}

/// Views that exercise every branch: sampled with raised probabilities, plus eval transforms.
fn views(shape: [usize; 4], num: usize, rng: &mut ChaCha8Rng) -> Vec<ViewParams> {
    let config = AugmentConfig { jitter_p: 0.9, grayscale_p: 0.3, blur_p: 0.7, solarize_p: 0.5, ..Default::default() };
    let [_, _, h, w] = shape;
    let mut v = sample_views(all_ops(), &config, [num, h, w], 1, rng);
    if num > 2 {
        v[1].affine = Affine::rotation(h, w, 33.0);
        v[2].affine = Affine::shear(h, w, -20.0).then_vflip(h);
    }
    v
}

#[test]
fn affine_kernel_matches_reference() {
    let Some(device) = gpu() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for shape in SHAPES {
        let [b, c, h, w] = shape;
        let pixels = random_u8(b * c * h * w, &mut rng);
        let v = views(shape, 2 * b + 1, &mut rng);
        let words = pack_u8(&pixels);
        let n = words.len();
        let packed = Tensor::<1, Int>::from_data(TensorData::new(words, [n]), device);
        let params = Tensor::<2>::from_data(TensorData::new(pack_params(&v), [v.len(), PARAM_STRIDE]), device);
        let dims = (v.len() as u32, b as u32, c as u32, h as u32, w as u32, h as u32, w as u32);
        let out = Tensor::<4>::from_dispatch(Dispatch::augment_affine_u8(packed.into_dispatch(), params.into_dispatch(), dims));
        assert_eq!(out.dims(), [v.len(), c, h, w]);
        let reference: Vec<f32> = v
            .iter()
            .enumerate()
            .flat_map(|(s, view)| {
                let src = s % b;
                let img: Vec<f32> = pixels[src * c * h * w..(src + 1) * c * h * w].iter().map(|&p| p as f32 / 255.0).collect();
                affine_reference(&img, [c, h, w], [h, w], &view.affine)
            })
            .collect();
        assert_close(&to_vec(out), &reference, &format!("affine u8 {shape:?}"));
    }
}

#[test]
fn affine_kernel_on_float_images_resizes_with_fill() {
    let Some(device) = gpu() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let [c, h, w] = [3, 7, 5];
    let (out_h, out_w) = (9, 4);
    let image = random_unit(c * h * w, &mut rng);
    let mut transforms = vec![
        Affine::rotation(h, w, 45.0),
        Affine::translation(h, w, 1.5, -2.25),
        Affine::scale(h, w, 0.6),
        Affine::crop(1, 2, 4, 3, out_h, out_w),
    ];
    transforms[2].fill = 0.5;
    let v: Vec<ViewParams> = transforms
        .iter()
        .map(|&affine| ViewParams { affine, ..ViewParams::identity(h, w) })
        .collect();
    let images = Tensor::<4>::from_data(TensorData::new(image.clone(), [1, c, h, w]), device);
    let params = Tensor::<2>::from_data(TensorData::new(pack_params(&v), [v.len(), PARAM_STRIDE]), device);
    let out = Tensor::<4>::from_dispatch(Dispatch::augment_affine_f32(
        images.into_dispatch(),
        params.into_dispatch(),
        v.len() as u32,
        out_h as u32,
        out_w as u32,
    ));
    assert_eq!(out.dims(), [4, c, out_h, out_w]);
    let reference: Vec<f32> = transforms.iter().flat_map(|a| affine_reference(&image, [c, h, w], [out_h, out_w], a)).collect();
    assert_close(&to_vec(out), &reference, "affine f32");
}

#[test]
fn color_jitter_kernel_matches_reference() {
    let Some(device) = gpu() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for shape in SHAPES {
        let [b, c, h, w] = shape;
        let n = 4 * b;
        let images = random_unit(n * c * h * w, &mut rng);
        let mut v = views(shape, n, &mut rng);
        // Every order of the four ops at least once across shapes, and both grayscale settings.
        for (k, view) in v.iter_mut().enumerate() {
            view.jitter_on = k % 5 != 4;
            view.jitter_order.rotate_left(k % 4);
        }
        let t = Tensor::<4>::from_data(TensorData::new(images.clone(), [n, c, h, w]), device);
        let params = Tensor::<2>::from_data(TensorData::new(pack_params(&v), [n, PARAM_STRIDE]), device);
        let out = Tensor::<4>::from_dispatch(Dispatch::augment_color_jitter(t.into_dispatch(), params.into_dispatch()));
        let len = c * h * w;
        let reference: Vec<f32> = v
            .iter()
            .enumerate()
            .flat_map(|(s, view)| {
                let mut img = images[s * len..(s + 1) * len].to_vec();
                color_jitter_reference(&mut img, c, view);
                img
            })
            .collect();
        assert_close(&to_vec(out), &reference, &format!("color jitter {shape:?}"));
    }
}

#[test]
fn color_jitter_reduction_spans_images_larger_than_a_workgroup() {
    // 3x40x40: 1600 pixels per image, more than the 256 threads of a workgroup.
    let Some(device) = gpu() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let (n, c, h, w) = (2, 3, 40, 40);
    let images = random_unit(n * c * h * w, &mut rng);
    let mut v = vec![ViewParams::identity(h, w); n];
    for view in &mut v {
        view.jitter_on = true;
        view.jitter = [1.0, 0.3, 1.0, 0.0];
        view.jitter_order = [1, 0, 2, 3];
    }
    let t = Tensor::<4>::from_data(TensorData::new(images.clone(), [n, c, h, w]), device);
    let params = Tensor::<2>::from_data(TensorData::new(pack_params(&v), [n, PARAM_STRIDE]), device);
    let out = to_vec(Tensor::<4>::from_dispatch(Dispatch::augment_color_jitter(t.into_dispatch(), params.into_dispatch())));
    let len = c * h * w;
    let reference: Vec<f32> = (0..n)
        .flat_map(|s| {
            let mut img = images[s * len..(s + 1) * len].to_vec();
            color_jitter_reference(&mut img, c, &v[s]);
            img
        })
        .collect();
    assert_close(&out, &reference, "contrast on 40x40");
}

#[test]
fn blur_solarize_kernel_matches_reference() {
    let Some(device) = gpu() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for (shape, radius) in SHAPES.into_iter().zip([1usize, 2, 3, 1]) {
        let [b, c, h, w] = shape;
        let n = 2 * b;
        let images = random_unit(n * c * h * w, &mut rng);
        let v = views(shape, n, &mut rng);
        let t = Tensor::<4>::from_data(TensorData::new(images.clone(), [n, c, h, w]), device);
        let params = Tensor::<2>::from_data(TensorData::new(pack_params(&v), [n, PARAM_STRIDE]), device);
        let rows = Dispatch::augment_blur_solarize(t.into_dispatch(), params.clone().into_dispatch(), radius as u32, false, false);
        let out = Tensor::<4>::from_dispatch(Dispatch::augment_blur_solarize(rows, params.into_dispatch(), radius as u32, true, true));
        let len = c * h * w;
        let reference: Vec<f32> = v
            .iter()
            .enumerate()
            .flat_map(|(s, view)| {
                blur_solarize_reference(&images[s * len..(s + 1) * len], [c, h, w], view.blur_sigma, radius, view.solarize_threshold)
            })
            .collect();
        assert_close(&to_vec(out), &reference, &format!("blur+solarize {shape:?} radius {radius}"));
    }
}

#[test]
fn full_two_view_pipeline_matches_reference() {
    let Some(device) = gpu() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let augmenter = Augmenter::new(device);
    assert!(augmenter.uses_kernels());
    for shape in SHAPES {
        let [b, c, h, w] = shape;
        let pixels = random_u8(b * c * h * w, &mut rng);
        let v = sample_views(all_ops(), &AugmentConfig::default(), [b, h, w], 2, &mut rng);
        let radius = AugmentConfig::default().blur_radius(h);
        let out = augmenter.apply(&pixels, shape, &v, radius).unwrap();
        assert_eq!(out.dims(), [2 * b, c, h, w]);
        assert_close(&to_vec(out), &augment_reference(&pixels, shape, &v, radius), &format!("pipeline {shape:?}"));
    }
}

#[test]
fn two_dimensional_dispatch_grids_give_the_same_views() {
    // Cap the grid at 3 workgroups along x, so every launch spreads over y (as batches of 224 px
    // images do on real GPUs) and color_jitter gets out-of-range workgroups to skip.
    let Some(device) = gpu() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let shape = [5, 3, 11, 13];
    let [b, c, h, w] = shape;
    let pixels = random_u8(b * c * h * w, &mut rng);
    let v = views(shape, 2 * b, &mut rng);
    let augmenter = Augmenter::new(device);
    ail_augment::gpu::set_max_groups_x(3);
    let out = augmenter.apply(&pixels, shape, &v, 2).map(to_vec);
    ail_augment::gpu::set_max_groups_x(65_535);
    assert_close(&out.unwrap(), &augment_reference(&pixels, shape, &v, 2), "2-D grid");
}

#[test]
fn pipeline_on_an_autodiff_device_returns_autodiff_tensors() {
    let Some(device) = gpu() else { return };
    let ad = device.clone().autodiff();
    let out = Augmenter::new(&ad).apply(&[10; 3 * 4 * 4], [1, 3, 4, 4], &[ViewParams::identity(4, 4)], 1).unwrap();
    assert!(out.is_autodiff());
    let values = to_vec(out);
    assert!(values.iter().all(|&v| (v - 10.0 / 255.0).abs() < 1e-6));
}
