//! Training is unchanged in meaning by our CPU kernels: 30 pretraining steps with them and with
//! burn's own operations (`set_cpu_kernels`) give the same losses to 1e-3, for each method.
//! (Its own test binary: it flips the process-wide kernel switch.)

use std::sync::Arc;

use ail_augment::device::{DeviceChoice, select};
use ail_core::kernels::{CpuKernels, set_cpu_kernels};
use ail_core::method::Method;
use ail_core::pretrain::{Data, LogRow, Observer, PretrainConfig, RunOptions, pretrain};
use ail_data::ImageSet;

/// 64 patterned 16x16 images of 4 classes.
fn images() -> Arc<ImageSet> {
    let (n, side) = (64, 16);
    let mut pixels = Vec::with_capacity(n * 3 * side * side);
    let mut labels = Vec::new();
    for k in 0..n {
        let class = k % 4;
        for c in 0..3 {
            for y in 0..side {
                for x in 0..side {
                    let on = ((x + 3 * class) % 8 < 4) ^ ((y + k + c) % 6 < 3);
                    pixels.push(if on { 190 + (k % 9) as u8 * 6 } else { 20 + (c * 30) as u8 });
                }
            }
        }
        labels.push(class as u32);
    }
    let names = (0..4).map(|c| format!("c{c}")).collect();
    Arc::new(ImageSet::new(pixels, labels, names, [3, side, side]).unwrap())
}

#[derive(Default)]
struct Losses(Vec<f32>);

impl Observer for Losses {
    fn logged(&mut self, row: &LogRow) {
        self.0.push(row.loss);
    }
}

fn losses(method: Method, kernels: CpuKernels, out: &std::path::Path) -> Vec<f32> {
    set_cpu_kernels(kernels);
    let mut c = PretrainConfig { steps: 30, batch_size: 16, log_every: 1, checkpoint_every: 30, method, ..Default::default() };
    c.data.source = "patterns".into();
    c.data.image_size = 16;
    c.encoder.width = 0.125;
    c.encoder.hidden = 8;
    c.heads.hidden = 32;
    c.heads.output = 16;
    c.queue_size = 64;
    c.optimizer.warmup_steps = 3;
    c.monitor.every = 0;
    let options = RunOptions::new(out, vec![select(DeviceChoice::Cpu).unwrap()]);
    let mut observed = Losses::default();
    pretrain(&c, Data::Images(images()), &options, &mut observed).unwrap();
    set_cpu_kernels(CpuKernels::Own);
    observed.0
}

#[test]
fn thirty_steps_have_the_same_losses_with_our_kernels_and_burns() {
    let dir = tempfile::tempdir().unwrap();
    for method in [Method::Simclr, Method::Mocov2] {
        let ours = losses(method, CpuKernels::Own, &dir.path().join(format!("{method:?}-own")));
        let burns = losses(method, CpuKernels::Burn, &dir.path().join(format!("{method:?}-burn")));
        assert_eq!(ours.len(), 30);
        assert_eq!(burns.len(), 30);
        let worst = ours.iter().zip(&burns).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst <= 1e-3, "{method:?}: losses differ by up to {worst}\nours  {ours:?}\nburn's {burns:?}");
    }
}
