//! The server's data directory: owner-only, whoever else uses the machine.
//!
//! The directory holds patient data (`nara.db`), credentials (`server.db`, the admin token, the
//! TLS key) and the audit log, so it is `0700` and every file in it `0600`. The `nara-server`
//! binary sets its file-creation mask to `077` before anything else ([`owner_only_umask`]), so
//! every file it creates (SQLite's databases and their `-wal` and `-shm` files, keys, tokens,
//! backups) is owner-only from its first byte; files that exist already (a directory made by an
//! older version, or copied in) are tightened by [`prepare`], which every entry point that opens
//! the directory (`serve`, `check`, `admin`) calls first.

use std::io;
use std::path::Path;

/// Mode of the data directory.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file in it.
pub const FILE_MODE: u32 = 0o600;

/// Creates `data` if needed and makes it and everything in it owner-only.
pub fn prepare(data: &Path) -> io::Result<()> {
    create_dir(data)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(data, std::fs::Permissions::from_mode(DIR_MODE))?;
    }
    tighten(data)
}

/// The process's file-creation mask becomes `077`: what the process creates from now on is
/// readable by its owner only. Called first thing by `nara-server`.
pub fn owner_only_umask() {
    #[cfg(unix)]
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

/// Makes every regular file directly in `data` owner-only (`0600`).
pub fn tighten(data: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for entry in std::fs::read_dir(data)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_file() && meta.permissions().mode() & 0o077 != 0 {
                let mut perms = meta.permissions();
                perms.set_mode(FILE_MODE);
                std::fs::set_permissions(entry.path(), perms)?;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = data;
    Ok(())
}

fn create_dir(data: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(DIR_MODE);
    }
    builder.create(data)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_world_readable_directory_is_tightened() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(data.join("nara.db-wal"), b"").unwrap();
        std::fs::set_permissions(
            data.join("nara.db-wal"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        prepare(&data).unwrap();
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&data.join("nara.db-wal")), 0o600);
    }
}
