//! A memory cgroup for one server process, so the kernel itself enforces the bound a test
//! asserts: a server that allocates past it is killed, and the test sees it dead.
//!
//! Made under the test process's own cgroup (cgroup v2 `memory.max`, or the v1 memory
//! controller's `memory.limit_in_bytes`) when the machine lets us create one there (root, or a
//! delegated subtree). Where it cannot, tests still bound the process's peak resident memory.

use std::path::{Path, PathBuf};

/// A cgroup with a memory limit; removed on drop (after its process has exited).
pub(crate) struct MemoryCage {
    dir: PathBuf,
    /// The file holding the most memory the group ever used (v2 `memory.peak`, v1
    /// `memory.max_usage_in_bytes`).
    peak_file: &'static str,
}

/// Where a cgroup hierarchy keeps its memory files.
struct Layout {
    mount: &'static str,
    limit: &'static str,
    /// Memory plus swap (v1) or swap alone (v2): held at the limit or zero, so the server is
    /// killed at the limit rather than swapped out.
    swap: &'static str,
    peak: &'static str,
}

/// The layout of a hierarchy that `/proc/self/cgroup` lists with `controllers` (empty for
/// cgroup v2).
fn layout(controllers: &str) -> Option<Layout> {
    if controllers.is_empty() {
        Some(Layout {
            mount: "/sys/fs/cgroup",
            limit: "memory.max",
            swap: "memory.swap.max",
            peak: "memory.peak",
        })
    } else if controllers.split(',').any(|c| c == "memory") {
        Some(Layout {
            mount: "/sys/fs/cgroup/memory",
            limit: "memory.limit_in_bytes",
            swap: "memory.memsw.limit_in_bytes",
            peak: "memory.max_usage_in_bytes",
        })
    } else {
        None
    }
}

impl MemoryCage {
    /// A new cgroup limited to `limit` bytes, or `None` where none can be made.
    pub(crate) fn create(limit: u64) -> Option<Self> {
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
            let Some(layout) = layout(controllers) else {
                continue;
            };
            // Only a real cgroup mount: a plain directory there would take any file we write.
            if !Path::new(layout.mount).join("cgroup.procs").exists() {
                continue;
            }
            let dir = Path::new(layout.mount)
                .join(path.trim_start_matches('/'))
                .join(&name);
            if std::fs::create_dir(&dir).is_err() {
                continue;
            }
            let cage = MemoryCage {
                dir,
                peak_file: layout.peak,
            };
            if cage.dir.join(layout.limit).exists()
                && std::fs::write(cage.dir.join(layout.limit), limit.to_string()).is_ok()
            {
                // Where swap is accounted, none beyond the limit (v1 counts memory plus swap).
                let swap = if controllers.is_empty() { 0 } else { limit };
                let _ = std::fs::write(cage.dir.join(layout.swap), swap.to_string());
                return Some(cage);
            }
        }
        None
    }

    /// Moves process `pid` into the cage.
    pub(crate) fn enter(&self, pid: u32) -> std::io::Result<()> {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string())
    }

    /// The most memory the cage's processes used at once, if the kernel reports it.
    pub(crate) fn peak_bytes(&self) -> Option<u64> {
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
