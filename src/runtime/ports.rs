//! Published ports (`-p [IP:]HOST:CTR[/tcp|udp]`): a user-space proxy in the container's monitor,
//! as docker's default `userland-proxy`.
//!
//! Why a proxy rather than kernel DNAT: the monitor binds the host ports itself before the
//! container starts, so a port already in use is a clear error (exit status 125) instead of a
//! rule that silently loses to the other listener; `127.0.0.1:…` works without switching on
//! `route_localnet` (which DNAT from loopback needs); and the proxy is threads of the monitor
//! process, so it goes when the monitor goes (also after `kill -9`): no rule is ever left behind.
//! The cost is a copy through user space per connection, and the container sees the bridge's
//! address as the peer (as with docker's proxy). Threads are started only after the container
//! runs (libcontainer forks while the monitor is single-threaded) and inherit the monitor's
//! blocked signals, so signals still reach its signalfd.
//!
//! TCP: one thread per listener, two per connection (one per direction, half-closes passed on).
//! UDP: one thread per listener; each client address gets a socket connected to the container
//! and a thread that sends the answers back, ended after three minutes of silence (docker's
//! UDP timeout is 90 s for a proxy conntrack entry; a little longer here costs only a thread).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::bail;
use serde::{Deserialize, Serialize};

use super::command::{EXIT_BERTH, Failure};

/// One `-p`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Port {
    pub host_ip: IpAddr,
    pub host_port: u16,
    pub container_port: u16,
    /// "tcp" or "udp".
    pub protocol: String,
}

impl std::fmt::Display for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ip = match self.host_ip {
            IpAddr::V6(a) => format!("[{a}]"),
            a => a.to_string(),
        };
        write!(f, "{ip}:{}->{}/{}", self.host_port, self.container_port, self.protocol)
    }
}

/// Parses `[IP:]HOST:CTR[/tcp|udp]` (IP: IPv4, or IPv6 in brackets; default 0.0.0.0).
pub fn parse(spec: &str) -> anyhow::Result<Port> {
    let bad = || anyhow::anyhow!("invalid port {spec:?}: use [IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp]");
    let (rest, protocol) = match spec.rsplit_once('/') {
        Some((r, p)) if p == "tcp" || p == "udp" => (r, p.to_string()),
        Some(_) => return Err(bad()),
        None => (spec, "tcp".to_string()),
    };
    let (rest, ctr) = rest.rsplit_once(':').ok_or_else(bad)?;
    let (ip, host) = match rest.rsplit_once(':') {
        Some((ip, host)) => (ip, host),
        None => ("", rest),
    };
    let host_ip: IpAddr = match ip {
        "" => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        ip => ip.trim_start_matches('[').trim_end_matches(']').parse().map_err(|_| bad())?,
    };
    let host_port: u16 = host.parse().map_err(|_| bad())?;
    let container_port: u16 = ctr.parse().map_err(|_| bad())?;
    if host_port == 0 || container_port == 0 {
        bail!("invalid port {spec:?}: ports are 1 to 65535");
    }
    Ok(Port { host_ip, host_port, container_port, protocol })
}

/// A bound host port, not yet served.
pub enum Bound {
    Tcp(TcpListener, Port),
    Udp(UdpSocket, Port),
}

/// Binds every published port (before the container starts): a port in use is Berth's error,
/// exit status 125.
pub fn bind(ports: &[Port]) -> anyhow::Result<Vec<Bound>> {
    let mut out = Vec::new();
    for p in ports {
        let addr = SocketAddr::new(p.host_ip, p.host_port);
        let bound = if p.protocol == "udp" {
            UdpSocket::bind(addr).map(|s| Bound::Udp(s, p.clone()))
        } else {
            TcpListener::bind(addr).map(|l| Bound::Tcp(l, p.clone()))
        };
        match bound {
            Ok(b) => out.push(b),
            Err(e) => {
                let why = if e.kind() == io::ErrorKind::AddrInUse {
                    "the port is already in use".into()
                } else {
                    e.to_string()
                };
                return Err(Failure { code: EXIT_BERTH, message: format!("cannot publish {p}: {addr}: {why}") }.into());
            }
        }
    }
    Ok(out)
}

/// Serves the bound ports, forwarding to `target` (the container's address), on threads of this
/// process, for as long as it lives.
pub fn serve(bound: Vec<Bound>, target: Ipv4Addr) -> Serving {
    let stop = Arc::new(AtomicBool::new(false));
    let mut listeners = Vec::new();
    for b in bound {
        match b {
            Bound::Tcp(listener, p) => {
                let to = SocketAddr::new(IpAddr::V4(target), p.container_port);
                let fd = listener.as_raw_fd();
                let stop = stop.clone();
                let accepting = std::thread::spawn(move || {
                    for conn in listener.incoming() {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        match conn {
                            Ok(client) => {
                                std::thread::spawn(move || tcp_connection(client, to));
                            }
                            Err(e) => tracing::debug!(error = %e, "accept failed"),
                        }
                    }
                });
                listeners.push((fd, accepting));
            }
            Bound::Udp(socket, p) => {
                let to = SocketAddr::new(IpAddr::V4(target), p.container_port);
                std::thread::spawn(move || udp_proxy(socket, to));
            }
        }
    }
    Serving { stop, listeners }
}

/// The TCP listeners of a container's published ports, being served.
pub struct Serving {
    stop: Arc<AtomicBool>,
    listeners: Vec<(RawFd, std::thread::JoinHandle<()>)>,
}

impl Serving {
    /// Closes the TCP listeners (their threads end and drop them), so the host ports are free
    /// once the container is recorded as exited, not only when the monitor's process is gone.
    /// Open connections are left to end with the monitor.
    pub fn close(self) {
        self.stop.store(true, Ordering::SeqCst);
        for (fd, accepting) in self.listeners {
            // SAFETY: shutdown on a descriptor the accepting thread owns until it ends (joined
            // here); it wakes that thread's accept with an error.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
            let _ = accepting.join();
        }
    }
}

fn tcp_connection(client: TcpStream, to: SocketAddr) {
    let Ok(upstream) = TcpStream::connect_timeout(&to, Duration::from_secs(10)) else {
        return; // the container does not listen: the client sees its connection close
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (Ok(c2), Ok(u2)) = (client.try_clone(), upstream.try_clone()) else { return };
    let back = std::thread::spawn(move || copy_half(u2, c2));
    copy_half(client, upstream);
    let _ = back.join();
}

/// Copies until EOF, then passes the half-close on.
fn copy_half(mut from: TcpStream, mut to: TcpStream) {
    let _ = io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

fn udp_proxy(socket: UdpSocket, to: SocketAddr) {
    let socket = Arc::new(socket);
    let clients: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf) else { continue };
        let existing = clients.lock().expect("not poisoned").get(&from).cloned();
        let upstream = match existing {
            Some(u) => u,
            None => {
                let Ok(u) = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)) else { continue };
                if u.connect(to).is_err() {
                    continue;
                }
                let _ = u.set_read_timeout(Some(Duration::from_secs(180)));
                let u = Arc::new(u);
                clients.lock().expect("not poisoned").insert(from, u.clone());
                let (back, reply_to, clients) = (u.clone(), socket.clone(), clients.clone());
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = back.recv(&mut buf) {
                        let _ = reply_to.send_to(&buf[..n], from);
                    }
                    clients.lock().expect("not poisoned").remove(&from);
                });
                u
            }
        };
        let _ = upstream.send(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_port_syntax() {
        let p = parse("127.0.0.1:18080:80").unwrap();
        assert_eq!(p.to_string(), "127.0.0.1:18080->80/tcp");
        assert_eq!(parse("8080:80/udp").unwrap().to_string(), "0.0.0.0:8080->80/udp");
        assert_eq!(parse("[::1]:53:53/udp").unwrap().to_string(), "[::1]:53->53/udp");
        for bad in ["80", "a:80", "8080:80/sctp", "1.2.3:80:80", "0:80", "70000:80"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_port_in_use_is_berths_error() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let e = bind(&[parse(&format!("127.0.0.1:{port}:80")).unwrap()]).err().unwrap();
        assert_eq!(super::super::command::exit_status(&e), EXIT_BERTH);
        assert!(e.to_string().contains("already in use"), "{e}");
    }
}
