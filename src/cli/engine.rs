//! Local container engines for `cbuild load`: Docker's or Podman's API on a unix socket
//! (`POST /images/load` with the docker-archive streamed as a chunked body), else the engine's own
//! `load` command reading the archive on stdin. The HTTP/1.1 client is the few lines one request
//! needs: no connection reuse, no TLS (a unix socket), the response read to its end.

use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context};

/// A container engine.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Docker,
    Podman,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Docker => "docker",
            Engine::Podman => "podman",
        }
    }
}

/// A way to reach an engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// The engine's HTTP API on a unix socket that accepted a connection.
    Socket { engine: Engine, path: PathBuf },
    /// The engine's command-line tool, found on PATH.
    Cli { engine: Engine, program: PathBuf },
}

impl Route {
    pub fn engine(&self) -> Engine {
        match self {
            Route::Socket { engine, .. } | Route::Cli { engine, .. } => *engine,
        }
    }
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Route::Socket { engine, path } => write!(f, "the {} API at unix://{}", engine.name(), path.display()),
            Route::Cli { engine, program } => write!(f, "`{} load` ({})", engine.name(), program.display()),
        }
    }
}

/// Where an engine's API socket may be, in the order tried: `DOCKER_HOST` (when `unix://`; another
/// scheme leaves only the docker CLI) or `/var/run/docker.sock`; for Podman `CONTAINER_HOST`,
/// `$XDG_RUNTIME_DIR/podman/podman.sock` (rootless), `/run/podman/podman.sock`.
pub fn sockets(engine: Engine) -> Vec<PathBuf> {
    match engine {
        Engine::Docker => match crate::env::var(crate::env::DOCKER_HOST) {
            Some(h) => h.strip_prefix("unix://").map(PathBuf::from).into_iter().collect(),
            None => vec![PathBuf::from("/var/run/docker.sock")],
        },
        Engine::Podman => {
            let mut v = Vec::new();
            if let Some(h) = crate::env::var(crate::env::CONTAINER_HOST) {
                match h.strip_prefix("unix://") {
                    Some(p) => v.push(PathBuf::from(p)),
                    None => return v,
                }
            }
            if let Some(x) = crate::env::var_os(crate::env::XDG_RUNTIME_DIR) {
                v.push(PathBuf::from(x).join("podman/podman.sock"));
            }
            v.push(PathBuf::from("/run/podman/podman.sock"));
            v
        }
    }
}

/// `program` on PATH.
fn on_path(program: &str) -> Option<PathBuf> {
    let path = crate::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// The first reachable route to `engine` (either engine when `None`: Docker's socket, Podman's
/// socket, then the CLIs — the docker CLI first only when `DOCKER_HOST` names a non-unix
/// address, since Podman's CLI needs no service). `Err` lists what was tried.
pub fn find_route(engine: Option<Engine>) -> Result<Route, Vec<String>> {
    let engines: &[Engine] = match engine {
        Some(Engine::Docker) => &[Engine::Docker],
        Some(Engine::Podman) => &[Engine::Podman],
        None => &[Engine::Docker, Engine::Podman],
    };
    let mut tried = Vec::new();
    for &e in engines {
        for path in sockets(e) {
            match UnixStream::connect(&path) {
                Ok(_) => return Ok(Route::Socket { engine: e, path }),
                Err(err) => tried.push(format!("{} API at unix://{}: {err}", e.name(), path.display())),
            }
        }
    }
    let docker_remote = crate::env::var(crate::env::DOCKER_HOST).is_some_and(|h| !h.starts_with("unix://"));
    let clis: &[Engine] = match engine {
        Some(e) => std::slice::from_ref(engines.iter().find(|x| **x == e).unwrap_or(&Engine::Docker)),
        None if docker_remote => &[Engine::Docker, Engine::Podman],
        None => &[Engine::Podman, Engine::Docker],
    };
    for &e in clis {
        match on_path(e.name()) {
            Some(program) => return Ok(Route::Cli { engine: e, program }),
            None => tried.push(format!("`{}` command: not found on PATH", e.name())),
        }
    }
    Err(tried)
}

/// Streams the docker-archive `body` writes into the engine behind `route`; returns the engine's
/// messages (`Loaded image: …`). An error carries the engine's own message when it gave one.
pub fn load(route: &Route, body: impl FnOnce(&mut dyn Write) -> anyhow::Result<()>) -> anyhow::Result<Vec<String>> {
    match route {
        Route::Socket { path, .. } => load_socket(path, body),
        Route::Cli { engine, program } => load_cli(*engine, program, body),
    }
}

fn load_socket(path: &Path, body: impl FnOnce(&mut dyn Write) -> anyhow::Result<()>) -> anyhow::Result<Vec<String>> {
    let stream = UnixStream::connect(path).with_context(|| format!("connecting to `{}`", path.display()))?;
    let sent = (|| -> anyhow::Result<()> {
        let mut head = &stream;
        head.write_all(
            format!(
                "POST /images/load?quiet=1 HTTP/1.1\r\nHost: localhost\r\nUser-Agent: cbuild/{}\r\n\
                 Content-Type: application/x-tar\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
                env!("CARGO_PKG_VERSION")
            )
            .as_bytes(),
        )?;
        let mut w = BufWriter::with_capacity(256 << 10, Chunked(&stream));
        body(&mut w)?;
        let chunked = w.into_inner().map_err(|e| e.into_error())?;
        chunked.finish()?;
        Ok(())
    })();
    // Read the answer even after a failed send: an engine that stops reading says why.
    let answer = read_response(&stream);
    let (status, text) = match (sent, answer) {
        (Ok(()), Ok(r)) => r,
        (Err(e), Ok((status, text))) if status >= 400 => {
            let _ = e;
            (status, text)
        }
        (Err(e), _) => return Err(e.context("sending the image to the engine")),
        (Ok(()), Err(e)) => return Err(e.context("reading the engine's answer")),
    };
    let messages = parse_json_stream(&text)?;
    if status != 200 {
        bail!("the engine answered HTTP {status}: {}", messages.join("; "));
    }
    Ok(messages)
}

fn load_cli(
    engine: Engine,
    program: &Path,
    body: impl FnOnce(&mut dyn Write) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<String>> {
    let mut child = Command::new(program)
        .arg("load")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running `{} load`", program.display()))?;
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut s);
            }
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = drain(child.stdout.take().map(|r| Box::new(r) as Box<dyn Read + Send>));
    let err = drain(child.stderr.take().map(|r| Box::new(r) as Box<dyn Read + Send>));
    let sent = match child.stdin.take() {
        Some(stdin) => {
            let mut w = BufWriter::with_capacity(256 << 10, stdin);
            body(&mut w).and_then(|_| w.flush().map_err(Into::into))
        }
        None => Err(anyhow!("no stdin")),
    };
    let status = child.wait().with_context(|| format!("waiting for `{} load`", engine.name()))?;
    let (out, err) = (out.join().unwrap_or_default(), err.join().unwrap_or_default());
    if !status.success() {
        bail!("`{} load` failed ({status}): {}", engine.name(), err.trim());
    }
    sent.context("sending the image to the engine")?;
    Ok(out.lines().chain(err.lines()).map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect())
}

/// HTTP/1.1 chunked transfer coding of everything written through it.
struct Chunked<W: Write>(W);

impl<W: Write> Write for Chunked<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !buf.is_empty() {
            self.0.write_all(format!("{:x}\r\n", buf.len()).as_bytes())?;
            self.0.write_all(buf)?;
            self.0.write_all(b"\r\n")?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<W: Write> Chunked<W> {
    fn finish(mut self) -> io::Result<()> {
        self.0.write_all(b"0\r\n\r\n")?;
        self.0.flush()
    }
}

/// Reads one HTTP/1.1 response: its status and its body (content-length, chunked, or to the end).
fn read_response(r: impl Read) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut r = BufReader::new(r);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .filter(|_| line.starts_with("HTTP/1."))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| anyhow!("not an HTTP response: `{}`", line.trim()))?;
    let (mut length, mut chunked) = (None, false);
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            bail!("the connection closed inside the response headers");
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "content-length" {
                length = v.parse::<u64>().ok();
            } else if k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked") {
                chunked = true;
            }
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size = line.trim().split(';').next().unwrap_or("");
            let size = u64::from_str_radix(size, 16).map_err(|_| anyhow!("bad chunk size `{}`", line.trim()))?;
            if size == 0 {
                break;
            }
            (&mut r).take(size).read_to_end(&mut body)?;
            line.clear();
            r.read_line(&mut line)?;
        }
    } else if let Some(n) = length {
        (&mut r).take(n).read_to_end(&mut body)?;
    } else {
        r.read_to_end(&mut body)?;
    }
    Ok((status, body))
}

/// The messages of a Docker JSON stream (`{"stream": …}` lines, or `{"message": …}` of an error
/// answer); `Err` with the engine's text for an `{"error": …}` element.
fn parse_json_stream(body: &[u8]) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for v in serde_json::Deserializer::from_slice(body).into_iter::<serde_json::Value>() {
        let Ok(v) = v else {
            // Not JSON (a proxy's page): show it as text.
            out.push(String::from_utf8_lossy(body).trim().to_string());
            break;
        };
        if let Some(e) = v.get("errorDetail").and_then(|d| d.get("message")).or_else(|| v.get("error")) {
            bail!("{}", e.as_str().unwrap_or_default().trim());
        }
        for k in ["stream", "status", "message"] {
            if let Some(s) = v.get(k).and_then(|s| s.as_str()) {
                out.extend(s.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_body_and_responses() {
        let mut buf = Vec::new();
        let mut c = Chunked(&mut buf);
        c.write_all(b"hello").unwrap();
        c.write_all(b"").unwrap();
        c.write_all(&[b'x'; 20]).unwrap();
        c.finish().unwrap();
        assert_eq!(buf, [&b"5\r\nhello\r\n14\r\n"[..], &[b'x'; 20], b"\r\n0\r\n\r\n"].concat());

        let json = "{\"stream\":\"Loaded image: a/b:latest\\n\"}\r\n";
        let r = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{json}\r\n0\r\n\r\n",
            json.len()
        );
        let (status, body) = read_response(r.as_bytes()).unwrap();
        assert_eq!(status, 200);
        assert_eq!(parse_json_stream(&body).unwrap(), ["Loaded image: a/b:latest"]);

        let r = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 26\r\n\r\n{\"message\":\"disk is full\"}";
        let (status, body) = read_response(&r[..]).unwrap();
        assert_eq!((status, parse_json_stream(&body).unwrap()), (500, vec!["disk is full".to_string()]));

        let e = parse_json_stream(
            b"{\"errorDetail\":{\"message\":\"invalid tar header\"},\"error\":\"invalid tar header\"}",
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "invalid tar header");
        assert!(read_response(&b"SSH-2.0-OpenSSH\r\n"[..]).is_err());
    }
}
