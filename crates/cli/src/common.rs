//! Turning parsed arguments into devices, datasets and descriptors, with progress and clear errors.

use std::path::Path;
use std::sync::Arc;

use ail_augment::device::{DeviceChoice, SelectedDevice, select, select_many};
use ail_core::Family;
use ail_data::{DataFormat, DataSource, ImageSet, LoadOptions};
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

use crate::args::{DataArgs, FamilyArg, Format, Global};

/// Selects the device and prints it once.
pub fn device(global: &Global) -> anyhow::Result<SelectedDevice> {
    let choice: DeviceChoice = global.device.parse()?;
    let selected = select(choice)?;
    eprintln!("device: {}", selected.description);
    Ok(selected)
}

/// Selects `n` devices for data parallelism (the first is the main one) and prints them.
pub fn devices(global: &Global, n: usize) -> anyhow::Result<Vec<SelectedDevice>> {
    if n <= 1 {
        return Ok(vec![device(global)?]);
    }
    let choice: DeviceChoice = global.device.parse()?;
    let all = select_many(choice, n)?;
    for (k, d) in all.iter().enumerate() {
        eprintln!("device {k}{}: {}", if k == 0 { " (main)" } else { "" }, d.description);
    }
    Ok(all)
}

pub fn family(arg: FamilyArg) -> Family {
    match arg {
        FamilyArg::Groups => Family::Groups,
        FamilyArg::Individual => Family::Individual,
    }
}


/// Loads `--data` as 3-channel `image_size` images, with a progress bar while decoding files.
pub fn load(args: &DataArgs) -> anyhow::Result<Arc<ImageSet>> {
    if !(1..=4096).contains(&args.image_size) {
        anyhow::bail!("--image-size must be between 1 and 4096 (got {})", args.image_size);
    }
    let source = DataSource::parse(&args.data);
    let options = LoadOptions {
        format: match args.format {
            Format::Auto => DataFormat::Auto,
            Format::Cifar => DataFormat::Cifar,
            Format::Idx => DataFormat::Idx,
            Format::Folder => DataFormat::Folder,
        },
        side: Some(args.image_size),
        channels: 3,
        skip_bad: args.skip_bad,
        ..Default::default()
    };
    let bar = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} decoding {pos} images [{elapsed}]").expect("valid template"),
    );
    let (set, report) = source
        .load(options, &|n| bar.set_position(n as u64))
        .with_context(|| format!("loading {source}"))?;
    bar.finish_and_clear();
    if !report.skipped.is_empty() {
        eprintln!("skipped {} unreadable image files (--skip-bad); first: {} ({})",
            report.skipped.len(), report.skipped[0].0.display(), report.skipped[0].1);
    }
    eprintln!(
        "data: {source}: {} images of {}x{}x{}, {} classes",
        set.len(),
        set.channels,
        set.height,
        set.width,
        set.num_classes()
    );
    Ok(Arc::new(set))
}

/// Creates `dir` and checks that files can be written in it, before any long computation whose
/// results would otherwise be lost at the end.
pub fn prepare_out(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| ail_core::io::with_hint(e, dir))
        .with_context(|| format!("creating the output directory {}", dir.display()))?;
    let probe = dir.join(".write-test");
    ail_core::io::write_atomic(&probe, b"ok").with_context(|| format!("--out {} cannot be written", dir.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}
