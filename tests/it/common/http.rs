//! The bits of HTTP/1.1 the test proxies need: read a request or response
//! head, copy a body, forward a request to moto, write an S3-style error.
//!
//! One request per connection: every response the proxies send says
//! `Connection: close`, so clients never reuse a connection the proxy has
//! closed (which would look like a fault nobody injected).

use std::io::{BufRead, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A request or status line and its headers.
pub type Head = (String, Vec<(String, String)>);

/// Reads a request or status line and its headers; None at end of stream.
pub fn read_head(r: &mut impl BufRead) -> std::io::Result<Option<Head>> {
    let mut first = String::new();
    if r.read_line(&mut first)? == 0 {
        return Ok(None);
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    Ok(Some((first.trim_end_matches(['\r', '\n']).to_string(), headers)))
}

pub fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// Headers that describe one hop's connection, not the message.
fn is_hop_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n == "connection" || n == "keep-alive" || n == "proxy-connection"
}

/// An S3-style XML error response, with `Connection: close` (no body for HEAD).
pub fn s3_error(status: u16, code: &str, msg: &str, head_only: bool) -> Vec<u8> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{msg}</Message></Error>"
    );
    let reason = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

/// Copies a chunked body verbatim (framing included).
fn copy_chunked(r: &mut impl BufRead, w: &mut impl Write) -> std::io::Result<()> {
    loop {
        let mut line = String::new();
        r.read_line(&mut line)?;
        w.write_all(line.as_bytes())?;
        let size_hex = line.trim().split(';').next().unwrap_or("0");
        let size = usize::from_str_radix(size_hex.trim(), 16).unwrap_or(0);
        if size == 0 {
            // trailers until an empty line
            loop {
                let mut t = String::new();
                if r.read_line(&mut t)? == 0 {
                    return Ok(());
                }
                w.write_all(t.as_bytes())?;
                if t.trim().is_empty() {
                    return Ok(());
                }
            }
        }
        std::io::copy(&mut r.by_ref().take(size as u64 + 2), w)?;
    }
}

/// Copies a request body (Content-Length or chunked) from `r` to `w`.
pub fn copy_body(r: &mut impl BufRead, headers: &[(String, String)], w: &mut impl Write) -> std::io::Result<()> {
    if let Some(len) = header(headers, "content-length").and_then(|v| v.parse::<u64>().ok()) {
        std::io::copy(&mut r.take(len), w)?;
    } else if header(headers, "transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        copy_chunked(r, w)?;
    }
    Ok(())
}

/// Sends the request (`request_line`, `headers`, then its body read from
/// `reader`) to `upstream` on a new connection and returns that connection,
/// ready for the response. Answers `Expect: 100-continue` itself.
pub fn forward(
    upstream: &str,
    request_line: &str,
    headers: &[(String, String)],
    reader: &mut impl BufRead,
    client: &TcpStream,
) -> std::io::Result<TcpStream> {
    let mut up = TcpStream::connect(upstream)?;
    let mut head = format!("{request_line}\r\n");
    let mut expect_continue = false;
    for (k, v) in headers {
        if k.eq_ignore_ascii_case("expect") {
            expect_continue = v.eq_ignore_ascii_case("100-continue");
            continue;
        }
        if is_hop_header(k) {
            continue;
        }
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("Connection: close\r\n\r\n");
    up.write_all(head.as_bytes())?;
    if expect_continue {
        let mut c = client;
        c.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    copy_body(reader, headers, &mut up)?;
    up.flush()?;
    Ok(up)
}

/// A whole response read from upstream.
pub struct Response {
    pub status_line: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// Reads the response head and then everything until upstream closes
    /// (it was asked to with `Connection: close`).
    pub fn read(up: &TcpStream) -> std::io::Result<Option<Response>> {
        let mut r = std::io::BufReader::new(up);
        let Some((status_line, headers)) = read_head(&mut r)? else { return Ok(None) };
        let status = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut body = Vec::new();
        r.read_to_end(&mut body)?;
        Ok(Some(Response { status_line, status, headers, body }))
    }

    /// The response as the client gets it: hop headers replaced by `Connection: close`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("{}\r\n", self.status_line);
        for (k, v) in &self.headers {
            if !is_hop_header(k) {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
        }
        out.push_str("Connection: close\r\n\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// `127.0.0.1:PORT` of an `http://127.0.0.1:PORT` endpoint; the proxies
/// forward to nothing else.
pub fn loopback_upstream(endpoint: &str) -> String {
    let addr = endpoint.strip_prefix("http://").expect("upstream must be http://").trim_end_matches('/').to_string();
    assert!(addr.starts_with("127.0.0.1:"), "the proxies only forward to 127.0.0.1");
    addr
}

/// A listener on 127.0.0.1 that hands each connection to `handle` on a
/// thread of its own, until dropped.
pub struct Server {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Server {
    pub fn start(handle: impl Fn(TcpStream) + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let handle = Arc::new(handle);
        {
            let stop = stop.clone();
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let handle = handle.clone();
                    std::thread::spawn(move || handle(conn));
                }
            });
        }
        Server { endpoint: format!("http://127.0.0.1:{port}"), port, stop }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // wake the accept loop so it sees the flag
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}
