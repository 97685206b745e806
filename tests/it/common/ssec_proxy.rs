//! A small HTTP proxy in front of moto_server that enforces SSE-C the way
//! S3 does, because moto accepts and then ignores SSE-C headers.
//!
//! * An object written (PutObject, or a multipart upload whose
//!   CreateMultipartUpload carried the key) with an SSE-C key can afterwards
//!   be read (GET/HEAD) only with the same key: other requests get 400, as on S3.
//! * UploadPart of such a multipart upload must carry the same key.
//! * Malformed SSE-C headers (algorithm not AES256, key not 32 bytes, wrong
//!   key MD5) get 400.
//! * GET/HEAD of an SSE-C object answer with an ETag that is not the MD5 of
//!   the content (as on S3), plus the SSE-C response headers.
//!
//! It also records every request, so tests can see what was (not) written.
//! It listens on 127.0.0.1 only and forwards only to the moto endpoint.

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex};

use base64::Engine as _;

use super::http::{Server, forward, header, loopback_upstream, read_head, s3_error};

#[derive(Debug, Clone)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub query: String,
    /// Key MD5 (base64) of the SSE-C headers the request carried.
    pub ssec_md5: Option<String>,
    pub status: u16,
}

impl Logged {
    /// True for requests that write object data (PutObject, UploadPart,
    /// Create/CompleteMultipartUpload, CopyObject).
    pub fn is_object_write(&self) -> bool {
        let has_key = self.path.trim_start_matches('/').contains('/');
        has_key && (self.method == "PUT" || self.method == "POST")
    }
}

#[derive(Default)]
struct State {
    /// object ("bucket/key") -> SSE-C key MD5 it was stored with.
    sse: HashMap<String, String>,
    /// object -> SSE-C key MD5 of a multipart upload in progress.
    pending: HashMap<String, Option<String>>,
    log: Vec<Logged>,
}

pub struct SsecProxy {
    pub endpoint: String,
    state: Arc<Mutex<State>>,
    _server: Server,
}

impl SsecProxy {
    /// Starts the proxy in front of `upstream` (`http://127.0.0.1:PORT`).
    pub fn start(upstream: &str) -> SsecProxy {
        let upstream = loopback_upstream(upstream);
        let state = Arc::new(Mutex::new(State::default()));
        let server = {
            let state = state.clone();
            Server::start(move |conn| {
                if let Err(e) = handle(conn, &upstream, &state) {
                    eprintln!("proxy: {e}");
                }
            })
        };
        SsecProxy { endpoint: server.endpoint.clone(), state, _server: server }
    }

    pub fn requests(&self) -> Vec<Logged> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn clear_log(&self) {
        self.state.lock().unwrap().log.clear();
    }

    /// Requests that wrote object data.
    pub fn object_writes(&self) -> Vec<Logged> {
        self.requests().into_iter().filter(|l| l.is_object_write()).collect()
    }

    /// The SSE-C key MD5 an object is stored with, if any.
    pub fn stored_with(&self, bucket: &str, key: &str) -> Option<String> {
        self.state.lock().unwrap().sse.get(&format!("{bucket}/{key}")).cloned()
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn respond(mut c: &TcpStream, bytes: Vec<u8>) -> std::io::Result<()> {
    c.write_all(&bytes)?;
    c.flush()
}

fn handle(client: TcpStream, upstream: &str, state: &Mutex<State>) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let Some((request_line, headers)) = read_head(&mut reader)? else { return Ok(()) };
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("/").to_string();
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target.clone(), String::new()),
    };
    let qkeys: Vec<String> =
        query.split('&').filter(|s| !s.is_empty()).map(|kv| kv.split('=').next().unwrap_or("").to_string()).collect();
    let has_q = |k: &str| qkeys.iter().any(|x| x == k);
    let decoded = percent_decode(&path);
    let trimmed = decoded.trim_start_matches('/');
    let object = match trimmed.split_once('/') {
        Some((b, k)) if !k.is_empty() => Some(format!("{b}/{k}")),
        _ => None,
    };
    let head_only = method == "HEAD";

    // SSE-C headers
    let alg = header(&headers, "x-amz-server-side-encryption-customer-algorithm");
    let key = header(&headers, "x-amz-server-side-encryption-customer-key");
    let kmd5 = header(&headers, "x-amz-server-side-encryption-customer-key-md5");
    let ssec: Option<String> = if alg.is_some() || key.is_some() || kmd5.is_some() {
        let b64 = base64::engine::general_purpose::STANDARD;
        let raw = key.and_then(|k| b64.decode(k).ok());
        let valid = alg == Some("AES256")
            && raw.as_ref().is_some_and(|r| r.len() == 32)
            && raw.as_ref().is_some_and(|r| {
                use md5::Digest;
                Some(b64.encode(md5::Md5::digest(r)).as_str()) == kmd5
            });
        if !valid {
            log(state, &method, &path, &query, None, 400);
            return respond(
                &client,
                s3_error(
                    400,
                    "InvalidArgument",
                    "The SSE-C headers are incomplete or inconsistent (algorithm must be AES256, key 256 bits, key MD5 must match).",
                    head_only,
                ),
            );
        }
        kmd5.map(str::to_string)
    } else {
        None
    };

    // Enforcement before forwarding.
    if let Some(obj) = &object {
        let st = state.lock().unwrap();
        let wrong_key = |stored: &String| ssec.as_deref() != Some(stored.as_str());
        let refusal = if (method == "GET" || method == "HEAD") && st.sse.get(obj).is_some_and(wrong_key) {
            Some((
                "The object was stored using a form of Server Side Encryption. The correct parameters must be provided to retrieve the object.",
                head_only,
            ))
        } else if method == "PUT"
            && has_q("partNumber")
            && has_q("uploadId")
            && matches!(st.pending.get(obj), Some(Some(stored)) if wrong_key(stored))
        {
            Some(("The multipart upload was initiated with SSE-C; UploadPart must carry the same key.", false))
        } else {
            None
        };
        if let Some((message, head_only)) = refusal {
            drop(st);
            log(state, &method, &path, &query, ssec.clone(), 400);
            return respond(&client, s3_error(400, "InvalidRequest", message, head_only));
        }
    }

    // Forward the request.
    let up = forward(upstream, &request_line, &headers, &mut reader, &client)?;

    // Relay the response.
    let mut up_reader = BufReader::new(up.try_clone()?);
    let Some((status_line, resp_headers)) = read_head(&mut up_reader)? else { return Ok(()) };
    let status: u16 = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let ok = (200..300).contains(&status);
    // Bookkeeping, before the client sees the response (it may send its
    // next request as soon as it has).
    if let (Some(obj), true) = (&object, ok) {
        let mut st = state.lock().unwrap();
        match method.as_str() {
            "PUT" if !(has_q("partNumber") && has_q("uploadId") || has_q("tagging") || has_q("acl")) => match &ssec {
                Some(m) => {
                    st.sse.insert(obj.clone(), m.clone());
                }
                None => {
                    st.sse.remove(obj);
                }
            },
            "POST" if has_q("uploads") => {
                st.pending.insert(obj.clone(), ssec.clone());
            }
            "POST" if has_q("uploadId") => match st.pending.remove(obj).flatten() {
                Some(m) => {
                    st.sse.insert(obj.clone(), m);
                }
                None => {
                    st.sse.remove(obj);
                }
            },
            "DELETE" if !has_q("uploadId") => {
                st.sse.remove(obj);
            }
            _ => {}
        }
    }
    log(state, &method, &path, &query, ssec.clone(), status);
    let stored_sse = object.as_ref().and_then(|o| state.lock().unwrap().sse.get(o).cloned());
    let mut out = format!("{status_line}\r\n");
    for (k, v) in &resp_headers {
        let lk = k.to_ascii_lowercase();
        if lk == "connection" || lk == "keep-alive" {
            continue;
        }
        if lk == "etag" && (method == "GET" || method == "HEAD") && stored_sse.is_some() {
            // On S3 the ETag of an SSE-C object is not the MD5 of its content.
            use md5::Digest;
            let fake = hex::encode(md5::Md5::digest(format!("sse-c:{v}").as_bytes()));
            out.push_str(&format!("{k}: \"{fake}\"\r\n"));
            continue;
        }
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if let (Some(m), true) = (&stored_sse, method == "GET" || method == "HEAD") {
        out.push_str("x-amz-server-side-encryption-customer-algorithm: AES256\r\n");
        out.push_str(&format!("x-amz-server-side-encryption-customer-key-MD5: {m}\r\n"));
    }
    out.push_str("Connection: close\r\n\r\n");
    let mut cw = client.try_clone()?;
    cw.write_all(out.as_bytes())?;
    std::io::copy(&mut up_reader, &mut cw)?;
    cw.flush()?;
    let _ = client.shutdown(Shutdown::Both);

    Ok(())
}

fn log(state: &Mutex<State>, method: &str, path: &str, query: &str, ssec: Option<String>, status: u16) {
    state.lock().unwrap().log.push(Logged {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        ssec_md5: ssec,
        status,
    });
}
