//! The page's encoder exports (`ail export --web`): magic, version, JSON description and tensors,
//! loaded into an encoder on the CPU backend as the page does.
#![no_main]
use ail_core::checkpoint::load_web;
use burn::prelude::Device;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = load_web(data, "fuzz.ailweb", &Device::flex());
});
