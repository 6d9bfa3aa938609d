//! A scripted stand-in for a misbehaving RM (or any HTTP peer): a small HTTP/1.1 server on a
//! loopback address that answers each request with the next [`Reply`] of its script (the last
//! one repeats) and records what it received. For the cases a real RM never produces on demand:
//! a redirect, a 202, a call held open, a 500 and then a hang.
//!
//! It speaks just enough HTTP for the coordinator's and the AP's client: one request per
//! connection (it answers `Connection: close`), a body read by its `Content-Length`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the stub answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// An answer with this status, extra headers and body.
    Answer {
        /// The HTTP status code (any number 100-999 is sent as is).
        status: u16,
        /// Extra headers, e.g. `("Location", "http://...")`.
        headers: Vec<(String, String)>,
        /// The body.
        body: String,
    },
    /// Never answer: the connection is held open until the stub is dropped.
    Hang,
}

impl Reply {
    /// `status` with a JSON `body` and no extra header.
    pub fn status(status: u16, body: &str) -> Reply {
        Reply::Answer {
            status,
            headers: vec![],
            body: body.to_owned(),
        }
    }

    /// `200 {"dtm_result":"SUCCESS"}`, as an RM answers a success.
    pub fn success() -> Reply {
        Reply::status(200, r#"{"dtm_result":"SUCCESS"}"#)
    }

    /// A redirect with `status` (301, 302, 307, 308) to `location`.
    pub fn redirect(status: u16, location: &str) -> Reply {
        Reply::Answer {
            status,
            headers: vec![("Location".into(), location.into())],
            body: String::new(),
        }
    }
}

/// One request the stub received.
#[derive(Debug, Clone)]
pub struct Received {
    /// The request target: path and query, as sent.
    pub target: String,
    /// The headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

impl Received {
    /// The value of header `name` (lower-case), if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A running stub. Dropping it stops it and closes the connections it holds open.
pub struct StubRm {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl StubRm {
    /// Starts a stub on `ip` (e.g. `127.0.0.1`, or `127.0.0.2` for a host the coordinator's
    /// allowlist refuses) on a free port, answering with `script` in order, its last reply
    /// repeating. Panics on an empty script.
    pub async fn start(ip: &str, script: Vec<Reply>) -> StubRm {
        assert!(!script.is_empty(), "a stub needs at least one reply");
        let listener = TcpListener::bind((ip, 0))
            .await
            .unwrap_or_else(|e| panic!("binding a stub on {ip}: {e}"));
        let addr = listener.local_addr().expect("a bound address");
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&received);
        let task = tokio::spawn(async move {
            let mut held = tokio::task::JoinSet::new();
            let mut next = 0usize;
            while let Ok((stream, _)) = listener.accept().await {
                let reply = script[next.min(script.len() - 1)].clone();
                next += 1;
                held.spawn(serve(stream, reply, Arc::clone(&log)));
            }
        });
        StubRm {
            addr,
            received,
            task,
        }
    }

    /// `http://<ip>:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The requests received so far, in order.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("the log's lock").clone()
    }

    /// Waits until at least `n` requests arrived, or panics after `within`.
    pub async fn wait_for_requests(&self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let received = self.received();
            if received.len() >= n {
                return received;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the stub at {} got {} requests within {within:?}, expected {n}: {received:?}",
                self.addr,
                received.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for StubRm {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts the connections it holds.
        self.task.abort();
    }
}

/// Reads one request from `stream`, records it, and answers `reply` (or holds the connection).
async fn serve(mut stream: TcpStream, reply: Reply, log: Arc<Mutex<Vec<Received>>>) {
    let Some(request) = read_request(&mut stream).await else {
        return;
    };
    log.lock().expect("the log's lock").push(request);
    match reply {
        Reply::Hang => std::future::pending::<()>().await,
        Reply::Answer {
            status,
            headers,
            body,
        } => {
            let mut head = format!(
                "HTTP/1.1 {status} Stub\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
                body.len()
            );
            for (name, value) in headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str("\r\n");
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
    }
}

/// One HTTP/1.1 request: the head up to the blank line, then `Content-Length` bytes of body.
async fn read_request(stream: &mut TcpStream) -> Option<Received> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut chunk).await.ok().filter(|&n| n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let target = lines.next()?.split(' ').nth(1)?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await.ok().filter(|&n| n > 0)?;
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Received {
        target,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}
