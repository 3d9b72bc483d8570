//! Running a shim binary's `delete` action the way containerd 2.x does when
//! it cleans up after a dead shim (core/runtime/v2/binary.go, `Delete`):
//! `<shim> -namespace NS -address ADDR -publish-binary CONTAINERD -id ID
//! -bundle BUNDLE delete`, from the bundle directory, with TTRPC_ADDRESS,
//! GRPC_ADDRESS and NAMESPACE in the environment; it answers with a
//! protobuf `DeleteResponse` on stdout.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::command::{run_command, Input, Output};
use crate::ctr::Ctr;

/// `DeleteResponse` (containerd.task.v2/v3): what a shim's `delete` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeleteResponse {
    /// Pid of the deleted process.
    pub pid: u32,
    /// Its exit status.
    pub exit_status: u32,
    /// Whether `exited_at` was present.
    pub has_exited_at: bool,
}

/// Runs `shim delete` for task `id` as containerd would; `bundle` is the
/// working directory when it still exists (containerd may have removed it
/// after its own clean-up), else `/`.
pub fn run_shim_delete(
    shim: &Path,
    ctr: &Ctr,
    id: &str,
    bundle: &Path,
    timeout: Duration,
) -> Output {
    let containerd = ctr
        .binary
        .parent()
        .map(|d| d.join("containerd"))
        .unwrap_or_else(|| "containerd".into());
    let mut cmd = Command::new(shim);
    cmd.args([
        "-namespace",
        &ctr.namespace,
        "-address",
        &ctr.address,
        "-publish-binary",
    ])
    .arg(&containerd)
    .args(["-id", id, "-bundle"])
    .arg(bundle)
    .arg("delete")
    .current_dir(if bundle.is_dir() {
        bundle
    } else {
        Path::new("/")
    })
    .env("TTRPC_ADDRESS", format!("{}.ttrpc", ctr.address))
    .env("GRPC_ADDRESS", &ctr.address)
    .env("NAMESPACE", &ctr.namespace)
    .env("MAX_SHIM_VERSION", "2")
    .env("GOMAXPROCS", "2");
    run_command(cmd, Input::Null, timeout)
}

/// The shim's socket named in the bundle's `bootstrap.json` (containerd 2.x
/// writes it after `start`: `{"address":"unix:///run/containerd/s/…",…}`).
pub fn shim_socket(bundle: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(bundle.join("bootstrap.json")).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    let address = json.get("address")?.as_str()?;
    address.strip_prefix("unix://").map(PathBuf::from)
}

fn read_varint(buf: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *buf.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Decodes a `DeleteResponse` (fields 1 pid, 2 exit_status, 3 exited_at);
/// None when `buf` is not one.
pub fn decode_delete_response(buf: &[u8]) -> Option<DeleteResponse> {
    let mut resp = DeleteResponse::default();
    let mut at = 0;
    while at < buf.len() {
        let key = read_varint(buf, &mut at)?;
        match (key >> 3, key & 7) {
            (1, 0) => resp.pid = u32::try_from(read_varint(buf, &mut at)?).ok()?,
            (2, 0) => resp.exit_status = u32::try_from(read_varint(buf, &mut at)?).ok()?,
            (field, 2) => {
                let len = usize::try_from(read_varint(buf, &mut at)?).ok()?;
                at = at.checked_add(len).filter(|end| *end <= buf.len())?;
                resp.has_exited_at |= field == 3;
            }
            (_, 0) => {
                read_varint(buf, &mut at)?;
            }
            _ => return None,
        }
    }
    Some(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_delete_response() {
        // pid 300, exit_status 137, exited_at { seconds: 1 }.
        let buf = [0x08, 0xac, 0x02, 0x10, 0x89, 0x01, 0x1a, 0x02, 0x08, 0x01];
        assert_eq!(
            decode_delete_response(&buf),
            Some(DeleteResponse {
                pid: 300,
                exit_status: 137,
                has_exited_at: true
            })
        );
        assert_eq!(decode_delete_response(&[]), Some(DeleteResponse::default()));
        assert_eq!(decode_delete_response(&[0x1a, 0x05, 0x00]), None);
    }
}
