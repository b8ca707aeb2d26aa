//! The operator's one error type.

use crate::db::DbError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API error: {0}")]
    Kube(#[source] kube::Error),
    #[error("{0}")]
    Database(#[source] DbError),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("the resource has no namespace")]
    NoNamespace,
}

impl Error {
    /// A short label for the failures metric.
    pub fn metric_label(&self) -> String {
        match self {
            Error::Kube(kube::Error::Api(s)) => format!("kube_{}", s.code),
            Error::Kube(_) => "kube".into(),
            Error::Database(e) => e.reason().to_string(),
            Error::Finalizer(e) => match e.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.metric_label(),
                _ => "finalizer".into(),
            },
            Error::NoNamespace => "no_namespace".into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
