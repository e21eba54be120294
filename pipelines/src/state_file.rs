//! Files replaced atomically (checkpoints, cursors, acknowledged positions, lake files): the
//! new content goes to a temporary file that is fsynced and renamed over the old one, and the
//! folder is fsynced, so a crash or power loss leaves the old version or the new, never a mix.

use std::io::Write;
use std::path::Path;

/// Replaces `dir/name` with `bytes`, creating `dir` if needed.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    #[test]
    fn replaces_the_whole_file() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("state");
        super::write_atomic(&dir, "pos", b"a long first version").unwrap();
        super::write_atomic(&dir, "pos", b"short").unwrap();
        assert_eq!(std::fs::read(dir.join("pos")).unwrap(), b"short");
        assert!(!dir.join("pos.tmp").exists());
    }
}
