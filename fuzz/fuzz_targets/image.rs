//! One ImageFolder entry (PNG or JPEG bytes), decoded and resized as the folder reader does.
#![no_main]
use ail_data::folder::decode_bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for (side, channels) in [(32, 3), (28, 1)] {
        if let Ok(pixels) = decode_bytes(data, side, channels) {
            assert_eq!(pixels.len(), side * side * channels);
        }
    }
});
