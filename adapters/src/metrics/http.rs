//! `/metrics` over HTTP/1.1: one request per connection, answered and
//! closed. A scraper asks every few seconds, so this is all it needs; and
//! everything a client sends is bounded (the request head's size, the
//! time to send it, the scrapes served at once).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::NodeMetrics;

/// The largest request head read; a longer one is refused.
pub const MAX_REQUEST_HEAD_BYTES: usize = 8 * 1024;
/// Scrapes served at once; a connection beyond them is closed unanswered.
pub const MAX_SCRAPES_AT_ONCE: usize = 4;
/// How long a client has to send its request, and to take the answer.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum MetricsServerError {
    #[error("the metrics address {0} is not a loopback address: metrics are served to this machine only")]
    NotLoopback(SocketAddr),
    #[error("cannot listen for metrics scrapes on {address}: {source}")]
    Bind { address: SocketAddr, source: std::io::Error },
}

/// Binds `address` (loopback only) for [`serve`].
pub async fn bind(address: SocketAddr) -> Result<TcpListener, MetricsServerError> {
    if !address.ip().is_loopback() {
        return Err(MetricsServerError::NotLoopback(address));
    }
    TcpListener::bind(address).await.map_err(|source| MetricsServerError::Bind { address, source })
}

/// Reads the metrics at a scrape; `None` once the node has stopped.
pub type MetricsSource = Arc<dyn Fn() -> Option<NodeMetrics> + Send + Sync>;

/// Answers scrapes of the metrics `source` reads (503 once it reads none),
/// until the task is dropped.
pub async fn serve(listener: TcpListener, source: MetricsSource) {
    let slots = Arc::new(Semaphore::new(MAX_SCRAPES_AT_ONCE));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::warn!(%err, "metrics listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "metrics scrape refused: {MAX_SCRAPES_AT_ONCE} already being served");
            continue;
        };
        let source = Arc::clone(&source);
        tokio::spawn(async move {
            let _slot = slot;
            if tokio::time::timeout(SCRAPE_TIMEOUT, answer(stream, &source)).await.is_err() {
                tracing::debug!(%peer, "metrics scrape timed out");
            }
        });
    }
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    /// `head`: the answer's head only (a `HEAD` request).
    Metrics {
        head: bool,
    },
    NotFound,
    WrongMethod,
    Malformed,
}

fn parse(head: &[u8]) -> Request {
    let Ok(text) = std::str::from_utf8(head) else { return Request::Malformed };
    let Some(line) = text.lines().next() else { return Request::Malformed };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return Request::Malformed;
    };
    if !version.starts_with("HTTP/1.") || parts.next().is_some() {
        return Request::Malformed;
    }
    if method != "GET" && method != "HEAD" {
        return Request::WrongMethod;
    }
    // A query (Prometheus may add one) does not change the answer.
    match target.split('?').next() {
        Some("/metrics") => Request::Metrics { head: method == "HEAD" },
        _ => Request::NotFound,
    }
}

/// Reads the request head: up to the blank line, within the size limit.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            return Ok(Some(head));
        }
        if head.len() >= MAX_REQUEST_HEAD_BYTES {
            return Ok(None);
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(if head.is_empty() { None } else { Some(head) });
        }
        head.extend_from_slice(&chunk[..n]);
    }
}

async fn answer(mut stream: TcpStream, source: &MetricsSource) {
    let request = match read_head(&mut stream).await {
        Ok(Some(head)) => parse(&head),
        Ok(None) => Request::Malformed,
        Err(_) => return,
    };
    let head_only = matches!(request, Request::Metrics { head: true });
    let (status, content_type, body) = match request {
        Request::Metrics { .. } => match source().map(|m| m.encode()) {
            Some(Ok(text)) => ("200 OK", super::CONTENT_TYPE, text),
            Some(Err(_)) => ("500 Internal Server Error", "text/plain", "metrics could not be written\n".into()),
            None => ("503 Service Unavailable", "text/plain", "the node has stopped\n".into()),
        },
        Request::NotFound => ("404 Not Found", "text/plain", "metrics are at /metrics\n".into()),
        Request::WrongMethod => ("405 Method Not Allowed", "text/plain", "only GET and HEAD are served\n".into()),
        Request::Malformed => ("400 Bad Request", "text/plain", "not an HTTP/1 request\n".into()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if stream.write_all(head.as_bytes()).await.is_ok() && !head_only {
        let _ = stream.write_all(body.as_bytes()).await;
    }
    let _ = stream.shutdown().await;
    // What the client sent beyond the head is read and dropped until it
    // closes (within the scrape's time): closing with unread input would
    // reset the connection, and the client could lose the answer.
    let mut rest = [0u8; 1024];
    let mut drained = 0;
    while drained < MAX_DRAINED_BYTES {
        match stream.read(&mut rest).await {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

/// What is read and dropped after the answer, at most.
const MAX_DRAINED_BYTES: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_told_apart() {
        assert_eq!(parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), Request::Metrics { head: false });
        assert_eq!(parse(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"), Request::Metrics { head: false });
        assert_eq!(parse(b"HEAD /metrics HTTP/1.1\r\n\r\n"), Request::Metrics { head: true });
        assert_eq!(parse(b"GET / HTTP/1.1\r\n\r\n"), Request::NotFound);
        assert_eq!(parse(b"POST /metrics HTTP/1.1\r\n\r\n"), Request::WrongMethod);
        assert_eq!(parse(b"GET /metrics\r\n\r\n"), Request::Malformed);
        assert_eq!(parse(b"\xff\xfe"), Request::Malformed);
    }

    async fn exchange(address: SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(address).await.expect("connects");
        stream.write_all(request).await.expect("written");
        let mut answer = Vec::new();
        // A connection turned away may be reset: what was read is the answer.
        let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
            .await
            .expect("answered or closed in time");
        String::from_utf8(answer).expect("utf-8")
    }

    #[tokio::test]
    async fn scrapes_are_answered_and_bounded() {
        let node = crate::runtime::Node::builder().start().await.expect("a node");
        let listener = bind("127.0.0.1:0".parse().expect("an address")).await.expect("bound");
        let address = listener.local_addr().expect("its address");
        let weak = node.downgrade();
        let source: MetricsSource = Arc::new(move || weak.upgrade().map(|n| n.metrics()));
        let server = tokio::spawn(serve(listener, source));

        let answer = exchange(address, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.contains(super::super::CONTENT_TYPE), "{answer}");
        assert!(answer.ends_with("# EOF\n"), "{answer}");
        let head = exchange(address, b"HEAD /metrics HTTP/1.1\r\n\r\n").await;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"), "no body: {head}");
        // A head that never ends is cut at the limit.
        let long = format!("GET /metrics HTTP/1.1\r\nX: {}", "a".repeat(MAX_REQUEST_HEAD_BYTES));
        let refused = exchange(address, long.as_bytes()).await;
        assert!(refused.starts_with("HTTP/1.1 400 Bad Request"), "{refused}");

        // Scrapes that never send their request hold the slots: one more is
        // closed unanswered, until their time is up.
        let mut idle = Vec::new();
        for _ in 0..MAX_SCRAPES_AT_ONCE {
            idle.push(TcpStream::connect(address).await.expect("connects"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let turned_away = exchange(address, b"GET /metrics HTTP/1.1\r\n\r\n").await;
        assert_eq!(turned_away, "", "closed unanswered while every slot is taken");
        drop(idle);
        server.abort();
    }

    #[tokio::test]
    async fn a_non_loopback_address_is_refused() {
        let address: SocketAddr = "0.0.0.0:0".parse().expect("an address");
        assert!(matches!(bind(address).await, Err(MetricsServerError::NotLoopback(_))));
    }
}
