//! Moving bytes between two sockets until the end of a stream, in the kernel where it can:
//! splice(2) through a pipe, so the bytes never pass through user space; a plain copy where
//! splice is not available. Used by the proxy's CONNECT tunnels; it owns no policy and reads
//! no bytes.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};

/// Bytes moved per splice step, and the pipe's size: large, so a big transfer costs few system
/// calls (1 MiB is the default ceiling for a pipe; a smaller pipe still works). Kernel memory
/// only: the bytes never enter user space.
pub const CHUNK: usize = 1024 * 1024;
/// The buffer of a copy in user space, where splice is not available.
pub const COPY_CHUNK: usize = 256 * 1024;

/// Move bytes from one socket to the other until the end of the stream: in the kernel with
/// splice(2) through a pipe, or by copying where splice is not available.
pub fn pump(from: impl Read + AsRawFd, to: impl Write + AsRawFd) {
    if !splice_all(from.as_raw_fd(), to.as_raw_fd()) {
        copy(from, to);
    }
}

/// Splice until the end of the stream. Returns false when splice could not move anything (not
/// supported here), so the caller copies instead.
fn splice_all(from: RawFd, to: RawFd) -> bool {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two descriptors into the array we own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return false;
    }
    let (pipe_read, pipe_write) = (fds[0], fds[1]);
    // A pipe holds 64 KiB by default; one as large as a chunk halves the system calls. Best
    // effort: a smaller pipe still works.
    // SAFETY: fcntl on a descriptor this function owns.
    unsafe { libc::fcntl(pipe_write, libc::F_SETPIPE_SZ, CHUNK as libc::c_int) };
    let mut moved_any = false;
    loop {
        // SAFETY: splice between descriptors held open by the caller and this function, with
        // null offsets (sockets and pipes have none).
        let n = unsafe {
            libc::splice(
                from,
                std::ptr::null_mut(),
                pipe_write,
                std::ptr::null_mut(),
                CHUNK,
                libc::SPLICE_F_MOVE,
            )
        };
        if n <= 0 {
            // 0: end of stream. <0: an error; if nothing moved yet, let the caller copy.
            if n < 0 && !moved_any {
                break;
            }
            moved_any = true;
            break;
        }
        moved_any = true;
        let mut left = n as usize;
        while left > 0 {
            // SAFETY: as above.
            let m = unsafe {
                libc::splice(
                    pipe_read,
                    std::ptr::null_mut(),
                    to,
                    std::ptr::null_mut(),
                    left,
                    libc::SPLICE_F_MOVE,
                )
            };
            if m <= 0 {
                break;
            }
            left -= m as usize;
        }
        if left > 0 {
            // The receiver is gone: the stream is over.
            break;
        }
    }
    // SAFETY: closing the two pipe descriptors this function created.
    unsafe {
        libc::close(pipe_read);
        libc::close(pipe_write);
    }
    moved_any
}

fn copy(mut from: impl Read, mut to: impl Write) {
    let mut buf = vec![0u8; COPY_CHUNK];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}
