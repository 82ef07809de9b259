//! `ail bound`: Theorem 5.1's guaranteed error of fitted readouts (amortised and plain linear), from
//! the fit.json files of `ail fit`.

use ail_core::bound::{Bound, BoundInputs};
use anyhow::Context;

use crate::args::BoundArgs;
use crate::fit::FitReport;

pub fn run(args: &BoundArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.delta > 0.0 && args.delta < 1.0, "--delta must be in (0, 1)");
    for path in &args.fit {
        let report = FitReport::read(path)?;
        let terms = report.bound.as_ref().with_context(|| {
            format!("{}: no bound terms: the bound is for `ail fit` readouts on classification tasks (not regression, not fine-tuning)", path.display())
        })?;
        let k = report.i.len();
        println!("{} ({}, {}):", path.display(), report.task, if report.learned_i { "learned i" } else { "fixed i" });
        println!(
            "  n = {}, c = {}, X = max ||f(x)|| = {:.4}, B = ||phi|| = {:.4}, M = 1 (ramp loss), delta = {}",
            terms.samples, terms.classes, terms.feature_norm, terms.weight_norm, args.delta
        );
        let inputs = |empirical| BoundInputs {
            empirical,
            weight_norm: terms.weight_norm,
            feature_norm: terms.feature_norm,
            loss_max: 1.0,
            classes: terms.classes,
            samples: terms.samples,
            delta: args.delta,
        };
        let print = |name: &str, b: Bound| {
            println!(
                "  {name:<38} empirical {:.4} + complexity 2 sqrt(2c) X B / sqrt(n) {:.4} + confidence {:.4} = {:.4}",
                b.empirical, b.complexity, b.confidence, b.total
            )
        };
        let plain = terms.ramp_risk.iter().find(|(b, _)| *b == 0).map(|r| r.1).unwrap_or(f64::NAN);
        if !report.learned_i {
            // With i chosen on the training data, the single-extractor bound does not apply.
            print("linear readout, ln(2/delta)", Bound::linear(&inputs(plain)));
        }
        if report.learned_i && k > 0 {
            for &(bits, risk) in terms.ramp_risk.iter().filter(|(b, _)| *b > 0) {
                print(&format!("amortised, {bits}-bit i, |I| = 2^{}", bits as usize * k), Bound::amortised(&inputs(risk), bits, k));
                print("  (union bound as derived, ln(2|I|/delta))", Bound::union_term(&inputs(risk), bits, k));
            }
        }
    }
    Ok(())
}
