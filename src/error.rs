//! Errors that callers act on, and the exit codes they map to.
//!
//! Everything else travels as `anyhow::Error` with context and exits with
//! [`ExitCode::Fatal`].

/// Process exit codes. Documented in README.md and docs/operations.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// Everything asked for was done.
    Success = 0,
    /// The run could not start or had to stop: bad configuration,
    /// unreachable database, unreadable cache.db, ...
    Fatal = 1,
    /// The command line was wrong (clap's own code).
    Usage = 2,
    /// The run finished but some items failed; their files were kept.
    Partial = 3,
    /// `check` found inconsistencies (left over, after `--fix`).
    Found = 4,
    /// Another run holds the lock (`EX_TEMPFAIL`: try again later).
    Locked = 75,
}

/// Errors with a specific exit code.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// `what`: "the lock /path/cache.db.lock" or "the media store /path";
    /// `holder`: "pid N, started T" where it can be found.
    #[error("{} (pass --wait to wait for it)", self.held_by())]
    Locked { what: String, holder: Option<String> },
    #[error("{count} item(s) failed; see the messages above (their local files were kept)")]
    Partial { count: u64 },
    #[error("{count} key(s) not copied; see the messages above (a rerun retries them)")]
    NotCopied { count: u64 },
    #[error("{count} inconsistencies found; see the report above")]
    Found { count: u64 },
    #[error("{count} fix(es) not done; see the report and messages above")]
    NotFixed { count: u64 },
}

impl Failure {
    /// "another media-offload run (pid N, started T) holds the lock X".
    pub fn held_by(&self) -> String {
        match self {
            Failure::Locked { what, holder: Some(h) } => format!("another media-offload run ({h}) holds {what}"),
            Failure::Locked { what, holder: None } => format!("another media-offload run holds {what}"),
            other => other.to_string(),
        }
    }

    pub fn exit_code(&self) -> ExitCode {
        match self {
            Failure::Locked { .. } => ExitCode::Locked,
            Failure::Partial { .. } => ExitCode::Partial,
            Failure::Found { .. } => ExitCode::Found,
            Failure::NotFixed { .. } | Failure::NotCopied { .. } => ExitCode::Partial,
        }
    }
}

/// The exit code for any error a command returned.
pub fn exit_code_for(err: &anyhow::Error) -> ExitCode {
    err.chain().find_map(|cause| cause.downcast_ref::<Failure>()).map_or(ExitCode::Fatal, Failure::exit_code)
}
