//! Build an encoder and write it as a checkpoint (`model.safetensors` + `checkpoint.json`):
//! `cargo run --release -p ail-core --example save_checkpoint -- OUT_DIR [MODEL] [WIDTH]`.
//! `scripts/check_safetensors_torch.py OUT_DIR` then opens it with PyTorch.

use ail_core::checkpoint::{self, CheckpointMeta};
use ail_core::{EncoderConfig, Family, ModelKind};
use burn::tensor::Device;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = args.next().ok_or("usage: save_checkpoint OUT_DIR [MODEL] [WIDTH]")?;
    let kind: ModelKind = args.next().as_deref().unwrap_or("hyper-resnet18").parse()?;
    let width: f32 = args.next().as_deref().unwrap_or("0.25").parse()?;
    let family = Family::Groups;
    let config = EncoderConfig::new(kind, family.num_invariances()).with_width(width);
    let encoder = config.init(&Device::flex())?;
    let meta = CheckpointMeta { encoder: config, family: kind.is_amortised().then_some(family), step: 0, normalization: None, audio: None };
    checkpoint::save(std::path::Path::new(&out), &encoder, &meta, None)?;
    println!("wrote {out}/{} and {out}/{}", checkpoint::TENSORS_FILE, checkpoint::META_FILE);
    Ok(())
}
