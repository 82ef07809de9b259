//! WAV files at any sample rate and length: decoded to mono and resampled to 16 kHz as the audio
//! reader does. Whatever the header declares, the clip that comes out is at most ten minutes long.
#![no_main]
use ail_data::audio::{MAX_SECONDS, SAMPLE_RATE, decode_wav_16k};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(samples) = decode_wav_16k(data) {
        assert!(samples.len() as f64 <= MAX_SECONDS * SAMPLE_RATE as f64 + 1.0, "{} samples", samples.len());
        assert!(samples.iter().all(|v| v.is_finite()));
    }
});
