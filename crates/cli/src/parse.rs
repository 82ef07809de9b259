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
