use std::path::PathBuf;

/// Errors of the core crate: each says what was wrong and what would be right.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CoreError {
    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: PathBuf, reason: String },
    #[error("invalid invariance descriptor `{input}`: {reason}")]
    Descriptor { input: String, reason: String },
    #[error("invalid model config: {0}")]
    Config(String),
    #[error("numerical problem: {0}")]
    Numeric(String),
}
