//! Running a shim binary's `delete` action the way containerd 2.x does when
//! it cleans up after a dead shim (core/runtime/v2/binary.go, `Delete`):
//! `<shim> -namespace NS -address ADDR -publish-binary CONTAINERD -id ID
//! -bundle BUNDLE delete`, from the bundle directory, with TTRPC_ADDRESS,
//! GRPC_ADDRESS and NAMESPACE in the environment; it answers with a
//! protobuf `DeleteResponse` on stdout.
//!
//! It also calls a running shim's Task service directly over its ttrpc
//! socket ([`ttrpc_call`]) for what ctr cannot ask (Task.Update, which
//! only the CRI sends) or to time a call without ctr's own start-up
//! ([`update_task`], [`stats_request`], [`TtrpcClient`]).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
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
/// writes it after `start`: `{"address":"unix:///run/containerd/s/…",…}`),
/// or else in its `address` file (containerd 1.x: the shim writes it).
pub fn shim_socket(bundle: &Path) -> Option<PathBuf> {
    let address = match std::fs::read_to_string(bundle.join("bootstrap.json")) {
        Ok(text) => {
            let json: serde_json::Value = serde_json::from_str(&text).ok()?;
            json.get("address")?.as_str()?.to_string()
        }
        Err(_) => std::fs::read_to_string(bundle.join("address")).ok()?,
    };
    address.trim().strip_prefix("unix://").map(PathBuf::from)
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

/// containerd's Task service, as shims serve it for containerd 2.x.
pub const TASK_SERVICE: &str = "containerd.task.v3.Task";
/// The type URL containerd's typeurl gives the runtime spec's `LinuxResources`.
pub const LINUX_RESOURCES_TYPE_URL: &str =
    "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";

/// A ttrpc call's failure: the status a shim answered with (`code` as in
/// google.rpc.Code), or `code` None when the call itself failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    /// The status code (3 InvalidArgument, 5 NotFound, 9 FailedPrecondition, …).
    pub code: Option<i32>,
    /// The message.
    pub message: String,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.code {
            Some(c) => write!(f, "status {c}: {}", self.message),
            None => write!(f, "{}", self.message),
        }
    }
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn put_bytes(buf: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_varint(buf, field << 3 | 2);
    put_varint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

/// One protobuf field: its number, and its varint value or its bytes.
type Field<'a> = (u64, Result<u64, &'a [u8]>);

/// The fields of a protobuf message.
fn fields(buf: &[u8]) -> Option<Vec<Field<'_>>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let key = read_varint(buf, &mut at)?;
        match key & 7 {
            0 => out.push((key >> 3, Ok(read_varint(buf, &mut at)?))),
            2 => {
                let len = usize::try_from(read_varint(buf, &mut at)?).ok()?;
                let end = at.checked_add(len).filter(|end| *end <= buf.len())?;
                out.push((key >> 3, Err(&buf[at..end])));
                at = end;
            }
            _ => return None,
        }
    }
    Some(out)
}

/// A ttrpc request frame: the 10-byte header (length, stream id, type 1 =
/// request, flags) and a `ttrpc.Request` with the containerd namespace in
/// its metadata.
fn request_frame(
    stream: u32,
    service: &str,
    method: &str,
    namespace: &str,
    payload: &[u8],
) -> Vec<u8> {
    let mut req = Vec::new();
    put_bytes(&mut req, 1, service.as_bytes());
    put_bytes(&mut req, 2, method.as_bytes());
    put_bytes(&mut req, 3, payload);
    let mut kv = Vec::new();
    put_bytes(&mut kv, 1, b"containerd-namespace-ttrpc");
    put_bytes(&mut kv, 2, namespace.as_bytes());
    put_bytes(&mut req, 5, &kv);
    let mut frame = Vec::with_capacity(10 + req.len());
    frame.extend_from_slice(&(req.len() as u32).to_be_bytes());
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.push(1);
    frame.push(0);
    frame.extend_from_slice(&req);
    frame
}

/// Decodes a `ttrpc.Response`: its payload, or the status it failed with.
fn decode_response(body: &[u8]) -> Result<Vec<u8>, CallError> {
    let bad = || CallError {
        code: None,
        message: "malformed ttrpc response".into(),
    };
    let mut payload = Vec::new();
    for (field, value) in fields(body).ok_or_else(bad)? {
        match (field, value) {
            (1, Err(status)) => {
                let mut code = 0i32;
                let mut message = String::new();
                for (f, v) in fields(status).ok_or_else(bad)? {
                    match (f, v) {
                        (1, Ok(c)) => code = c as i32,
                        (2, Err(m)) => message = String::from_utf8_lossy(m).into_owned(),
                        _ => {}
                    }
                }
                if code != 0 {
                    return Err(CallError {
                        code: Some(code),
                        message,
                    });
                }
            }
            (2, Err(p)) => payload = p.to_vec(),
            _ => {}
        }
    }
    Ok(payload)
}

/// A connection to a ttrpc server (a shim's socket), for calls one after
/// the other.
pub struct TtrpcClient {
    conn: UnixStream,
    socket: PathBuf,
    namespace: String,
    next_stream: u32,
}

impl TtrpcClient {
    /// Connects to `socket`; calls carry `namespace` and wait `timeout` at most.
    pub fn connect(
        socket: &Path,
        namespace: &str,
        timeout: Duration,
    ) -> Result<TtrpcClient, CallError> {
        let failed = |what: &str, e: std::io::Error| CallError {
            code: None,
            message: format!("{what} {}: {e}", socket.display()),
        };
        let conn = UnixStream::connect(socket).map_err(|e| failed("connecting to", e))?;
        conn.set_read_timeout(Some(timeout))
            .and_then(|()| conn.set_write_timeout(Some(timeout)))
            .map_err(|e| failed("setting timeouts on", e))?;
        Ok(TtrpcClient {
            conn,
            socket: socket.to_path_buf(),
            namespace: namespace.to_string(),
            next_stream: 1,
        })
    }

    /// Calls `service`/`method` with `payload` (an encoded request
    /// message); returns the encoded response message.
    pub fn call(
        &mut self,
        service: &str,
        method: &str,
        payload: &[u8],
    ) -> Result<Vec<u8>, CallError> {
        let failed = |what: &str, e: std::io::Error| CallError {
            code: None,
            message: format!("{what} {}: {e}", self.socket.display()),
        };
        let stream = self.next_stream;
        self.next_stream += 2;
        self.conn
            .write_all(&request_frame(
                stream,
                service,
                method,
                &self.namespace,
                payload,
            ))
            .map_err(|e| failed("writing to", e))?;
        loop {
            let mut header = [0u8; 10];
            self.conn
                .read_exact(&mut header)
                .map_err(|e| failed("reading from", e))?;
            let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
            let id = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
            let mut body = vec![0u8; len];
            self.conn
                .read_exact(&mut body)
                .map_err(|e| failed("reading from", e))?;
            if id == stream && header[8] == 2 {
                return decode_response(&body);
            }
        }
    }
}

/// One call on a connection of its own (see [`TtrpcClient::call`]).
pub fn ttrpc_call(
    socket: &Path,
    service: &str,
    method: &str,
    namespace: &str,
    payload: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, CallError> {
    TtrpcClient::connect(socket, namespace, timeout)?.call(service, method, payload)
}

/// Task.Update of task `id` with `resources_json` (the runtime spec's
/// LinuxResources in JSON), packed as containerd's CRI sends it, straight
/// to the shim at `socket`.
pub fn update_task(
    socket: &Path,
    namespace: &str,
    id: &str,
    resources_json: &str,
    timeout: Duration,
) -> Result<(), CallError> {
    update_task_with_type(
        socket,
        namespace,
        id,
        LINUX_RESOURCES_TYPE_URL,
        resources_json.as_bytes(),
        timeout,
    )
}

/// Task.Update with any type URL and payload (for malformed requests).
pub fn update_task_with_type(
    socket: &Path,
    namespace: &str,
    id: &str,
    type_url: &str,
    value: &[u8],
    timeout: Duration,
) -> Result<(), CallError> {
    let mut any = Vec::new();
    put_bytes(&mut any, 1, type_url.as_bytes());
    put_bytes(&mut any, 2, value);
    let mut req = Vec::new();
    put_bytes(&mut req, 1, id.as_bytes());
    put_bytes(&mut req, 2, &any);
    ttrpc_call(socket, TASK_SERVICE, "Update", namespace, &req, timeout).map(|_| ())
}

/// An encoded `StatsRequest` for task `id`, for [`ttrpc_call`] with
/// method `Stats`.
pub fn stats_request(id: &str) -> Vec<u8> {
    let mut req = Vec::new();
    put_bytes(&mut req, 1, id.as_bytes());
    req
}

/// The type URL of the metrics in an encoded `StatsResponse` (field 1, an
/// Any), or None.
pub fn stats_type_url(response: &[u8]) -> Option<String> {
    let any = fields(response)?
        .into_iter()
        .find_map(|(f, v)| match (f, v) {
            (1, Err(any)) => Some(any),
            _ => None,
        })?;
    fields(any)?.into_iter().find_map(|(f, v)| match (f, v) {
        (1, Err(url)) => Some(String::from_utf8_lossy(url).into_owned()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttrpc_frames_and_responses() {
        let frame = request_frame(
            1,
            "containerd.task.v3.Task",
            "Stats",
            "ns",
            &stats_request("c1"),
        );
        let len = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
        assert_eq!(len, frame.len() - 10);
        assert_eq!(&frame[4..10], &[0, 0, 0, 1, 1, 0]);
        let req = fields(&frame[10..]).unwrap();
        assert_eq!(req[0], (1, Err(&b"containerd.task.v3.Task"[..])));
        assert_eq!(req[1], (2, Err(&b"Stats"[..])));
        assert_eq!(req[2], (3, Err(&[0x0a, 0x02, b'c', b'1'][..])));
        // Status { code: 9, message: "no" }.
        let mut status = Vec::new();
        put_varint(&mut status, 1 << 3);
        put_varint(&mut status, 9);
        put_bytes(&mut status, 2, b"no");
        let mut resp = Vec::new();
        put_bytes(&mut resp, 1, &status);
        assert_eq!(
            decode_response(&resp),
            Err(CallError {
                code: Some(9),
                message: "no".into()
            })
        );
        let mut ok = Vec::new();
        put_bytes(&mut ok, 2, &[1, 2, 3]);
        assert_eq!(decode_response(&ok), Ok(vec![1, 2, 3]));
        let mut any = Vec::new();
        put_bytes(&mut any, 1, b"io.containerd.cgroups.v1.Metrics");
        let mut stats = Vec::new();
        put_bytes(&mut stats, 1, &any);
        assert_eq!(
            stats_type_url(&stats).as_deref(),
            Some("io.containerd.cgroups.v1.Metrics")
        );
        assert!(fields(&[0x0b]).is_none());
    }

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
