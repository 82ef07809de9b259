//! Learning-rate schedule (docs/method.md): linear warm-up from 0 to the base rate, then cosine decay to
//! `min_lr` at step `total` (the last step run, `total - 1`, is one decay step short of it).

/// The learning rate at `step` (0-based) of `total` steps with `warmup` warm-up steps.
pub fn warmup_cosine(step: u64, total: u64, warmup: u64, base_lr: f64, min_lr: f64) -> f64 {
    if step < warmup {
        return base_lr * (step + 1) as f64 / warmup as f64;
    }
    let decay_steps = total.saturating_sub(warmup).max(1);
    let progress = ((step - warmup) as f64 / decay_steps as f64).min(1.0);
    min_lr + 0.5 * (base_lr - min_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine() {
        let lr = |s| warmup_cosine(s, 110, 10, 1.0, 0.0);
        assert!((lr(0) - 0.1).abs() < 1e-12);
        assert!((lr(9) - 1.0).abs() < 1e-12);
        assert!((lr(10) - 1.0).abs() < 1e-12);
        assert!((lr(60) - 0.5).abs() < 1e-12); // halfway through the decay
        assert!(lr(110).abs() < 1e-12);
        assert!((warmup_cosine(1000, 110, 10, 1.0, 0.01) - 0.01).abs() < 1e-12);
        // Monotone decay after warm-up.
        assert!((10..110).all(|s| lr(s + 1) <= lr(s)));
    }
}
