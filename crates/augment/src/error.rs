/// Errors of the augmentation crate.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AugmentError {
    #[error("invalid augmentation config: {0}")]
    Config(String),
    #[error("{0}")]
    Device(String),
    #[error("invalid invariance descriptor `{input}`: {reason}")]
    Descriptor { input: String, reason: String },
    #[error("augmentation input does not match its shape: {0}")]
    Shape(String),
}
