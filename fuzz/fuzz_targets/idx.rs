//! IDX image/label pairs (gzipped or not). The input is split in two at its first `\n--\n`
//! (images, then labels); any bytes give an image set or an error, never a panic.
#![no_main]
use ail_data::idx;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let at = data.windows(4).position(|w| w == b"\n--\n");
    let (images, labels) = match at {
        Some(at) => (&data[..at], &data[at + 4..]),
        None => (data, &[][..]),
    };
    let path: &std::path::Path = "fuzz-idx".as_ref();
    let Ok(images) = idx::gunzip_if_needed(path, images.to_vec()) else { return };
    let Ok(labels) = idx::gunzip_if_needed(path, labels.to_vec()) else { return };
    let (Ok(images), Ok(labels)) = (idx::parse(path, &images, 3), idx::parse(path, &labels, 1)) else { return };
    if let Ok(set) = idx::from_arrays(path, path, images, labels, Vec::new()) {
        assert_eq!(set.pixels.len(), set.len() * set.image_len());
    }
});
