//! Small durable-file helpers: atomic replace (write temp, fsync, rename, fsync the folder).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// The temporary name `path` is written under: the whole name plus `.tmp`, so files that
/// share a stem (`<base>.index`, `<base>.fidx`, written by different threads) never share one.
fn tmp_path(path: &Path) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    name.into()
}

/// Replaces `path` with `data` so that a crash leaves either the old or the new content.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = tmp_path(path);
    {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Replaces `path` with `data` by rename, without fsync: for files that recovery validates and
/// rebuilds when they are stale or missing (roll-time indexes and producer snapshots), written
/// while the partition lock is held.
pub fn write_replace(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = tmp_path(path);
    fs::write(&tmp, data)?;
    fs::rename(&tmp, path)
}

/// Makes a folder's entries (created, renamed or removed files) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    #[test]
    fn atomic_write_replaces() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("m.json");
        super::write_atomic(&p, b"one").unwrap();
        super::write_atomic(&p, b"two").unwrap();
        assert_eq!(
            super::tmp_path(&d.path().join("00000000000000000005.fidx")),
            d.path().join("00000000000000000005.fidx.tmp")
        );
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert!(!d.path().join("m.json.tmp").exists());
    }
}
