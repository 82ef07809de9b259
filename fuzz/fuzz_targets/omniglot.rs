//! Omniglot as a whole: the images archive, its PNG entries decoded and resized, and the strokes
//! archive matched to them. The input is split at its first `\n--\n` into the two archives.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (images, strokes) = match data.windows(4).position(|w| w == b"\n--\n") {
        Some(at) => (&data[..at], Some(&data[at + 4..])),
        None => (data, None),
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let images_zip = dir.path().join("images_background.zip");
    std::fs::write(&images_zip, images).unwrap();
    let strokes_zip = strokes.map(|s| {
        let path = dir.path().join("strokes_background.zip");
        std::fs::write(&path, s).unwrap();
        path
    });
    if let Ok(set) = ail_data::omniglot::read(&images_zip, strokes_zip.as_deref(), 8, 1) {
        assert_eq!(set.images.pixels.len(), set.images.len() * 64);
    }
});
