//! A blocking CRI v1 client: gRPC (tonic, generated from proto/api.proto)
//! over one HTTP/2 connection (hyper) on containerd's unix socket, every
//! call with a deadline.
//!
//! The tests are plain `#[test]` functions, so the client owns a
//! current-thread tokio runtime and blocks on each call; the connection's
//! driver task runs while a call is being waited for.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::UnixStream;
use tokio::runtime::Runtime;
use tonic::codegen::http::{Request, Response, Uri};

use crate::api::image_service_client::ImageServiceClient;
use crate::api::runtime_service_client::RuntimeServiceClient;

/// Deadline of a CRI call that should be quick (status, list, exec of a
/// short command, remove).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// What went wrong talking to the CRI socket.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    /// The tokio runtime could not be built.
    #[error("cannot build the tokio runtime")]
    Runtime(#[source] std::io::Error),
    /// The socket refused the connection.
    #[error("cannot connect to the CRI socket {}", .path.display())]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP/2 handshake failed.
    #[error("HTTP/2 handshake on the CRI socket {} failed", .path.display())]
    Handshake {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: hyper::Error,
    },
    /// The call returned a gRPC error.
    #[error("{call}: {} ({:?}): {}", .status.code(), .status.code(), .status.message())]
    Status {
        /// The RPC, e.g. `RunPodSandbox`.
        call: &'static str,
        /// containerd's answer.
        status: tonic::Status,
    },
    /// The call did not answer in time.
    #[error("{call}: no answer after {timeout:?}")]
    Timeout {
        /// The RPC.
        call: &'static str,
        /// How long it was waited for.
        timeout: Duration,
    },
}

impl CriError {
    /// The gRPC status, when the call itself failed.
    pub fn status(&self) -> Option<&tonic::Status> {
        match self {
            CriError::Status { status, .. } => Some(status),
            _ => None,
        }
    }
}

/// One HTTP/2 connection, as the tower service tonic's clients drive.
#[derive(Clone)]
pub struct Connection {
    sender: SendRequest<tonic::body::Body>,
}

impl tower_service::Service<Request<tonic::body::Body>> for Connection {
    type Response = Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.sender.poll_ready(cx)
    }

    fn call(&mut self, request: Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.sender.send_request(request))
    }
}

/// The CRI's two services on one connection.
pub struct CriClient {
    runtime: Runtime,
    /// RuntimeService (pods, containers, exec, status).
    pub runtime_service: RuntimeServiceClient<Connection>,
    /// ImageService (image status and list).
    pub image_service: ImageServiceClient<Connection>,
    /// The socket it talks to.
    pub socket: PathBuf,
}

impl CriClient {
    /// Connects to the CRI socket `socket`.
    pub fn connect(socket: &Path) -> Result<CriClient, CriError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(CriError::Runtime)?;
        let connection = runtime.block_on(async {
            let stream = tokio::time::timeout(CALL_TIMEOUT, UnixStream::connect(socket))
                .await
                .map_err(|_| CriError::Timeout {
                    call: "connect",
                    timeout: CALL_TIMEOUT,
                })?
                .map_err(|source| CriError::Connect {
                    path: socket.to_path_buf(),
                    source,
                })?;
            let (sender, driver) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .map_err(|source| CriError::Handshake {
                    path: socket.to_path_buf(),
                    source,
                })?;
            // Serves the connection while calls are being waited for; ends with it.
            tokio::spawn(async move {
                if let Err(e) = driver.await {
                    eprintln!("CRI connection closed: {e}");
                }
            });
            Ok::<_, CriError>(Connection { sender })
        })?;
        // The authority is never looked at on a unix socket, but HTTP/2 needs one.
        let origin = Uri::from_static("http://localhost");
        Ok(CriClient {
            runtime_service: RuntimeServiceClient::with_origin(connection.clone(), origin.clone())
                .max_decoding_message_size(64 << 20),
            image_service: ImageServiceClient::with_origin(connection, origin),
            runtime,
            socket: socket.to_path_buf(),
        })
    }

    /// Runs the RuntimeService call `f` (named `call` in errors), failing
    /// after `timeout`. `f` gets its own handle on the connection.
    pub fn runtime_call<T, F, Fut>(
        &self,
        call: &'static str,
        timeout: Duration,
        f: F,
    ) -> Result<T, CriError>
    where
        F: FnOnce(RuntimeServiceClient<Connection>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let fut = f(self.runtime_service.clone());
        self.block(call, timeout, fut)
    }

    /// Runs the ImageService call `f` (see [`CriClient::runtime_call`]).
    pub fn image_call<T, F, Fut>(
        &self,
        call: &'static str,
        timeout: Duration,
        f: F,
    ) -> Result<T, CriError>
    where
        F: FnOnce(ImageServiceClient<Connection>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let fut = f(self.image_service.clone());
        self.block(call, timeout, fut)
    }

    fn block<T, Fut>(&self, call: &'static str, timeout: Duration, fut: Fut) -> Result<T, CriError>
    where
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.runtime
            .block_on(async { tokio::time::timeout(timeout, fut).await })
            .map_err(|_| CriError::Timeout { call, timeout })?
            .map(tonic::Response::into_inner)
            .map_err(|status| CriError::Status { call, status })
    }
}
