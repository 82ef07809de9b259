//! Pretraining config files (TOML): parsed, then checked; any text gives a config or an error.
#![no_main]
use ail_core::pretrain::PretrainConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(config) = PretrainConfig::from_toml(text) {
        let _ = config.validate();
    }
});
