//! A TCP relay on loopback in front of another server, for fault tests: it can slow what
//! clients send (so a large upload is still under way when the server behind it is stopped)
//! or what the server answers (a remote upstream), and flip a byte of the answers wherever a
//! marker appears (a corrupting network or source). Plain threads: it works under any test
//! runtime.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Settings {
    /// Client-to-server bytes per second; 0: as fast as it goes.
    upload_rate: AtomicU64,
    /// Server-to-client bytes per second, per connection; 0: as fast as it goes.
    download_rate: AtomicU64,
    /// A byte sequence whose first byte is flipped in server-to-client data.
    flip: Mutex<Option<Vec<u8>>>,
    flipped: AtomicU64,
    stop: AtomicBool,
}

pub struct Proxy {
    pub port: u16,
    settings: Arc<Settings>,
}

impl Proxy {
    /// Relays 127.0.0.1:`port` (a new port) to 127.0.0.1:`upstream`.
    pub fn start(upstream: u16) -> Proxy {
        let port = super::free_port();
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let settings = Arc::new(Settings {
            upload_rate: AtomicU64::new(0),
            download_rate: AtomicU64::new(0),
            flip: Mutex::new(None),
            flipped: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let s = settings.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = conn else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (up, down) = (s.clone(), s.clone());
                std::thread::spawn(move || relay(client, server, &up, true));
                std::thread::spawn(move || relay(s2, c2, &down, false));
            }
        });
        Proxy { port, settings }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Limits what clients send to `bytes_per_sec` (0: no limit).
    pub fn throttle_uploads(&self, bytes_per_sec: u64) {
        self.settings.upload_rate.store(bytes_per_sec, Ordering::SeqCst);
    }

    /// Limits what the server sends on each connection to `bytes_per_sec` (0: no limit).
    pub fn throttle_downloads(&self, bytes_per_sec: u64) {
        self.settings.download_rate.store(bytes_per_sec, Ordering::SeqCst);
    }

    /// Flips the first byte of `marker` wherever it appears in what the server sends.
    pub fn corrupt(&self, marker: &[u8]) {
        *self.settings.flip.lock().unwrap() = Some(marker.to_vec());
    }

    /// How many times a byte was flipped.
    pub fn flipped(&self) -> u64 {
        self.settings.flipped.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.settings.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn relay(mut from: TcpStream, mut to: TcpStream, s: &Settings, upload: bool) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut started = Instant::now();
    let mut sent: u64 = 0;
    loop {
        let rate = if upload { &s.upload_rate } else { &s.download_rate }.load(Ordering::SeqCst);
        // Throttled: small reads, so the bytes leave at an even pace.
        let size = if rate > 0 { buf.len().min(16 * 1024) } else { buf.len() };
        let n = match from.read(&mut buf[..size]) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &mut buf[..n];
        if rate > 0 {
            // After a pause (a connection reused later) the pace starts again: no burst.
            if started.elapsed() > Duration::from_secs_f64(sent as f64 / rate as f64) + Duration::from_millis(50) {
                (started, sent) = (Instant::now(), 0);
            }
            sent += n as u64;
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        if !upload && let Some(marker) = s.flip.lock().unwrap().as_deref() {
            let mut i = 0;
            while i + marker.len() <= chunk.len() {
                if &chunk[i..i + marker.len()] == marker {
                    chunk[i] ^= 0x01;
                    s.flipped.fetch_add(1, Ordering::SeqCst);
                    i += marker.len();
                } else {
                    i += 1;
                }
            }
        }
        if to.write_all(chunk).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}
