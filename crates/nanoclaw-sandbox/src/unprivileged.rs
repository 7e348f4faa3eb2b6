//! Under a root daemon, bubblewrap does not run as root: it runs as a dedicated unprivileged
//! host uid ([`SANDBOX_HOST_UID`]), so the sandbox's own user namespace maps its uid to that
//! one, not to host root. A file the sandbox makes is that uid's, a setuid bit is that uid's, a
//! root-owned host file (a sysctl, the proxy socket's mode) is out of its reach whatever
//! Landlock does, and the kernel keyrings it sees are its own.
//!
//! The host paths bwrap binds (the workspace, the init, the proxy socket, the trust directory)
//! sit under a data dir the dedicated uid may not traverse. So the launcher, still root, enters
//! a mount namespace of its own, puts a private tmpfs over `/tmp` there and binds each host path
//! into it ([`HostView`]); then it drops to the dedicated uid and runs bwrap, which finds its
//! sources under `/tmp`. The view exists only in that one process's mount namespace.
//!
//! What this module must never do: run bwrap as root under a root daemon, or leave the view
//! visible to any process but the launcher's.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::SandboxError;

/// The host uid and gid a root daemon's sandboxes run as: no account of a Debian system has
/// it (system accounts are below 1000, people 1000–59999, packages' fixed ids 60000–64999).
pub const SANDBOX_HOST_UID: u32 = 65_000;

/// Where the launcher's private view of the host paths is mounted, in its own mount namespace.
const VIEW_ROOT: &str = "/tmp";

/// Whether this process is root, so that its sandboxes must drop to [`SANDBOX_HOST_UID`].
pub fn needed() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The host paths a sandbox binds, as the launcher makes them reachable to the dedicated uid.
/// Built before the launcher is spawned (it allocates); [`HostView::enter`] runs in the child.
#[derive(Default)]
pub struct HostView {
    mounts: Vec<ViewMount>,
}

struct ViewMount {
    source: CString,
    target: CString,
    dir: bool,
}

fn c_path(path: &Path) -> Result<CString, SandboxError> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| SandboxError::Setup(format!("path {} holds a NUL byte", path.display())))
}

impl HostView {
    /// Make `host` reachable in the view as `name`; returns the path bwrap binds from.
    pub fn add(&mut self, host: &Path, name: &str) -> Result<String, SandboxError> {
        let dir = host
            .metadata()
            .map_err(|e| SandboxError::Setup(format!("{}: {e}", host.display())))?
            .is_dir();
        let target = format!("{VIEW_ROOT}/{name}");
        self.mounts.push(ViewMount {
            source: c_path(host)?,
            target: c_path(Path::new(&target))?,
            dir,
        });
        Ok(target)
    }

    /// In the launcher, after fork and before exec, as root: a mount namespace of its own with
    /// the view, then the dedicated uid and gid with no supplementary groups. Only
    /// async-signal-safe calls on memory allocated before the fork.
    pub fn enter(&self) -> io::Result<()> {
        let check = |r: libc::c_int| {
            if r == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        };
        // At most this many host paths are bound (the view has four).
        const MAX: usize = 8;
        if self.mounts.len() > MAX {
            return Err(io::Error::from_raw_os_error(libc::E2BIG));
        }
        let mut held = [-1 as libc::c_int; MAX];
        // SAFETY: plain syscalls on NUL-terminated strings that live in `self` (allocated
        // before the fork) or on this stack; nothing here allocates or takes a lock.
        unsafe {
            check(libc::unshare(libc::CLONE_NEWNS))?;
            // Nothing mounted from here on propagates back to the host.
            check(libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            // Each host path held open in this namespace before the view covers `/tmp`, where
            // a host path may well be; bound from `/proc/self/fd/N` afterwards.
            for (m, fd) in self.mounts.iter().zip(held.iter_mut()) {
                *fd = libc::open(m.source.as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
                if *fd < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            check(libc::mount(
                c"tmpfs".as_ptr(),
                c"/tmp".as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                c"mode=0711,size=64k".as_ptr().cast(),
            ))?;
            for (m, fd) in self.mounts.iter().zip(held) {
                if m.dir {
                    check(libc::mkdir(m.target.as_ptr(), 0o700))?;
                } else {
                    let made = libc::open(
                        m.target.as_ptr(),
                        libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC,
                        0o600,
                    );
                    if made < 0 {
                        return Err(io::Error::last_os_error());
                    }
                    libc::close(made);
                }
                let source = fd_path(fd);
                check(libc::mount(
                    source.as_ptr().cast(),
                    m.target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ))?;
                libc::close(fd);
            }
            let id = SANDBOX_HOST_UID;
            check(libc::setgroups(0, std::ptr::null()))?;
            check(libc::setresgid(id, id, id))?;
            check(libc::setresuid(id, id, id))?;
        }
        Ok(())
    }
}

/// `/proc/self/fd/N` as a NUL-terminated string on the stack (no allocation after a fork).
fn fd_path(fd: libc::c_int) -> [u8; 32] {
    const PREFIX: &[u8] = b"/proc/self/fd/";
    let mut out = [0u8; 32];
    out[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut digits = [0u8; 10];
    let (mut n, mut len) = (fd.unsigned_abs(), 0);
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for (i, d) in digits[..len].iter().rev().enumerate() {
        out[PREFIX.len() + i] = *d;
    }
    out
}

/// Give `workspace` to the dedicated uid if it is not its already (a workspace made by an
/// earlier version, or by root): the directory and everything in it. The walk goes by
/// descriptors opened `O_NOFOLLOW`, so a symlink (or a directory swapped for one meanwhile)
/// is changed itself and never followed out of the workspace.
pub fn own_workspace(workspace: &Path) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(workspace)?;
    if meta.uid() == SANDBOX_HOST_UID && meta.gid() == SANDBOX_HOST_UID {
        return Ok(());
    }
    let dir = open_dir_at(
        libc::AT_FDCWD,
        &c_path(workspace).map_err(io::Error::other)?,
    )?;
    give_tree(&dir)
}

fn open_dir_at(at: libc::c_int, name: &CString) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: openat on a NUL-terminated name; the descriptor is owned from here on.
    let fd = unsafe {
        libc::openat(
            at,
            name.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

fn give_tree(dir: &std::os::fd::OwnedFd) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let id = SANDBOX_HOST_UID;
    let check = |r: libc::c_int| {
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    // SAFETY: fchown on a descriptor this function holds.
    check(unsafe { libc::fchown(dir.as_raw_fd(), id, id) })?;
    // The directory's entries, read through its descriptor (the magic link is the directory
    // itself, whatever its path has become).
    for entry in std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))? {
        let name = CString::new(entry?.file_name().as_bytes()).map_err(io::Error::other)?;
        match open_dir_at(dir.as_raw_fd(), &name) {
            Ok(sub) => give_tree(&sub)?,
            // Not a directory (a file, a symlink, a socket): changed itself, never followed.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTDIR) | Some(libc::ELOOP)) => {
                // SAFETY: fchownat on a NUL-terminated name relative to a held descriptor.
                check(unsafe {
                    libc::fchownat(
                        dir.as_raw_fd(),
                        name.as_ptr(),
                        id,
                        id,
                        libc::AT_SYMLINK_NOFOLLOW,
                    )
                })?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Let the dedicated uid connect to the proxy socket (connecting needs write permission on
/// it); the socket's directory keeps everyone else out.
pub fn own_socket(socket: &Path) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(socket)?;
    if meta.uid() == SANDBOX_HOST_UID {
        return Ok(());
    }
    std::os::unix::fs::lchown(socket, Some(SANDBOX_HOST_UID), Some(SANDBOX_HOST_UID))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workspace_is_given_over_whole_and_its_symlinks_are_never_followed() {
        if !needed() {
            println!("not root: nothing to give over");
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let outside = root.path().join("outside");
        std::fs::write(&outside, "host file").unwrap();
        let ws = root.path().join("ws");
        std::fs::create_dir_all(ws.join("a/b")).unwrap();
        std::fs::write(ws.join("a/b/f"), "x").unwrap();
        std::os::unix::fs::symlink(&outside, ws.join("link")).unwrap();
        std::os::unix::fs::symlink(root.path(), ws.join("a/dirlink")).unwrap();
        own_workspace(&ws).unwrap();
        for p in ["", "a", "a/b", "a/b/f", "link", "a/dirlink"] {
            let m = std::fs::symlink_metadata(ws.join(p)).unwrap();
            assert_eq!(
                (m.uid(), m.gid()),
                (SANDBOX_HOST_UID, SANDBOX_HOST_UID),
                "{p}"
            );
        }
        for p in [&outside, &root.path().to_path_buf()] {
            assert_eq!(
                std::fs::metadata(p).unwrap().uid(),
                0,
                "followed to {}",
                p.display()
            );
        }
    }

    #[test]
    fn fd_paths_are_spelled_out_with_a_terminating_nul() {
        for (fd, text) in [
            (0, "/proc/self/fd/0"),
            (7, "/proc/self/fd/7"),
            (1234, "/proc/self/fd/1234"),
        ] {
            let path = super::fd_path(fd);
            let end = path.iter().position(|b| *b == 0).unwrap();
            assert_eq!(&path[..end], text.as_bytes());
        }
    }
}
