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

/// The devices of `ail pretrain --hosts`: one remote device per address, each served by `ail serve`,
/// presenting the token of `token_file` when one is given.
pub fn remote_devices(hosts: &str, token_file: Option<&Path>) -> anyhow::Result<Vec<SelectedDevice>> {
    let hosts: Vec<&str> = hosts.split(',').map(str::trim).filter(|h| !h.is_empty()).collect();
    anyhow::ensure!(!hosts.is_empty(), "--hosts lists no address: give e.g. ws://10.0.0.2:3000,ws://10.0.0.3:3000");
    let token = token_file.map(|path| read_token(path, "--token-file")).transpose()?;
    #[cfg(feature = "remote")]
    {
        hosts
            .iter()
            .enumerate()
            .map(|(k, host)| {
                anyhow::ensure!(host.starts_with("ws://"), "--hosts: `{host}` is not a WebSocket address (ws://HOST:PORT)");
                let mut remote = burn::remote::RemoteHost::websocket(host);
                if let Some(token) = &token {
                    remote = remote.with_credential(token.as_str());
                }
                let device = burn::tensor::Device::remote_options(&remote).init().map_err(|e| {
                    let hint = match &token {
                        None => "is `ail serve` running there, is its port open, and does it want a token (--token-file)?",
                        Some(_) => "is `ail serve` running there, is its port open, and was it given the same --token-file?",
                    };
                    anyhow::anyhow!("connecting to {host}: {e}; {hint}")
                })?;
                let selected = SelectedDevice { device, description: format!("remote: {host}"), is_gpu: false };
                eprintln!("device {k}{}: {}", if k == 0 { " (main)" } else { "" }, selected.description);
                Ok(selected)
            })
            .collect()
    }
    #[cfg(not(feature = "remote"))]
    {
        let _ = token;
        anyhow::bail!(
            "--hosts {}: this build has no remote devices; build with `cargo build --release --features remote` (here and on every host)",
            hosts.join(",")
        )
    }
}

/// The shared secret in `path`: its first line, without surrounding whitespace; never empty.
/// `option` names the flag in messages.
pub fn read_token(path: &Path, option: &str) -> anyhow::Result<String> {
    // A token is a line; a file of kilobytes is the wrong file.
    let text = ail_data::limits::read_text(path, 4096)
        .with_context(|| format!("{option} {}: cannot read the token (a text file of at most 4096 bytes)", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim();
    anyhow::ensure!(
        !token.is_empty(),
        "{option} {}: the first line is empty; write a secret there, e.g. `head -c 32 /dev/urandom | base64 > {}`",
        path.display(),
        path.display()
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            eprintln!("warning: {option} {}: other users can read the token; `chmod 600 {}`", path.display(), path.display());
        }
    }
    Ok(token.to_string())
}

/// `ail serve`: serves the device `--device` picks to remote clients until Ctrl-C, on `--bind`
/// (loopback unless told), admitting only clients with the token when `--token-file` is given.
/// Any address other than loopback needs a token.
pub fn serve(global: &Global, args: &crate::args::ServeArgs) -> anyhow::Result<()> {
    let address = std::net::SocketAddr::new(args.bind, args.port);
    anyhow::ensure!(
        args.bind.is_loopback() || args.token_file.is_some(),
        "--bind {}: any address other than loopback (127.0.0.1, ::1) lets every machine that reaches it run tensor \
         work here; give --token-file FILE (a shared secret, which clients pass to `ail pretrain --hosts ... --token-file`), \
         or bind 127.0.0.1 and reach it through an SSH tunnel",
        args.bind
    );
    let token = args.token_file.as_deref().map(|path| read_token(path, "--token-file")).transpose()?;
    #[cfg(feature = "remote")]
    {
        let selected = device(global)?;
        let listener = std::net::TcpListener::bind(address)
            .with_context(|| format!("listening on {address} (--bind {} --port {})", args.bind, args.port))?;
        let bound = listener.local_addr().unwrap_or(address);
        let who = if token.is_some() { "clients presenting the token" } else { "any client that reaches it (no --token-file)" };
        eprintln!("serving {} on ws://{bound} to {who} (Ctrl-C stops)", selected.description);
        let server = burn::server::RemoteServer::new([selected.device]);
        let server = match token {
            Some(token) => server.with_authorizer(burn::server::TokenAuthorizer::new(token).map_err(|e| anyhow::anyhow!("--token-file: {e}"))?),
            None => server,
        };
        server
            .serve(burn::server::WebSocketTransport::from_listener(listener))
            .map_err(|e| anyhow::anyhow!("serving on {bound}: {e}"))
    }
    #[cfg(not(feature = "remote"))]
    {
        let _ = (global, token, address);
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
