//! The library's error type, shaped like gRPC status codes.
//!
//! Every layer returns [`Error`]; the task service turns it into a ttrpc
//! status in exactly one place ([`Error::into_ttrpc`]), so containerd (and
//! `ctr`) see the message together with the matching errdefs class.

use containerd_shim::protos::ttrpc;

/// What went wrong, classified the way containerd's errdefs classify it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The named container, process or file does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A container with this id already exists in this shim.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request or the bundle it points at is malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// The request does not fit the container's current state.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The shim does not support this request.
    #[error("{0}")]
    Unimplemented(String),
    /// Something failed inside the shim or the operating system.
    ///
    /// Displays only `context`; the cause is its [`std::error::Error::source`],
    /// so that error-chain printers (`{:#}`) show each part once.
    #[error("{context}")]
    Internal {
        /// What the shim was doing.
        context: String,
        /// Why it failed.
        #[source]
        source: anyhow::Error,
    },
}

/// Result with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps any error as [`Error::Internal`] with a description of what was being done.
    pub fn internal(context: impl Into<String>, source: impl Into<anyhow::Error>) -> Self {
        Error::Internal {
            context: context.into(),
            source: source.into(),
        }
    }

    /// The gRPC code containerd maps back to its errdefs class.
    pub fn code(&self) -> ttrpc::Code {
        match self {
            Error::NotFound(_) => ttrpc::Code::NOT_FOUND,
            Error::AlreadyExists(_) => ttrpc::Code::ALREADY_EXISTS,
            Error::InvalidArgument(_) => ttrpc::Code::INVALID_ARGUMENT,
            Error::FailedPrecondition(_) => ttrpc::Code::FAILED_PRECONDITION,
            Error::Unimplemented(_) => ttrpc::Code::UNIMPLEMENTED,
            Error::Internal { .. } => ttrpc::Code::INTERNAL,
        }
    }

    /// The whole message with every cause: `context: cause: cause's cause`.
    pub fn message(&self) -> String {
        let mut message = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        message
    }

    /// Converts to the ttrpc status the task service returns.
    pub fn into_ttrpc(self) -> ttrpc::Error {
        ttrpc::Error::RpcStatus(ttrpc::get_status(self.code(), self.message()))
    }
}

impl From<Error> for ttrpc::Error {
    fn from(e: Error) -> Self {
        e.into_ttrpc()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_keeps_code_and_whole_message() {
        let err = Error::internal(
            "mounting rootfs",
            anyhow::anyhow!("EPERM").context("overlay"),
        );
        let ttrpc::Error::RpcStatus(status) = err.into_ttrpc() else {
            panic!("expected an rpc status")
        };
        assert_eq!(status.code(), ttrpc::Code::INTERNAL);
        assert_eq!(status.message(), "mounting rootfs: overlay: EPERM");

        // Each part of the chain is printed once.
        let err = Error::internal("starting worker", anyhow::anyhow!("ENOENT"));
        assert_eq!(
            format!("{:#}", anyhow::Error::from(err)),
            "starting worker: ENOENT"
        );

        let ttrpc::Error::RpcStatus(status) =
            Error::InvalidArgument("not wasm".into()).into_ttrpc()
        else {
            panic!("expected an rpc status")
        };
        assert_eq!(status.code(), ttrpc::Code::INVALID_ARGUMENT);
        assert_eq!(status.message(), "not wasm");
    }
}
