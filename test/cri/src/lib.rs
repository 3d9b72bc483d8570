//! A CRI v1 client and what the end-to-end tests of pods through
//! containerd's CRI (tests/cri.rs) build on.
//!
//! [`api`] is generated at build time from proto/api.proto (k8s.io/cri-api
//! v0.34.0, pkg/apis/runtime/v1/api.proto) with protox and
//! tonic-prost-build, so no protoc is needed. [`client`] speaks gRPC over
//! containerd's unix socket; [`pod`] runs pods and containers with it.
//!
//! The tests run only with RUNSC_E2E=1 against the private containerd of
//! test/containerd.sh (its socket serves the CRI too); otherwise each prints
//! a skip line and passes.

pub mod client;
pub mod pod;

/// CRI v1 (`runtime.v1`): messages, and the RuntimeService and ImageService clients.
pub mod api {
    #![allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
    tonic::include_proto!("runtime.v1");
}

pub use client::{CriClient, CriError, CALL_TIMEOUT};
pub use pod::{error_chain, unique_name, wait_until, CriTest, Pod, START_TIMEOUT};
