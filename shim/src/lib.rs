//! containerd-shim-runsc-v2: containerd's shim (task API v3, and v2 for
//! containerd 1.6/1.7) for runsc-rs.
//! One shim serves one pod, whose containers all run in one sandbox.
//!
//! - [`service`]: the shim's lifecycle (`start`, serving, `delete`, `-info`).
//! - [`serve`]: serving the Task API as v3 and v2, and containerd 1.x's `start`.
//! - [`task`]: the Task API and the exit watcher.
//! - [`state`]: containers, processes and their state machine.
//! - [`pod`]: pod grouping, spec checks, sandbox teardown.
//! - [`io`]: stdio FIFOs, ptys, log URIs and the copy threads.
//! - [`events`]: the bounded event queue to containerd.
//! - [`options`]: the runtime options file.
//! - [`resources`]: the container's cgroup: stats, OOM kills, freezer,
//!   updates.
//! - [`errors`]: Task errors and their ttrpc codes.

pub mod errors;
pub mod events;
pub mod io;
pub mod options;
pub mod pod;
pub mod resources;
pub mod serve;
pub mod service;
pub mod state;
pub mod task;
