//! One segment's field index on disk: `<base>.fidx` beside `<base>.log`.
//!
//! Layout (little endian): magic `TRBFIX01`, the index definition's fingerprint, the offset the
//! file covers up to (exclusive), the smallest and largest record timestamp seen, the entry
//! count, then the entries sorted by (hash, offset): an 8-byte hash of (field, value text) and
//! the record's 4-byte offset relative to the segment base; a CRC-32C of all that closes the
//! file. It is written whole under a temporary name and renamed, so a crash leaves the old
//! file or the new one. Opening checks the CRC and keeps one hash per block of entries in
//! memory; a lookup reads only the blocks that can hold its hash.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"TRBFIX01";
const HEAD: usize = 8 + 8 + 8 + 8 + 8 + 8;
const ENTRY: usize = 12;
/// Entries per block: one in-memory hash per block.
const BLOCK: usize = 512;

/// The file name of the field index of the segment starting at `base`.
pub fn file_name(base: i64) -> String {
    format!("{base:020}.fidx")
}

/// What a file covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coverage {
    pub fingerprint: u64,
    /// Offsets below this (from the segment base) are indexed.
    pub covered: i64,
    pub min_ts: i64,
    pub max_ts: i64,
}

/// Sorts `entries` and writes them as the index file at `path`.
pub fn write(path: &Path, c: &Coverage, entries: &mut [(u64, u32)]) -> io::Result<u64> {
    entries.sort_unstable();
    let mut out = Vec::with_capacity(HEAD + entries.len() * ENTRY + 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&c.fingerprint.to_le_bytes());
    out.extend_from_slice(&c.covered.to_le_bytes());
    out.extend_from_slice(&c.min_ts.to_le_bytes());
    out.extend_from_slice(&c.max_ts.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for (h, rel) in entries.iter() {
        out.extend_from_slice(&h.to_le_bytes());
        out.extend_from_slice(&rel.to_le_bytes());
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    crate::fsutil::write_atomic(path, &out)?;
    Ok(out.len() as u64)
}

/// An index file opened for lookups.
#[derive(Debug)]
pub struct IndexFile {
    pub path: PathBuf,
    pub coverage: Coverage,
    pub entries: u64,
    pub bytes: u64,
    file: File,
    /// The first hash of every block.
    fences: Vec<u64>,
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn entry_at(b: &[u8], at: usize) -> (u64, u32) {
    let mut r = [0u8; 4];
    r.copy_from_slice(&b[at + 8..at + 12]);
    (u64_at(b, at), u32::from_le_bytes(r))
}

impl IndexFile {
    /// Opens and checks the file; the error says why it cannot be used (then it is rebuilt).
    pub fn open(path: &Path) -> Result<Self, String> {
        let data = std::fs::read(path).map_err(|e| e.to_string())?;
        if data.len() < HEAD + 4 || &data[..8] != MAGIC {
            return Err("not a field index file".into());
        }
        let (body, crc) = data.split_at(data.len() - 4);
        let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        if crc32c::crc32c(body) != stored {
            return Err("CRC mismatch".into());
        }
        let n = u64_at(body, 40);
        if (body.len() - HEAD) as u64 != n * ENTRY as u64 {
            return Err("length does not match the entry count".into());
        }
        let fences = (0..n as usize)
            .step_by(BLOCK)
            .map(|i| u64_at(body, HEAD + i * ENTRY))
            .collect();
        let file = File::open(path).map_err(|e| e.to_string())?;
        Ok(Self {
            path: path.to_path_buf(),
            coverage: Coverage {
                fingerprint: u64_at(body, 8),
                covered: u64_at(body, 16) as i64,
                min_ts: u64_at(body, 24) as i64,
                max_ts: u64_at(body, 32) as i64,
            },
            entries: n,
            bytes: data.len() as u64,
            file,
            fences,
        })
    }

    /// Relative offsets of the entries with `hash`, ascending.
    pub fn lookup(&self, hash: u64) -> io::Result<Vec<u32>> {
        let mut out = Vec::new();
        // Blocks whose first hash is <= hash, starting with the last one below it (equal
        // hashes can spill over from the block before).
        let mut block = self.fences.partition_point(|f| *f < hash).saturating_sub(1);
        let mut buf = vec![0u8; BLOCK * ENTRY];
        while block < self.fences.len() && self.fences[block] <= hash {
            let first = block * BLOCK;
            let count = (self.entries as usize - first).min(BLOCK);
            let buf = &mut buf[..count * ENTRY];
            self.file
                .read_exact_at(buf, (HEAD + first * ENTRY) as u64)?;
            for i in 0..count {
                let (h, rel) = entry_at(buf, i * ENTRY);
                if h == hash {
                    out.push(rel);
                } else if h > hash {
                    return Ok(out);
                }
            }
            block += 1;
        }
        Ok(out)
    }

    /// Every entry (to resume building a partly indexed segment).
    pub fn all(&self) -> io::Result<Vec<(u64, u32)>> {
        let mut buf = vec![0u8; self.entries as usize * ENTRY];
        self.file.read_exact_at(&mut buf, HEAD as u64)?;
        Ok(buf.chunks_exact(ENTRY).map(|c| entry_at(c, 0)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_find_every_entry_across_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(file_name(100));
        // 5,000 entries with 7 distinct hashes: runs span many blocks.
        let mut entries: Vec<(u64, u32)> =
            (0..5000u32).map(|i| (u64::from(i % 7) * 1000, i)).collect();
        let c = Coverage {
            fingerprint: 9,
            covered: 5100,
            min_ts: 1,
            max_ts: 2,
        };
        write(&path, &c, &mut entries).unwrap();
        let f = IndexFile::open(&path).unwrap();
        assert_eq!(f.coverage, c);
        for k in 0..7u64 {
            let got = f.lookup(k * 1000).unwrap();
            let want: Vec<u32> = (0..5000u32).filter(|i| u64::from(i % 7) == k).collect();
            assert_eq!(got, want, "hash {k}");
        }
        assert!(f.lookup(1).unwrap().is_empty());
        assert!(f.lookup(u64::MAX).unwrap().is_empty());
        assert_eq!(f.all().unwrap().len(), 5000);
        // A flipped byte is caught.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEAD + 3] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(IndexFile::open(&path).unwrap_err().contains("CRC"));
    }
}
