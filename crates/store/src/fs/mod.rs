//! File access of the embedded engine, behind a trait so tests can run the
//! real engine over a file system that fails on purpose.
//!
//! Every file operation of [`crate::embedded`] (segments, index files,
//! recovery, the trash, quarantine) goes through an [`Fs`] given in
//! [`crate::embedded::EmbeddedConfig::fs`]; [`RealFs`], the default, is the
//! operating system's file system. The calls are per batch, per read chunk
//! or per file, never per event, so dynamic dispatch costs nothing that
//! shows.
//!
//! With the `fault-injection` feature the crate also provides
//! [`FaultFs`], a wrapper that injects `ENOSPC`, `EDQUOT` and `EIO` into
//! another `Fs`, and [`SimFs`], an in-memory file system that models what a
//! power cut leaves on disk.
//!
//! ```
//! use std::sync::Arc;
//! use busbar_store::embedded::EmbeddedConfig;
//! use busbar_store::fs::RealFs;
//!
//! let mut config = EmbeddedConfig::new("data");
//! config.fs = Arc::new(RealFs);
//! ```

use std::fmt;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

#[cfg(feature = "fault-injection")]
mod fault;
#[cfg(feature = "fault-injection")]
mod sim;

#[cfg(feature = "fault-injection")]
pub use fault::{Fault, FaultFs, FaultOp, Injection};
#[cfg(feature = "fault-injection")]
pub use sim::{CutMode, SimFs};

/// An open file. Every method takes `&self`: the writer appends through one
/// handle while readers `pread` through others.
pub trait FsFile: Send + Sync + fmt::Debug {
    /// Appends all of `buf` (files are opened for appending). On error, part
    /// of `buf` may have been written.
    ///
    /// # Errors
    /// The operating system's error, e.g. `ENOSPC`.
    fn write_all(&self, buf: &[u8]) -> io::Result<()>;

    /// `fdatasync`: makes the file's data durable.
    ///
    /// # Errors
    /// The operating system's error. After an error the kernel may have
    /// dropped the dirty pages: the data written since the last successful
    /// call must be treated as lost, whatever a later call says.
    fn sync_data(&self) -> io::Result<()>;

    /// `pread`: reads up to `buf.len()` bytes at `offset`; returns how many
    /// were read (0 at the end of the file).
    ///
    /// # Errors
    /// The operating system's error, e.g. `EIO`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;

    /// Fills `buf` from `offset`, failing with `UnexpectedEof` when the file
    /// ends first.
    ///
    /// # Errors
    /// As [`FsFile::read_at`], or `UnexpectedEof`.
    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, offset) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file ends before the read",
                    ))
                }
                Ok(n) => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Cuts (or extends with zeros) the file to `len` bytes.
    ///
    /// # Errors
    /// The operating system's error.
    fn set_len(&self, len: u64) -> io::Result<()>;

    /// The file's length.
    ///
    /// # Errors
    /// The operating system's error.
    fn size(&self) -> io::Result<u64>;
}

/// A file system as the embedded engine uses it.
pub trait Fs: Send + Sync + fmt::Debug + 'static {
    /// Creates a directory and its missing parents.
    ///
    /// # Errors
    /// The operating system's error.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;

    /// The paths of a directory's entries, in no particular order.
    ///
    /// # Errors
    /// The operating system's error.
    fn read_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>>;

    /// Creates a file that must not exist yet, open for appending.
    ///
    /// # Errors
    /// `AlreadyExists`, or the operating system's error.
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn FsFile>>;

    /// Creates or empties a file, open for appending.
    ///
    /// # Errors
    /// The operating system's error.
    fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>>;

    /// Opens an existing file for appending (and `set_len`).
    ///
    /// # Errors
    /// The operating system's error.
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn FsFile>>;

    /// Opens an existing file for reading.
    ///
    /// # Errors
    /// The operating system's error.
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn FsFile>>;

    /// Reads a whole file.
    ///
    /// # Errors
    /// The operating system's error.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;

    /// Renames a file or directory, replacing a file at `to`.
    ///
    /// # Errors
    /// The operating system's error.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Removes a file.
    ///
    /// # Errors
    /// The operating system's error (`NotFound` when it does not exist).
    fn remove_file(&self, path: &Path) -> io::Result<()>;

    /// Removes a directory and everything in it.
    ///
    /// # Errors
    /// The operating system's error.
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;

    /// The length of a file (`NotFound` when it does not exist).
    ///
    /// # Errors
    /// The operating system's error.
    fn file_size(&self, path: &Path) -> io::Result<u64>;

    /// Whether a file or directory exists.
    ///
    /// # Errors
    /// The operating system's error, other than `NotFound`.
    fn exists(&self, path: &Path) -> io::Result<bool>;

    /// Makes a directory's entries (files created, renamed or removed in
    /// it) durable.
    ///
    /// # Errors
    /// The operating system's error.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;

    /// Bytes an unprivileged process can still write on the file system
    /// holding `path` (`statvfs`: `f_bavail` blocks).
    ///
    /// # Errors
    /// The operating system's error.
    fn available_space(&self, path: &Path) -> io::Result<u64>;
}

/// The operating system's file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealFs;

#[derive(Debug)]
struct RealFile(std::fs::File);

impl FsFile for RealFile {
    fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        (&self.0).write_all(buf)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.0.read_at(buf, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
}

fn boxed(file: std::fs::File) -> Box<dyn FsFile> {
    Box::new(RealFile(file))
}

impl Fs for RealFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        std::fs::read_dir(path)?
            .map(|entry| entry.map(|e| e.path()))
            .collect()
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        std::fs::OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(path)
            .map(boxed)
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(path)
            .map(boxed)
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map(boxed)
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        std::fs::File::open(path).map(boxed)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir_all(path)
    }

    fn file_size(&self, path: &Path) -> io::Result<u64> {
        Ok(std::fs::metadata(path)?.len())
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        path.try_exists()
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::File::open(path)?.sync_all()
    }

    fn available_space(&self, path: &Path) -> io::Result<u64> {
        fs2::available_space(path)
    }
}
