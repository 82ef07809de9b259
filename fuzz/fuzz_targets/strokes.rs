//! Omniglot stroke files: the first pen-down point, or an error.
#![no_main]
use ail_data::omniglot::first_pen_down;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok([x, y]) = first_pen_down(&String::from_utf8_lossy(data)) {
        assert!(x.is_finite() && y.is_finite());
    }
});
