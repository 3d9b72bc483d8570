//! The pool of host uid ranges: each sandbox gets its own disjoint block of
//! 65536 host ids for container ids 0–65535.
//!
//! A slot is taken by creating `<state_root>/uidpool/<slot>` exclusively
//! (its content is the sandbox id) and given back by removing it. A slot
//! whose sandbox state directory is gone is stale and taken over.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Container ids mapped per sandbox.
pub const IDS_PER_SANDBOX: u32 = 65536;

/// Errors of the uid pool.
#[derive(Debug, thiserror::Error)]
pub enum UidPoolError {
    /// Every slot is in use.
    #[error("all {0} uid ranges of the pool are in use")]
    Exhausted(u32),
    /// The pool's bookkeeping failed.
    #[error("uid pool {path}")]
    Io {
        /// The slot file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The configured pool does not fit in 32-bit ids.
    #[error("uid pool start {start} with {slots} slots overflows 32-bit ids")]
    Overflow {
        /// First host id.
        start: u32,
        /// Number of slots.
        slots: u32,
    },
}

/// The configured pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UidPool {
    /// First host id of slot 0.
    pub start: u32,
    /// Number of slots of [`IDS_PER_SANDBOX`] ids.
    pub slots: u32,
}

impl Default for UidPool {
    fn default() -> Self {
        UidPool {
            start: 1 << 28,
            slots: 4096,
        }
    }
}

fn hash(id: &str) -> u32 {
    // FNV-1a: stable across runs and processes.
    let mut h: u32 = 0x811c_9dc5;
    for b in id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

impl UidPool {
    /// Host id of `slot`'s container root.
    pub fn base(&self, slot: u32) -> u32 {
        self.start + slot * IDS_PER_SANDBOX
    }

    /// Takes a slot for sandbox `id`, preferring one derived from the id.
    pub fn allocate(&self, state_root: &Path, id: &str) -> Result<u32, UidPoolError> {
        if self.slots == 0 {
            return Err(UidPoolError::Exhausted(0));
        }
        let last = u64::from(self.start) + u64::from(self.slots) * u64::from(IDS_PER_SANDBOX);
        if last > u64::from(u32::MAX) {
            return Err(UidPoolError::Overflow {
                start: self.start,
                slots: self.slots,
            });
        }
        let dir = state_root.join("uidpool");
        fs::create_dir_all(&dir).map_err(|source| UidPoolError::Io {
            path: dir.clone(),
            source,
        })?;
        let first = hash(id) % self.slots;
        for i in 0..self.slots {
            let slot = (first + i) % self.slots;
            let path = dir.join(slot.to_string());
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    f.write_all(id.as_bytes())
                        .map_err(|source| UidPoolError::Io {
                            path: path.clone(),
                            source,
                        })?;
                    return Ok(slot);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let owner = fs::read_to_string(&path).unwrap_or_default();
                    if !owner.is_empty() && !state_root.join(&owner).exists() {
                        log::warn!("uid pool: slot {slot} of vanished sandbox {owner} reclaimed");
                        let _ = fs::remove_file(&path);
                        if let Ok(mut f) = fs::OpenOptions::new()
                            .write(true)
                            .create_new(true)
                            .open(&path)
                        {
                            if f.write_all(id.as_bytes()).is_ok() {
                                return Ok(slot);
                            }
                        }
                    }
                }
                Err(source) => return Err(UidPoolError::Io { path, source }),
            }
        }
        Err(UidPoolError::Exhausted(self.slots))
    }

    /// Gives `slot` back if sandbox `id` holds it.
    pub fn release(state_root: &Path, slot: u32, id: &str) {
        let path = state_root.join("uidpool").join(slot.to_string());
        if fs::read_to_string(&path).ok().as_deref() == Some(id) {
            let _ = fs::remove_file(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_disjoint_and_reused_after_release() {
        let root = std::env::temp_dir().join(format!("uidpool-test-{}", std::process::id()));
        let pool = UidPool {
            start: 1 << 20,
            slots: 3,
        };
        fs::create_dir_all(root.join("a")).unwrap();
        fs::create_dir_all(root.join("b")).unwrap();
        fs::create_dir_all(root.join("c")).unwrap();
        let a = pool.allocate(&root, "a").unwrap();
        let b = pool.allocate(&root, "b").unwrap();
        let c = pool.allocate(&root, "c").unwrap();
        let mut all = vec![a, b, c];
        all.sort_unstable();
        assert_eq!(all, vec![0, 1, 2]);
        fs::create_dir_all(root.join("d")).unwrap();
        assert!(matches!(
            pool.allocate(&root, "d"),
            Err(UidPoolError::Exhausted(3))
        ));
        UidPool::release(&root, b, "b");
        assert_eq!(pool.allocate(&root, "d").unwrap(), b);
        assert_eq!(pool.base(1), (1 << 20) + 65536);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn stale_slots_are_reclaimed() {
        let root = std::env::temp_dir().join(format!("uidpool-stale-{}", std::process::id()));
        let pool = UidPool { start: 0, slots: 1 };
        fs::create_dir_all(root.join("uidpool")).unwrap();
        fs::write(root.join("uidpool/0"), "gone").unwrap();
        assert_eq!(pool.allocate(&root, "new").unwrap(), 0);
        fs::remove_dir_all(&root).unwrap();
    }
}
