//! `ail augment-preview`: grids of augmented views, to judge by eye.

use std::path::Path;

use ail_augment::device::SelectedDevice;
use ail_augment::{AugmentConfig, Augmenter, sample_views};
use ail_core::{Descriptor, Family};
use ail_data::{ImageSet, epoch_order};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::args::{Global, PreviewArgs};
use crate::{common, grid};

pub fn run(global: &Global, args: &PreviewArgs) -> anyhow::Result<()> {
    let family = args.family;
    anyhow::ensure!(
        family != Family::Audio,
        "augment-preview shows image augmentations: use --family groups or individual (audio views are made by `ail pretrain --modality audio`)"
    );
    let descriptor = Descriptor::parse(&args.descriptor, family)?;
    anyhow::ensure!((1..=64).contains(&args.images), "--images must be between 1 and 64");
    anyhow::ensure!((1..=32).contains(&args.views), "--views must be between 1 and 32");
    let device = common::device(global)?;
    let data = common::load(&args.data)?;
    let preview = Preview { family, descriptor, images: args.images, views: args.views, seed: args.seed };
    preview.write(&device, &data, &args.out)?;
    eprintln!("wrote {} ({} images x {} views, descriptor {})", args.out.display(), args.images, args.views, args.descriptor);
    Ok(())
}

struct Preview {
    family: Family,
    descriptor: Descriptor,
    images: usize,
    views: usize,
    seed: u64,
}

impl Preview {
    fn write(&self, device: &SelectedDevice, data: &ImageSet, out: &Path) -> anyhow::Result<()> {
        let n = self.images.min(data.len());
        let chosen = &epoch_order(data.len(), self.seed, 0, true)[..n];
        let subset = data.subset(chosen);
        let [c, h, w] = subset.shape();
        let config = AugmentConfig::default();
        let (ops, at) = AugmentConfig::default().at_descriptor(self.family, &self.descriptor);
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let views = sample_views(ops, &at, [n, h, w], self.views, &mut rng);
        let augmented = Augmenter::new(&device.device)
            .apply(&subset.pixels, [n, c, h, w], &views, config.blur_radius(h))?
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| anyhow::anyhow!("reading augmented views back: {e:?}"))?;
        let len = c * h * w;
        let mut cells = Vec::with_capacity(n * (self.views + 1));
        for b in 0..n {
            cells.push(subset.image(b).iter().map(|&p| p as f32 / 255.0).collect());
            for v in 0..self.views {
                let s = v * n + b;
                cells.push(augmented[s * len..(s + 1) * len].to_vec());
            }
        }
        let scale = (96 / h.max(w)).max(1);
        grid::write_grid(out, &cells, n, self.views + 1, h, scale)
    }
}
