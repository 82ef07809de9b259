//! Multi-node data parallelism (`--features remote`): two `ail serve` processes on 127.0.0.1 play
//! two machines; `ail pretrain --hosts` drives them and must train exactly as local shards do.
//!
//! Run with `cargo test --release -p ail-cli --features remote --test remote`.
#![cfg(feature = "remote")]

use std::net::{IpAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{ail, losses, stderr};

/// An `ail serve` process, killed when dropped (a failing test leaves no server behind).
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn serve(port: u16) -> Server {
    serve_with(port, &[], None).0
}

/// `ail serve --port PORT` plus `extra` arguments, its stderr going to `log` when given; waits until
/// it listens on loopback and returns it with the first line it printed.
fn serve_with(port: u16, extra: &[&str], log: Option<&Path>) -> (Server, String) {
    let stderr = match log {
        Some(path) => Stdio::from(std::fs::File::create(path).unwrap()),
        None => Stdio::null(),
    };
    let child = Command::new(env!("CARGO_BIN_EXE_ail"))
        .args(["--device", "cpu", "serve", "--port", &port.to_string()])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("ail serve starts");
    let server = Server(child);
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(30), "ail serve did not listen on port {port} within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    let said = log.map(|path| std::fs::read_to_string(path).unwrap()).unwrap_or_default();
    (server, said)
}

#[test]
fn two_nodes_on_loopback_train_like_two_local_shards() {
    let dir = tempfile::tempdir().unwrap();
    common::tiny_pretraining_setup(dir.path(), &[("steps", "6"), ("checkpoint_every", "3"), ("monitor.every", "0"), ("monitor.bank", "32"), ("monitor.queries", "8")]);
    let (p1, p2) = (free_port(), free_port());
    let _servers = (serve(p1), serve(p2));
    let hosts = format!("ws://127.0.0.1:{p1},ws://127.0.0.1:{p2}");
    let remote = ail(&["pretrain", "--config", "run.toml", "--data", "imgs", "--hosts", &hosts, "--out", "remote"], dir.path());
    assert!(remote.status.success(), "{}", stderr(&remote));
    let err = stderr(&remote);
    assert!(err.contains(&format!("device 1: remote: ws://127.0.0.1:{p2}")) && err.contains("2 shards of 8 images"), "{err}");
    // The same run with both shards on the first node, in turn.
    let one = ail(&["pretrain", "--config", "run.toml", "--data", "imgs", "--hosts", &format!("ws://127.0.0.1:{p1}"), "--shards", "2", "--out", "one"], dir.path());
    assert!(one.status.success(), "{}", stderr(&one));
    let (a, b) = (losses(&dir.path().join("remote/metrics.csv")), losses(&dir.path().join("one/metrics.csv")));
    assert_eq!(a.len(), 6);
    for ((s1, l1), (s2, l2)) in a.iter().zip(&b) {
        assert_eq!(s1, s2);
        assert!((l1 - l2).abs() < 1e-5, "step {s1}: two nodes {l1}, one node with two shards {l2}");
    }
    // The checkpoint written through the remote devices continues locally.
    assert!(dir.path().join("remote/checkpoints/step-0000006/model.safetensors").exists());
    let more = ail(&["pretrain", "--device", "cpu", "--out", "remote", "--resume", "--steps", "8"], dir.path());
    assert!(more.status.success() && stderr(&more).contains("at step 6"), "{}", stderr(&more));
    assert_eq!(losses(&dir.path().join("remote/metrics.csv")).len(), 8);
}

#[test]
fn an_unreachable_host_is_named() {
    let dir = tempfile::tempdir().unwrap();
    common::tiny_pretraining_setup(dir.path(), &[("steps", "6"), ("checkpoint_every", "3"), ("monitor.every", "0"), ("monitor.bank", "32"), ("monitor.queries", "8")]);
    let port = free_port(); // nothing listens there
    let out = ail(&["pretrain", "--config", "run.toml", "--data", "imgs", "--hosts", &format!("ws://127.0.0.1:{port}"), "--out", "x"], dir.path());
    assert!(!out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains(&format!("connecting to ws://127.0.0.1:{port}")) && err.contains("ail serve"), "{err}");
}

/// This machine's address on its default route, if it has one (nothing is sent).
fn outward_address() -> Option<IpAddr> {
    let socket = UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("10.255.255.255:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[test]
fn a_server_listens_on_loopback_unless_told() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (_server, said) = serve_with(port, &[], Some(&dir.path().join("serve.log")));
    assert!(said.contains(&format!("on ws://127.0.0.1:{port} to any client")), "{said}");
    match outward_address() {
        Some(ip) => assert!(
            TcpStream::connect_timeout(&(ip, port).into(), Duration::from_secs(2)).is_err(),
            "ail serve without --bind is reachable on {ip}:{port}"
        ),
        None => eprintln!("this machine has no address but loopback: only the printed address is checked"),
    }
}

#[test]
fn only_clients_with_the_token_are_served() {
    let dir = tempfile::tempdir().unwrap();
    common::tiny_pretraining_setup(dir.path(), &[("steps", "2"), ("checkpoint_every", "2"), ("monitor.every", "0"), ("monitor.bank", "32"), ("monitor.queries", "8")]);
    std::fs::write(dir.path().join("token"), "s3cret-of-the-cluster\n").unwrap();
    std::fs::write(dir.path().join("wrong"), "not-the-secret\n").unwrap();
    let port = free_port();
    // Every interface, as a cluster node would; the token is then required.
    let (_server, said) =
        serve_with(port, &["--bind", "0.0.0.0", "--token-file", &dir.path().join("token").display().to_string()], Some(&dir.path().join("serve.log")));
    assert!(said.contains(&format!("on ws://0.0.0.0:{port} to clients presenting the token")), "{said}");
    let host = format!("ws://127.0.0.1:{port}");
    for (name, extra) in [("none", vec![]), ("wrong", vec!["--token-file", "wrong"])] {
        let mut args = vec!["pretrain", "--config", "run.toml", "--data", "imgs", "--hosts", host.as_str(), "--out", name];
        args.extend(extra);
        let out = ail(&args, dir.path());
        assert!(!out.status.success(), "a client with token `{name}` trained");
        let err = stderr(&out);
        assert!(err.contains(&format!("connecting to {host}")) && err.contains("rejected the credential") && err.contains("--token-file"), "{err}");
        assert!(!dir.path().join(name).join("checkpoints").exists(), "{name}: a refused client wrote a checkpoint");
    }
    let out = ail(&["pretrain", "--config", "run.toml", "--data", "imgs", "--hosts", &host, "--token-file", "token", "--out", "right"], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(losses(&dir.path().join("right/metrics.csv")).len(), 2);
    assert!(dir.path().join("right/checkpoints/step-0000002/model.safetensors").exists());
}
