//! How a connection reaches a group's proxy over its Unix socket. Two forms:
//!
//! - **Handed-off TCP** (the in-sandbox relay): one byte [`HANDOFF`] carrying exactly one file
//!   descriptor (`SCM_RIGHTS`): the TCP connection a program in the sandbox opened to the relay.
//!   The proxy then serves that connection itself, so bytes take one hop through the host, not
//!   two. The descriptor comes from the sandbox and is checked: it must be a connected TCP
//!   socket; anything else is closed.
//! - **Direct HTTP** (the host's web tools): the connection itself speaks HTTP from its first
//!   byte.
//!
//! Either way the group is the socket's, never anything the connection says.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// The first byte of a handoff. HTTP never starts with it.
pub const HANDOFF: u8 = 0;

/// A connection as it arrived.
pub enum Client {
    Tcp(TcpStream),
    Direct(Prefixed),
}

/// Read the first byte (and any descriptor with it) and decide which form this is.
pub async fn receive(stream: UnixStream) -> io::Result<Client> {
    let (byte, fds) = loop {
        stream.readable().await?;
        match stream.try_io(Interest::READABLE, || recv_byte(stream.as_raw_fd())) {
            Ok(got) => break got,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    };
    let invalid = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_owned());
    match (byte, fds.len()) {
        (None, _) => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "closed before a byte",
        )),
        (Some(HANDOFF), 1) => {
            let Some(fd) = fds.into_iter().next() else {
                return Err(invalid("handoff without a descriptor"));
            };
            Ok(Client::Tcp(connected_tcp(fd)?))
        }
        (Some(HANDOFF), n) => Err(invalid(&format!("handoff with {n} descriptors"))),
        (Some(_), 0) => Ok(Client::Direct(Prefixed {
            first: byte,
            inner: stream,
        })),
        (Some(_), _) => Err(invalid("descriptors with a non-handoff byte")),
    }
}

/// One `recvmsg` of one byte with room for a few descriptors; every descriptor received is
/// owned (and so closed unless used), even when the control data was truncated.
fn recv_byte(fd: RawFd) -> io::Result<(Option<u8>, Vec<OwnedFd>)> {
    const MAX_FDS: usize = 4;
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // u64 elements keep the buffer aligned for cmsghdr.
    let mut control = [0u64; 16];
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE((MAX_FDS * size_of::<libc::c_int>()) as u32) } as usize;
    let space = space.min(size_of_val(&control));
    // SAFETY: an all-zero msghdr is valid; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space;
    // SAFETY: recvmsg writes into the buffers described by msg, which we own.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: the CMSG_* macros walk the control buffer recvmsg filled, within msg_controllen.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg).cast::<libc::c_int>();
                let len = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                for i in 0..len / size_of::<libc::c_int>() {
                    let raw = std::ptr::read_unaligned(data.add(i));
                    fds.push(OwnedFd::from_raw_fd(raw));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "too many descriptors",
        ));
    }
    Ok(((n == 1).then_some(byte[0]), fds))
}

fn sockopt(fd: &OwnedFd, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `value`, which we own.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

/// Accept a handed-off descriptor only if it is a connected TCP socket.
fn connected_tcp(fd: OwnedFd) -> io::Result<TcpStream> {
    let refuse = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_owned());
    let domain = sockopt(&fd, libc::SO_DOMAIN).map_err(|_| refuse("not a socket"))?;
    if !matches!(domain, libc::AF_INET | libc::AF_INET6)
        || sockopt(&fd, libc::SO_TYPE)? != libc::SOCK_STREAM
        || sockopt(&fd, libc::SO_PROTOCOL)? != libc::IPPROTO_TCP
    {
        return Err(refuse("not a TCP socket"));
    }
    let tcp = std::net::TcpStream::from(fd);
    tcp.peer_addr()
        .map_err(|_| refuse("not a connected socket"))?;
    tcp.set_nonblocking(true)?;
    TcpStream::from_std(tcp)
}

/// A Unix stream whose first byte was already read.
pub struct Prefixed {
    first: Option<u8>,
    inner: UnixStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(b) = self.first
            && buf.remaining() > 0
        {
            buf.put_slice(&[b]);
            self.first = None;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Send one byte with `fds` attached, as the relay does.
    fn send(sock: &std::os::unix::net::UnixStream, byte: u8, fds: &[RawFd]) {
        let mut data = [byte];
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: 1,
        };
        let mut control = [0u64; 16];
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if !fds.is_empty() {
            let len = size_of_val(fds);
            unsafe {
                msg.msg_control = control.as_mut_ptr().cast();
                msg.msg_controllen = libc::CMSG_SPACE(len as u32) as usize;
                let c = libc::CMSG_FIRSTHDR(&msg);
                (*c).cmsg_level = libc::SOL_SOCKET;
                (*c).cmsg_type = libc::SCM_RIGHTS;
                (*c).cmsg_len = libc::CMSG_LEN(len as u32) as usize;
                std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(c).cast(), fds.len());
            }
        }
        assert_eq!(unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, 0) }, 1);
    }

    fn pair() -> (std::os::unix::net::UnixStream, UnixStream) {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        (a, UnixStream::from_std(b).unwrap())
    }

    #[tokio::test]
    async fn a_connected_tcp_socket_is_adopted() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let (a, b) = pair();
        send(&a, HANDOFF, &[accepted.as_raw_fd()]);
        drop(accepted);
        let Client::Tcp(mut tcp) = receive(b).await.unwrap() else {
            panic!("expected a TCP handoff");
        };
        use std::io::Write;
        client.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        tcp.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
    }

    #[tokio::test]
    async fn anything_but_one_connected_tcp_socket_is_refused() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let file = std::fs::File::open("/dev/null").unwrap();
        let (u1, _u2) = std::os::unix::net::UnixStream::pair().unwrap();
        for fd in [listener.as_raw_fd(), file.as_raw_fd(), u1.as_raw_fd()] {
            let (a, b) = pair();
            send(&a, HANDOFF, &[fd]);
            assert!(receive(b).await.is_err(), "fd {fd} adopted");
        }
        let (a, b) = pair();
        send(&a, HANDOFF, &[]);
        assert!(receive(b).await.is_err());
        let (a, b) = pair();
        send(&a, HANDOFF, &[file.as_raw_fd(), file.as_raw_fd()]);
        assert!(receive(b).await.is_err());
        let (a, b) = pair();
        send(&a, b'G', &[file.as_raw_fd()]);
        assert!(receive(b).await.is_err());
    }

    #[tokio::test]
    async fn direct_http_keeps_its_first_byte() {
        let (mut a, b) = pair();
        use std::io::Write;
        a.write_all(b"GET / HTTP/1.1\r\n").unwrap();
        let Client::Direct(mut d) = receive(b).await.unwrap() else {
            panic!("expected direct HTTP");
        };
        let mut buf = [0u8; 16];
        d.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"GET / HTTP/1.1\r\n");
        d.write_all(b"ok").await.unwrap();
    }
}
