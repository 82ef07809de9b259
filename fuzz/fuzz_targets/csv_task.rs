//! CSV regression tasks (`ail fit --task csv`): `path,target,...` rows whose paths are read
//! relative to the CSV. The folder holds one real image, `a.png`, so that valid rows load.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("a temporary directory");
    image::RgbImage::from_pixel(5, 7, image::Rgb([200, 30, 10])).save(dir.path().join("a.png")).unwrap();
    let csv = dir.path().join("task.csv");
    std::fs::write(&csv, data).unwrap();
    if let Ok((set, targets)) = ail_core::task::read_csv(&csv, [3, 8, 8]) {
        assert_eq!(set.pixels.len(), set.len() * 3 * 64);
        assert_eq!(targets.len(), set.len());
    }
});
