//! The proxy relay inside the sandbox: a TCP listener on `127.0.0.1:3128` that forwards each
//! connection, byte for byte, to the egress proxy's Unix socket bind-mounted at
//! `/run/nanoclaw/proxy.sock`. It is the sandbox's only way out; the proxy on the host decides
//! what may pass. The relay adds nothing and reads nothing.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Where the relay listens inside the sandbox.
pub const RELAY_ADDR: &str = "127.0.0.1:3128";
/// Where the host mounts the egress proxy's socket.
pub const PROXY_SOCKET_IN_SANDBOX: &str = "/run/nanoclaw/proxy.sock";
/// Connections relayed at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 64;
/// Copy buffer per direction: large, so a big download costs few system calls.
const BUFFER: usize = 256 * 1024;

/// The environment a command gets when the relay runs.
pub fn proxy_env() -> Vec<(&'static str, &'static str)> {
    let url = "http://127.0.0.1:3128";
    let no_proxy = "localhost,127.0.0.1,::1";
    vec![
        ("HTTP_PROXY", url),
        ("HTTPS_PROXY", url),
        ("http_proxy", url),
        ("https_proxy", url),
        ("ALL_PROXY", url),
        ("NO_PROXY", no_proxy),
        ("no_proxy", no_proxy),
    ]
}

/// Start the relay if the proxy socket is mounted. Returns whether it runs.
pub fn start() -> std::io::Result<bool> {
    if !std::path::Path::new(PROXY_SOCKET_IN_SANDBOX).exists() {
        return Ok(false);
    }
    let listener = TcpListener::bind(RELAY_ADDR)?;
    std::thread::Builder::new()
        .name("relay".into())
        .spawn(move || accept_loop(listener))?;
    Ok(true)
}

fn accept_loop(listener: TcpListener) {
    let active = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        let Ok(tcp) = conn else { continue };
        if active.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
            let _ = tcp.shutdown(Shutdown::Both);
            continue;
        }
        let Ok(unix) = UnixStream::connect(PROXY_SOCKET_IN_SANDBOX) else {
            let _ = tcp.shutdown(Shutdown::Both);
            continue;
        };
        active.fetch_add(1, Ordering::SeqCst);
        let active = Arc::clone(&active);
        let _ = std::thread::Builder::new()
            .name("relay-conn".into())
            .spawn(move || {
                relay(tcp, unix);
                active.fetch_sub(1, Ordering::SeqCst);
            });
    }
}

/// Copy both ways until both sides are done.
fn relay(tcp: TcpStream, unix: UnixStream) {
    let clones = (tcp.try_clone(), unix.try_clone(), tcp.try_clone());
    let (Ok(tcp_read), Ok(unix_write), Ok(tcp_write)) = clones else {
        return;
    };
    // No thread for the second direction (the process limit may be reached): drop the
    // connection rather than panic.
    let Ok(upstream) = std::thread::Builder::new()
        .name("relay-up".into())
        .spawn(move || {
            let shut = unix_write.try_clone();
            pump(tcp_read, unix_write);
            if let Ok(u) = shut {
                let _ = u.shutdown(Shutdown::Write);
            }
        })
    else {
        return;
    };
    pump(unix, tcp_write);
    let _ = tcp.shutdown(Shutdown::Write);
    let _ = upstream.join();
}

/// Move bytes from one socket to the other until the end of the stream: in the kernel with
/// splice(2) through a pipe, or by copying where splice is not available.
fn pump(from: impl Read + AsRawFd, to: impl Write + AsRawFd) {
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
                BUFFER,
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
    let mut buf = vec![0u8; BUFFER];
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
