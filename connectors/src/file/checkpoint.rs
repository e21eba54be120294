//! The file source's checkpoint: for each file, its identity (device, inode and a fingerprint
//! of its first line) and the position up to which its lines were delivered. Written atomically
//! (temporary file, fsync, rename, folder fsync) so a crash leaves the old or the new version.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Who a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Identity {
    pub dev: u64,
    pub inode: u64,
    /// CRC-32C of the first line and its length.
    pub fingerprint: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub id: Identity,
    pub path: PathBuf,
    pub offset: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Checkpoint {
    pub files: Vec<Entry>,
}

impl Checkpoint {
    fn path(dir: &Path) -> PathBuf {
        dir.join("checkpoints.json")
    }

    /// Reads the checkpoint; a missing one is empty, an unreadable one is an error naming it.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let p = Self::path(dir);
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| anyhow::anyhow!("{}: not a checkpoint file: {e}", p.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(anyhow::anyhow!("{}: {e}", p.display())),
        }
    }

    /// The delivered position of a file: by identity, else by fingerprint alone (the file was
    /// copied or moved while the source was down).
    pub fn offset_of(&self, id: &Identity) -> Option<u64> {
        self.files
            .iter()
            .find(|e| e.id == *id)
            .or_else(|| {
                self.files
                    .iter()
                    .find(|e| e.id.fingerprint == id.fingerprint)
            })
            .map(|e| e.offset)
    }

    /// Writes it atomically.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec_pretty(self)?;
        trib_pipelines::state_file::write_atomic(dir, "checkpoints.json", &bytes)
            .map_err(|e| anyhow::anyhow!("cannot write the checkpoint in {}: {e}", dir.display()))
    }
}

/// Bytes read to fingerprint a file.
pub const FINGERPRINT_BYTES: usize = 4096;

/// CRC-32C of a file's first line (with its length), given its first bytes; a first line longer
/// than [`FINGERPRINT_BYTES`] counts up to there. None while there is no complete first line.
pub fn fingerprint(first: &[u8]) -> Option<u64> {
    let end = match first.iter().position(|b| *b == b'\n') {
        Some(e) => e,
        None if first.len() >= FINGERPRINT_BYTES => FINGERPRINT_BYTES,
        None => return None,
    };
    let line = &first[..end];
    Some((u64::from(crc32c::crc32c(line)) << 32) | (line.len() as u64 & 0xffff_ffff))
}
