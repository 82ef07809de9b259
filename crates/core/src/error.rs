/// Errors of the core crate: each says what was wrong and what would be right.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CoreError {
    #[error("invalid invariance descriptor `{input}`: {reason}")]
    Descriptor { input: String, reason: String },
}
