//! Binding Unix sockets: private directory, file mode, stale files.

use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

use crate::ListenError;

/// A bound Unix socket. Dropping it removes the socket file.
#[derive(Debug)]
pub struct UnixSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl UnixSocket {
    /// The listener.
    pub fn listener(&self) -> &UnixListener {
        &self.listener
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for UnixSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds a Unix socket at `path` with permission bits `mode`.
///
/// The parent directory is created with mode `0700` if missing. A socket
/// file left by a process that is gone is removed; one that still accepts
/// connections is not touched.
///
/// Must be called inside a Tokio runtime.
///
/// # Errors
/// [`ListenError::SocketInUse`] when another process listens there,
/// [`ListenError::NotASocket`] when a regular file is in the way,
/// [`ListenError::BindUnix`] or [`ListenError::Io`] otherwise.
pub fn bind_unix(path: &Path, mode: u32) -> Result<UnixSocket, ListenError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|source| ListenError::Io {
                op: "create the socket directory",
                path: parent.to_owned(),
                source,
            })?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => {
                    return Err(ListenError::SocketInUse {
                        path: path.to_owned(),
                    })
                }
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                    tracing::info!(path = %path.display(), "removing stale socket file");
                    std::fs::remove_file(path).map_err(|source| ListenError::Io {
                        op: "remove the stale socket",
                        path: path.to_owned(),
                        source,
                    })?;
                }
                Err(source) => {
                    return Err(ListenError::Io {
                        op: "probe the existing socket",
                        path: path.to_owned(),
                        source,
                    })
                }
            }
        }
        Ok(_) => {
            return Err(ListenError::NotASocket {
                path: path.to_owned(),
            })
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(source) => {
            return Err(ListenError::Io {
                op: "inspect",
                path: path.to_owned(),
                source,
            })
        }
    }
    let listener = UnixListener::bind(path).map_err(|source| ListenError::BindUnix {
        path: path.to_owned(),
        source,
    })?;
    let socket = UnixSocket {
        listener,
        path: path.to_owned(),
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|source| {
        ListenError::Io {
            op: "set the permissions of",
            path: path.to_owned(),
            source,
        }
    })?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn creates_private_dir_sets_mode_and_replaces_stale_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sock").join("events.sock");
        let socket = bind_unix(&path, 0o600).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert!(matches!(
            bind_unix(&path, 0o600),
            Err(ListenError::SocketInUse { .. })
        ));
        // A socket file nobody listens on is stale.
        let listener = std::mem::ManuallyDrop::new(socket);
        let std_listener = std::os::unix::net::UnixListener::bind(dir.path().join("x")).unwrap();
        drop(std_listener);
        let _again = bind_unix(&dir.path().join("x"), 0o660).unwrap();
        assert_eq!(mode(&dir.path().join("x")), 0o660);
        drop(std::mem::ManuallyDrop::into_inner(listener));
        assert!(!path.exists(), "dropping the socket removes its file");
    }

    #[tokio::test]
    async fn refuses_to_replace_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.sock");
        std::fs::write(&path, b"data").unwrap();
        assert!(matches!(
            bind_unix(&path, 0o600),
            Err(ListenError::NotASocket { .. })
        ));
    }
}
