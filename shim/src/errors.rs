//! The Task API's errors and their ttrpc codes, in one place.
//!
//! Every Task call fails with a [`TaskError`]; its [`TaskError::code`] is the
//! real ttrpc code containerd sees (NotFound, AlreadyExists,
//! InvalidArgument, FailedPrecondition, Unimplemented, or the code the
//! sandbox manager reports), and its message is the whole cause chain,
//! printed once here.

use sandbox::manager::ManagerError;
use ttrpc::Code;

use crate::io::IoError;
use crate::options::OptionsError;
use crate::resources::ResourceError;

/// Errors of Task calls.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// No such container or exec.
    #[error("{0}")]
    NotFound(String),
    /// The container or exec id is taken.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// The call does not fit the task's state.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Not available (yet).
    #[error("{0}")]
    Unimplemented(String),
    /// The sandbox manager failed.
    #[error("{what}")]
    Manager {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: ManagerError,
    },
    /// The runtime options are unusable.
    #[error(transparent)]
    Options(#[from] OptionsError),
    /// Setting up stdio failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: IoError,
    },
    /// Reading or writing the container's cgroup failed.
    #[error("{what}")]
    Resource {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: ResourceError,
    },
}

impl TaskError {
    /// The ttrpc code for this error.
    pub fn code(&self) -> Code {
        match self {
            TaskError::NotFound(_) => Code::NOT_FOUND,
            TaskError::AlreadyExists(_) => Code::ALREADY_EXISTS,
            TaskError::InvalidArgument(_) => Code::INVALID_ARGUMENT,
            TaskError::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
            TaskError::Unimplemented(_) => Code::UNIMPLEMENTED,
            TaskError::Manager { source, .. } => source.code(),
            TaskError::Options(_) => Code::INVALID_ARGUMENT,
            TaskError::Io { source, .. } => match source {
                IoError::UnsupportedUri(_) | IoError::InvalidUri { .. } => Code::INVALID_ARGUMENT,
                IoError::Os { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                    Code::NOT_FOUND
                }
                _ => Code::INTERNAL,
            },
            TaskError::Resource { source, .. } => source.code(),
        }
    }

    /// A sandbox manager failure while doing `what`.
    pub fn manager(what: impl Into<String>) -> impl FnOnce(ManagerError) -> TaskError {
        let what = what.into();
        move |source| TaskError::Manager { what, source }
    }

    /// A cgroup failure while doing `what`.
    pub fn resource(what: impl Into<String>) -> impl FnOnce(ResourceError) -> TaskError {
        let what = what.into();
        move |source| TaskError::Resource { what, source }
    }

    /// A stdio failure while doing `what`.
    pub fn io(what: impl Into<String>) -> impl FnOnce(IoError) -> TaskError {
        let what = what.into();
        move |source| TaskError::Io { what, source }
    }
}

/// `err` and its sources, joined by ": ".
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut msg = err.to_string();
    let mut cur = err.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !s.is_empty() && !msg.ends_with(&s) {
            msg.push_str(": ");
            msg.push_str(&s);
        }
        cur = c.source();
    }
    msg
}

impl From<TaskError> for ttrpc::Error {
    fn from(e: TaskError) -> Self {
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), chain(&e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(e: TaskError) -> (Code, String) {
        match ttrpc::Error::from(e) {
            ttrpc::Error::RpcStatus(s) => (s.code(), s.message().to_string()),
            other => panic!("not a status: {other:?}"),
        }
    }

    #[test]
    fn codes_are_real() {
        assert_eq!(status(TaskError::NotFound("x".into())).0, Code::NOT_FOUND);
        assert_eq!(
            status(TaskError::AlreadyExists("x".into())).0,
            Code::ALREADY_EXISTS
        );
        assert_eq!(
            status(TaskError::InvalidArgument("x".into())).0,
            Code::INVALID_ARGUMENT
        );
        assert_eq!(
            status(TaskError::FailedPrecondition("x".into())).0,
            Code::FAILED_PRECONDITION
        );
        assert_eq!(
            status(TaskError::Unimplemented("x".into())).0,
            Code::UNIMPLEMENTED
        );
        assert_eq!(
            status(TaskError::Options(OptionsError::UnsupportedType(
                "t".into()
            )))
            .0,
            Code::INVALID_ARGUMENT
        );
    }

    #[test]
    fn manager_codes_and_chain() {
        let e = TaskError::manager("container c1: exec")(ManagerError::Rpc {
            code: Code::NOT_FOUND,
            message: "executable file `nope` not found".into(),
        });
        let (code, msg) = status(e);
        assert_eq!(code, Code::NOT_FOUND);
        assert_eq!(msg, "container c1: exec: executable file `nope` not found");
        let e = TaskError::manager("x")(ManagerError::NotRunning("p".into()));
        assert_eq!(status(e).0, Code::FAILED_PRECONDITION);
    }

    #[test]
    fn cgroup_errors_keep_their_code_and_cause() {
        let e = TaskError::resource("container c1: update")(ResourceError::Write {
            path: "/sys/fs/cgroup/memory/c1/memory.limit_in_bytes".into(),
            source: std::io::Error::from_raw_os_error(libc::EBUSY),
        });
        let (code, msg) = status(e);
        assert_eq!(code, Code::FAILED_PRECONDITION);
        assert!(
            msg.starts_with(
                "container c1: update: writing /sys/fs/cgroup/memory/c1/memory.limit_in_bytes: "
            ),
            "{msg}"
        );
    }
}
