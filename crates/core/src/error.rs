use std::path::PathBuf;

/// Errors of the core crate: each says what was wrong and what would be right.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: PathBuf, reason: String },
    #[error("invalid invariance descriptor `{input}`: {reason}")]
    Descriptor { input: String, reason: String },
    #[error("invalid model config: {0}")]
    Config(String),
    /// A setting of a pretraining config or a task that is out of range or does not fit the others:
    /// "`setting` `reason`", e.g. "--lr must be positive (got -1)".
    #[error("{setting} {reason}")]
    Setting { setting: String, reason: String },
    #[error("numerical problem: {0}")]
    Numeric(String),
    /// A file or directory could not be read or written (the source carries the hint).
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    /// A run that cannot go as asked: its directory holds another run or no checkpoint, it has
    /// nothing left to do, or its devices do not fit its shards.
    #[error("{0}")]
    RunDirectory(String),
    /// The loss stopped being finite; no checkpoint of the diverged model was written.
    #[error(
        "the loss became {loss} at step {step} (descriptor {descriptor}, lr {lr:.3e}): the run diverged; lower --lr \
         (or set optimizer.grad_clip) and rerun; the last good checkpoint is kept in {checkpoints}"
    )]
    Diverged { step: u64, descriptor: String, lr: f64, loss: f32, checkpoints: PathBuf },
    /// The observer asked to stop; a checkpoint of the last step was written.
    #[error(
        "interrupted: stopped after step {step} with a checkpoint in {checkpoint}; run the same command again (or add --resume) to continue"
    )]
    Interrupted { step: u64, checkpoint: PathBuf },
    /// A data-parallel replica failed.
    #[error("the replica on {device} failed: {reason}")]
    Replica { device: String, reason: String },
    #[error(transparent)]
    Augment(#[from] ail_augment::AugmentError),
    #[error(transparent)]
    Data(#[from] ail_data::DataError),
    /// A dataset that could not be read (`data` names it: `builtin` or its path).
    #[error("loading {data}: {error}")]
    Loading { data: String, error: ail_data::DataError },
}

impl CoreError {
    /// A setting's error.
    pub fn setting(setting: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Setting { setting: setting.into(), reason: reason.into() }
    }

    /// An I/O error on `path` while doing `what` ("reading", "writing", "creating").
    pub fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { what, path: path.into(), source }
    }
}
