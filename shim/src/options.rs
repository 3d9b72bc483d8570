//! Runtime options: the TOML file (`/etc/runsc-rs/runsc.toml`, or the one
//! named by containerd's `ConfigPath` runtime option) that says how sandboxes
//! are made, and its translation into a [`sandbox::manager::Config`].
//!
//! containerd hands runtime options to Task.Create as a protobuf `Any`:
//! `runtimeoptions.v1.Options` (`type_url`, `config_path`, `config_body`) for
//! non-runc runtime types such as ours, or `containerd.runc.v1.Options`
//! (which has no config path) when a client sends runc's type.

use std::path::{Path, PathBuf};
use std::time::Duration;

use protobuf::well_known_types::any::Any;
use protobuf::CodedInputStream;
use sandbox::manager::{Config, Network, Platform, UidPool};
use serde::Deserialize;

/// Where the options live when containerd names no file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/runsc-rs/runsc.toml";

/// Every key the options file may hold.
const KNOWN_KEYS: &[&str] = &[
    "platform",
    "uid_pool_start",
    "uid_pool_size",
    "allow_privileged",
    "debug",
    "log_dir",
    "state_dir",
];

/// Errors reading the runtime options.
#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    /// The options file could not be read.
    #[error("reading runtime options {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or a value has the wrong type.
    #[error("runtime options {origin}: {message}")]
    Parse {
        /// The file (or "ConfigBody").
        origin: String,
        /// What the parser said.
        message: String,
    },
    /// The file holds a key we do not know (a typo would otherwise be
    /// silently ignored).
    #[error("runtime options {origin}: unknown key `{key}` (known keys: {known})")]
    UnknownKey {
        /// The file (or "ConfigBody").
        origin: String,
        /// The key.
        key: String,
        /// The keys we know.
        known: String,
    },
    /// A value is out of range.
    #[error("runtime options {origin}: {message}")]
    Invalid {
        /// The file (or "ConfigBody").
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// containerd sent options of a type we cannot read.
    #[error("unsupported runtime options type `{0}`")]
    UnsupportedType(String),
    /// The options message is not valid protobuf.
    #[error("decoding runtime options `{type_url}`")]
    Decode {
        /// The message type.
        type_url: String,
        /// The cause.
        #[source]
        source: protobuf::Error,
    },
}

/// The runtime options, with their documented defaults.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct RuntimeOptions {
    /// Workload platform ("native").
    pub platform: Platform,
    /// First host uid of the sandboxes' uid pool.
    pub uid_pool_start: u32,
    /// Number of 65536-id slots in the pool.
    pub uid_pool_size: u32,
    /// Accept privileged containers.
    pub allow_privileged: bool,
    /// Verbose logs of the shim and the sandbox.
    pub debug: bool,
    /// Where sandbox logs go when `debug` is set.
    pub log_dir: PathBuf,
    /// Runtime state (sandbox records, control sockets).
    pub state_dir: PathBuf,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        let pool = UidPool::default();
        RuntimeOptions {
            platform: Platform::Native,
            uid_pool_start: pool.start,
            uid_pool_size: pool.slots,
            allow_privileged: false,
            debug: false,
            log_dir: PathBuf::from("/var/log/runsc-rs"),
            state_dir: PathBuf::from("/run/runsc-rs"),
        }
    }
}

/// Where the options come from, as decoded from containerd's `Any`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptionsSource {
    /// The default file, when it exists; else the built-in defaults.
    Default,
    /// This file, which must exist.
    Path(PathBuf),
    /// This TOML text (`config_body`).
    Body(String),
}

/// Decodes the runtime options `Any` of Task.Create (or the `start`
/// action's extensions) into where the options come from.
pub fn source_from_any(any: Option<&Any>) -> Result<OptionsSource, OptionsError> {
    let Some(any) = any.filter(|a| !a.type_url.is_empty()) else {
        return Ok(OptionsSource::Default);
    };
    let name = any.type_url.rsplit('/').next().unwrap_or_default();
    match name {
        "runtimeoptions.v1.Options" => {
            let (path, body) =
                decode_runtime_options(&any.value).map_err(|source| OptionsError::Decode {
                    type_url: any.type_url.clone(),
                    source,
                })?;
            Ok(if !body.trim().is_empty() {
                OptionsSource::Body(body)
            } else if !path.is_empty() {
                OptionsSource::Path(PathBuf::from(path))
            } else {
                OptionsSource::Default
            })
        }
        // runc's options carry nothing for us (no config path).
        "containerd.runc.v1.Options" => Ok(OptionsSource::Default),
        _ => Err(OptionsError::UnsupportedType(any.type_url.clone())),
    }
}

/// Reads `config_path` (field 2) and `config_body` (field 3) of a
/// `runtimeoptions.v1.Options` message.
fn decode_runtime_options(bytes: &[u8]) -> protobuf::Result<(String, String)> {
    use protobuf::rt::WireType;
    let mut is = CodedInputStream::from_bytes(bytes);
    let (mut path, mut body) = (String::new(), String::new());
    while let Some(tag) = is.read_raw_tag_or_eof()? {
        let field = tag >> 3;
        let wire = WireType::new(tag & 7).ok_or(protobuf::Error::from(std::io::Error::other(
            "bad wire type",
        )))?;
        match (field, wire) {
            (2, WireType::LengthDelimited) => path = is.read_string()?,
            (3, WireType::LengthDelimited) => body = is.read_string()?,
            (_, w) => is.skip_field(w)?,
        }
    }
    Ok((path, body))
}

impl RuntimeOptions {
    /// Loads the options from `source`.
    pub fn load(source: &OptionsSource) -> Result<RuntimeOptions, OptionsError> {
        match source {
            OptionsSource::Default => {
                let path = Path::new(DEFAULT_CONFIG_PATH);
                match std::fs::read_to_string(path) {
                    Ok(text) => Self::parse(&text, DEFAULT_CONFIG_PATH),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        Ok(RuntimeOptions::default())
                    }
                    Err(source) => Err(OptionsError::Read {
                        path: path.to_path_buf(),
                        source,
                    }),
                }
            }
            OptionsSource::Path(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| OptionsError::Read {
                    path: path.clone(),
                    source,
                })?;
                Self::parse(&text, &path.display().to_string())
            }
            OptionsSource::Body(text) => Self::parse(text, "ConfigBody"),
        }
    }

    /// Parses TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<RuntimeOptions, OptionsError> {
        let table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| OptionsError::Parse {
                    origin: origin.to_string(),
                    message: e.message().to_string(),
                })?;
        if let Some(key) = table.keys().find(|k| !KNOWN_KEYS.contains(&k.as_str())) {
            return Err(OptionsError::UnknownKey {
                origin: origin.to_string(),
                key: key.clone(),
                known: KNOWN_KEYS.join(", "),
            });
        }
        let opts: RuntimeOptions =
            table
                .try_into()
                .map_err(|e: toml::de::Error| OptionsError::Parse {
                    origin: origin.to_string(),
                    message: e.message().to_string(),
                })?;
        opts.validate(origin)?;
        Ok(opts)
    }

    fn validate(&self, origin: &str) -> Result<(), OptionsError> {
        let invalid = |message: String| OptionsError::Invalid {
            origin: origin.to_string(),
            message,
        };
        if self.uid_pool_size == 0 {
            return Err(invalid("uid_pool_size must be at least 1".into()));
        }
        if self.uid_pool_start == 0 {
            return Err(invalid(
                "uid_pool_start must not be 0 (host root must never back a container)".into(),
            ));
        }
        let end = u64::from(self.uid_pool_start)
            + u64::from(self.uid_pool_size) * u64::from(sandbox::manager::uidpool::IDS_PER_SANDBOX);
        if end > u64::from(u32::MAX) {
            return Err(invalid(format!(
                "uid_pool_start {} + uid_pool_size {} x 65536 overflows 32-bit ids",
                self.uid_pool_start, self.uid_pool_size
            )));
        }
        for (key, p) in [("log_dir", &self.log_dir), ("state_dir", &self.state_dir)] {
            if !p.is_absolute() {
                return Err(invalid(format!(
                    "{key} must be an absolute path, not {}",
                    p.display()
                )));
            }
        }
        Ok(())
    }

    /// The manager configuration for sandbox `sandbox_id`. `sandbox_binary` serves
    /// `boot` (the shim itself); `host_network` when the spec asks for the
    /// host's network namespace.
    pub fn manager_config(
        &self,
        sandbox_id: &str,
        sandbox_binary: PathBuf,
        host_network: bool,
    ) -> Config {
        Config {
            state_root: self.state_dir.clone(),
            sandbox_binary,
            platform: self.platform,
            uid_pool: UidPool {
                start: self.uid_pool_start,
                slots: self.uid_pool_size,
            },
            network: if host_network {
                Network::Host
            } else {
                Network::Sandbox
            },
            // Without debug, the sandbox logs into its state directory, which
            // destroy removes: no log files pile up per pod.
            log_path: self
                .debug
                .then(|| self.log_dir.join(format!("{sandbox_id}.log"))),
            debug: self.debug,
            boot_timeout: Duration::from_secs(10),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protobuf::Message;

    #[test]
    fn empty_file_gives_defaults() {
        let o = RuntimeOptions::parse("", "t").unwrap();
        assert_eq!(o, RuntimeOptions::default());
        assert_eq!(o.uid_pool_start, 268_435_456);
        assert_eq!(o.uid_pool_size, 4096);
        assert_eq!(o.state_dir, PathBuf::from("/run/runsc-rs"));
        assert_eq!(o.log_dir, PathBuf::from("/var/log/runsc-rs"));
        assert!(!o.debug && !o.allow_privileged);
    }

    #[test]
    fn contrib_file_parses_to_defaults() {
        let text = include_str!("../../contrib/runsc.toml");
        assert_eq!(
            RuntimeOptions::parse(text, "contrib").unwrap(),
            RuntimeOptions::default()
        );
    }

    #[test]
    fn every_key_is_read() {
        let o = RuntimeOptions::parse(
            r#"
            platform = "native"
            uid_pool_start = 65536
            uid_pool_size = 2
            allow_privileged = true
            debug = true
            log_dir = "/tmp/l"
            state_dir = "/tmp/s"
            "#,
            "t",
        )
        .unwrap();
        assert_eq!(o.uid_pool_start, 65536);
        assert_eq!(o.uid_pool_size, 2);
        assert!(o.allow_privileged && o.debug);
        assert_eq!(o.log_dir, PathBuf::from("/tmp/l"));
        assert_eq!(o.state_dir, PathBuf::from("/tmp/s"));
        let cfg = o.manager_config("pod", PathBuf::from("/bin/x"), true);
        assert_eq!(cfg.network, Network::Host);
        assert_eq!(cfg.log_path, Some(PathBuf::from("/tmp/l/pod.log")));
        assert_eq!(cfg.uid_pool.slots, 2);
        assert!(cfg.debug);
    }

    #[test]
    fn unknown_key_is_named() {
        let e = RuntimeOptions::parse("debgu = true", "/x.toml").unwrap_err();
        assert!(matches!(e, OptionsError::UnknownKey { ref key, .. } if key == "debgu"));
        assert!(e.to_string().contains("unknown key `debgu`"), "{e}");
        assert!(e.to_string().contains("/x.toml"), "{e}");
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(matches!(
            RuntimeOptions::parse("debug = 3", "t"),
            Err(OptionsError::Parse { .. })
        ));
        assert!(matches!(
            RuntimeOptions::parse("platform = \"xen\"", "t"),
            Err(OptionsError::Parse { .. })
        ));
        assert!(matches!(
            RuntimeOptions::parse("uid_pool_size = 0", "t"),
            Err(OptionsError::Invalid { .. })
        ));
        assert!(matches!(
            RuntimeOptions::parse("uid_pool_start = 4294901760\nuid_pool_size = 2", "t"),
            Err(OptionsError::Invalid { .. })
        ));
        assert!(matches!(
            RuntimeOptions::parse("state_dir = \"rel\"", "t"),
            Err(OptionsError::Invalid { .. })
        ));
        assert!(matches!(
            RuntimeOptions::parse("not toml [", "t"),
            Err(OptionsError::Parse { .. })
        ));
    }

    #[test]
    fn missing_named_file_is_an_error() {
        let e = RuntimeOptions::load(&OptionsSource::Path("/nonexistent/runsc.toml".into()));
        assert!(matches!(e, Err(OptionsError::Read { .. })));
    }

    /// Encodes a `runtimeoptions.v1.Options` by hand (we have no generated
    /// type for it).
    fn runtime_options_any(path: &str, body: &str) -> Any {
        let mut value = Vec::new();
        {
            let mut os = protobuf::CodedOutputStream::vec(&mut value);
            os.write_string(1, "x").unwrap();
            if !path.is_empty() {
                os.write_string(2, path).unwrap();
            }
            if !body.is_empty() {
                os.write_string(3, body).unwrap();
            }
            // An unknown field must be skipped.
            os.write_uint32(9, 7).unwrap();
            os.flush().unwrap();
        }
        Any {
            type_url: "runtimeoptions.v1.Options".into(),
            value,
            ..Default::default()
        }
    }

    #[test]
    fn options_any_is_decoded() {
        assert_eq!(source_from_any(None).unwrap(), OptionsSource::Default);
        assert_eq!(
            source_from_any(Some(&Any::new())).unwrap(),
            OptionsSource::Default
        );
        assert_eq!(
            source_from_any(Some(&runtime_options_any("/etc/x.toml", ""))).unwrap(),
            OptionsSource::Path("/etc/x.toml".into())
        );
        assert_eq!(
            source_from_any(Some(&runtime_options_any("/etc/x.toml", "debug = true"))).unwrap(),
            OptionsSource::Body("debug = true".into())
        );
        assert_eq!(
            source_from_any(Some(&runtime_options_any("", ""))).unwrap(),
            OptionsSource::Default
        );
        let runc =
            containerd_shim::util::convert_to_any(Box::new(containerd_shim::api::Options::new()))
                .unwrap();
        assert_eq!(
            source_from_any(Some(&runc)).unwrap(),
            OptionsSource::Default
        );
        let other = Any {
            type_url: "example.Other".into(),
            ..Default::default()
        };
        assert!(matches!(
            source_from_any(Some(&other)),
            Err(OptionsError::UnsupportedType(_))
        ));
        let garbage = Any {
            type_url: "types.containerd.io/runtimeoptions.v1.Options".into(),
            value: vec![0x12, 0xff],
            ..Default::default()
        };
        assert!(matches!(
            source_from_any(Some(&garbage)),
            Err(OptionsError::Decode { .. })
        ));
        // The full message round-trips through the generic Any encoding too.
        let bytes = runtime_options_any("/p", "").write_to_bytes().unwrap();
        let back = Any::parse_from_bytes(&bytes).unwrap();
        assert_eq!(
            source_from_any(Some(&back)).unwrap(),
            OptionsSource::Path("/p".into())
        );
    }
}
