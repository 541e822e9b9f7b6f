//! [`SimFs`]: an in-memory file system that knows what a power cut keeps.
//!
//! Each file has its current bytes and its durable bytes (what the last
//! successful [`FsFile::sync_data`] covered). Each directory has its current
//! entries and its durable entries (as of its last [`Fs::sync_dir`]): a file
//! created, renamed or removed is only durably so once its directory was
//! synced. [`SimFs::power_cut`] turns the current state into what a disk
//! could hold after the power went: see [`CutMode`].

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use rand::Rng;

use super::{Fs, FsFile};

/// What happens to the bytes written since a file's last successful sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CutMode {
    /// They are all gone.
    Drop,
    /// They are kept up to an arbitrary byte: a write torn by the cut.
    Torn,
    /// They are zeros, at their full length: a file system that extended
    /// the file before writing its data.
    Zeros,
    /// Each file gets one of the above, at random.
    Any,
}

type Ino = u64;

#[derive(Debug, Clone)]
enum Node {
    Dir {
        entries: BTreeMap<String, Ino>,
        durable: BTreeMap<String, Ino>,
    },
    File {
        data: Vec<u8>,
        durable: Vec<u8>,
    },
}

const ROOT: Ino = 0;

#[derive(Debug)]
struct World {
    nodes: HashMap<Ino, Node>,
    next: Ino,
    /// The power went: every call fails, as on a machine that is off.
    dead: bool,
    /// Calls that change something, for tests that want to know how far a
    /// run got.
    writes: u64,
    /// Most bytes of file data the disk holds (`None`: no limit).
    capacity: Option<u64>,
}

fn eio(what: &str) -> io::Error {
    io::Error::other(format!("simulated file system: {what}"))
}

fn no_space() -> io::Error {
    io::Error::from_raw_os_error(28)
}

fn not_found() -> io::Error {
    io::Error::from(io::ErrorKind::NotFound)
}

/// The names from the root to `path`.
fn names(path: &Path) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n.to_string_lossy().into_owned()),
            Component::ParentDir => {
                out.pop();
            }
            Component::Prefix(_) => return Err(eio("path prefixes are not supported")),
        }
    }
    Ok(out)
}

impl World {
    fn new() -> Self {
        let mut nodes = HashMap::new();
        nodes.insert(
            ROOT,
            Node::Dir {
                entries: BTreeMap::new(),
                durable: BTreeMap::new(),
            },
        );
        World {
            nodes,
            next: 1,
            dead: false,
            writes: 0,
            capacity: None,
        }
    }

    /// Bytes of data in the files the directory tree reaches (a removed
    /// file frees its space at once, open or not).
    fn used(&self) -> u64 {
        let mut used = 0;
        let mut dirs = vec![ROOT];
        while let Some(dir) = dirs.pop() {
            let Some(Node::Dir { entries, .. }) = self.nodes.get(&dir) else {
                continue;
            };
            for ino in entries.values() {
                match self.nodes.get(ino) {
                    Some(Node::Dir { .. }) => dirs.push(*ino),
                    Some(Node::File { data, .. }) => used += data.len() as u64,
                    None => {}
                }
            }
        }
        used
    }

    /// Bytes that can still be written.
    fn available(&self) -> u64 {
        self.capacity
            .map_or(u64::MAX, |cap| cap.saturating_sub(self.used()))
    }

    fn alive(&self) -> io::Result<()> {
        if self.dead {
            Err(eio("the power is off"))
        } else {
            Ok(())
        }
    }

    fn entries(&self, dir: Ino) -> io::Result<&BTreeMap<String, Ino>> {
        match self.nodes.get(&dir) {
            Some(Node::Dir { entries, .. }) => Ok(entries),
            Some(Node::File { .. }) => Err(io::Error::from(io::ErrorKind::NotADirectory)),
            None => Err(not_found()),
        }
    }

    fn entries_mut(&mut self, dir: Ino) -> io::Result<&mut BTreeMap<String, Ino>> {
        match self.nodes.get_mut(&dir) {
            Some(Node::Dir { entries, .. }) => Ok(entries),
            Some(Node::File { .. }) => Err(io::Error::from(io::ErrorKind::NotADirectory)),
            None => Err(not_found()),
        }
    }

    fn lookup(&self, path: &Path) -> io::Result<Ino> {
        let mut at = ROOT;
        for name in names(path)? {
            at = *self.entries(at)?.get(&name).ok_or_else(not_found)?;
        }
        Ok(at)
    }

    /// The directory holding `path` and the last name of `path`.
    fn parent(&self, path: &Path) -> io::Result<(Ino, String)> {
        let mut names = names(path)?;
        let last = names.pop().ok_or_else(|| eio("no file name"))?;
        let mut at = ROOT;
        for name in names {
            at = *self.entries(at)?.get(&name).ok_or_else(not_found)?;
        }
        Ok((at, last))
    }

    fn add(&mut self, node: Node) -> Ino {
        let ino = self.next;
        self.next += 1;
        self.nodes.insert(ino, node);
        ino
    }

    fn file(&mut self, ino: Ino) -> io::Result<(&mut Vec<u8>, &mut Vec<u8>)> {
        match self.nodes.get_mut(&ino) {
            Some(Node::File { data, durable }) => Ok((data, durable)),
            Some(Node::Dir { .. }) => Err(io::Error::from(io::ErrorKind::IsADirectory)),
            None => Err(not_found()),
        }
    }

    fn new_file(&mut self, path: &Path, exclusive: bool) -> io::Result<Ino> {
        let (dir, name) = self.parent(path)?;
        if let Some(&ino) = self.entries(dir)?.get(&name) {
            if exclusive {
                return Err(io::Error::from(io::ErrorKind::AlreadyExists));
            }
            self.file(ino)?.0.clear();
            return Ok(ino);
        }
        let ino = self.add(Node::File {
            data: Vec::new(),
            durable: Vec::new(),
        });
        self.entries_mut(dir)?.insert(name, ino);
        Ok(ino)
    }

    /// What the disk holds after a cut: durable entries, durable bytes plus
    /// what `mode` keeps of the rest.
    fn after_cut(&self, mode: CutMode, rng: &mut dyn rand::RngCore) -> World {
        let mut nodes = HashMap::new();
        for (&ino, node) in &self.nodes {
            let node = match node {
                Node::Dir { durable, .. } => Node::Dir {
                    entries: durable.clone(),
                    durable: durable.clone(),
                },
                Node::File { data, durable } => {
                    let kept = cut_file(data, durable, mode, rng);
                    Node::File {
                        data: kept.clone(),
                        durable: kept,
                    }
                }
            };
            nodes.insert(ino, node);
        }
        World {
            nodes,
            next: self.next,
            dead: false,
            writes: 0,
            capacity: self.capacity,
        }
    }
}

fn cut_file(data: &[u8], durable: &[u8], mode: CutMode, rng: &mut dyn rand::RngCore) -> Vec<u8> {
    // Only appends past the durable bytes can be partly kept; anything else
    // (a truncation never synced) falls back to the durable bytes.
    if !data.starts_with(durable) || data.len() == durable.len() {
        return durable.to_vec();
    }
    let unsynced = data.len() - durable.len();
    let mode = match mode {
        CutMode::Any => match rng.gen_range(0..3) {
            0 => CutMode::Drop,
            1 => CutMode::Torn,
            _ => CutMode::Zeros,
        },
        other => other,
    };
    let mut out = durable.to_vec();
    match mode {
        CutMode::Torn => {
            let keep = rng.gen_range(0..=unsynced);
            out.extend_from_slice(&data[durable.len()..durable.len() + keep]);
        }
        CutMode::Zeros => out.resize(data.len(), 0),
        _ => {}
    }
    out
}

/// An in-memory file system that models what survives a power cut. Clones
/// share one disk.
///
/// ```
/// use std::path::Path;
/// use busbar_store::fs::{CutMode, Fs, SimFs};
///
/// let fs = SimFs::new();
/// fs.create_dir_all(Path::new("/d")).unwrap();
/// let f = fs.create_new(Path::new("/d/a")).unwrap();
/// f.write_all(b"kept").unwrap();
/// f.sync_data().unwrap();
/// f.write_all(b" lost").unwrap();
/// fs.sync_dir(Path::new("/d")).unwrap();
/// fs.sync_dir(Path::new("/")).unwrap();
/// let after = fs.power_cut(CutMode::Drop, &mut rand::thread_rng());
/// assert_eq!(after.read(Path::new("/d/a")).unwrap(), b"kept");
/// assert!(fs.read(Path::new("/d/a")).is_err(), "the old machine is off");
/// ```
#[derive(Debug, Clone)]
pub struct SimFs {
    world: Arc<Mutex<World>>,
}

impl Default for SimFs {
    fn default() -> Self {
        SimFs::new()
    }
}

impl SimFs {
    /// An empty disk holding only the root directory.
    pub fn new() -> Self {
        SimFs {
            world: Arc::new(Mutex::new(World::new())),
        }
    }

    /// Cuts the power: from now on every call on this file system (and on
    /// files opened through it) fails with an I/O error, as it would on a
    /// machine that is off. Returns the disk as it comes back: what was
    /// durable, plus what `mode` keeps of what was not.
    pub fn power_cut(&self, mode: CutMode, rng: &mut impl Rng) -> SimFs {
        let mut world = self.world.lock();
        world.dead = true;
        let after = world.after_cut(mode, rng);
        SimFs {
            world: Arc::new(Mutex::new(after)),
        }
    }

    /// Limits the disk to `bytes` of file data (`None`: no limit). A write
    /// past the limit writes what fits and fails with `ENOSPC`, as a full
    /// disk does; removing files frees their space.
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.world.lock().capacity = bytes;
    }

    /// How many calls that change something were made (writes, syncs,
    /// creations, renames, removals, truncations).
    pub fn writes(&self) -> u64 {
        self.world.lock().writes
    }

    fn with<T>(&self, change: bool, f: impl FnOnce(&mut World) -> io::Result<T>) -> io::Result<T> {
        let mut world = self.world.lock();
        world.alive()?;
        if change {
            world.writes += 1;
        }
        f(&mut world)
    }

    fn handle(&self, ino: Ino) -> Box<dyn FsFile> {
        Box::new(SimFile {
            world: self.world.clone(),
            ino,
        })
    }
}

#[derive(Debug)]
struct SimFile {
    world: Arc<Mutex<World>>,
    ino: Ino,
}

impl SimFile {
    fn with<T>(&self, change: bool, f: impl FnOnce(&mut World) -> io::Result<T>) -> io::Result<T> {
        let mut world = self.world.lock();
        world.alive()?;
        if change {
            world.writes += 1;
        }
        f(&mut world)
    }
}

impl FsFile for SimFile {
    fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        self.with(true, |w| {
            let fits = usize::try_from(w.available()).unwrap_or(usize::MAX);
            let n = buf.len().min(fits);
            w.file(self.ino)?.0.extend_from_slice(&buf[..n]);
            if n < buf.len() {
                return Err(no_space());
            }
            Ok(())
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        self.with(true, |w| {
            let (data, durable) = w.file(self.ino)?;
            durable.clone_from(data);
            Ok(())
        })
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.with(false, |w| {
            let data = &*w.file(self.ino)?.0;
            let start = (offset as usize).min(data.len());
            let n = buf.len().min(data.len() - start);
            buf[..n].copy_from_slice(&data[start..start + n]);
            Ok(n)
        })
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with(true, |w| {
            let available = w.available();
            let data = w.file(self.ino)?.0;
            if len.saturating_sub(data.len() as u64) > available {
                return Err(no_space());
            }
            data.resize(len as usize, 0);
            Ok(())
        })
    }

    fn size(&self) -> io::Result<u64> {
        self.with(false, |w| Ok(w.file(self.ino)?.0.len() as u64))
    }
}

impl Fs for SimFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.with(true, |w| {
            let mut at = ROOT;
            for name in names(path)? {
                at = match w.entries(at)?.get(&name) {
                    Some(&ino) => ino,
                    None => {
                        let ino = w.add(Node::Dir {
                            entries: BTreeMap::new(),
                            durable: BTreeMap::new(),
                        });
                        w.entries_mut(at)?.insert(name, ino);
                        ino
                    }
                };
            }
            w.entries(at).map(|_| ())
        })
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        self.with(false, |w| {
            let dir = w.lookup(path)?;
            Ok(w.entries(dir)?.keys().map(|n| path.join(n)).collect())
        })
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let ino = self.with(true, |w| w.new_file(path, true))?;
        Ok(self.handle(ino))
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let ino = self.with(true, |w| w.new_file(path, false))?;
        Ok(self.handle(ino))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let ino = self.with(false, |w| {
            let ino = w.lookup(path)?;
            w.file(ino).map(|_| ino)
        })?;
        Ok(self.handle(ino))
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        self.open_append(path)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.with(false, |w| {
            let ino = w.lookup(path)?;
            Ok(w.file(ino)?.0.clone())
        })
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.with(true, |w| {
            let (src, name) = w.parent(from)?;
            let (dst, new_name) = w.parent(to)?;
            w.entries(dst)?;
            let ino = w.entries_mut(src)?.remove(&name).ok_or_else(not_found)?;
            w.entries_mut(dst)?.insert(new_name, ino);
            Ok(())
        })
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.with(true, |w| {
            let (dir, name) = w.parent(path)?;
            let ino = *w.entries(dir)?.get(&name).ok_or_else(not_found)?;
            w.file(ino)?;
            w.entries_mut(dir)?.remove(&name);
            Ok(())
        })
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.with(true, |w| {
            let (dir, name) = w.parent(path)?;
            w.entries_mut(dir)?.remove(&name).ok_or_else(not_found)?;
            Ok(())
        })
    }

    fn file_size(&self, path: &Path) -> io::Result<u64> {
        self.with(false, |w| {
            let ino = w.lookup(path)?;
            Ok(w.file(ino)?.0.len() as u64)
        })
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        self.with(false, |w| match w.lookup(path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        })
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.with(true, |w| {
            let ino = w.lookup(path)?;
            match w.nodes.get_mut(&ino) {
                Some(Node::Dir { entries, durable }) => {
                    durable.clone_from(entries);
                    Ok(())
                }
                _ => Err(io::Error::from(io::ErrorKind::NotADirectory)),
            }
        })
    }

    fn available_space(&self, path: &Path) -> io::Result<u64> {
        self.with(false, |w| {
            w.lookup(path)?;
            Ok(w.available())
        })
    }
}
