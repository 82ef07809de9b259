//! Checkpoint directories: `checkpoint.json` and `model.safetensors` (and the optimiser state). The
//! input is split at its first `\n--\n` into the JSON and the tensors (and at a second one into the
//! optimiser state); they are written to a temporary directory and loaded on the CPU backend.
#![no_main]
use ail_core::checkpoint;
use burn::prelude::Device;
use libfuzzer_sys::fuzz_target;

fn split(data: &[u8]) -> (&[u8], &[u8]) {
    match data.windows(4).position(|w| w == b"\n--\n") {
        Some(at) => (&data[..at], &data[at + 4..]),
        None => (data, &[]),
    }
}

fuzz_target!(|data: &[u8]| {
    let (json, rest) = split(data);
    let (tensors, optimizer) = split(rest);
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(dir.path().join(checkpoint::META_FILE), json).unwrap();
    std::fs::write(dir.path().join(checkpoint::TENSORS_FILE), tensors).unwrap();
    std::fs::write(dir.path().join(checkpoint::OPTIMIZER_FILE), optimizer).unwrap();
    let _ = checkpoint::read_meta(dir.path());
    let _ = checkpoint::load(dir.path(), &Device::flex());
});
