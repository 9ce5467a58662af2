//! The spool file: ledger writes the database had not taken when the gateway stopped, one
//! JSON object per line, read back at the next start into the head of the retry queue.
//!
//! The file is replaced whole (written beside it, then renamed), so a stop never leaves
//! half of it; it holds everything still unwritten, including what an earlier spool held,
//! and is removed once the queue it was read into has been written. A line that cannot be
//! read is logged at error as it stands (it holds the record), never dropped silently.

use std::io::Write;
use std::path::Path;

use super::Op;

/// The writes in the spool file at `path` (none when there is no file).
pub(super) fn load(path: &Path) -> Vec<Op> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot read the ledger spool file");
            return Vec::new();
        }
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|line| match serde_json::from_str(line) {
            Ok(op) => Some(op),
            Err(e) => {
                tracing::error!(
                    path = %path.display(),
                    error = %e,
                    line,
                    "unreadable line in the ledger spool file; not recorded in the ledger"
                );
                None
            }
        })
        .collect()
}

/// Replaces the spool file at `path` with `ops`, synced to disk.
pub(super) fn save(path: &Path, ops: &[Op]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut text = String::new();
    for op in ops {
        text.push_str(&serde_json::to_string(op).map_err(std::io::Error::other)?);
        text.push('\n');
    }
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = std::path::PathBuf::from(partial);
    let mut file = std::fs::File::create(&partial)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&partial, path)
}

/// Removes the spool file once everything it held is in the database.
pub(super) fn remove(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => tracing::info!(path = %path.display(), "ledger spool file written and removed"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove the ledger spool file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_writes_load_back_and_unreadable_lines_are_skipped() {
        let dir = std::env::temp_dir().join(format!("ag-spool-{}", std::process::id()));
        let path = dir.join("spool.jsonl");
        let ops = vec![
            Op::MarkDeleted {
                audience_id: 1,
                at: 2,
            },
            Op::MarkDeleted {
                audience_id: 3,
                at: 4,
            },
        ];
        save(&path, &ops).unwrap();
        assert_eq!(load(&path), ops);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("not json\n");
        std::fs::write(&path, text).unwrap();
        assert_eq!(load(&path), ops);
        remove(&path);
        assert!(load(&path).is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }
}
