use std::fmt;

use tonic::Code;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every failure this crate reports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server, or the gRPC stack on our side, ended a call with a status.
    #[error("bigtable {code:?}: {message}")]
    Status {
        code: Code,
        message: String,
        /// Raised by the local transport (connection refused, reset, GOAWAY) rather
        /// than sent by the server; such failures are worth another attempt.
        transport: bool,
    },
    /// MutateRows left some entries unapplied after all retries.
    #[error("{} of {total} row mutations failed: {}", failed.len(), Summary(failed))]
    MutateRows {
        total: usize,
        failed: Vec<FailedMutation>,
    },
    /// The server broke the ReadRows chunk protocol (or another response invariant).
    #[error("invalid response from bigtable: {0}")]
    Protocol(String),
    /// The caller asked for something we refuse to send.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The connection could not be configured (bad address, missing settings).
    #[error("bigtable configuration: {0}")]
    Config(String),
    /// Application-default credentials could not produce a token.
    #[error("bigtable credentials: {0}")]
    Auth(String),
}

/// One MutateRows entry that was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedMutation {
    /// Position of the entry in the caller's input.
    pub index: usize,
    pub code: Code,
    pub message: String,
}

struct Summary<'a>(&'a [FailedMutation]);

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A bulk write can fail thousands of entries; the first few tell the story.
        const SHOWN: usize = 5;
        for (i, m) in self.0.iter().take(SHOWN).enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "#{} {:?}: {}", m.index, m.code, m.message)?;
        }
        if self.0.len() > SHOWN {
            write!(f, "; and {} more", self.0.len() - SHOWN)?;
        }
        Ok(())
    }
}

/// Codes that Google's clients retry for idempotent calls.
pub(crate) fn code_is_retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::DeadlineExceeded | Code::Aborted
    )
}

impl Error {
    /// The gRPC code that best describes the failure.
    pub fn code(&self) -> Code {
        match self {
            Error::Status { code, .. } => *code,
            Error::MutateRows { failed, .. } => failed.first().map_or(Code::Unknown, |m| m.code),
            Error::Protocol(_) => Code::Internal,
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::Config(_) => Code::FailedPrecondition,
            Error::Auth(_) => Code::Unauthenticated,
        }
    }

    /// Whether trying the same call again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Status {
                code, transport, ..
            } => *transport || code_is_retryable(*code),
            Error::MutateRows { failed, .. } => {
                !failed.is_empty() && failed.iter().all(|m| code_is_retryable(m.code))
            }
            _ => false,
        }
    }

    pub(crate) fn deadline(what: &str) -> Error {
        Error::Status {
            code: Code::DeadlineExceeded,
            message: format!("{what}: client deadline exceeded"),
            transport: false,
        }
    }
}

impl From<tonic::Status> for Error {
    fn from(s: tonic::Status) -> Self {
        // Statuses synthesised by tonic from an I/O or HTTP/2 failure keep that error
        // as their source; statuses read off the wire never have one.
        let transport = std::error::Error::source(&s).is_some()
            || (s.code() == Code::Unknown && s.message().starts_with("Service was not ready"));
        Error::Status {
            code: s.code(),
            message: s.message().to_owned(),
            transport,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_codes() {
        for code in [Code::Unavailable, Code::DeadlineExceeded, Code::Aborted] {
            assert!(Error::from(tonic::Status::new(code, "x")).is_retryable());
        }
        for code in [
            Code::NotFound,
            Code::InvalidArgument,
            Code::Internal,
            Code::Unknown,
            Code::PermissionDenied,
            Code::FailedPrecondition,
        ] {
            let e = Error::from(tonic::Status::new(code, "x"));
            assert!(!e.is_retryable(), "{code:?}");
            assert_eq!(e.code(), code);
        }
    }

    #[test]
    fn transport_errors_are_retryable() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let s = tonic::Status::from_error(Box::new(io));
        assert_eq!(s.code(), Code::Unknown);
        let e = Error::from(s);
        assert!(e.is_retryable());
        let e = Error::from(tonic::Status::unknown(
            "Service was not ready: transport error",
        ));
        assert!(e.is_retryable());
    }

    #[test]
    fn local_errors_are_not_retryable() {
        assert!(!Error::Protocol("x".into()).is_retryable());
        assert_eq!(Error::Protocol("x".into()).code(), Code::Internal);
        assert!(!Error::InvalidArgument("x".into()).is_retryable());
        assert!(!Error::Auth("x".into()).is_retryable());
    }

    #[test]
    fn mutate_rows_error_lists_entries() {
        let failed: Vec<_> = (0..7)
            .map(|i| FailedMutation {
                index: i * 2,
                code: Code::Unavailable,
                message: format!("m{i}"),
            })
            .collect();
        let e = Error::MutateRows { total: 20, failed };
        let s = e.to_string();
        assert!(s.starts_with("7 of 20 row mutations failed: #0 Unavailable: m0; #2"));
        assert!(s.ends_with("and 2 more"), "{s}");
        assert!(e.is_retryable());
        assert_eq!(e.code(), Code::Unavailable);
        let e = Error::MutateRows {
            total: 2,
            failed: vec![
                FailedMutation {
                    index: 0,
                    code: Code::Unavailable,
                    message: String::new(),
                },
                FailedMutation {
                    index: 1,
                    code: Code::InvalidArgument,
                    message: String::new(),
                },
            ],
        };
        assert!(!e.is_retryable());
    }
}
