//! A tmpfs mounted on a temporary directory for the storage-fault tests (a disk that fills
//! up, then gets room again). The tests run as root; a failed mount fails the test, it never
//! skips.

use std::path::Path;
use std::process::Command;

/// A tmpfs mounted on a temporary directory, unmounted (lazily) on drop.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it: `12m`, `64k`).
    ///
    /// # Panics
    /// When `mount` fails (not root, no tmpfs).
    pub fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        run(
            &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"],
            dir.path(),
        );
        Self { dir }
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Changes its size in place (what is written stays).
    ///
    /// # Panics
    /// When the remount fails (for example below what is written).
    pub fn resize(&self, size: &str) {
        run(&["-o", &format!("remount,size={size}")], self.dir.path());
    }
}

fn run(args: &[&str], dir: &Path) {
    let out = Command::new("mount")
        .args(args)
        .arg(dir)
        .output()
        .expect("run mount");
    assert!(
        out.status.success(),
        "mount failed (these tests need root): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}
