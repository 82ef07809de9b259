//! The ZIP reader (Omniglot's archives): the central directory, then every entry's data.
#![no_main]
use ail_data::zip::ZipArchive;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(archive) = ZipArchive::from_bytes("fuzz.zip".as_ref(), data.to_vec()) else { return };
    for entry in &archive.entries {
        let _ = archive.read(entry);
    }
});
