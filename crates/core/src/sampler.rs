//! Which descriptor a pretraining step uses (docs/method.md, "Pretraining"): one descriptor per step, drawn uniformly
//! from the family's trained set, or a fixed one for the plain baselines (default `1,1`,
//! appearance-only `0,1`, spatial-only `1,0`).
//!
//! The draw depends only on `(seed, step)`, so a resumed run and every data-parallel replica draw the
//! same descriptor at the same step (the authors' release draws it per process).

use crate::{CoreError, Descriptor, Family};

/// `--invariances`: a family's trained set, or one fixed descriptor. Written in configs as its text
/// (`groups`, `individual`, `audio`, `fixed:1,0`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Invariances {
    Family(Family),
    Fixed(Family, Descriptor),
}

impl Invariances {
    /// Parses `groups`, `individual`, `audio`, or `fixed:1,0` (K=2) / `fixed:1,0,1,1,0` (K=5).
    pub fn parse(text: &str) -> Result<Self, CoreError> {
        let bad = |reason: String| CoreError::Descriptor { input: text.to_string(), reason };
        match text {
            "groups" => Ok(Invariances::Family(Family::Groups)),
            "individual" => Ok(Invariances::Family(Family::Individual)),
            "audio" => Ok(Invariances::Family(Family::Audio)),
            _ => {
                let values = text.strip_prefix("fixed:").ok_or_else(|| {
                    bad("use groups, individual, audio, or fixed:<values> such as fixed:1,1".into())
                })?;
                let k = values.split(',').count();
                let family = Family::from_num_invariances(k)
                    .ok_or_else(|| bad(format!("{k} values match no family (2, 5 or 7)")))?;
                Ok(Invariances::Fixed(family, Descriptor::parse(values, family)?))
            }
        }
    }

    pub fn family(&self) -> Family {
        match self {
            Invariances::Family(f) | Invariances::Fixed(f, _) => *f,
        }
    }

    /// The descriptors a run trains, in a fixed order (their indices name queues and heads).
    pub fn trained(&self) -> Vec<Descriptor> {
        match self {
            Invariances::Family(f) => f.trained(),
            Invariances::Fixed(_, d) => vec![d.clone()],
        }
    }

    /// The index into [`Invariances::trained`] of the descriptor of `step`.
    pub fn draw(&self, seed: u64, step: u64) -> usize {
        let n = match self {
            Invariances::Family(f) => f.num_trained() as u64,
            Invariances::Fixed(..) => 1,
        };
        (splitmix64(seed ^ splitmix64(step)) % n) as usize
    }
}

impl Invariances {
    /// With probability `p`, the descriptor of `step` is not a trained one but a point drawn
    /// uniformly from `[0, 1]^K` (`fractional_draws`; docs/method.md, "Fractional descriptors").
    /// Like [`Invariances::draw`], it depends only on `(seed, step)`; `p = 0` never draws one, and
    /// the trained descriptors' draws are the same whatever `p` is.
    pub fn draw_fractional(&self, seed: u64, step: u64, p: f64) -> Option<Descriptor> {
        const SALT: u64 = 0x6672_6163_7469_6f6e; // "fraction"
        let unit = |x: u64| (x >> 11) as f64 / (1u64 << 53) as f64;
        let hash = |j: u64| splitmix64(seed ^ SALT ^ splitmix64(step ^ splitmix64(j)));
        if p <= 0.0 || unit(hash(0)) >= p {
            return None;
        }
        let k = self.family().num_invariances() as u64;
        // 24 bits: exact in f32, so every value lies in [0, 1).
        Some(Descriptor((1..=k).map(|j| (hash(j) >> 40) as f32 / (1u32 << 24) as f32).collect()))
    }
}

impl Default for Invariances {
    fn default() -> Self {
        Invariances::Family(Family::Groups)
    }
}

impl std::fmt::Display for Invariances {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Invariances::Family(Family::Groups) => f.write_str("groups"),
            Invariances::Family(Family::Individual) => f.write_str("individual"),
            Invariances::Family(Family::Audio) => f.write_str("audio"),
            Invariances::Fixed(_, d) => write!(f, "fixed:{d}"),
        }
    }
}

impl std::str::FromStr for Invariances {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, CoreError> {
        Self::parse(s)
    }
}

impl TryFrom<String> for Invariances {
    type Error = CoreError;
    fn try_from(s: String) -> Result<Self, CoreError> {
        Self::parse(&s)
    }
}

impl From<Invariances> for String {
    fn from(i: Invariances) -> String {
        i.to_string()
    }
}

/// SplitMix64 (Steele et al. 2014): a well-mixed 64-bit hash of `x`.
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_families_and_fixed_descriptors() {
        assert_eq!(Invariances::parse("groups").unwrap().trained().len(), 3);
        assert_eq!(Invariances::parse("individual").unwrap().trained().len(), 26);
        let fixed = Invariances::parse("fixed:0,1").unwrap();
        assert_eq!(fixed, Invariances::Fixed(Family::Groups, Descriptor(vec![0.0, 1.0])));
        assert_eq!(fixed.trained(), vec![Descriptor(vec![0.0, 1.0])]);
        assert_eq!(Invariances::parse("fixed:1,0,0,1,1").unwrap().family(), Family::Individual);
        let msg = Invariances::parse("fixed:1,0,1").unwrap_err().to_string();
        assert!(msg.contains("3 values match no family"), "{msg}");
        let msg = Invariances::parse("spatial").unwrap_err().to_string();
        assert!(msg.contains("fixed:1,1"), "{msg}");
    }

    #[test]
    fn draws_are_uniform_and_depend_only_on_seed_and_step() {
        let inv = Invariances::parse("individual").unwrap();
        let draws: Vec<usize> = (0..26_000).map(|s| inv.draw(7, s)).collect();
        let mut counts = [0usize; 26];
        draws.iter().for_each(|&d| counts[d] += 1);
        assert!(counts.iter().all(|&c| (850..1150).contains(&c)), "{counts:?}");
        assert_eq!(inv.draw(7, 123), draws[123]);
        assert!((0..50).any(|s| inv.draw(8, s) != draws[s as usize]));
        assert!((0..100).all(|s| Invariances::parse("fixed:1,1").unwrap().draw(7, s) == 0));
        // Fractional draws: about p of the steps, uniform over [0, 1]^K, replayable, none at p = 0.
        let drawn: Vec<Option<Descriptor>> = (0..4000).map(|s| inv.draw_fractional(7, s, 0.25)).collect();
        let values: Vec<f32> = drawn.iter().flatten().flat_map(|d| d.values().to_vec()).collect();
        let share = drawn.iter().flatten().count() as f64 / 4000.0;
        assert!((share - 0.25).abs() < 0.03, "{share}");
        assert_eq!(values.len() % 5, 0);
        assert!(values.iter().all(|v| (0.0..1.0).contains(v)));
        let mean = values.iter().sum::<f32>() / values.len() as f32;
        let below = values.iter().filter(|&&v| v < 0.25).count() as f32 / values.len() as f32;
        assert!((mean - 0.5).abs() < 0.02 && (below - 0.25).abs() < 0.03, "{mean} {below}");
        assert_eq!(inv.draw_fractional(7, 11, 0.25), drawn[11]);
        assert!((0..200).all(|s| inv.draw_fractional(7, s, 0.0).is_none()));
        assert!((0..200).all(|s| inv.draw_fractional(7, s, 1.0).is_some()));
    }
}
