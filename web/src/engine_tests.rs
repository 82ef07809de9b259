//! Tests of the page's engine: its size caps, nearest neighbours, and the bounds on dropped images.

use super::*;

const TINY: &[u8] = include_bytes!("../tests/fixtures/tiny.ailweb");

/// `bytes` with its JSON description edited by `edit`.
fn with_description(bytes: &[u8], edit: impl Fn(String) -> String) -> Vec<u8> {
    let len = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
    let json = edit(String::from_utf8(bytes[12..12 + len].to_vec()).unwrap());
    let mut out = bytes[..8].to_vec();
    out.extend((json.len() as u32).to_le_bytes());
    out.extend(json.as_bytes());
    out.extend(&bytes[12 + len..]);
    out
}

/// A PNG (signature, IHDR, an empty IDAT, IEND) declaring `w x h` grey pixels; no image data.
fn png_header(w: u32, h: u32) -> Vec<u8> {
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 == 1 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }
    let chunk = |out: &mut Vec<u8>, kind: &[u8], data: &[u8]| {
        let mut body = kind.to_vec();
        body.extend(data);
        out.extend((data.len() as u32).to_be_bytes());
        out.extend(&body);
        out.extend(crc32(&body).to_be_bytes());
    };
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 0, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut out, b"IHDR", &ihdr);
    // The reader looks for the first data chunk before it reports the size.
    chunk(&mut out, b"IDAT", &[]);
    chunk(&mut out, b"IEND", &[]);
    out
}

#[test]
fn exports_too_large_for_a_tab_are_refused_before_anything_is_built() {
    let device = Device::flex();
    let err = open(&vec![0u8; MAX_EXPORT_BYTES + 1], "huge.ailweb", &device).err().unwrap();
    assert!(err.contains("huge.ailweb") && err.contains("more than the 128 MB"), "{err}");
    // An encoder of 4096 x 4096 images: refused from its description (its probes would take
    // tens of gigabytes).
    let big = with_description(TINY, |j| j.replace("\"image_size\":16", "\"image_size\":4096"));
    let err = open(&big, "big.ailweb", &device).err().unwrap();
    assert!(err.contains("big.ailweb") && err.contains("4096x4096") && err.contains("at most 224x224"), "{err}");
    // The fixture itself opens.
    assert!(open(TINY, "tiny.ailweb", &device).is_ok());
}

#[test]
fn nearest_neighbours_are_by_centred_cosine() {
    // Four points in 2-d; centring moves the mean (1, 1) to the origin.
    let f = [2.0, 1.1, 1.9, 1.3, 0.0, 1.0, 0.1, 0.6];
    let nn = nearest(&f, 4, 2, 2);
    assert_eq!(nn.len(), 8);
    // 0 and 1 point the same way from the mean, 2 and 3 the opposite way.
    assert_eq!(&nn[0..2], &[1, 3]);
    assert_eq!(&nn[2..4], &[0, 2]);
    assert_eq!(nn[4], 3);
    assert_eq!(nn[6], 2);
    // Never more neighbours than other rows, never the row itself.
    let nn = nearest(&f[..4], 2, 2, 5);
    assert_eq!(nn, vec![1, 0]);
}

#[test]
fn dropped_images_are_bounded_before_decoding() {
    assert!(check_dropped(&png_header(640, 480), "cat.png").is_ok());
    let err = check_dropped(&png_header(20_000, 20_000), "poster.png").unwrap_err();
    assert!(err.contains("poster.png") && err.contains("20000x20000") && err.contains("16 megapixels"), "{err}");
    let err = check_dropped(&vec![0u8; MAX_DROPPED_BYTES + 1], "big.raw").unwrap_err();
    assert!(err.contains("big.raw") && err.contains("more than the 32 MB"), "{err}");
    let err = check_dropped(b"GIF89a....", "anim.gif").unwrap_err();
    assert!(err.contains("anim.gif") && err.contains("not a PNG or JPEG"), "{err}");
}
