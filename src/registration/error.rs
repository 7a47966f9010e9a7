//! Errors of the AppRegistration controller. Messages name the object and the
//! step that failed, never a secret.

use std::fmt;

/// The I/O step that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    ReadSecret,
    WriteSecret,
    DeleteSecret,
    WriteStatus,
    RestartWorkload,
    AddFinalizer,
    RemoveFinalizer,
}

impl Step {
    /// A small fixed label for the error metric.
    pub fn label(self) -> &'static str {
        match self {
            Step::ReadSecret => "read_secret",
            Step::WriteSecret => "write_secret",
            Step::DeleteSecret => "delete_secret",
            Step::WriteStatus => "write_status",
            Step::RestartWorkload => "restart_workload",
            Step::AddFinalizer => "add_finalizer",
            Step::RemoveFinalizer => "remove_finalizer",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::ReadSecret => "reading the credentials Secret",
            Step::WriteSecret => "writing the credentials Secret",
            Step::DeleteSecret => "deleting the credentials Secret",
            Step::WriteStatus => "writing the status",
            Step::RestartWorkload => "restarting a workload",
            Step::AddFinalizer => "adding the finalizer",
            Step::RemoveFinalizer => "removing the finalizer",
        })
    }
}

/// Why a reconcile failed. Retried with per-object exponential backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{step} of AppRegistration {object} failed: {source}")]
    Kube {
        step: Step,
        object: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("hashing the client secret of AppRegistration {object} failed: {source}")]
    Credentials {
        object: String,
        #[source]
        source: crate::credentials::CredentialError,
    },
    #[error(
        "restarting {workload} after a new secret of AppRegistration {object} was refused; the secret is issued, the \
         restart is retried"
    )]
    RestartRefused { object: String, workload: String },
    #[error("registering AppRegistration {object} at the authorization server failed: {source}")]
    Registration {
        object: String,
        #[source]
        source: crate::authserver::AsError,
    },
    #[error("recording the Client ID of AppRegistration {object} in the ledger failed: {source}")]
    Ledger {
        object: String,
        #[source]
        source: super::ledger::LedgerError,
    },
    #[error("the AppRegistration has no namespace")]
    NoNamespace,
}

impl Error {
    /// A small fixed label for the error metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { step, .. } => step.label(),
            Error::Credentials { .. } => "hashing",
            Error::RestartRefused { .. } => "restart_workload",
            Error::Registration { .. } => "authserver",
            Error::Ledger { .. } => "ledger",
            Error::NoNamespace => "no_namespace",
        }
    }

    pub fn kube(step: Step, object: impl Into<String>, source: kube::Error) -> Self {
        Error::Kube { step, object: object.into(), source: Box::new(source) }
    }
}
