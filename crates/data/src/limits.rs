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

/// The largest image file read (PNG or JPEG, before decoding): a file that size is not a photo but
/// a mistake, or `/dev/zero`.
pub const MAX_IMAGE_FILE: u64 = 256 << 20;

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
    let mut out = Vec::new();
    out.try_reserve_exact(len as usize).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::OutOfMemory, format!("{len} bytes do not fit in the memory left to this process"))
    })?;
    file.take(limit).read_to_end(&mut out)?;
    Ok(out)
}

/// Reads a data file (a CIFAR batch, an IDX file, a ZIP archive) whole: at most half the memory
/// budget, so that what is decoded from it still fits beside it.
pub fn read_data_file(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    let Some(budget) = memory_budget() else { return read_file(path, u64::MAX) };
    read_file(path, budget / 2).map_err(|e| match e.kind() {
        std::io::ErrorKind::InvalidData => std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{e}: half the memory budget of {:.2} GiB (raise it with --max-memory GiB, or free memory)", gib(budget)),
        ),
        _ => e,
    })
}

/// [`read_file`] as UTF-8 text.
pub fn read_text(path: &std::path::Path, limit: u64) -> std::io::Result<String> {
    String::from_utf8(read_file(path, limit)?).map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// Sample rates accepted for audio: telephone quality to studio quality.
pub const SAMPLE_RATES: std::ops::RangeInclusive<u32> = 1_000..=384_000;

/// The memory this process may use: the smallest of the machine's physical memory, the
/// address-space limit (`ulimit -v`), where the system says (Linux), and the user's ceiling
/// ([`set_memory_ceiling`]); `None` when none is known.
/// The user's ceiling (`--max-memory`), when set: [`memory_budget`] never exceeds it.
static CEILING: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Lowers [`memory_budget`] to `bytes` for the rest of the process (`--max-memory`).
pub fn set_memory_ceiling(bytes: u64) {
    CEILING.store(bytes.max(1), std::sync::atomic::Ordering::Relaxed);
}

/// Whether the budget comes from the user's ceiling rather than the machine.
pub fn memory_ceiling() -> Option<u64> {
    Some(CEILING.load(std::sync::atomic::Ordering::Relaxed)).filter(|&c| c > 0)
}

pub fn memory_budget() -> Option<u64> {
    let machine = machine_memory();
    match (machine, memory_ceiling()) {
        (Some(m), Some(c)) => Some(m.min(c)),
        (m, c) => m.or(c),
    }
}

fn machine_memory() -> Option<u64> {
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

/// What one process may hold at once in inflated ZIP entries across all its threads, and, apart,
/// in images being decoded: each at least twice the largest single item, so that one item never
/// waits for itself, and independent of the thread count (64 threads decoding 8192 x 8192 images
/// would otherwise hold 64 times one image).
pub const MAX_INFLATING: u64 = 2 * MAX_INFLATED;
/// See [`MAX_INFLATING`]; the largest decode holds `8 x MAX_IMAGE_PIXELS` bytes twice (decoded,
/// cropped), 1 GiB.
pub const MAX_DECODING: u64 = 2 << 30;

/// The declared ZIP entries' inflated sizes summed over one archive: the bound on the work (and
/// the output) one archive may ask for.
pub const MAX_ARCHIVE_INFLATED: u64 = 16 << 30;

/// A budget of bytes shared by every thread of the process: a thread reserves what an item will
/// hold before it allocates, waits while others hold too much, and gives it back when the
/// [`Reservation`] drops. Pools are never nested in the other order ([`INFLATING`] may be held
/// while waiting for [`DECODING`], never the reverse), so no thread waits for itself.
pub struct Pool {
    name: &'static str,
    capacity: u64,
    state: std::sync::Mutex<PoolState>,
    freed: std::sync::Condvar,
}

#[derive(Default)]
struct PoolState {
    used: u64,
    high_water: u64,
}

/// Inflated ZIP entries in flight.
pub static INFLATING: Pool = Pool::new("inflated archive entries", MAX_INFLATING);
/// Images being decoded.
pub static DECODING: Pool = Pool::new("images being decoded", MAX_DECODING);

impl Pool {
    pub const fn new(name: &'static str, capacity: u64) -> Self {
        Self { name, capacity, state: std::sync::Mutex::new(PoolState { used: 0, high_water: 0 }), freed: std::sync::Condvar::new() }
    }

    /// Reserves `bytes`, waiting while other threads hold too much; refuses a single item larger
    /// than the whole pool.
    pub fn reserve(&self, bytes: u64) -> Result<Reservation<'_>, String> {
        if bytes > self.capacity {
            return Err(format!("it needs {:.2} GiB at once, more than the {:.2} GiB allowed for {}", gib(bytes), gib(self.capacity), self.name));
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while state.used + bytes > self.capacity {
            state = self.freed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        state.used += bytes;
        state.high_water = state.high_water.max(state.used);
        Ok(Reservation { pool: self, bytes })
    }

    /// The most bytes held at once so far.
    pub fn high_water(&self) -> u64 {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).high_water
    }
}

/// Bytes held in a [`Pool`] until dropped.
#[must_use = "the bytes are given back when the reservation drops"]
pub struct Reservation<'a> {
    pool: &'a Pool,
    bytes: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut state = self.pool.state.lock().unwrap_or_else(|e| e.into_inner());
        state.used -= self.bytes;
        drop(state);
        self.pool.freed.notify_all();
    }
}

/// `bytes` in GiB, for messages.
pub fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

#[cfg(test)]
mod tests {
    use super::Pool;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn a_pool_makes_threads_wait_for_each_other_and_refuses_what_never_fits() {
        static POOL: Pool = Pool::new("test items", 100);
        let first = POOL.reserve(60).unwrap();
        let (tx, rx) = mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let held = POOL.reserve(60).unwrap();
            tx.send(()).unwrap();
            drop(held);
        });
        // 60 + 60 > 100: the second waits while the first holds its bytes...
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err(), "the second reservation did not wait");
        drop(first);
        // ...and goes on once they are given back.
        rx.recv_timeout(Duration::from_secs(10)).expect("the second reservation proceeds after the first drops");
        waiter.join().unwrap();
        assert_eq!(POOL.high_water(), 60);
        let e = POOL.reserve(101).err().unwrap();
        assert!(e.contains("more than the") && e.contains("test items"), "{e}");
        // Nothing is left held: the whole pool is available again.
        drop(POOL.reserve(100).unwrap());
    }

    #[test]
    fn the_budget_is_known_here_and_positive() {
        if cfg!(target_os = "linux") {
            assert!(super::memory_budget().is_some_and(|b| b > 1 << 20));
        }
    }
}
