//! Recognise common file formats from their first bytes, so that an error can say what a file
//! actually is ("found a PNG image") rather than only what it is not.

/// A short human description of what `bytes` (the start of a file) looks like.
pub fn describe_bytes(bytes: &[u8]) -> String {
    let n = bytes.len();
    if n == 0 {
        return "an empty file".to_string();
    }
    let kind = if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        "a PNG image"
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        "a JPEG image"
    } else if bytes.starts_with(b"GIF8") {
        "a GIF image"
    } else if bytes.starts_with(&[0x1f, 0x8b]) {
        "gzip-compressed data"
    } else if bytes.starts_with(b"PK\x03\x04") {
        "a zip archive"
    } else if n >= 4 && bytes[0] == 0 && bytes[1] == 0 && (0x08..=0x0e).contains(&bytes[2]) {
        "an IDX file"
    } else if bytes.len() >= 262 && &bytes[257..262] == b"ustar" {
        "a tar archive"
    } else if bytes.iter().take(512).all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace()) {
        "text"
    } else {
        "unrecognised binary data"
    };
    kind.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_common_signatures() {
        assert_eq!(describe_bytes(b"\x89PNG\r\n\x1a\n0000"), "a PNG image");
        assert_eq!(describe_bytes(&[0xff, 0xd8, 0xff, 0xe0]), "a JPEG image");
        assert_eq!(describe_bytes(&[0x1f, 0x8b, 8, 0]), "gzip-compressed data");
        assert_eq!(describe_bytes(&[0, 0, 8, 3, 0, 0]), "an IDX file");
        assert_eq!(describe_bytes(b"hello,world\n"), "text");
        assert_eq!(describe_bytes(&[]), "an empty file");
        assert_eq!(describe_bytes(&[7, 200, 3, 1]), "unrecognised binary data");
    }
}
