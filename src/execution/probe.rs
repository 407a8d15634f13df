//! Checks of a running sandbox from inside its network namespace: a fresh thread joins the
//! namespace (`setns`), waits for a TCP port on 127.0.0.1 to accept connections and makes plain
//! HTTP/1.1 GETs. The service needs no network of the host and the checker needs no tool in the
//! image. Joining takes `CAP_SYS_ADMIN` over the namespace: cbuild must run as root. Also makes the
//! fresh loopback-only namespace an integration test's sandboxes share ([`NetNs::new_loopback`]).

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest HTTP answer read (status line, headers and body).
const MAX_ANSWER: u64 = 16 << 20;

/// An open network namespace (kept alive by its descriptor).
#[derive(Debug)]
pub struct NetNs(OwnedFd);

impl NetNs {
    /// The network namespace of process `pid`, if it is not this process's own (a sandbox that has
    /// not unshared its namespace yet gives `None`).
    pub fn of_pid(pid: u32) -> io::Result<Option<NetNs>> {
        use std::os::unix::fs::MetadataExt;
        let path = format!("/proc/{pid}/ns/net");
        let theirs = std::fs::metadata(&path)?;
        let ours = std::fs::metadata("/proc/self/ns/net")?;
        if (theirs.dev(), theirs.ino()) == (ours.dev(), ours.ino()) {
            return Ok(None);
        }
        Ok(Some(NetNs(std::fs::File::open(&path)?.into())))
    }

    /// A new network namespace holding only a loopback interface, up (127.0.0.1): made on a
    /// short-lived thread, so cbuild's own namespace never changes. Nothing but this descriptor
    /// and the processes that join it keep it alive: no bind mount, no name under /run/netns, so
    /// it disappears with the last of them even when cbuild is killed. Needs `CAP_SYS_ADMIN`.
    pub fn new_loopback() -> io::Result<NetNs> {
        std::thread::spawn(|| -> io::Result<NetNs> {
            // SAFETY: unshare(2) with CLONE_NEWNET changes only this thread's network namespace,
            // and the thread ends right after.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            loopback_up()?;
            Ok(NetNs(std::fs::File::open("/proc/thread-self/ns/net")?.into()))
        })
        .join()
        .map_err(|_| io::Error::other("the thread making the network namespace panicked"))?
    }

    /// Another descriptor of the same namespace.
    pub fn try_clone(&self) -> io::Result<NetNs> {
        Ok(NetNs(self.0.try_clone()?))
    }

    /// The namespace as sandboxes join it ([`SandboxSpec::netns`](super::sandbox::SandboxSpec::netns)).
    pub fn shared(&self) -> io::Result<super::sandbox::SharedNetns> {
        Ok(super::sandbox::SharedNetns(Arc::new(self.0.try_clone()?)))
    }
}

/// Sets `lo` up in the calling thread's network namespace (`SIOCSIFFLAGS`, as `ip link set lo up`).
fn loopback_up() -> io::Result<()> {
    use std::os::fd::FromRawFd;
    // SAFETY: socket(2) returns a fresh descriptor (checked), which is then owned.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in b"lo".iter().enumerate() {
        req.ifr_name[i] = *b as libc::c_char;
    }
    // SAFETY: the SIOCGIFFLAGS/SIOCSIFFLAGS ioctls read and write the ifreq we own.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The answer to a GET.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpAnswer {
    pub status: u16,
    pub body: String,
}

/// Runs `f` on a new thread that first joins `ns` (the thread is never reused: its namespace dies
/// with it). Errors joining are returned as `Err`; `f`'s result as `Ok`.
pub fn in_netns<T: Send + 'static>(
    ns: NetNs,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<io::Result<T>> {
    std::thread::spawn(move || {
        // SAFETY: setns(2) on a descriptor we own; it changes only this thread's network namespace.
        if unsafe { libc::setns(ns.0.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(f())
    })
}

/// Waits until 127.0.0.1:`port` accepts a connection, for at most `timeout`, or until `stop` is set.
/// The error says what the last attempt got.
pub fn wait_for_port(port: u16, timeout: Duration, stop: &Arc<AtomicBool>) -> Result<Duration, String> {
    let start = Instant::now();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut last = String::from("no attempt");
    while start.elapsed() < timeout && !stop.load(Ordering::Relaxed) {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Ok(_) => return Ok(start.elapsed()),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(last)
}

/// `GET path` on 127.0.0.1:`port` (HTTP/1.1, `Connection: close`), with `timeout` for connecting
/// and for each read.
pub fn http_get(port: u16, path: &str, timeout: Duration) -> Result<HttpAnswer, String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: cbuild-test\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.take(MAX_ANSWER).read_to_end(&mut raw).map_err(|e| format!("reading the answer: {e}"))?;
    parse_answer(&raw)
}

/// Parses an HTTP/1.x answer (status line, headers, body; chunked bodies decoded).
fn parse_answer(raw: &[u8]) -> Result<HttpAnswer, String> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or("the answer has no end of headers")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| format!("`{status_line}` is not an HTTP status line"))?;
    let chunked = lines.any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
        })
    });
    if chunked {
        body = dechunk(&body)?;
    }
    Ok(HttpAnswer { status, body: String::from_utf8_lossy(&body).into_owned() })
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n").ok_or("a chunk size line has no end")?;
        let size_text = String::from_utf8_lossy(&b[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("`{size_text}` is not a chunk size"))?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = b.get(..size).ok_or("a chunk is cut short")?;
        out.extend_from_slice(chunk);
        b = b.get(size + 2..).unwrap_or_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_loopback_namespace_has_only_lo_up_and_none_of_the_hosts_ports() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            assert!(NetNs::new_loopback().is_err(), "making a network namespace takes CAP_SYS_ADMIN");
            return;
        }
        let host = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let host_port = host.local_addr().unwrap().port();
        let ns = NetNs::new_loopback().unwrap();
        let r = in_netns(ns.try_clone().unwrap(), move || {
            let devs = std::fs::read_to_string("/proc/thread-self/net/dev").unwrap();
            let names: Vec<String> =
                devs.lines().skip(2).filter_map(|l| l.split(':').next()).map(|n| n.trim().to_string()).collect();
            // Loopback is up: a listener here answers; the host's listener is not reachable.
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = l.local_addr().unwrap().port();
            let stop = Arc::new(AtomicBool::new(false));
            let inside = wait_for_port(port, Duration::from_secs(2), &stop).is_ok();
            let outside = TcpStream::connect(("127.0.0.1", host_port)).is_ok();
            (names, inside, outside)
        })
        .join()
        .unwrap()
        .unwrap();
        assert_eq!(r, (vec!["lo".to_string()], true, false));
        // This thread's (the host's) namespace did not change.
        assert!(NetNs::of_pid(std::process::id()).unwrap().is_none());
    }

    #[test]
    fn answers_plain_and_chunked() {
        let a = parse_answer(b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\nhello").unwrap();
        assert_eq!(a, HttpAnswer { status: 200, body: "hello".into() });
        let a = parse_answer(
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(a, HttpAnswer { status: 404, body: "abcde".into() });
        assert!(parse_answer(b"garbage").is_err());
        assert!(parse_answer(b"SSH-2.0\r\n\r\n").is_err());
    }

    #[test]
    fn a_port_and_a_get_on_this_hosts_loopback() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap(); // the readiness probe
            drop(c);
            (c, _) = l.accept().unwrap();
            let mut buf = [0u8; 1024];
            let n = c.read(&mut buf).unwrap();
            assert!(String::from_utf8_lossy(&buf[..n]).starts_with("GET /x HTTP/1.1\r\n"));
            c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").unwrap();
        });
        let stop = Arc::new(AtomicBool::new(false));
        wait_for_port(port, Duration::from_secs(5), &stop).unwrap();
        let a = http_get(port, "/x", Duration::from_secs(5)).unwrap();
        assert_eq!(a, HttpAnswer { status: 200, body: "ok".into() });
        server.join().unwrap();
    }
}
