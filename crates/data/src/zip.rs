//! A minimal reader of ZIP archives (stored and deflated entries, the central directory): enough for
//! the official Omniglot zips, with every malformed field reported instead of panicking.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{DataError, Result};

/// One file of an archive.
#[derive(Debug, Clone)]
pub struct ZipEntry {
    pub name: String,
    method: u16,
    compressed_size: usize,
    uncompressed_size: usize,
    local_header: usize,
}

/// An archive held in memory.
pub struct ZipArchive {
    path: PathBuf,
    bytes: Vec<u8>,
    pub entries: Vec<ZipEntry>,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..at + 2).map(|s| u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

impl ZipArchive {
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = crate::limits::read_data_file(path).map_err(|e| DataError::io(path, e))?;
        Self::from_bytes(path, bytes)
    }

    /// Parses the central directory of `bytes` (`path` names it in errors).
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Self> {
        let bad = |found: String| DataError::WrongFormat { path: path.to_path_buf(), expected: "a ZIP archive".into(), found };
        // The end-of-central-directory record: the last "PK\x05\x06" within the final 64 KiB + 22 bytes.
        let tail_start = bytes.len().saturating_sub(65_557);
        let eocd = (tail_start..bytes.len().saturating_sub(21))
            .rev()
            .find(|&i| bytes[i..i + 4] == [0x50, 0x4b, 0x05, 0x06])
            .ok_or_else(|| bad(format!("{} bytes with no end-of-central-directory record ({})", bytes.len(), crate::describe_bytes(&bytes))))?;
        let count = u16_at(&bytes, eocd + 10).unwrap_or(0) as usize;
        let dir_offset = u32_at(&bytes, eocd + 16).unwrap_or(u32::MAX) as usize;
        let mut entries = Vec::with_capacity(count);
        let mut at = dir_offset;
        for index in 0..count {
            let truncated = || bad(format!("central directory entry {index} runs past the end (truncated archive?)"));
            if u32_at(&bytes, at) != Some(0x0201_4b50) {
                return Err(truncated());
            }
            let method = u16_at(&bytes, at + 10).ok_or_else(truncated)?;
            let compressed_size = u32_at(&bytes, at + 20).ok_or_else(truncated)? as usize;
            let uncompressed_size = u32_at(&bytes, at + 24).ok_or_else(truncated)? as usize;
            let name_len = u16_at(&bytes, at + 28).ok_or_else(truncated)? as usize;
            let extra_len = u16_at(&bytes, at + 30).ok_or_else(truncated)? as usize;
            let comment_len = u16_at(&bytes, at + 32).ok_or_else(truncated)? as usize;
            let local_header = u32_at(&bytes, at + 42).ok_or_else(truncated)? as usize;
            let name = bytes.get(at + 46..at + 46 + name_len).ok_or_else(truncated)?;
            entries.push(ZipEntry {
                name: String::from_utf8_lossy(name).into_owned(),
                method,
                compressed_size,
                uncompressed_size,
                local_header,
            });
            at += 46 + name_len + extra_len + comment_len;
        }
        // Entries whose data is shared (several names on one local header) make a small archive
        // decode the same large file many times: a crafted archive, refused.
        let mut headers: Vec<(usize, &str)> = entries.iter().map(|e| (e.local_header, e.name.as_str())).collect();
        headers.sort_unstable();
        if let Some(w) = headers.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(bad(format!("entries `{}` and `{}` share their data (a crafted archive)", w[0].1, w[1].1)));
        }
        let declared: u64 = entries.iter().map(|e| e.uncompressed_size as u64).sum();
        if declared > crate::limits::MAX_ARCHIVE_INFLATED {
            return Err(bad(format!(
                "its entries declare {:.1} GiB inflated in total, more than the {:.0} GiB accepted (a decompression bomb?)",
                crate::limits::gib(declared),
                crate::limits::gib(crate::limits::MAX_ARCHIVE_INFLATED)
            )));
        }
        Ok(Self { path: path.to_path_buf(), bytes, entries })
    }

    /// The uncompressed bytes of `entry`.
    /// Reads one entry within the budget of inflated entries shared by all threads
    /// ([`crate::limits::INFLATING`]): the bytes are counted until the reservation drops, so keep
    /// it as long as the bytes (or what is decoded from them) live.
    pub fn read_reserved(&self, entry: &ZipEntry) -> Result<(Vec<u8>, crate::limits::Reservation<'static>)> {
        let held = crate::limits::INFLATING.reserve(entry.uncompressed_size.max(entry.compressed_size) as u64).map_err(|reason| DataError::WrongFormat {
            path: self.path.join(&entry.name),
            expected: "a readable ZIP entry".into(),
            found: reason,
        })?;
        Ok((self.read(entry)?, held))
    }

    pub fn read(&self, entry: &ZipEntry) -> Result<Vec<u8>> {
        let bad = |found: String| DataError::WrongFormat {
            path: self.path.join(&entry.name),
            expected: "a readable ZIP entry".into(),
            found,
        };
        let at = entry.local_header;
        if u32_at(&self.bytes, at) != Some(0x0403_4b50) {
            return Err(bad("no local header where the directory says (corrupt archive)".into()));
        }
        let name_len = u16_at(&self.bytes, at + 26).unwrap_or(0) as usize;
        let extra_len = u16_at(&self.bytes, at + 28).unwrap_or(0) as usize;
        let start = at + 30 + name_len + extra_len;
        let data = self
            .bytes
            .get(start..start + entry.compressed_size)
            .ok_or_else(|| bad(format!("{} compressed bytes run past the end (truncated archive)", entry.compressed_size)))?;
        match entry.method {
            0 => Ok(data.to_vec()),
            8 => {
                if entry.uncompressed_size as u64 > crate::limits::MAX_INFLATED {
                    return Err(bad(format!(
                        "the directory says it inflates to {} bytes, more than the {:.0} GiB accepted",
                        entry.uncompressed_size,
                        crate::limits::gib(crate::limits::MAX_INFLATED)
                    )));
                }
                // The declared size is only believed up to the data: the buffer grows as it fills.
                let out = crate::limits::read_bounded(flate2::read::DeflateDecoder::new(data), entry.uncompressed_size as u64 + 1)
                    .map_err(|e| bad(format!("deflate: {e}")))?;
                if out.len() != entry.uncompressed_size {
                    return Err(bad(format!("inflated to {} bytes, the directory says {}", out.len(), entry.uncompressed_size)));
                }
                Ok(out)
            }
            m => Err(bad(format!("compression method {m} (only stored and deflate are supported)"))),
        }
    }
}

/// Writes a ZIP of `(name, contents)` with deflated entries (fixtures for tests and examples).
pub fn write_zip(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, contents) in files {
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(contents).expect("writing to memory");
        let data = enc.finish().expect("writing to memory");
        let mut crc = flate2::Crc::new();
        crc.update(contents);
        let offset = out.len() as u32;
        let header = |sig: u32, central: bool| {
            let mut h = Vec::new();
            h.extend(sig.to_le_bytes());
            if central {
                h.extend(20u16.to_le_bytes());
            }
            h.extend([20u16, 0, 8, 0, 0].iter().flat_map(|v| v.to_le_bytes()));
            h.extend(crc.sum().to_le_bytes());
            h.extend((data.len() as u32).to_le_bytes());
            h.extend((contents.len() as u32).to_le_bytes());
            h.extend((name.len() as u16).to_le_bytes());
            h.extend(0u16.to_le_bytes());
            if central {
                h.extend([0u16, 0, 0].iter().flat_map(|v| v.to_le_bytes()));
                h.extend(0u32.to_le_bytes());
                h.extend(offset.to_le_bytes());
            }
            h.extend(name.as_bytes());
            h
        };
        out.extend(header(0x0403_4b50, false));
        out.extend(&data);
        central.extend(header(0x0201_4b50, true));
    }
    let dir_offset = out.len() as u32;
    out.extend(&central);
    out.extend(0x0605_4b50u32.to_le_bytes());
    out.extend([0u16, 0, files.len() as u16, files.len() as u16].iter().flat_map(|v| v.to_le_bytes()));
    out.extend((central.len() as u32).to_le_bytes());
    out.extend(dir_offset.to_le_bytes());
    out.extend(0u16.to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_of_deflated_entries() {
        let bytes = write_zip(&[("a/b.txt", b"hello hello hello"), ("c.bin", &[0, 1, 2, 3])]);
        let zip = ZipArchive::from_bytes(Path::new("t.zip"), bytes).unwrap();
        assert_eq!(zip.entries.len(), 2);
        assert_eq!(zip.entries[0].name, "a/b.txt");
        assert_eq!(zip.read(&zip.entries[0]).unwrap(), b"hello hello hello");
        assert_eq!(zip.read(&zip.entries[1]).unwrap(), vec![0, 1, 2, 3]);
    }

    #[test]
    fn truncated_and_foreign_files_are_named() {
        let bytes = write_zip(&[("a.txt", b"some text that deflates")]);
        let e = ZipArchive::from_bytes(Path::new("t.zip"), b"not a zip at all, just text".to_vec()).err().unwrap().to_string();
        assert!(e.contains("t.zip") && e.contains("ZIP archive"), "{e}");
        // Cut the data: the directory survives only if we keep the tail, so corrupt the sizes instead.
        let mut cut = bytes.clone();
        let n = cut.len();
        cut[n - 3] = 0xff; // the directory offset now points past the end
        let e = ZipArchive::from_bytes(Path::new("t.zip"), cut).err().unwrap().to_string();
        assert!(e.contains("truncated"), "{e}");
    }

    /// The offsets of the central directory's entries.
    fn directory_entries(bytes: &[u8]) -> Vec<usize> {
        (0..bytes.len() - 4).filter(|&i| bytes[i..i + 4] == [0x50, 0x4b, 0x01, 0x02]).collect()
    }

    #[test]
    fn entries_that_share_data_or_declare_more_than_the_limit_are_refused() {
        // Two names on one local header: one file decoded as many times as it is named.
        let mut shared = write_zip(&[("a/x.png", b"first entry's bytes"), ("a/y.png", b"second entry's bytes")]);
        let dir = directory_entries(&shared);
        let first_offset: [u8; 4] = shared[dir[0] + 42..dir[0] + 46].try_into().unwrap();
        shared[dir[1] + 42..dir[1] + 46].copy_from_slice(&first_offset);
        let e = ZipArchive::from_bytes(Path::new("s.zip"), shared).err().unwrap().to_string();
        assert!(e.contains("s.zip") && e.contains("share their data") && e.contains("a/y.png"), "{e}");
        // A directory that declares 4 GiB for a small entry is refused before inflating anything.
        let mut big = write_zip(&[("a.txt", b"some text that deflates, some text that deflates")]);
        let dir = directory_entries(&big);
        big[dir[0] + 24..dir[0] + 28].copy_from_slice(&u32::MAX.to_le_bytes());
        let zip = ZipArchive::from_bytes(Path::new("b.zip"), big).unwrap();
        let e = zip.read(&zip.entries[0]).unwrap_err().to_string();
        assert!(e.contains("b.zip") && e.contains("more than the 1 GiB accepted"), "{e}");
        // Entries of 1 GiB each are each accepted, but 20 of them in one archive are not.
        let files: Vec<(String, Vec<u8>)> = (0..20).map(|k| (format!("e{k}.bin"), vec![k as u8; 16])).collect();
        let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
        let mut many = write_zip(&refs);
        for at in directory_entries(&many) {
            many[at + 24..at + 28].copy_from_slice(&(1u32 << 30).to_le_bytes());
        }
        let e = ZipArchive::from_bytes(Path::new("m.zip"), many).err().unwrap().to_string();
        assert!(e.contains("m.zip") && e.contains("20.0 GiB inflated in total") && e.contains("16 GiB"), "{e}");
    }

    #[test]
    fn a_reserved_read_counts_the_entry_until_it_drops() {
        let bytes = write_zip(&[("a/b.txt", &[7u8; 5000][..])]);
        let zip = ZipArchive::from_bytes(Path::new("t.zip"), bytes).unwrap();
        let (data, held) = zip.read_reserved(&zip.entries[0]).unwrap();
        assert_eq!(data, vec![7u8; 5000]);
        assert!(crate::limits::INFLATING.high_water() >= 5000);
        drop(held);
    }
}
