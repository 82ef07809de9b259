//! One budget for untrusted input, applied where data enter: every reader checks what a file
//! declares (sizes, dimensions, sample rates) against these bounds before it allocates, and says
//! which file broke which bound.

/// The largest side of an IDX image accepted, in pixels (IDX images are resized as they are, so a
/// strip of 1 x 4,000,000 would become a huge intermediate; PNG and JPEG images are cropped to
/// their centre square first and are bounded by [`MAX_IMAGE_PIXELS`] alone).
pub const MAX_IMAGE_SIDE: u64 = 16_384;

/// The most pixels one decoded image may hold (8192 x 8192): what one decoding thread allocates
/// stays near 200 MB for RGB, and the crop copy beside it.
pub const MAX_IMAGE_PIXELS: u64 = 1 << 26;

/// The largest allocation one decoder may make (the image crate's own limit, kept per image).
pub const MAX_DECODE_ALLOC: u64 = 512 << 20;

/// The most bytes one gzip stream or ZIP entry may inflate to.
pub const MAX_INFLATED: u64 = 1 << 30;

/// The most bytes a file of settings or state may hold (a run's `config.json` and `training.json`, a
/// `--config` TOML, a task's CSV): far above any real one, far below what would hurt.
pub const MAX_TEXT_FILE: u64 = 64 << 20;

/// Reads the file `path` whole when it holds at most `limit` bytes (its size is checked before
/// anything is reserved); a larger file is an `InvalidData` error that says so.
pub fn read_file(path: &std::path::Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    if len > limit {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{len} bytes, more than the {limit} accepted")));
    }
    let mut out = Vec::with_capacity(len as usize);
    file.take(limit).read_to_end(&mut out)?;
    Ok(out)
}

/// [`read_file`] as UTF-8 text.
pub fn read_text(path: &std::path::Path, limit: u64) -> std::io::Result<String> {
    String::from_utf8(read_file(path, limit)?).map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// Sample rates accepted for audio: telephone quality to studio quality.
pub const SAMPLE_RATES: std::ops::RangeInclusive<u32> = 1_000..=384_000;

/// The memory this process may use: the smaller of the machine's physical memory and the
/// address-space limit (`ulimit -v`), where the system says (Linux); `None` elsewhere.
pub fn memory_budget() -> Option<u64> {
    let physical = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| {
        let kib: u64 = t.lines().find_map(|l| l.strip_prefix("MemTotal:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kib * 1024)
    });
    let address_space = std::fs::read_to_string("/proc/self/limits").ok().and_then(|t| {
        let line = t.lines().find(|l| l.starts_with("Max address space"))?;
        line["Max address space".len()..].split_whitespace().next()?.parse::<u64>().ok()
    });
    match (physical, address_space) {
        (Some(p), Some(a)) => Some(p.min(a)),
        (p, a) => p.or(a),
    }
}

/// Why [`read_bounded`] stopped.
#[derive(Debug, Clone, PartialEq)]
pub enum Unbounded {
    /// The stream is damaged or ends early.
    Damaged(String),
    /// It holds more than the limit, or more than memory allows.
    TooLarge(String),
}

impl std::fmt::Display for Unbounded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unbounded::Damaged(s) | Unbounded::TooLarge(s) => f.write_str(s),
        }
    }
}

/// Reads `reader` to its end into memory, refusing (never aborting) past `limit` bytes or past what
/// the memory budget leaves: the buffer grows with `try_reserve`, so a failed allocation is an
/// error. The error says which bound was hit.
pub fn read_bounded(mut reader: impl std::io::Read, limit: u64) -> Result<Vec<u8>, Unbounded> {
    // A quarter of the budget: the buffer may briefly exist twice while it grows.
    let limit = limit.min(memory_budget().map_or(u64::MAX, |b| b / 4));
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut chunk).map_err(|e| Unbounded::Damaged(format!("damaged or truncated ({e})")))?;
        if n == 0 {
            return Ok(out);
        }
        if (out.len() + n) as u64 > limit {
            return Err(Unbounded::TooLarge(format!("it inflates to more than {:.2} GiB, the most accepted (a decompression bomb?)", gib(limit))));
        }
        out.try_reserve(n).map_err(|_| Unbounded::TooLarge(format!("not enough memory to hold {:.2} GiB of inflated data", gib((out.len() + n) as u64))))?;
        out.extend_from_slice(&chunk[..n]);
    }
}

/// `bytes` in GiB, for messages.
pub fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_budget_is_known_here_and_positive() {
        if cfg!(target_os = "linux") {
            assert!(super::memory_budget().is_some_and(|b| b > 1 << 20));
        }
    }
}
