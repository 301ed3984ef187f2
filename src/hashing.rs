//! Content hashes of the files a cell's numbers depend on (weights, configs, reference
//! statistics). Cells are identified by these, not by how a spec spells their paths: a file
//! replaced at the same path recomputes its cells, and a spec moved with its data keeps them.
//!
//! Hashing a 5 GB checkpoint takes seconds to minutes, so each output folder keeps a cache
//! (`OUTPUT/.file-hashes.json`) keyed by (canonical path, size, mtime, inode): a resume re-reads
//! a file only when one of those changed.
use crate::{BenchError, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

const CACHE_FILE: &str = ".file-hashes.json";

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Stamp {
    size: u64,
    mtime_ns: i128,
    inode: u64,
    sha256: String,
}

/// (path → stamp) cache; [`HashCache::default`] is an in-memory cache that is never saved.
#[derive(Debug, Default)]
pub struct HashCache {
    file: Option<PathBuf>,
    entries: BTreeMap<String, Stamp>,
    dirty: bool,
}

fn stamp_of(meta: &std::fs::Metadata) -> (u64, i128, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.len(), meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128, meta.ino())
}

impl HashCache {
    /// The cache of an output folder (empty when the folder or the cache file does not exist;
    /// an unreadable cache is ignored, since it only saves time).
    pub fn open(output: &Path) -> HashCache {
        let file = output.join(CACHE_FILE);
        let entries = fs_err::read_to_string(&file).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
        HashCache { file: Some(file), entries, dirty: false }
    }

    /// SHA-256 of the file's content (hex), from the cache when its stamp is unchanged.
    pub fn sha256(&mut self, path: &Path) -> Result<String> {
        let canonical = fs_err::canonicalize(path).map_err(|e| BenchError::file(path, format!("cannot resolve: {e}")))?;
        let key = canonical.display().to_string();
        let meta = fs_err::metadata(&canonical).map_err(|e| BenchError::file(path, format!("cannot stat: {e}")))?;
        let (size, mtime_ns, inode) = stamp_of(&meta);
        if let Some(s) = self.entries.get(&key) {
            if (s.size, s.mtime_ns, s.inode) == (size, mtime_ns, inode) {
                return Ok(s.sha256.clone());
            }
        }
        let sha256 = sha256_file(&canonical)?;
        self.entries.insert(key, Stamp { size, mtime_ns, inode, sha256: sha256.clone() });
        self.dirty = true;
        Ok(sha256)
    }

    /// Writes the cache back when it changed and its folder exists (a dry run creates nothing).
    pub fn save(&self) -> Result<()> {
        match &self.file {
            Some(f) if self.dirty && f.parent().is_some_and(Path::is_dir) => {
                let text = serde_json::to_string_pretty(&self.entries).map_err(|e| BenchError::Internal(e.to_string()))?;
                crate::fsutil::write_atomic(f, text.as_bytes())
            }
            _ => Ok(()),
        }
    }
}

/// SHA-256 (hex) of a file's content, streamed.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = fs_err::File::open(path).map_err(|e| BenchError::file(path, format!("cannot read: {e}")))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| BenchError::file(path, format!("cannot read: {e}")))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_reuses_unchanged_files_and_rehashes_changed_ones() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("w.bin");
        std::fs::write(&f, b"abc").unwrap();
        let mut c = HashCache::open(dir.path());
        let h = c.sha256(&f).unwrap();
        assert_eq!(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        c.save().unwrap();
        // A cached stamp is trusted: prove it by planting a wrong hash for the same stamp.
        let text = std::fs::read_to_string(dir.path().join(CACHE_FILE)).unwrap();
        std::fs::write(dir.path().join(CACHE_FILE), text.replace(&h, "cached")).unwrap();
        assert_eq!(HashCache::open(dir.path()).sha256(&f).unwrap(), "cached");
        // New content (size changes) is hashed again.
        std::fs::write(&f, b"abcd").unwrap();
        assert_eq!(
            HashCache::open(dir.path()).sha256(&f).unwrap(),
            "88d4266fd4e6338d13b845fcf289579d209c897823b9217da3e161936f031589"
        );
    }
}
