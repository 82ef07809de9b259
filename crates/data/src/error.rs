use std::path::PathBuf;

/// Everything that can go wrong while reading a dataset. Each variant names the file and says what
/// was expected, so the message alone tells the user what to fix.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not {expected}: found {found}")]
    WrongFormat {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error("{path} is truncated: {format} needs {expected} bytes, found {found}")]
    Truncated {
        path: PathBuf,
        format: String,
        expected: usize,
        found: usize,
    },
    #[error(
        "corrupt image {path}: {reason} (pass --skip-bad to skip such files and count them instead)"
    )]
    CorruptImage { path: PathBuf, reason: String },
    #[error(
        "corrupt audio file {path}: {reason} (pass --skip-bad to skip such files and count them instead)"
    )]
    CorruptAudio { path: PathBuf, reason: String },
    #[error("no data in {path}: {reason}")]
    Empty { path: PathBuf, reason: String },
    #[error("invalid data option: {0}")]
    InvalidOption(String),
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }
}
