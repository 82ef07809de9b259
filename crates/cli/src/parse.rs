//! Values of list flags: comma-separated numbers, and invariance descriptors.

/// How [`parse_list`] words the error for an entry that is not a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListError {
    /// Names the flag and its whole value, and asks for a comma-separated list.
    Long,
    /// Names the flag and the entry only.
    Short,
}

/// The comma-separated numbers given to `flag` (each entry trimmed).
pub fn parse_list<T: std::str::FromStr>(text: &str, flag: &str, error: ListError) -> anyhow::Result<Vec<T>> {
    text.split(',')
        .map(|v| {
            v.trim().parse::<T>().map_err(|_| match error {
                ListError::Long => anyhow::anyhow!("{flag} {text}: `{v}` is not a number (give a comma-separated list)"),
                ListError::Short => anyhow::anyhow!("{flag}: `{v}` is not a number"),
            })
        })
        .collect()
}

/// An invariance descriptor given to `flag`: comma-separated numbers, each in [0, 1].
pub fn parse_descriptor(text: &str, flag: &str) -> anyhow::Result<Vec<f32>> {
    let v: Vec<f32> = parse_list(text, flag, ListError::Long)?;
    anyhow::ensure!(v.iter().all(|x| (0.0..=1.0).contains(x)), "{flag} {text}: every entry must be in [0, 1]");
    Ok(v)
}

/// Where a learned `i` starts.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Start {
    /// Every entry at this value.
    Value(f32),
    /// A trained corner chosen on held-out data: a validation split (`fit`, `compare`), or
    /// leaving one image out of the training images (`fewshot`, `lowshot`).
    BestCorner,
}

impl Start {
    /// `best-corner`, or a number in [0, 1], as given to `flag`.
    pub fn parse(text: &str, flag: &str) -> anyhow::Result<Self> {
        match text.trim() {
            "best-corner" => Ok(Start::BestCorner),
            t => {
                let v: f32 = t.parse().map_err(|_| anyhow::anyhow!("{flag}: `{t}` is neither a number in [0, 1] nor best-corner"))?;
                anyhow::ensure!((0.0..=1.0).contains(&v), "{flag}: {v} is outside [0, 1]");
                Ok(Start::Value(v))
            }
        }
    }

    /// The value every entry starts at (0.5, the paper's, when a corner is chosen instead).
    pub fn value(&self) -> f32 {
        match self {
            Start::Value(v) => *v,
            Start::BestCorner => 0.5,
        }
    }
}

/// The trained corners of `frozen`'s descriptor family, for `flag`'s `best-corner`.
pub fn trained_corners(frozen: &ail_core::frozen::Frozen, flag: &str) -> anyhow::Result<Vec<Vec<f32>>> {
    let family = frozen.family().ok_or_else(|| anyhow::anyhow!("{flag} best-corner: the checkpoint records no descriptor family, so its corners are unknown (give a number)"))?;
    Ok(family.trained().into_iter().map(|d| d.0).collect())
}
