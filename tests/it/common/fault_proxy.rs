//! A fault-injecting HTTP/1.1 proxy in front of a real server (the nginx remote cache, the
//! registry): per request, a rule picks a [`Fault`] — latency, an error status, 429, a dropped
//! connection, an answer lost after the server acted, a truncated, bit-flipped or trickling body.
//! Each request is forwarded on a fresh upstream connection and answered with `Connection: close`,
//! so faults apply to exactly one request.

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What happens to one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forwarded unchanged.
    Pass,
    /// Forwarded after a delay (latency).
    Delay(Duration),
    /// Answered with this status and an empty body; the server never sees the request.
    Status(u16),
    /// 429 with `Retry-After: N` seconds; the server never sees the request.
    TooMany(u64),
    /// The connection is closed without an answer; the server never sees the request.
    Drop,
    /// The server handles the request, but its answer is lost (the connection is closed).
    LoseAnswer,
    /// The answer's body is cut in half (the announced length is kept).
    Truncate,
    /// One bit of the answer's body is flipped (same length).
    FlipBit,
    /// The answer's body is sent one byte per interval.
    Trickle(Duration),
}

/// What the rule sees of a request.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// Requests seen before this one.
    pub n: usize,
}

type Rule = Box<dyn FnMut(&Seen) -> Fault + Send>;

pub struct FaultProxy {
    pub port: u16,
    rule: Arc<Mutex<Rule>>,
    /// (method, path, fault) of every request, in order.
    log: Arc<Mutex<Vec<(String, String, Fault)>>>,
    stop: Arc<AtomicBool>,
}

impl FaultProxy {
    /// A proxy on a free loopback port forwarding to `127.0.0.1:upstream`.
    pub fn start(upstream: u16, rule: impl FnMut(&Seen) -> Fault + Send + 'static) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let rule: Arc<Mutex<Rule>> = Arc::new(Mutex::new(Box::new(rule)));
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, l, s) = (rule.clone(), log.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (r, l) = (r.clone(), l.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, upstream, &r, &l);
                });
            }
        });
        FaultProxy { port, rule, log, stop }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Replaces the rule.
    pub fn set(&self, rule: impl FnMut(&Seen) -> Fault + Send + 'static) {
        *self.rule.lock().unwrap() = Box::new(rule);
    }

    /// Every request so far: (method, path, fault).
    pub fn log(&self) -> Vec<(String, String, Fault)> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// A parsed HTTP message head: the first line and the headers (name, value) as sent.
struct Head {
    first: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn get(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim())
    }
}

fn read_head(r: &mut impl BufRead) -> std::io::Result<Option<Head>> {
    let mut first = String::new();
    if r.read_line(&mut first)? == 0 {
        return Ok(None);
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line)?;
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        if let Some((n, v)) = line.split_once(':') {
            headers.push((n.to_string(), v.trim().to_string()));
        }
    }
    Ok(Some(Head { first: first.trim_end().to_string(), headers }))
}

/// A body framed by Content-Length or chunked encoding (decoded); `until_eof` reads to the end.
fn read_body(r: &mut impl BufRead, h: &Head, until_eof: bool) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    if h.get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut line = String::new();
            r.read_line(&mut line)?;
            let n = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk[..n]);
            if n == 0 {
                // Trailers end with an empty line (already consumed as the chunk's CRLF when none).
                break;
            }
        }
    } else if let Some(n) = h.get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else if until_eof {
        r.read_to_end(&mut body)?;
    }
    Ok(body)
}

fn serve(
    client: TcpStream,
    upstream: u16,
    rule: &Mutex<Rule>,
    log: &Mutex<Vec<(String, String, Fault)>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut client = client;
    let Some(req) = read_head(&mut reader)? else { return Ok(()) };
    let body = read_body(&mut reader, &req, false)?;
    let mut parts = req.first.split_whitespace();
    let (method, path) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
    let fault = {
        let n = log.lock().unwrap().len();
        let f = (rule.lock().unwrap())(&Seen { method: method.clone(), path: path.clone(), n });
        log.lock().unwrap().push((method.clone(), path.clone(), f.clone()));
        f
    };
    match &fault {
        Fault::Delay(d) => std::thread::sleep(*d),
        Fault::Status(code) => {
            write!(client, "HTTP/1.1 {code} Injected\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
            return Ok(());
        }
        Fault::TooMany(secs) => {
            write!(
                client,
                "HTTP/1.1 429 Too Many Requests\r\nRetry-After: {secs}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )?;
            return Ok(());
        }
        Fault::Drop => {
            let _ = client.shutdown(Shutdown::Both);
            return Ok(());
        }
        _ => {}
    }
    // Forward on a fresh connection, asking the server to close after its answer.
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    let mut out = format!("{}\r\n", req.first);
    for (n, v) in &req.headers {
        if ["connection", "transfer-encoding", "content-length", "keep-alive"].iter().any(|h| n.eq_ignore_ascii_case(h))
        {
            continue;
        }
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    let has_body = !body.is_empty() || req.get("content-length").is_some() || req.get("transfer-encoding").is_some();
    if has_body {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("Connection: close\r\n\r\n");
    up.write_all(out.as_bytes())?;
    up.write_all(&body)?;
    let mut ur = BufReader::new(up);
    let Some(resp) = read_head(&mut ur)? else { return Ok(()) };
    let status: u16 = resp.first.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let bodyless = method == "HEAD" || status == 204 || status == 304 || (100..200).contains(&status);
    let mut rbody = if bodyless { Vec::new() } else { read_body(&mut ur, &resp, true)? };
    if fault == Fault::LoseAnswer {
        let _ = client.shutdown(Shutdown::Both);
        return Ok(());
    }
    let mut head = format!("{}\r\n", resp.first);
    for (n, v) in &resp.headers {
        let framing = ["connection", "transfer-encoding", "keep-alive"].iter().any(|h| n.eq_ignore_ascii_case(h))
            || (!bodyless && n.eq_ignore_ascii_case("content-length"));
        if !framing {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
    }
    if !bodyless {
        head.push_str(&format!("Content-Length: {}\r\n", rbody.len()));
    }
    head.push_str("Connection: close\r\n\r\n");
    client.write_all(head.as_bytes())?;
    match fault {
        Fault::Truncate => {
            client.write_all(&rbody[..rbody.len() / 2])?;
            client.flush()?;
            let _ = client.shutdown(Shutdown::Both);
        }
        Fault::FlipBit => {
            if !rbody.is_empty() {
                let i = rbody.len() / 2;
                rbody[i] ^= 0x10;
            }
            client.write_all(&rbody)?;
        }
        Fault::Trickle(every) => {
            for b in rbody {
                client.write_all(&[b])?;
                client.flush()?;
                std::thread::sleep(every);
            }
        }
        _ => client.write_all(&rbody)?,
    }
    client.flush()?;
    let _ = client.shutdown(Shutdown::Write);
    Ok(())
}
