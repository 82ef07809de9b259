//! `ail export --web RUN`: one file for the browser page (`web/`), which opens it from its file
//! picker or ships it as the built-in encoder. Convolution and linear weights are stored as f16
//! (the page computes in f32); see [`ail_core::checkpoint::export_web`] for the layout.

use ail_core::checkpoint::{self, export_web, load_web};
use ail_core::frozen::resolve_checkpoint;
use ail_core::io::write_atomic;
use anyhow::Context;
use burn::module::Module;
use burn::tensor::Device;

use crate::args::ExportArgs;

/// The page loads any export, but it is meant for narrow encoders: above this it warns.
const WEB_SIZE_HINT: usize = 25 << 20;

pub fn run(args: &ExportArgs) -> anyhow::Result<()> {
    let dir = resolve_checkpoint(&args.web)?;
    let device = Device::flex();
    let ckpt = checkpoint::load(&dir, &device)?;
    let bytes = export_web(&ckpt.encoder, &ckpt.meta).with_context(|| format!("exporting {}", dir.display()))?;
    // What the page will read must load back, with values within f16 rounding of the checkpoint's.
    let (back, _) = load_web(&bytes, "the export just written", &device)?;
    let (a, b) = (
        ail_core::checkpoint::param_values(&ckpt.encoder.valid()),
        ail_core::checkpoint::param_values(&back),
    );
    let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs() / x.abs().max(1e-3)).fold(0f32, f32::max);
    anyhow::ensure!(a.len() == b.len() && worst < 2e-3, "the export does not read back as the checkpoint (relative difference {worst})");
    let out = args.out.clone().unwrap_or_else(|| args.web.join("encoder.ailweb"));
    write_atomic(&out, &bytes).with_context(|| format!("writing {}", out.display()))?;
    let m = &ckpt.meta;
    println!(
        "wrote {} ({:.1} MB): {} width {} (K = {}, {}x{} inputs, step {}); open it in the page with \"Open an export\"",
        out.display(),
        bytes.len() as f64 / 1e6,
        m.encoder.kind,
        m.encoder.width,
        m.encoder.input_invariances(),
        m.encoder.image_size,
        m.encoder.image_size,
        m.step
    );
    if bytes.len() > WEB_SIZE_HINT {
        eprintln!(
            "warning: {:.0} MB is heavy for a page (it is downloaded and held in memory): the page is meant for narrow encoders (--width 0.125 to 0.25)",
            bytes.len() as f64 / 1e6
        );
    }
    Ok(())
}
