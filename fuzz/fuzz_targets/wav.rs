//! WAV files: decoded to mono, then resampled to 16 kHz as the audio reader does.
#![no_main]
use ail_data::audio::{SAMPLE_RATE, decode_wav, resample};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((samples, rate)) = decode_wav(data) {
        assert!(!samples.is_empty() && samples.iter().all(|v| v.is_finite()));
        // Short clips only: the resampler's cost grows with the length.
        if samples.len() <= 4096 && (1000..=192_000).contains(&rate) {
            let out = resample(&samples, rate as f64, SAMPLE_RATE as f64);
            assert!(out.iter().all(|v| v.is_finite()));
        }
    }
});
