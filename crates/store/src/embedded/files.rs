//! The data directory and its database files are readable by their owner only: they hold the
//! telemetry, the alarms and (in `security.sqlite`) password hashes.

use std::path::Path;

use crate::{StoreError, StoreResult};

/// Creates the data directory (and missing parents) with mode 0700; an existing directory of
/// ours that others can read is tightened.
pub(crate) fn private_dir(dir: &Path) -> StoreResult<()> {
    let err = |e: std::io::Error| {
        StoreError::Internal(format!("creating data directory {}: {e}", dir.display()))
    };
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(err)?;
    tighten(dir, 0o700).map_err(err)
}

/// Creates a database file with mode 0600 before SQLite opens it (SQLite gives its `-wal` and
/// `-shm` files the same permissions); an existing file is tightened to 0600.
pub(crate) fn private_file(path: &Path) -> StoreResult<()> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .map(drop)
        .and_then(|()| tighten(path, 0o600))
        .map_err(|e| StoreError::Internal(format!("creating {}: {e}", path.display())))
}

/// Every file under `dir` (recursively) with its size, paths relative to `dir`, sorted.
pub(crate) fn sizes(dir: &Path) -> StoreResult<Vec<(String, u64)>> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, u64)>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                walk(root, &entry.path(), out)?;
            } else {
                let path = entry.path();
                let rel = path.strip_prefix(root).unwrap_or(&path);
                out.push((rel.display().to_string(), meta.len()));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out)
        .map_err(|e| StoreError::Internal(format!("listing {}: {e}", dir.display())))?;
    out.sort();
    Ok(out)
}

#[cfg(unix)]
fn tighten(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)?;
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn tighten(_: &Path, _: u32) -> std::io::Result<()> {
    Ok(())
}
