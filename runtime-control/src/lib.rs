//! runtime-control: the shim↔sandbox protocol.
//!
//! `control` holds the messages, `control_ttrpc` the client and the server
//! trait, both generated at build time from `proto/control.proto`.

/// Messages of the protocol.
#[allow(
    clippy::all,
    clippy::undocumented_unsafe_blocks,
    missing_docs,
    unused,
    unknown_lints,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    trivial_casts,
    unused_attributes
)]
pub mod control {
    include!(concat!(env!("OUT_DIR"), "/control.rs"));
}

/// ttrpc client (`ControlClient`) and server trait (`Control`).
#[allow(
    clippy::all,
    clippy::undocumented_unsafe_blocks,
    missing_docs,
    unused,
    unknown_lints,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    trivial_casts,
    unused_attributes
)]
pub mod control_ttrpc {
    include!(concat!(env!("OUT_DIR"), "/control_ttrpc.rs"));
}

/// Protocol revision reported by `Version`. Bumped when calls are added.
pub const PROTOCOL_VERSION: u32 = 1;
