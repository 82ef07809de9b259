//! Invariance descriptors `i` in `[0, 1]^K` and their families (paper, Section 3.1; docs/method.md,
//! "Invariance descriptors").
//!
//! | family       | K | entries                                                        | trained set        |
//! |--------------|---|----------------------------------------------------------------|--------------------|
//! | `Groups`     | 2 | spatial, appearance                                            | 3 (10, 01, 11)     |
//! | `Individual` | 5 | resized crop, horizontal flip, colour jitter, grayscale, blur  | 26 (>= two ones)   |
//! | `Audio`      | 7 | pitch, fade in, fade out, noise, time mask, time shift, stretch | 120 (>= two ones) |
//!
//! The all-zero descriptor is never trained.

use serde::{Deserialize, Serialize};

use crate::AugmentError;

/// A family of invariance descriptors: what each entry of `i` switches on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    /// K = 2: [spatial, appearance].
    Groups,
    /// K = 5: SimCLR's five default augmentations [resized crop, horizontal flip, colour jitter,
    /// grayscale, blur].
    Individual,
    /// K = 7: the CLAR audio augmentations.
    Audio,
}

impl Family {
    /// `K`, the length of a descriptor.
    pub fn num_invariances(self) -> usize {
        self.entry_names().len()
    }

    /// Names of the entries, in order.
    pub fn entry_names(self) -> &'static [&'static str] {
        match self {
            Family::Groups => &["spatial", "appearance"],
            Family::Individual => &["crop", "flip", "colour-jitter", "grayscale", "blur"],
            Family::Audio => &[
                "pitch-shift",
                "fade-in",
                "fade-out",
                "noise",
                "time-mask",
                "time-shift",
                "time-stretch",
            ],
        }
    }

    /// The descriptors drawn during pretraining: for K = 2 the three non-zero vectors, otherwise
    /// every binary vector with at least two ones. Ordered by their binary value (first entry most
    /// significant), so `[1, 1]` comes last for K = 2.
    pub fn trained(self) -> Vec<Descriptor> {
        let k = self.num_invariances();
        let min_ones = if self == Family::Groups { 1 } else { 2 };
        (1u32..(1 << k))
            .map(|bits| (0..k).map(|j| ((bits >> (k - 1 - j)) & 1) as f32).collect::<Vec<_>>())
            .filter(|v| v.iter().filter(|&&x| x == 1.0).count() >= min_ones)
            .map(Descriptor)
            .collect()
    }

    /// How many descriptors [`Family::trained`] holds (3, 26, 120), without building them.
    pub fn num_trained(self) -> usize {
        let k = self.num_invariances() as u32;
        match self {
            Family::Groups => (1 << k) - 1,
            _ => (1 << k) - 1 - k as usize,
        }
    }

    /// The family whose descriptors have `k` entries.
    pub fn from_num_invariances(k: usize) -> Option<Family> {
        [Family::Groups, Family::Individual, Family::Audio]
            .into_iter()
            .find(|f| f.num_invariances() == k)
    }
}

/// An invariance descriptor: `K` values in `[0, 1]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Descriptor(pub Vec<f32>);

impl Descriptor {
    /// Parses `"1,0"` / `"0.5, 1"`; checks the length against `family` and the range `[0, 1]`.
    pub fn parse(input: &str, family: Family) -> Result<Self, AugmentError> {
        let err = |reason: String| AugmentError::Descriptor {
            input: input.to_string(),
            reason,
        };
        let values = input
            .split(',')
            .map(|s| {
                s.trim()
                    .parse::<f32>()
                    .map_err(|_| err(format!("`{}` is not a number", s.trim())))
            })
            .collect::<Result<Vec<f32>, _>>()?;
        let k = family.num_invariances();
        if values.len() != k {
            return Err(err(format!(
                "expected {k} comma-separated values for [{}], found {}",
                family.entry_names().join(", "),
                values.len()
            )));
        }
        if let Some(v) = values.iter().find(|v| !(0.0..=1.0).contains(*v)) {
            return Err(err(format!("{v} is outside [0, 1]")));
        }
        Ok(Descriptor(values))
    }

    pub fn values(&self) -> &[f32] {
        &self.0
    }

    /// Whether entry `j` switches its augmentation on (binary descriptors: value 1; continuous
    /// ones: at least 0.5).
    pub fn is_on(&self, j: usize) -> bool {
        self.0.get(j).is_some_and(|&v| v >= 0.5)
    }
}

impl std::fmt::Display for Descriptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|v| format!("{v}")).collect();
        write!(f, "{}", parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trained_sets_have_the_papers_sizes() {
        let groups = Family::Groups.trained();
        assert_eq!(
            groups,
            vec![Descriptor(vec![0., 1.]), Descriptor(vec![1., 0.]), Descriptor(vec![1., 1.])]
        );
        assert_eq!(Family::Individual.trained().len(), 26);
        assert_eq!(Family::Audio.trained().len(), 120);
        for f in [Family::Groups, Family::Individual, Family::Audio] {
            assert_eq!(f.num_trained(), f.trained().len());
        }
        for d in Family::Individual.trained() {
            assert!(d.values().iter().filter(|&&v| v == 1.0).count() >= 2, "{d}");
        }
    }

    #[test]
    fn parse_checks_length_range_and_numbers() {
        assert_eq!(Descriptor::parse("1, 0", Family::Groups).unwrap(), Descriptor(vec![1., 0.]));
        let msg = Descriptor::parse("1,0,1", Family::Groups).unwrap_err().to_string();
        assert!(msg.contains("expected 2 comma-separated values for [spatial, appearance], found 3"), "{msg}");
        let msg = Descriptor::parse("1.5,0", Family::Groups).unwrap_err().to_string();
        assert!(msg.contains("1.5 is outside [0, 1]"), "{msg}");
        let msg = Descriptor::parse("x,0", Family::Groups).unwrap_err().to_string();
        assert!(msg.contains("`x` is not a number"), "{msg}");
    }

    #[test]
    fn family_is_found_from_length() {
        assert_eq!(Family::from_num_invariances(5), Some(Family::Individual));
        assert_eq!(Family::from_num_invariances(3), None);
        assert_eq!(Descriptor(vec![0.5, 0.49]).is_on(0), true);
        assert_eq!(Descriptor(vec![0.5, 0.49]).is_on(1), false);
    }
}
