//! The proxy relay inside the sandbox: a TCP listener on `127.0.0.1:3128` that hands each
//! accepted connection, as a file descriptor (`SCM_RIGHTS`), to the egress proxy over the Unix
//! socket bind-mounted at `/run/nanoclaw/proxy.sock`. The proxy then serves the connection
//! itself: bytes cross one hop on the host instead of two. It is the sandbox's only way out;
//! the proxy decides what may pass. The relay reads nothing, adds nothing, keeps nothing.

use std::net::{Shutdown, TcpListener};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;

/// Where the relay listens inside the sandbox.
pub const RELAY_ADDR: &str = "127.0.0.1:3128";
/// Where the host mounts the egress proxy's socket.
pub const PROXY_SOCKET_IN_SANDBOX: &str = "/run/nanoclaw/proxy.sock";
/// The first byte of a handoff (the egress crate's `handoff::HANDOFF`; the two crates do not
/// depend on each other, so the one-byte protocol is written down in both).
const HANDOFF: u8 = 0;

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
    for conn in listener.incoming() {
        let Ok(tcp) = conn else { continue };
        let handed = UnixStream::connect(PROXY_SOCKET_IN_SANDBOX)
            .and_then(|unix| hand_off(&unix, tcp.as_raw_fd()));
        if handed.is_err() {
            let _ = tcp.shutdown(Shutdown::Both);
        }
        // Dropping our copies: the proxy holds the connection now.
    }
}

/// Pass the connection's descriptor to the proxy: one byte, [`HANDOFF`], with `SCM_RIGHTS`.
fn hand_off(unix: &UnixStream, fd: RawFd) -> std::io::Result<()> {
    let mut byte = [HANDOFF];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // u64 elements keep the buffer aligned for cmsghdr; 16 bytes of header and one int fit.
    let mut control = [0u64; 4];
    let fd_len = size_of::<libc::c_int>() as u32;
    // SAFETY: an all-zero msghdr is valid; every pointer set below outlives sendmsg, and the
    // CMSG_* macros stay within `control`, which CMSG_SPACE(one int) fits.
    let sent = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(fd_len) as usize;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(fd_len) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>(), fd);
        libc::sendmsg(unix.as_raw_fd(), &msg, libc::MSG_NOSIGNAL)
    };
    if sent == 1 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
