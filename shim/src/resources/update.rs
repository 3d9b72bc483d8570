//! Task.Update (CRI UpdateContainerResources): the new limits arrive as a
//! protobuf `Any` holding the runtime spec's `LinuxResources` in JSON, as
//! containerd's typeurl packs Go types it registered:
//! `types.containerd.io/opencontainers/runtime-spec/1/LinuxResources`.

use oci_spec::runtime::LinuxResources;
use protobuf::well_known_types::any::Any;

use super::{Cgroup, ResourceError};

/// The type URL containerd gives `specs.LinuxResources`.
pub const LINUX_RESOURCES_TYPE_URL: &str =
    "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";

/// Decodes the resources of an Update request; the error says what is
/// wrong with the payload.
pub fn decode(any: Option<&Any>) -> Result<LinuxResources, String> {
    let any = any.ok_or("the request carries no resources")?;
    let name = any.type_url.rsplit('/').next().unwrap_or_default();
    if !any.type_url.is_empty() && name != "LinuxResources" {
        return Err(format!(
            "resources of type {:?}: only {LINUX_RESOURCES_TYPE_URL} is supported",
            any.type_url
        ));
    }
    serde_json::from_slice(&any.value).map_err(|e| format!("bad LinuxResources JSON: {e}"))
}

/// Writes `resources` into the container's cgroup (the limits the sandbox
/// manager knows how to set).
pub fn apply(cg: &Cgroup, resources: &LinuxResources) -> Result<(), ResourceError> {
    cg.placement().apply(resources).map_err(ResourceError::from)
}

#[cfg(test)]
mod tests {
    use super::super::testing::FakeRoot;
    use super::*;

    fn any(type_url: &str, body: &str) -> Any {
        Any {
            type_url: type_url.into(),
            value: body.as_bytes().to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn containerd_payloads_decode() {
        let r = decode(Some(&any(
            LINUX_RESOURCES_TYPE_URL,
            r#"{"memory":{"limit":67108864,"swap":67108864},"cpu":{"shares":512,"quota":50000,"period":100000},"pids":{"limit":64}}"#,
        )))
        .unwrap();
        assert_eq!(r.memory().as_ref().unwrap().limit(), Some(67108864));
        assert_eq!(r.cpu().as_ref().unwrap().quota(), Some(50000));
        assert_eq!(r.pids().as_ref().unwrap().limit(), 64);
        // An empty object is a valid (empty) update.
        assert!(decode(Some(&any(LINUX_RESOURCES_TYPE_URL, "{}"))).is_ok());
    }

    #[test]
    fn bad_payloads_are_refused() {
        assert!(decode(None).is_err());
        assert!(decode(Some(&any(LINUX_RESOURCES_TYPE_URL, "not json"))).is_err());
        assert!(decode(Some(&any(
            LINUX_RESOURCES_TYPE_URL,
            r#"{"memory":{"limit":"x"}}"#
        )))
        .is_err());
        let e = decode(Some(&any(
            "types.containerd.io/opencontainers/runtime-spec/1/WindowsResources",
            "{}",
        )))
        .unwrap_err();
        assert!(e.contains("WindowsResources"), "{e}");
    }

    #[test]
    fn limits_reach_the_cgroup_files() {
        let r = FakeRoot::new(false);
        r.put("memory", "memory.limit_in_bytes", "33554432\n");
        r.put("pids", "pids.max", "max\n");
        let res = decode(Some(&any(
            LINUX_RESOURCES_TYPE_URL,
            r#"{"memory":{"limit":67108864},"pids":{"limit":64}}"#,
        )))
        .unwrap();
        apply(&r.cgroup, &res).unwrap();
        assert_eq!(r.get("memory", "memory.limit_in_bytes"), "67108864");
        assert_eq!(r.get("pids", "pids.max"), "64");
        let v2 = FakeRoot::new(true);
        v2.put("memory", "memory.max", "max\n");
        apply(&v2.cgroup, &res).unwrap();
        assert_eq!(v2.get("memory", "memory.max"), "67108864");
    }

    #[test]
    fn a_gone_cgroup_is_not_found() {
        let r = FakeRoot::new(false);
        let res = decode(Some(&any(
            LINUX_RESOURCES_TYPE_URL,
            r#"{"memory":{"limit":67108864}}"#,
        )))
        .unwrap();
        assert_eq!(
            apply(&r.cgroup, &res).unwrap_err().code(),
            ttrpc::Code::NOT_FOUND
        );
    }
}
