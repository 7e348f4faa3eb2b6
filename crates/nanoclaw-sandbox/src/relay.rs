//! The proxy relay inside the sandbox: a TCP listener on `127.0.0.1:3128` that forwards each
//! connection, byte for byte, to the egress proxy's Unix socket bind-mounted at
//! `/run/nanoclaw/proxy.sock`. It is the sandbox's only way out; the proxy on the host decides
//! what may pass. The relay adds nothing and reads nothing.

use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

#[path = "../../shared/pump.rs"]
mod pump;
use pump::pump;

/// Where the relay listens inside the sandbox.
pub const RELAY_ADDR: &str = "127.0.0.1:3128";
/// Where the host mounts the egress proxy's socket.
pub const PROXY_SOCKET_IN_SANDBOX: &str = "/run/nanoclaw/proxy.sock";
/// Connections relayed at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 64;

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
