//! What a computation will hold, estimated before it starts and checked against the memory budget
//! (the machine's memory, `ulimit -v`, or the user's `--max-memory`): a request too large for the
//! machine is refused with the estimate, its parts and the fix, never aborted in an allocation.

use crate::CoreError;

/// The parts of an estimate, in bytes.
#[derive(Debug, Clone)]
pub struct Estimate {
    what: String,
    parts: Vec<(String, f64)>,
}

impl Estimate {
    /// An estimate of what `what` (for example "this run" or "this fit") holds.
    pub fn new(what: impl Into<String>) -> Self {
        Self { what: what.into(), parts: Vec::new() }
    }

    pub fn part(mut self, name: impl Into<String>, bytes: f64) -> Self {
        self.parts.push((name.into(), bytes));
        self
    }

    pub fn total(&self) -> f64 {
        self.parts.iter().map(|(_, b)| b).sum()
    }

    /// Refuses when the total exceeds `limit` bytes (by default the memory budget), naming the
    /// parts and `fix`.
    pub fn check(&self, limit: Option<f64>, fix: &str) -> Result<(), CoreError> {
        let Some(limit) = limit.or_else(|| ail_data::limits::memory_budget().map(|b| b as f64)) else { return Ok(()) };
        let total = self.total();
        if !(total > limit) {
            return Ok(());
        }
        let gib = |b: f64| b / (1u64 << 30) as f64;
        let parts: Vec<String> = self.parts.iter().map(|(name, b)| format!("{name} {:.1} GiB", gib(*b))).collect();
        Err(CoreError::setting(
            "--max-memory",
            format!(
                "is {:.1} GiB, but {} needs about {:.1} GiB ({}): {fix}, or raise --max-memory (GiB)",
                gib(limit),
                self.what,
                gib(total),
                parts.join(", ")
            ),
        ))
    }
}

/// Bytes of `count` images of `[channels, side, side]` held as bytes.
pub fn images_bytes(count: usize, channels: usize, side: usize) -> f64 {
    count as f64 * channels as f64 * side as f64 * side as f64
}

/// Bytes a batch of `batch` images holds in `encoder`'s activations: kept for the backward pass
/// (gradients to the head or to `i`) when `backward`, one layer's worth at a time otherwise.
pub fn batch_bytes(encoder: &crate::encoder::EncoderConfig, batch: usize, backward: bool) -> f64 {
    let per_image = crate::summary::activations_per_image(encoder) as f64 * 4.0;
    batch as f64 * per_image * if backward { 3.0 } else { 1.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_estimate_over_the_limit_names_its_parts_and_the_fix() {
        let e = Estimate::new("this fit").part("images", 3.0 * (1u64 << 30) as f64).part("a batch", (1u64 << 30) as f64);
        assert_eq!(e.total(), 4.0 * (1u64 << 30) as f64);
        assert!(e.check(Some(5.0 * (1u64 << 30) as f64), "lower --batch-size").is_ok());
        let m = e.check(Some(2.0 * (1u64 << 30) as f64), "lower --batch-size").unwrap_err().to_string();
        assert!(m.contains("--max-memory is 2.0 GiB, but this fit needs about 4.0 GiB (images 3.0 GiB, a batch 1.0 GiB): lower --batch-size, or raise --max-memory"), "{m}");
    }
}
