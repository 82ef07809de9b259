//! Two augmented views of a batch, as a contrastive learner sees them:
//! `cargo run --release -p ail-augment --example two_views -- [auto|cpu|wgpu]`.

use ail_augment::device::{DeviceChoice, select};
use ail_augment::{AugmentConfig, Augmenter, OpSet, sample_views};
use ail_augment::{Descriptor, Family};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let choice: DeviceChoice = std::env::args().nth(1).as_deref().unwrap_or("auto").parse()?;
    let device = select(choice)?;
    println!("device: {}", device.description);

    // Four 3x8x8 images: a horizontal ramp, so geometry changes are visible in the numbers.
    let shape = [4, 3, 8, 8];
    let pixels: Vec<u8> = (0..4 * 3 * 8 * 8).map(|i| ((i % 8) * 32) as u8).collect();

    // The descriptor decides the augmentation set: [spatial, appearance] = [1, 1] is SimCLR's.
    let descriptor = Descriptor::parse("1,1", Family::Groups)?;
    let ops = OpSet::from_descriptor(Family::Groups, &descriptor);
    let config = AugmentConfig::default();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let views = sample_views(ops, &config, [4, 8, 8], 2, &mut rng);

    let augmenter = Augmenter::new(&device.device);
    let out = augmenter.apply(&pixels, shape, &views, config.blur_radius(8))?;
    println!("views: {:?} (first the 4 first views, then the 4 second views)", out.dims());
    println!("mean of view 0 vs view 4 (same image): {:.3} vs {:.3}",
        out.clone().slice([0..1]).mean().into_scalar::<f32>(),
        out.slice([4..5]).mean().into_scalar::<f32>());
    Ok(())
}
