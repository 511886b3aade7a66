//! A memory cgroup for one server process, so the kernel itself enforces the bound a test
//! asserts: a server that allocates past it is killed, and the test sees it dead.
//!
//! Made under the test process's own cgroup (cgroup v2 `memory.max`, or the v1 memory
//! controller's `memory.limit_in_bytes`) when the machine lets us create one there (root, or a
//! delegated subtree). Where it cannot, tests still bound the process's peak resident memory.

use std::path::{Path, PathBuf};

/// A cgroup with a memory limit; removed on drop (after its process has exited).
pub struct MemoryCage {
    dir: PathBuf,
    /// The file holding the most memory the group ever used (v2 `memory.peak`, v1
    /// `memory.max_usage_in_bytes`).
    peak_file: &'static str,
}

/// (Mount point, limit file, peak file) of a controller that `/proc/self/cgroup` lists as
/// `controllers` (empty for cgroup v2).
fn layout(controllers: &str) -> Option<(&'static str, &'static str, &'static str)> {
    if controllers.is_empty() {
        Some(("/sys/fs/cgroup", "memory.max", "memory.peak"))
    } else if controllers.split(',').any(|c| c == "memory") {
        Some((
            "/sys/fs/cgroup/memory",
            "memory.limit_in_bytes",
            "memory.max_usage_in_bytes",
        ))
    } else {
        None
    }
}

impl MemoryCage {
    /// A new cgroup limited to `limit` bytes, or `None` where none can be made.
    pub fn create(limit: u64) -> Option<Self> {
        let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let name = format!(
            "plinth-e2e-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        );
        for line in own.lines() {
            let mut fields = line.splitn(3, ':');
            let (Some(_), Some(controllers), Some(path)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let Some((mount, limit_file, peak_file)) = layout(controllers) else {
                continue;
            };
            // Only a real cgroup mount: a plain directory there would take any file we write.
            if !Path::new(mount).join("cgroup.procs").exists() {
                continue;
            }
            let dir = Path::new(mount)
                .join(path.trim_start_matches('/'))
                .join(&name);
            if std::fs::create_dir(&dir).is_err() {
                continue;
            }
            let cage = MemoryCage { dir, peak_file };
            if cage.dir.join(limit_file).exists()
                && std::fs::write(cage.dir.join(limit_file), limit.to_string()).is_ok()
            {
                return Some(cage);
            }
        }
        None
    }

    /// Moves process `pid` into the cage.
    pub fn enter(&self, pid: u32) -> std::io::Result<()> {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string())
    }

    /// The most memory the cage's processes used at once, if the kernel reports it.
    pub fn peak_bytes(&self) -> Option<u64> {
        std::fs::read_to_string(self.dir.join(self.peak_file))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for MemoryCage {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}
