//! A fault-injecting HTTP proxy between the tool and moto_server.
//!
//! At a configurable rate, decided per request by a seeded generator (the
//! n-th request the proxy sees gets the n-th decision; which request is the
//! n-th depends on thread scheduling, the sequence of decisions does not),
//! it answers with one of the [`Fault`]s, taking turns, instead of or on
//! top of moto's answer:
//!
//! * `500 InternalError`, `503 ServiceUnavailable`, `503 SlowDown` with
//!   S3's XML error bodies; the request is not forwarded.
//! * A TCP reset in the middle of the request (part of the body read,
//!   nothing forwarded), or in the middle of the response (moto did the
//!   work; the client sees half an answer).
//! * A stall: moto's answer is held for up to `stall` (well below the
//!   tool's 120 s read timeout), then sent; or held and then reset.
//!
//! It can also hold every object request at a gate until the test opens it.
//! Counters tell the test which faults were actually injected. It listens
//! on 127.0.0.1 only and forwards only to the moto endpoint.

use std::fmt;
use std::io::{BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::http::{Response, Server, copy_body, forward, header, loopback_upstream, read_head, s3_error};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 500 InternalError
    InternalError,
    /// 503 ServiceUnavailable
    ServiceUnavailable,
    /// 503 SlowDown (throttling)
    SlowDown,
    /// Reset while the request is being sent (not forwarded).
    ResetRequest,
    /// Forwarded; reset halfway through the response.
    ResetResponse,
    /// Forwarded; the response is held, then sent whole.
    Stall,
    /// Forwarded; the response is held, then the connection is reset.
    StallReset,
}

impl Fault {
    pub const ALL: [Fault; 7] = [
        Fault::InternalError,
        Fault::ServiceUnavailable,
        Fault::SlowDown,
        Fault::ResetRequest,
        Fault::ResetResponse,
        Fault::Stall,
        Fault::StallReset,
    ];

    /// Every fault that makes the request fail (all but a plain stall).
    pub const FAILING: [Fault; 6] = [
        Fault::InternalError,
        Fault::ServiceUnavailable,
        Fault::SlowDown,
        Fault::ResetRequest,
        Fault::ResetResponse,
        Fault::StallReset,
    ];

    fn index(self) -> usize {
        Fault::ALL.iter().position(|f| *f == self).unwrap()
    }

    /// Status, S3 error code and message of the HTTP error faults.
    fn http_error(self) -> Option<(u16, &'static str, &'static str)> {
        match self {
            Fault::InternalError => Some((500, "InternalError", "We encountered an internal error. Please try again.")),
            Fault::ServiceUnavailable => Some((503, "ServiceUnavailable", "Please reduce your request rate.")),
            Fault::SlowDown => Some((503, "SlowDown", "Please reduce your request rate.")),
            _ => None,
        }
    }
}

/// What to inject.
#[derive(Debug, Clone)]
pub struct FaultPlan {
    /// Share of requests that get a fault, 0.0 to 1.0.
    pub rate: f64,
    pub seed: u64,
    /// The faults to inject; they take turns.
    pub kinds: Vec<Fault>,
    /// The longest stall; each stall lasts between half of it and all of it.
    pub stall: Duration,
    /// Leave requests without an object key (HeadBucket, ListObjects) alone.
    pub spare_bucket_requests: bool,
    /// Only requests whose request line (`METHOD /bucket/key?query HTTP/1.1`)
    /// this accepts may get a fault.
    pub only: Option<fn(&str) -> bool>,
    /// Inject at most this many faults.
    pub limit: Option<u64>,
}

impl FaultPlan {
    /// `rate` of the requests get any of the faults; stalls of 1 to 2 s.
    pub fn random(rate: f64, seed: u64) -> FaultPlan {
        FaultPlan {
            rate,
            seed,
            kinds: Fault::ALL.to_vec(),
            stall: Duration::from_secs(2),
            spare_bucket_requests: false,
            only: None,
            limit: None,
        }
    }

    /// Every request fails, one way or another.
    pub fn every_request_fails(seed: u64) -> FaultPlan {
        FaultPlan {
            rate: 1.0,
            kinds: Fault::FAILING.to_vec(),
            stall: Duration::from_millis(300),
            ..FaultPlan::random(1.0, seed)
        }
    }

    /// No faults (a plain proxy, e.g. for the gate).
    pub fn none() -> FaultPlan {
        FaultPlan::random(0.0, 0)
    }
}

/// How many requests the proxy saw and which faults it injected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    pub requests: u64,
    /// Indexed like [`Fault::ALL`].
    pub injected: [u64; 7],
}

impl FaultCounts {
    pub fn of(&self, fault: Fault) -> u64 {
        self.injected[fault.index()]
    }

    /// All injected faults, stalls included.
    pub fn total(&self) -> u64 {
        self.injected.iter().sum()
    }

    /// Injected faults that made a request fail.
    pub fn failures(&self) -> u64 {
        Fault::FAILING.iter().map(|f| self.of(*f)).sum()
    }
}

impl fmt::Display for FaultCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} requests, {} faults:", self.requests, self.total())?;
        for kind in Fault::ALL {
            write!(f, " {kind:?}={}", self.of(kind))?;
        }
        Ok(())
    }
}

struct Shared {
    upstream: String,
    plan: Mutex<FaultPlan>,
    requests: AtomicU64,
    faults: AtomicU64,
    injected: [AtomicU64; 7],
    /// Whether object requests wait at the gate.
    gate_closed: Mutex<bool>,
    gate: Condvar,
}

impl Shared {
    /// The fault for the next request, if any (and counts it).
    fn decide(&self, request_line: &str, object_request: bool) -> Option<Fault> {
        let n = self.requests.fetch_add(1, Ordering::SeqCst);
        let plan = self.plan.lock().unwrap();
        if plan.kinds.is_empty()
            || (plan.spare_bucket_requests && !object_request)
            || plan.only.is_some_and(|only| !only(request_line))
            || plan.limit.is_some_and(|limit| self.faults.load(Ordering::SeqCst) >= limit)
        {
            return None;
        }
        let x = splitmix64(plan.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let unit = (x >> 11) as f64 / (1u64 << 53) as f64;
        if unit >= plan.rate {
            return None;
        }
        // the kinds take turns (from a seeded start), so a run with a few
        // dozen faults has met every kind
        let k = self.faults.fetch_add(1, Ordering::SeqCst) + plan.seed;
        let fault = plan.kinds[(k % plan.kinds.len() as u64) as usize];
        self.injected[fault.index()].fetch_add(1, Ordering::SeqCst);
        Some(fault)
    }

    /// How long a stall lasts: between half of the plan's and all of it.
    fn stall(&self) -> Duration {
        let max = self.plan.lock().unwrap().stall;
        let salt = splitmix64(self.requests.load(Ordering::SeqCst) ^ 0x5741_4c4c) % 1000;
        max / 2 + max / 2 * salt as u32 / 1000
    }

    fn wait_at_gate(&self) {
        let mut closed = self.gate_closed.lock().unwrap();
        while *closed {
            closed = self.gate.wait(closed).unwrap();
        }
    }
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`, to give the tool as `--endpoint-url`.
    pub endpoint: String,
    shared: Arc<Shared>,
    _server: Server,
}

impl FaultProxy {
    /// Starts the proxy in front of `upstream` (`http://127.0.0.1:PORT`).
    pub fn start(upstream: &str, plan: FaultPlan) -> FaultProxy {
        let shared = Arc::new(Shared {
            upstream: loopback_upstream(upstream),
            plan: Mutex::new(plan),
            requests: AtomicU64::new(0),
            faults: AtomicU64::new(0),
            injected: Default::default(),
            gate_closed: Mutex::new(false),
            gate: Condvar::new(),
        });
        let server = {
            let shared = shared.clone();
            Server::start(move |conn| {
                // A client that gives up (or is killed) mid-request is not news.
                let _ = handle(conn, &shared);
            })
        };
        FaultProxy { endpoint: server.endpoint.clone(), shared, _server: server }
    }

    pub fn counts(&self) -> FaultCounts {
        FaultCounts {
            requests: self.shared.requests.load(Ordering::SeqCst),
            injected: std::array::from_fn(|i| self.shared.injected[i].load(Ordering::SeqCst)),
        }
    }

    /// Changes the share of requests that get a fault from now on.
    pub fn set_rate(&self, rate: f64) {
        self.shared.plan.lock().unwrap().rate = rate;
    }

    /// From now on, requests on objects wait until [`FaultProxy::open_gate`].
    pub fn close_gate(&self) {
        *self.shared.gate_closed.lock().unwrap() = true;
    }

    pub fn open_gate(&self) {
        *self.shared.gate_closed.lock().unwrap() = false;
        self.shared.gate.notify_all();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // never leave a handler thread waiting
        self.open_gate();
    }
}

/// Drops the connection with a TCP RST (SO_LINGER 0) rather than a FIN.
fn reset(conn: TcpStream) {
    let _ = socket2::SockRef::from(&conn).set_linger(Some(Duration::ZERO));
    drop(conn);
}

fn handle(client: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let Some((request_line, headers)) = read_head(&mut reader)? else { return Ok(()) };
    let target = request_line.split(' ').nth(1).unwrap_or("/");
    let path = target.split('?').next().unwrap_or("");
    let object_request = path.trim_start_matches('/').split_once('/').is_some_and(|(_, key)| !key.is_empty());
    let head_only = request_line.starts_with("HEAD ");
    let fault = shared.decide(&request_line, object_request);
    if object_request {
        shared.wait_at_gate();
    }
    let mut out = &client;
    match fault {
        Some(Fault::ResetRequest) => {
            // take half the body (if any), then reset: nothing reaches moto
            let len = header(&headers, "content-length").and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            std::io::copy(&mut (&mut reader).take(len / 2), &mut std::io::sink())?;
            drop(reader);
            reset(client);
        }
        Some(f @ (Fault::InternalError | Fault::ServiceUnavailable | Fault::SlowDown)) => {
            // read the whole request first, so the client sees the answer
            // rather than a reset for unread data
            copy_body(&mut reader, &headers, &mut std::io::sink())?;
            let (status, code, message) = f.http_error().unwrap();
            out.write_all(&s3_error(status, code, message, head_only))?;
            out.flush()?;
            client.shutdown(Shutdown::Both)?;
        }
        _ => {
            let up = forward(&shared.upstream, &request_line, &headers, &mut reader, &client)?;
            let Some(response) = Response::read(&up)? else {
                reset(client);
                return Ok(());
            };
            let bytes = response.to_bytes();
            drop(reader);
            match fault {
                Some(Fault::ResetResponse) => {
                    out.write_all(&bytes[..bytes.len() / 2])?;
                    out.flush()?;
                    reset(client);
                }
                Some(Fault::StallReset) => {
                    std::thread::sleep(shared.stall());
                    reset(client);
                }
                _ => {
                    if fault == Some(Fault::Stall) {
                        std::thread::sleep(shared.stall());
                    }
                    out.write_all(&bytes)?;
                    out.flush()?;
                    client.shutdown(Shutdown::Both)?;
                }
            }
        }
    }
    Ok(())
}
