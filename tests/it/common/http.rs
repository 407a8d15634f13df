//! Plain HTTP for the tests: `FakeServer`, an HTTP/1.1 server on 127.0.0.1 whose every answer a
//! closure decides (a Debian mirror, a registry answering garbage, a server echoing credentials
//! back, a host service a sandbox must not reach), and `get`/`wait_get`, a GET of a service a test
//! runs (an image under runc or `cbuild run`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// One request as the fake server read it.
pub struct Request {
    pub method: String,
    /// The request target as sent (`/v2/`, `/debian/pool/…`).
    pub path: String,
    /// The request line and headers, as sent (CRLFs included).
    pub head: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The first header named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// An answer: `Content-Length` is added, the body is left out for HEAD.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Response {
        Response { status, headers: vec![], body: body.into() }
    }
    pub fn header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.into(), value.into()));
        self
    }
}

type Handler = dyn Fn(&Request) -> Response + Send + Sync;

/// A fake HTTP server on 127.0.0.1 (a port of its own); stops accepting when dropped.
pub struct FakeServer {
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl FakeServer {
    /// Serves every request with `handler` (a thread per connection, keep-alive as the client
    /// asks, HTTP/1.0 answered and closed like HTTP/1.0).
    pub fn start(handler: impl Fn(&Request) -> Response + Send + Sync + 'static) -> FakeServer {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let (connections, requests, stop) =
            (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
        let handler: Arc<Handler> = Arc::new(handler);
        let (c, r, st) = (connections.clone(), requests.clone(), stop.clone());
        std::thread::spawn(move || {
            for s in l.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(s) = s else { continue };
                c.fetch_add(1, Ordering::SeqCst);
                let (handler, r) = (handler.clone(), r.clone());
                std::thread::spawn(move || serve(s, &*handler, &r));
            }
        });
        FakeServer { addr, connections, requests, stop }
    }

    /// `127.0.0.1:PORT`
    pub fn host(&self) -> String {
        self.addr.to_string()
    }
    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
    /// Connections accepted so far (whether or not a request followed).
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
    /// Requests answered so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop, which then ends
    }
}

fn serve(s: TcpStream, handler: &Handler, requests: &AtomicUsize) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let Ok(mut w) = s.try_clone() else { return };
    let mut r = BufReader::new(s);
    while let Some(req) = read_request(&mut r) {
        requests.fetch_add(1, Ordering::SeqCst);
        let resp = handler(&req);
        let http10 = req.head.lines().next().is_some_and(|l| l.trim_end().ends_with("HTTP/1.0"));
        let close = req.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
            || (http10 && !req.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("keep-alive")));
        let mut out = format!("HTTP/1.{} {} {}\r\n", if http10 { 0 } else { 1 }, resp.status, reason(resp.status));
        for (k, v) in &resp.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str(&format!("Content-Length: {}\r\n", resp.body.len()));
        if close {
            out.push_str("Connection: close\r\n");
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        if req.method != "HEAD" {
            bytes.extend_from_slice(&resp.body);
        }
        if w.write_all(&bytes).and_then(|_| w.flush()).is_err() || close {
            return;
        }
    }
}

/// The next request on the connection; `None` at its end (or on garbage, or after 5 s idle).
fn read_request(r: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = Vec::new();
    let mut head = String::new();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line).ok()? == 0 {
            return None;
        }
        let text = String::from_utf8_lossy(&line);
        if text.trim().is_empty() {
            if head.is_empty() {
                continue; // blank lines before a request line
            }
            head.push_str(&text);
            break;
        }
        head.push_str(&text);
        if head.len() > 64 << 10 {
            return None;
        }
    }
    let mut first = head.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (first.next().unwrap_or("").to_string(), first.next().unwrap_or("").to_string());
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut req = Request { method, path, head, headers, body: Vec::new() };
    if req.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).ok()?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16).ok()?;
            if n == 0 {
                // trailers, up to the blank line
                loop {
                    let mut t = String::new();
                    if r.read_line(&mut t).ok()? == 0 || t.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            let mut chunk = vec![0; n + 2]; // data and its CRLF
            r.read_exact(&mut chunk).ok()?;
            req.body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(n) = req.header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        req.body = vec![0; n];
        r.read_exact(&mut req.body).ok()?;
    }
    Some(req)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        _ => "Status",
    }
}

/// `GET path` (HTTP/1.0) on 127.0.0.1:`port`: the whole answer (status line, headers, body), or
/// `None` if nothing answers.
pub fn get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes()).ok()?;
    let mut b = String::new();
    s.read_to_string(&mut b).ok()?;
    Some(b)
}

/// [`get`], tried until something answers (a service that is starting: `cbuild run` may extract
/// the image first, slow on a loaded machine); panics after 60 s.
pub fn wait_get(port: u16, path: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        if let Some(b) = get(port, path) {
            return b;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("nothing answered on 127.0.0.1:{port} within 60 s");
}
