//! The error type of `attest`: what could not be read while collecting an image's facts.

/// Errors while collecting facts.
#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    #[error("reading `{path}`")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}")]
    Other {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("internal: {0}")]
    Internal(String),
}

impl AttestError {
    pub(crate) fn of(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> AttestError {
        AttestError::Other { what: what.to_string(), source: Box::new(e) }
    }
    pub(crate) fn internal(what: impl Into<String>) -> AttestError {
        AttestError::Internal(what.into())
    }
}

impl crate::model::error::Kinded for AttestError {
    fn kind(&self) -> crate::model::error::ErrorKind {
        match self {
            AttestError::Internal(_) => crate::model::error::ErrorKind::Internal,
            _ => crate::model::error::ErrorKind::Environment,
        }
    }
}
