//! Turning parsed arguments into devices, datasets and descriptors, with progress and clear errors.

use std::path::Path;
use std::sync::Arc;

use ail_augment::device::{DeviceChoice, SelectedDevice, select, select_many};
use ail_core::pretrain::DataSettings;
use ail_data::ImageSet;
use anyhow::Context;

use crate::args::{DataArgs, Global};
use crate::progress::Progress;

/// Selects the device and prints it once.
pub fn device(global: &Global) -> anyhow::Result<SelectedDevice> {
    select_cpu_kernels(global);
    let choice: DeviceChoice = global.device.parse()?;
    let selected = select(choice)?;
    eprintln!("device: {}", selected.description);
    Ok(selected)
}

/// Applies `--cpu-kernels` for the whole process.
fn select_cpu_kernels(global: &Global) {
    ail_core::kernels::set_cpu_kernels(global.cpu_kernels);
}

/// Selects `n` devices for data parallelism (the first is the main one) and prints them.
pub fn devices(global: &Global, n: usize) -> anyhow::Result<Vec<SelectedDevice>> {
    if n <= 1 {
        return Ok(vec![device(global)?]);
    }
    select_cpu_kernels(global);
    let choice: DeviceChoice = global.device.parse()?;
    let all = select_many(choice, n)?;
    for (k, d) in all.iter().enumerate() {
        eprintln!("device {k}{}: {}", if k == 0 { " (main)" } else { "" }, d.description);
    }
    Ok(all)
}

/// The devices of `ail pretrain --hosts`: one remote device per address, each served by `ail serve`.
pub fn remote_devices(hosts: &str) -> anyhow::Result<Vec<SelectedDevice>> {
    let hosts: Vec<&str> = hosts.split(',').map(str::trim).filter(|h| !h.is_empty()).collect();
    anyhow::ensure!(!hosts.is_empty(), "--hosts lists no address: give e.g. ws://10.0.0.2:3000,ws://10.0.0.3:3000");
    #[cfg(feature = "remote")]
    {
        hosts
            .iter()
            .enumerate()
            .map(|(k, host)| {
                anyhow::ensure!(host.starts_with("ws://"), "--hosts: `{host}` is not a WebSocket address (ws://HOST:PORT)");
                let device = burn::tensor::Device::remote_options(&burn::remote::RemoteHost::websocket(host))
                    .init()
                    .map_err(|e| anyhow::anyhow!("connecting to {host}: {e}; is `ail serve` running there, and is its port open?"))?;
                let selected = SelectedDevice { device, description: format!("remote: {host}"), is_gpu: false };
                eprintln!("device {k}{}: {}", if k == 0 { " (main)" } else { "" }, selected.description);
                Ok(selected)
            })
            .collect()
    }
    #[cfg(not(feature = "remote"))]
    anyhow::bail!(
        "--hosts {}: this build has no remote devices; build with `cargo build --release --features remote` (here and on every host)",
        hosts.join(",")
    )
}

/// `ail serve`: serves the device `--device` picks to remote clients until Ctrl-C.
pub fn serve(global: &Global, args: &crate::args::ServeArgs) -> anyhow::Result<()> {
    #[cfg(feature = "remote")]
    {
        let selected = device(global)?;
        eprintln!("serving {} on ws://0.0.0.0:{} (Ctrl-C stops)", selected.description, args.port);
        burn::server::RemoteServer::new([selected.device])
            .serve(burn::server::WebSocketTransport::new(args.port))
            .map_err(|e| anyhow::anyhow!("serving on port {}: {e}", args.port))
    }
    #[cfg(not(feature = "remote"))]
    {
        let _ = (global, args);
        anyhow::bail!("ail serve: this build has no remote devices; build with `cargo build --release --features remote`")
    }
}

/// Loads `--data` as 3-channel `image_size` images, with a progress spinner while decoding files.
pub fn load(args: &DataArgs) -> anyhow::Result<Arc<ImageSet>> {
    let data = DataSettings { source: args.data.clone(), format: args.format, image_size: args.image_size };
    Ok(ail_core::pretrain::load_images(&data, args.skip_bad, &mut Progress::new())?)
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
