//! A proxy in front of moto_server that plays a bucket policy: requests
//! the policy does not allow get S3's `403 AccessDenied` and are not
//! forwarded; the rest are. It counts what it refused, so a test can show
//! which calls a command needs. Listens on 127.0.0.1 only and forwards
//! only to the moto endpoint. It can also drop a request header on the way,
//! to play a store that ignores it (`If-None-Match`, say).

use std::io::{BufReader, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex};

use super::http::{Response, Server, copy_body, forward, loopback_upstream, read_head, s3_error};

pub struct DenyProxy {
    /// `http://127.0.0.1:PORT`, to give the tool as `--endpoint-url`.
    pub endpoint: String,
    refused: Arc<Mutex<Vec<String>>>,
    _server: Server,
}

impl DenyProxy {
    /// Forwards to `upstream` the requests whose request line
    /// (`METHOD /bucket/key?query HTTP/1.1`) `allow` accepts.
    pub fn start(upstream: &str, allow: fn(&str) -> bool) -> DenyProxy {
        Self::start_dropping(upstream, allow, None)
    }

    /// Forwards every request, without the header `drop`.
    pub fn dropping_header(upstream: &str, drop: &'static str) -> DenyProxy {
        Self::start_dropping(upstream, |_| true, Some(drop))
    }

    fn start_dropping(upstream: &str, allow: fn(&str) -> bool, drop: Option<&'static str>) -> DenyProxy {
        let upstream = loopback_upstream(upstream);
        let refused = Arc::new(Mutex::new(Vec::new()));
        let server = {
            let refused = refused.clone();
            Server::start(move |conn| {
                let _ = handle(conn, &upstream, allow, drop, &refused);
            })
        };
        DenyProxy { endpoint: server.endpoint.clone(), refused, _server: server }
    }

    /// The request lines refused so far.
    pub fn refused(&self) -> Vec<String> {
        self.refused.lock().unwrap().clone()
    }
}

fn handle(
    client: TcpStream,
    upstream: &str,
    allow: fn(&str) -> bool,
    drop: Option<&str>,
    refused: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let Some((request_line, mut headers)) = read_head(&mut reader)? else { return Ok(()) };
    if let Some(drop) = drop {
        headers.retain(|(k, _)| !k.eq_ignore_ascii_case(drop));
    }
    let mut out = &client;
    if allow(&request_line) {
        let up = forward(upstream, &request_line, &headers, &mut reader, &client)?;
        if let Some(response) = Response::read(&up)? {
            out.write_all(&response.to_bytes())?;
        }
    } else {
        refused.lock().unwrap().push(request_line.clone());
        copy_body(&mut reader, &headers, &mut std::io::sink())?;
        out.write_all(&s3_error(403, "AccessDenied", "Access Denied", request_line.starts_with("HEAD ")))?;
    }
    out.flush()?;
    client.shutdown(Shutdown::Both)
}
