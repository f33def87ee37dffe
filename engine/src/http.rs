//! The operator's HTTP endpoints, on a thread of their own:
//!
//! - `GET /metrics`: [`Metrics::render`] in the Prometheus text format;
//! - `GET /livez`: 200 while the process runs;
//! - `GET /readyz`: 200 when every worker is deciding, else 503 with the
//!   reasons as plain text (see [`Metrics::readiness`]).
//!
//! A deliberately small HTTP/1.1 server on a std `TcpListener`: one request
//! per connection (`Connection: close`), one connection at a time, with
//! timeouts so a stuck client cannot hold the next scrape. Scrapes and
//! probes are a few requests a second; nothing here touches the workers
//! beyond reading what they published.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::metrics::text::CONTENT_TYPE;
use crate::metrics::Metrics;

/// How long a client may take to send its request or read the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest request head read; anything longer is refused.
const MAX_REQUEST: usize = 8 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen on `{address}`: {error}")]
    Bind { address: String, error: io::Error },
    #[error("cannot start the http thread: {0}")]
    Spawn(io::Error),
}

/// The server thread; stopped when dropped.
#[derive(Debug)]
pub struct HttpServer {
    address: SocketAddr,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Listens on `address` (`HOST:PORT`; port 0 picks a free one).
    pub fn bind(address: &str, metrics: Arc<Metrics>) -> Result<HttpServer, HttpError> {
        let listener =
            TcpListener::bind(address).map_err(|error| HttpError::Bind { address: address.to_owned(), error })?;
        HttpServer::start(listener, metrics)
    }

    /// Serves on an already bound listener.
    pub fn start(listener: TcpListener, metrics: Arc<Metrics>) -> Result<HttpServer, HttpError> {
        let address = listener
            .local_addr()
            .map_err(|error| HttpError::Bind { address: "the given listener".into(), error })?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("vigil-http".into())
            .spawn(move || serve(&listener, &metrics, &flag))
            .map_err(HttpError::Spawn)?;
        tracing::info!(%address, "serving /metrics, /livez and /readyz");
        Ok(HttpServer { address, stop, handle: Some(handle) })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the blocking accept; if the connection fails the thread is
        // left to end with the process.
        if TcpStream::connect_timeout(&self.address, Duration::from_secs(1)).is_ok() {
            if let Some(handle) = self.handle.take() {
                let _ = handle.join();
            }
        }
    }
}

fn serve(listener: &TcpListener, metrics: &Metrics, stop: &AtomicBool) {
    for connection in listener.incoming() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        match connection {
            Ok(stream) => {
                if let Err(error) = answer(stream, metrics) {
                    tracing::debug!(error = %error, "http request failed");
                }
            }
            Err(error) => {
                // Out of file descriptors, most likely: give the process a
                // moment rather than spin on accept.
                tracing::warn!(error = %error, "http accept failed");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// A response: status, content type and body.
#[derive(Debug, PartialEq, Eq)]
struct Response {
    status: u16,
    content_type: &'static str,
    body: String,
}

impl Response {
    fn text(status: u16, body: impl Into<String>) -> Response {
        let mut body = body.into();
        if !body.ends_with('\n') {
            body.push('\n');
        }
        Response { status, content_type: "text/plain; charset=utf-8", body }
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// What `method path` gets.
fn route(method: &str, target: &str, metrics: &Metrics) -> Response {
    let path = target.split(['?', '#']).next().unwrap_or_default();
    if !matches!(path, "/metrics" | "/livez" | "/readyz") {
        return Response::text(404, "not found: try /metrics, /livez or /readyz");
    }
    if method != "GET" && method != "HEAD" {
        return Response::text(405, "only GET and HEAD");
    }
    match path {
        "/metrics" => Response { status: 200, content_type: CONTENT_TYPE, body: metrics.render() },
        "/livez" => Response::text(200, "ok"),
        _ => match metrics.readiness() {
            Ok(()) => Response::text(200, "ready"),
            Err(reason) => Response::text(503, reason),
        },
    }
}

/// Reads the request head (the body, if any, is ignored).
fn read_head(stream: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(Some(head));
        }
        head.extend_from_slice(&chunk[..n]);
        if head.len() > MAX_REQUEST {
            return Ok(None);
        }
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            return Ok(Some(head));
        }
    }
}

fn answer(mut stream: TcpStream, metrics: &Metrics) -> io::Result<()> {
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let (response, head_only) = match read_head(&mut stream)? {
        None => (Response::text(431, "request head too large"), false),
        Some(head) => {
            let head = String::from_utf8_lossy(&head);
            let mut words = head.lines().next().unwrap_or_default().split_whitespace();
            match (words.next(), words.next(), words.next()) {
                (Some(method), Some(target), Some(version)) if version.starts_with("HTTP/1.") => {
                    (route(method, target, metrics), method == "HEAD")
                }
                _ => (Response::text(400, "expected `GET /path HTTP/1.1`"), false),
            }
        }
    };
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        response.status,
        reason_phrase(response.status),
        response.content_type,
        response.body.len()
    );
    if !head_only {
        out.push_str(&response.body);
    }
    stream.write_all(out.as_bytes())?;
    stream.flush()
}

#[cfg(test)]
// A test reports its failure by panicking.
#[allow(clippy::panic)]
mod tests {
    use super::*;
    use crate::metrics::Phase;

    fn get(address: SocketAddr, request: &str) -> (u16, String, String) {
        let mut stream = TcpStream::connect(address).unwrap_or_else(|e| panic!("connect: {e}"));
        stream.write_all(request.as_bytes()).unwrap_or_else(|e| panic!("write: {e}"));
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap_or_else(|e| panic!("read: {e}"));
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        (status, head.to_owned(), body.to_owned())
    }

    fn server() -> (HttpServer, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new());
        let server = HttpServer::bind("127.0.0.1:0", Arc::clone(&metrics)).unwrap_or_else(|e| panic!("{e}"));
        (server, metrics)
    }

    #[test]
    fn the_endpoints_answer_what_the_registry_says() {
        let (server, metrics) = server();
        let address = server.local_addr();
        let (status, _, body) = get(address, "GET /livez HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!((status, body.as_str()), (200, "ok\n"));

        let (status, _, body) = get(address, "GET /readyz HTTP/1.1\r\n\r\n");
        assert_eq!((status, body.as_str()), (503, "starting\n"));
        let worker = metrics.kafka_workers(1).remove(0);
        worker.set_phase(Phase::Joining);
        let (status, _, body) = get(address, "GET /readyz HTTP/1.1\r\n\r\n");
        assert_eq!((status, body.as_str()), (503, "worker 0: no partitions assigned yet\n"));
        worker.set_phase(Phase::Assigned(3));
        let (status, _, body) = get(address, "GET /readyz?verbose=1 HTTP/1.0\r\n\r\n");
        assert_eq!((status, body.as_str()), (200, "ready\n"));

        let (status, head, body) = get(address, "GET /metrics HTTP/1.1\r\n\r\n");
        assert_eq!(status, 200);
        assert!(head.contains("Content-Type: text/plain; version=0.0.4"), "{head}");
        assert!(head.contains(&format!("Content-Length: {}", body.len())), "{head}");
        assert!(body.contains("# TYPE vigil_decisions_total counter\n"), "{body}");
        assert!(body.contains("vigil_ready 1\n"), "{body}");
    }

    #[test]
    fn other_paths_methods_and_garbage_are_refused() {
        let (server, _metrics) = server();
        let address = server.local_addr();
        assert_eq!(get(address, "GET / HTTP/1.1\r\n\r\n").0, 404);
        assert_eq!(get(address, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").0, 405);
        assert_eq!(get(address, "hello\r\n\r\n").0, 400);
        let (status, head, body) = get(address, "HEAD /livez HTTP/1.1\r\n\r\n");
        assert_eq!((status, body.as_str()), (200, ""));
        assert!(head.contains("Content-Length: 3"), "{head}");
        let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_REQUEST + 10));
        assert_eq!(get(address, &huge).0, 431);
    }

    #[test]
    fn dropping_the_server_frees_its_port() {
        let (server, _metrics) = server();
        let address = server.local_addr();
        drop(server);
        assert!(TcpListener::bind(address).is_ok());
    }
}
