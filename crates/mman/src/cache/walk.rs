//! Walking directory trees on several threads.

use super::*;

/// The error of opening `path`; `followed`: whether the open followed symbolic links (a
/// root, a named file), which decides what ELOOP means.
pub(super) fn open_error(e: std::io::Error, path: &Path, followed: bool) -> Error {
    if sys::opened_a_socket(&e, path) {
        return super::file::not_regular(path);
    }
    let err = Error::os("open", e).with_path(Some(path));
    match err.raw_os_error() {
        Some(libc::ENOENT) => err.with_hint("it vanished, or never existed"),
        Some(libc::EACCES) => err.with_hint("no read permission; it was skipped"),
        // Links were followed: no option would help, the links go round in a loop.
        Some(libc::ELOOP) if followed => {
            err.with_hint("a loop of symbolic links (or a chain of more than 40): fix or remove the link")
        }
        Some(libc::ELOOP) => err.with_hint(
            "a symbolic link, not followed below the roots unless asked \
             (WalkOptions::follow_symlinks)",
        ),
        _ => err,
    }
}

/// Keeps an entry of a walk (path, is a directory) when it answers true.
pub type WalkFilter = Box<dyn Fn(&Path, bool) -> bool + Send + Sync>;

/// How [`walk`] goes over trees. The default: no links followed, no size limit, one
/// thread a core, no filter.
#[derive(Default)]
pub struct WalkOptions {
    /// Follow symbolic links below the roots (the roots themselves are always followed).
    pub follow_symlinks: bool,
    /// Skip files larger than this.
    pub max_size: Option<u64>,
    /// Threads; 0: one a core.
    pub threads: usize,
    /// Keep an entry (file or directory, by path) only if this says so.
    pub filter: Option<WalkFilter>,
}

impl std::fmt::Debug for WalkOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalkOptions")
            .field("follow_symlinks", &self.follow_symlinks)
            .field("max_size", &self.max_size)
            .field("threads", &self.threads)
            .field("filter", &self.filter.is_some())
            .finish()
    }
}

/// What [`walk`] found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalkTotals {
    /// Regular files visited (a hard-linked file once).
    pub files: u64,
    /// Directories entered.
    pub directories: u64,
    /// Entries skipped with an error (reported to the visitor).
    pub skipped: u64,
}

/// One thing [`walk`] met.
#[derive(Debug)]
pub enum Visit<'a> {
    /// A regular file, open.
    File(&'a CachedFile),
    /// An entry that could not be visited, and why.
    Skipped(Error),
}

struct WalkState<'v> {
    opts: &'v WalkOptions,
    visit: &'v (dyn Fn(Visit<'_>) + Sync),
    linked: Mutex<HashSet<(u64, u64)>>,
    dirs_seen: Mutex<HashSet<(u64, u64)>>,
    totals: Mutex<WalkTotals>,
}

/// Visit every regular file under `roots` (files or directories), on `opts.threads` threads.
/// Files with several hard links are visited once; errors (unreadable, vanished, symlink
/// loops) are handed to `visit` as [`Visit::Skipped`] and the walk goes on.
pub fn walk(roots: &[PathBuf], opts: &WalkOptions, visit: &(dyn Fn(Visit<'_>) + Sync)) -> WalkTotals {
    let state = WalkState {
        opts,
        visit,
        linked: Mutex::new(HashSet::new()),
        dirs_seen: Mutex::new(HashSet::new()),
        totals: Mutex::new(WalkTotals::default()),
    };
    // Files named directly are visited here; a thread pool is started only for directories.
    let mut dirs = Vec::new();
    for root in roots {
        match sc::stat_at(None, root, true) {
            Ok(st) if st.kind == sys::FileType::Directory => dirs.push(root.clone()),
            Ok(_) => state.file(None, root, root.clone(), true),
            Err(e) => state.skip(open_error(e, root, true)),
        }
    }
    if !dirs.is_empty() {
        let dirs = &dirs[..];
        // rayon reads 0 as one thread a core.
        match rayon::ThreadPoolBuilder::new().num_threads(opts.threads).build() {
            Ok(pool) => pool.scope(|s| state.roots(s, dirs)),
            Err(_) => rayon::scope(|s| state.roots(s, dirs)),
        }
    }
    state.totals.into_inner().unwrap_or_else(|e| e.into_inner())
}

const BATCH: usize = 128;

impl<'v> WalkState<'v> {
    fn add(&self, f: impl FnOnce(&mut WalkTotals)) {
        f(&mut self.totals.lock().unwrap_or_else(|e| e.into_inner()));
    }

    fn skip(&self, e: Error) {
        self.add(|t| t.skipped += 1);
        (self.visit)(Visit::Skipped(e));
    }

    fn roots<'s>(&'s self, s: &rayon::Scope<'s>, roots: &'s [PathBuf]) {
        for root in roots {
            s.spawn(move |s| self.root(s, root));
        }
    }

    fn root<'s>(&'s self, s: &rayon::Scope<'s>, path: &'s Path) {
        self.dir(s, None, path.to_path_buf(), path.to_path_buf(), true)
    }

    fn dir<'s>(
        &'s self,
        s: &rayon::Scope<'s>,
        parent: Option<BorrowedFd<'_>>,
        path: PathBuf,
        name: PathBuf,
        follow: bool,
    ) {
        let fd = match sc::open_dir_at(parent, &name, follow) {
            Ok(fd) => fd,
            Err(e) => return self.skip(open_error(e, &path, follow)),
        };
        if self.opts.follow_symlinks {
            if let Ok(st) = sys::file_info(fd.as_fd()) {
                let id = (st.dev, st.ino);
                if !self
                    .dirs_seen
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id)
                {
                    return self.skip(
                        Error::new(
                            ErrorKind::InvalidInput,
                            "walk",
                            "directory reached a second time (a symbolic-link loop?); skipped",
                        )
                        .with_path(Some(&path)),
                    );
                }
            }
        }
        self.add(|t| t.directories += 1);
        let dir = match sc::read_dir(&fd) {
            Ok(d) => d,
            Err(e) => return self.skip(Error::os("readdir", e).with_path(Some(&path))),
        };
        let fd = std::sync::Arc::new(fd);
        let mut batch: Vec<(std::ffi::OsString, bool)> = Vec::new();
        let flush = |batch: Vec<(std::ffi::OsString, bool)>| {
            let fd = fd.clone();
            let path = path.clone();
            s.spawn(move |_| {
                for (name, follow) in batch {
                    let p = path.join(&name);
                    self.file(Some(fd.as_fd()), Path::new(&name), p, follow);
                }
            });
        };
        for entry in dir {
            let (name, mut kind) = match entry {
                Ok(e) => e,
                Err(e) => {
                    self.skip(Error::os("readdir", e).with_path(Some(&path)));
                    break;
                }
            };
            use sys::FileType as T;
            let mut follow = false;
            if kind == T::Unknown || (kind == T::Symlink && self.opts.follow_symlinks) {
                follow = kind == T::Symlink;
                match sc::stat_at(Some(fd.as_fd()), Path::new(&name), follow) {
                    Ok(st) => kind = st.kind,
                    Err(e) => {
                        self.skip(open_error(e, &path.join(&name), follow));
                        continue;
                    }
                }
            }
            match kind {
                T::Directory => {
                    let child = path.join(&name);
                    if !self.keep(&child, true) {
                        continue;
                    }
                    let fd = fd.clone();
                    s.spawn(move |s| self.dir(s, Some(fd.as_fd()), child, PathBuf::from(name), follow));
                }
                T::Regular => {
                    batch.push((name, follow));
                    if batch.len() == BATCH {
                        flush(std::mem::take(&mut batch));
                    }
                }
                _ => {}
            }
        }
        if !batch.is_empty() {
            // The last batch runs here: no task to hand over.
            for (name, follow) in batch {
                let p = path.join(&name);
                self.file(Some(fd.as_fd()), Path::new(&name), p, follow);
            }
        }
    }

    fn keep(&self, path: &Path, is_dir: bool) -> bool {
        self.opts.filter.as_ref().is_none_or(|f| f(path, is_dir))
    }

    fn file(&self, dir: Option<BorrowedFd<'_>>, name: &Path, path: PathBuf, follow: bool) {
        if !self.keep(&path, false) {
            return;
        }
        let fd = match sc::open_file_at(dir, name, follow) {
            Ok(fd) => fd,
            Err(e) => return self.skip(open_error(e, &path, follow)),
        };
        let f = match CachedFile::from_fd(fd, path) {
            Ok(f) => f,
            Err(e) => return self.skip(e),
        };
        if self.opts.max_size.is_some_and(|m| f.size > m) {
            return;
        }
        if f.nlink > 1
            && !self
                .linked
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(f.identity())
        {
            return;
        }
        self.add(|t| t.files += 1);
        (self.visit)(Visit::File(&f));
    }
}
