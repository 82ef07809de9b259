//! CIFAR-10 / CIFAR-100 binary records: any bytes give records or an error, never a panic.
#![no_main]
use ail_data::cifar::{Variant, parse_records};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for variant in [Variant::Cifar10, Variant::Cifar100] {
        let (mut pixels, mut labels) = (Vec::new(), Vec::new());
        if parse_records("fuzz.bin".as_ref(), data, variant, &mut pixels, &mut labels).is_ok() {
            assert_eq!(pixels.len(), labels.len() * 3072);
        }
    }
});
