//! `berth-puller`: CONNS keep-alive HTTP/1.1 connections, each pulling the same image (its
//! manifest, then every blob) again and again for SECS seconds; every body is checked against
//! its sha256 (and the manifest's too), every status must be 200. Prints one JSON object:
//! requests, images pulled, bytes, errors (the first few spelled out), requests and bytes per
//! second, and latency percentiles of single requests.
//!
//!   berth-puller ADDR CONNS SECS HOST ACCEPT PATH=SHA256HEX...
//!
//! ADDR is host:port to connect to; HOST the Host header; ACCEPT the manifest Accept header
//! (sent on every request); each PATH=SHA256 one request of the image's round, in order.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use sha2::{Digest, Sha256};

struct Item {
    path: String,
    sha256: [u8; 32],
}

#[derive(Default)]
struct Tally {
    requests: u64,
    images: u64,
    bytes: u64,
    errors: u64,
    first_errors: Vec<String>,
    latencies_us: Vec<u32>,
}

impl Tally {
    fn error(&mut self, what: String) {
        self.errors += 1;
        if self.first_errors.len() < 5 {
            self.first_errors.push(what);
        }
    }
}

async fn client(addr: String, host: String, accept: String, items: std::sync::Arc<Vec<Item>>, until: Instant) -> Tally {
    let mut tally = Tally::default();
    'connect: while Instant::now() < until {
        let stream = match tokio::net::TcpStream::connect(&addr).await {
            Ok(s) => s,
            Err(e) => {
                tally.error(format!("connect: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (mut send, conn) = match hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await {
            Ok(x) => x,
            Err(e) => {
                tally.error(format!("handshake: {e}"));
                continue;
            }
        };
        tokio::spawn(conn);
        while Instant::now() < until {
            let mut whole = true;
            for item in items.iter() {
                let req = Request::get(item.path.as_str())
                    .header("host", host.as_str())
                    .header("accept", accept.as_str())
                    .body(Empty::<Bytes>::new())
                    .expect("a valid request");
                let started = Instant::now();
                let resp = match send.send_request(req).await {
                    Ok(r) => r,
                    Err(e) => {
                        tally.error(format!("{}: {e}", item.path));
                        continue 'connect;
                    }
                };
                let status = resp.status();
                let mut body = resp.into_body();
                let mut hash = Sha256::new();
                let mut n = 0u64;
                while let Some(frame) = body.frame().await {
                    match frame {
                        Ok(f) => {
                            if let Some(d) = f.data_ref() {
                                hash.update(d);
                                n += d.len() as u64;
                            }
                        }
                        Err(e) => {
                            tally.error(format!("{}: body: {e}", item.path));
                            continue 'connect;
                        }
                    }
                }
                tally.latencies_us.push(started.elapsed().as_micros().min(u32::MAX as u128) as u32);
                tally.requests += 1;
                tally.bytes += n;
                if status != 200 {
                    tally.error(format!("{}: status {status}", item.path));
                    whole = false;
                } else if hash.finalize().as_slice() != item.sha256 {
                    tally.error(format!("{}: sha256 mismatch ({n} bytes)", item.path));
                    whole = false;
                }
            }
            if whole {
                tally.images += 1;
            }
        }
        break;
    }
    tally
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 6 {
        eprintln!("usage: berth-puller ADDR CONNS SECS HOST ACCEPT PATH=SHA256HEX...");
        std::process::exit(2);
    }
    let (addr, host, accept) = (args[0].clone(), args[3].clone(), args[4].clone());
    let conns: usize = args[1].parse().expect("CONNS: a number");
    let secs: f64 = args[2].parse().expect("SECS: a number");
    let items: Vec<Item> = args[5..]
        .iter()
        .map(|a| {
            let (path, sum) = a.rsplit_once('=').expect("PATH=SHA256HEX");
            let sha256 = hex::decode(sum).ok().and_then(|v| v.try_into().ok()).expect("a sha256 in hex");
            Item { path: path.to_string(), sha256 }
        })
        .collect();
    let items = std::sync::Arc::new(items);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
    let (total, elapsed) = rt.block_on(async {
        let started = Instant::now();
        let until = started + Duration::from_secs_f64(secs);
        let tasks: Vec<_> = (0..conns)
            .map(|_| tokio::spawn(client(addr.clone(), host.clone(), accept.clone(), items.clone(), until)))
            .collect();
        let mut total = Tally::default();
        for t in tasks {
            let t = t.await.expect("a client task");
            total.requests += t.requests;
            total.images += t.images;
            total.bytes += t.bytes;
            total.errors += t.errors;
            for e in t.first_errors {
                if total.first_errors.len() < 5 {
                    total.first_errors.push(e);
                }
            }
            total.latencies_us.extend(t.latencies_us);
        }
        (total, started.elapsed().as_secs_f64())
    });
    let mut lat = total.latencies_us;
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        let i = ((lat.len() as f64 - 1.0) * p).round() as usize;
        lat[i] as f64 / 1000.0
    };
    let out = serde_json::json!({
        "connections": conns,
        "seconds": (elapsed * 100.0).round() / 100.0,
        "requests": total.requests,
        "images": total.images,
        "bytes": total.bytes,
        "errors": total.errors,
        "first_errors": total.first_errors,
        "requests_per_sec": (total.requests as f64 / elapsed).round(),
        "mb_per_sec": (total.bytes as f64 / elapsed / 1e6 * 10.0).round() / 10.0,
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "max_ms": pct(1.0),
    });
    println!("{out}");
}
