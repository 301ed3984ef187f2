//! Crash-safe file writes: every file bench writes goes to a temporary file in the same folder,
//! is fsynced, then renamed over the destination (and the folder fsynced), so a reader — or a
//! run resumed after `kill -9` or a full disk — sees the old file or the new one, never a torn
//! one, and no temporary file is left behind on any error path.
use crate::{BenchError, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp{}", std::process::id()))
}

/// An I/O error while writing `path`: one line naming the file (a full disk or a read-only
/// folder is the user's to fix, exit 2).
pub fn write_error(path: &Path, e: impl std::fmt::Display) -> BenchError {
    BenchError::file(path, format!("cannot write: {e}"))
}

/// Writes through `write` (given the temporary path), then fsync + rename into place. On any
/// error the temporary file is removed and `path` is untouched.
pub fn write_atomic_with(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = temp_path(path);
    let result = write(&tmp).and_then(|()| {
        let f = std::fs::File::open(&tmp).map_err(|e| write_error(path, e))?;
        f.sync_all().map_err(|e| write_error(path, e))?;
        std::fs::rename(&tmp, path).map_err(|e| write_error(path, e))
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return result;
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Makes the rename itself durable; some filesystems refuse to sync a folder: harmless.
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// [`write_atomic_with`] for bytes already in memory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |tmp| {
        let mut f = std::fs::File::create(tmp).map_err(|e| write_error(path, e))?;
        f.write_all(bytes).map_err(|e| write_error(path, e))?;
        f.flush().map_err(|e| write_error(path, e))
    })
}

/// Creates `dir` if needed and proves it writable before any expensive work starts.
pub fn ensure_writable_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| BenchError::file(dir, format!("cannot create the folder: {e}")))?;
    let probe = dir.join(format!(".write-test{}", std::process::id()));
    match std::fs::File::create(&probe).and_then(|mut f| f.write_all(b"ok")) {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_file(&probe);
            Err(BenchError::file(dir, format!("the folder is not writable: {e}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_writes_leave_neither_temp_files_nor_a_changed_destination() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write_atomic(&p, b"old").unwrap();
        let e = write_atomic_with(&p, |tmp| {
            std::fs::write(tmp, b"half").unwrap();
            Err(BenchError::user("disk full"))
        });
        assert!(e.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        let names: Vec<String> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(names, vec!["a.json".to_string()]);
    }
}
