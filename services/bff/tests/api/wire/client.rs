//! A raw HTTP/1 client for the wire tests: request bytes written by hand, answers read and
//! checked against RFC 9112 by hand (status line, CRLF-terminated header lines, the body framed
//! by `Transfer-Encoding: chunked`, `Content-Length`, the connection's end, or nothing for
//! `HEAD`/204/304), so a server that frames an answer wrongly fails here instead of being
//! forgiven by a lenient client. Bytes after an answer stay buffered for the next one
//! (pipelining). Every read is bounded by [`WAIT`].

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long any read may wait for the BFF: far above a loopback answer (milliseconds) and the
/// stub's longest delay (300 ms), short enough that a hang fails the test quickly.
pub const WAIT: Duration = Duration::from_secs(5);

/// One client connection.
pub struct Conn {
    stream: TcpStream,
    /// Received and not yet consumed by an answer.
    buf: Vec<u8>,
}

/// An answer as it came over the wire.
#[derive(Debug, Clone)]
pub struct Answer {
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: String,
    pub status: u16,
    /// Names lowercased, values with surrounding whitespace trimmed, in wire order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Framed by the connection's end: no `Content-Length`, not chunked.
    pub close_delimited: bool,
}

impl Answer {
    /// The one value of header `name`; panics if it comes more than once.
    pub fn header(&self, name: &str) -> Option<&str> {
        let values = self.all(name);
        assert!(
            values.len() <= 1,
            "{name} sent {} times: {values:?}",
            values.len()
        );
        values.first().copied()
    }

    /// Every value of header `name`, in wire order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Whether `Connection` carries `token` (case-insensitively).
    pub fn connection_has(&self, token: &str) -> bool {
        self.all("connection")
            .iter()
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text()))
    }
}

/// `GET path` over HTTP/1.1 with `Host` and `extra` header lines (each `Name: value`).
pub fn get(path: &str, extra: &[&str]) -> Vec<u8> {
    request("GET", path, extra, b"")
}

/// `method path` over HTTP/1.1 with `Host`, `extra` header lines and, when `body` is not
/// empty, the body with its `Content-Length`.
pub fn request(method: &str, path: &str, extra: &[&str], body: &[u8]) -> Vec<u8> {
    let mut wire = format!("{method} {path} HTTP/1.1\r\nHost: bff.test\r\n");
    for line in extra {
        wire.push_str(line);
        wire.push_str("\r\n");
    }
    if !body.is_empty() {
        wire.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    wire.push_str("\r\n");
    let mut wire = wire.into_bytes();
    wire.extend_from_slice(body);
    wire
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Self {
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .unwrap_or_else(|_| panic!("no connection to {addr} within {WAIT:?}"))
            .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .await
            .unwrap_or_else(|e| panic!("writing the request: {e}"));
    }

    /// Shuts the write side, as a client that has nothing more to send may.
    pub async fn shutdown_write(&mut self) {
        self.stream
            .shutdown()
            .await
            .unwrap_or_else(|e| panic!("shutting the write side: {e}"));
    }

    /// Sends `bytes` and reads the answer to a request of `method`.
    pub async fn exchange(&mut self, method: &str, bytes: &[u8]) -> Answer {
        self.send(bytes).await;
        self.answer(method).await
    }

    /// Reads the answer to a request of `method` (`HEAD` answers have no body), skipping
    /// interim 1xx answers.
    pub async fn answer(&mut self, method: &str) -> Answer {
        loop {
            let head = self.head().await;
            let mut answer = parse_head(&head);
            if (100..200).contains(&answer.status) {
                assert_ne!(answer.status, 101, "an upgrade nobody asked for");
                continue;
            }
            self.body(method, &mut answer).await;
            eprintln!(
                "DEBUG {} {} {:?} body={} close_delimited={}",
                answer.version,
                answer.status,
                answer.headers,
                answer.body.len(),
                answer.close_delimited
            );
            return answer;
        }
    }

    /// Reads one interim (1xx) answer's head.
    pub async fn interim(&mut self) -> Answer {
        let head = self.head().await;
        parse_head(&head)
    }

    /// Asserts the BFF closes the connection (a clean EOF) without sending anything more.
    pub async fn eof(&mut self) {
        assert!(
            self.buf.is_empty(),
            "bytes after the last answer: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        let n = self.fill().await;
        assert_eq!(
            n,
            0,
            "expected the connection's end, got {:?}",
            String::from_utf8_lossy(&self.buf)
        );
    }

    /// Asserts the BFF closes the connection, by EOF or reset (a server closing a socket with
    /// unread bytes in it resets), without sending anything more.
    pub async fn closed(&mut self) {
        assert!(
            self.buf.is_empty(),
            "bytes after the last answer: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        let read = tokio::time::timeout(WAIT, self.stream.read_buf(&mut self.buf))
            .await
            .unwrap_or_else(|_| panic!("the connection stayed open for {WAIT:?}"));
        if let Ok(n) = read {
            assert_eq!(
                n,
                0,
                "expected the connection's end, got {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        }
    }

    /// Asserts nothing arrives for `quiet` and the connection stays open.
    pub async fn silent_for(&mut self, quiet: Duration) {
        assert!(
            self.buf.is_empty(),
            "bytes after the last answer: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        if let Ok(read) = tokio::time::timeout(quiet, self.stream.read_buf(&mut self.buf)).await {
            panic!(
                "expected silence, got {read:?}: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        }
    }

    /// Reads more bytes into the buffer; 0 at the connection's end. Panics on a timeout or a
    /// reset, with what was received so far.
    async fn fill(&mut self) -> usize {
        match tokio::time::timeout(WAIT, self.stream.read_buf(&mut self.buf)).await {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => panic!(
                "reading failed ({e}) after {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
            Err(_) => panic!(
                "nothing more within {WAIT:?} after {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    /// Takes `n` bytes, reading until they are there.
    async fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            if self.fill().await == 0 {
                panic!(
                    "the connection ended after {} of {n} body bytes",
                    self.buf.len()
                );
            }
        }
        self.buf.drain(..n).collect()
    }

    /// Takes one CRLF-terminated line, without its CRLF.
    async fn line(&mut self) -> Vec<u8> {
        loop {
            if let Some(at) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..at + 2).collect();
                return line[..at].to_vec();
            }
            if self.fill().await == 0 {
                panic!(
                    "the connection ended inside a line: {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
            }
        }
    }

    /// Takes a head, up to and including its empty line.
    async fn head(&mut self) -> Vec<u8> {
        loop {
            if let Some(at) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                return self.buf.drain(..at + 4).collect();
            }
            if self.fill().await == 0 {
                panic!(
                    "the connection ended before a complete head: {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
            }
        }
    }

    /// Reads `answer`'s body as RFC 9112 §6.3 frames it.
    async fn body(&mut self, method: &str, answer: &mut Answer) {
        let chunked = answer.all("transfer-encoding");
        let lengths = answer.all("content-length");
        if answer.status == 204 {
            assert!(chunked.is_empty(), "a 204 with Transfer-Encoding");
            assert!(lengths.is_empty(), "a 204 with Content-Length");
        }
        if method == "HEAD" || answer.status == 204 || answer.status == 304 {
            return;
        }
        if !chunked.is_empty() {
            assert!(
                lengths.is_empty(),
                "both Transfer-Encoding and Content-Length: {:?}",
                answer.headers
            );
            let last = chunked.join(",");
            let last = last.rsplit(',').next().unwrap_or_default().trim();
            assert!(
                last.eq_ignore_ascii_case("chunked"),
                "a response coding that is not chunked last: {chunked:?}"
            );
            answer.body = self.chunks().await;
            return;
        }
        if !lengths.is_empty() {
            let values: Vec<&str> = lengths.iter().flat_map(|v| v.split(',')).collect();
            let length = values[0].trim();
            assert!(
                values.iter().all(|v| v.trim() == length),
                "conflicting lengths {lengths:?}"
            );
            let length: usize = length
                .parse()
                .unwrap_or_else(|e| panic!("Content-Length {length:?}: {e}"));
            answer.body = self.take(length).await;
            return;
        }
        answer.close_delimited = true;
        while self.fill().await > 0 {}
        answer.body = std::mem::take(&mut self.buf);
    }

    /// A chunked body's data, trailers read and dropped.
    async fn chunks(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let line = self.line().await;
            let line = String::from_utf8_lossy(&line).into_owned();
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16)
                .unwrap_or_else(|e| panic!("chunk size line {line:?}: {e}"));
            if size == 0 {
                while !self.line().await.is_empty() {}
                return body;
            }
            body.extend(self.take(size).await);
            let end = self.take(2).await;
            assert_eq!(end, b"\r\n", "a chunk not followed by CRLF");
        }
    }
}

/// The status line and header lines of a head (CRLF CRLF included), checked as RFC 9112 §4 and
/// §5 want them: no bare LF or CR, no obsolete line folding, no space before a colon.
fn parse_head(head: &[u8]) -> Answer {
    let text = std::str::from_utf8(head)
        .unwrap_or_else(|e| panic!("a head that is not UTF-8 ({e}): {head:?}"));
    let text = text
        .strip_suffix("\r\n\r\n")
        .unwrap_or_else(|| panic!("a head without its empty line: {text:?}"));
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let (version, rest) = status_line
        .split_once(' ')
        .unwrap_or_else(|| panic!("status line {status_line:?}"));
    assert!(
        version == "HTTP/1.1" || version == "HTTP/1.0",
        "status line {status_line:?}"
    );
    // status-line = HTTP-version SP status-code SP [ reason-phrase ]
    let code = rest.get(..3).unwrap_or_default();
    assert!(
        code.bytes().all(|b| b.is_ascii_digit()) && rest.as_bytes().get(3) == Some(&b' '),
        "status line {status_line:?}"
    );
    let status: u16 = code.parse().unwrap_or_default();
    let mut headers = Vec::new();
    for line in lines {
        assert!(
            !line.contains(['\r', '\n']),
            "a bare CR or LF in the head: {text:?}"
        );
        assert!(
            !line.starts_with([' ', '\t']),
            "obsolete line folding: {text:?}"
        );
        let (name, value) = line
            .split_once(':')
            .unwrap_or_else(|| panic!("header line without a colon: {line:?}"));
        assert!(
            !name.is_empty() && !name.contains([' ', '\t']),
            "header name {name:?}"
        );
        headers.push((
            name.to_ascii_lowercase(),
            value.trim_matches([' ', '\t']).to_owned(),
        ));
    }
    Answer {
        version: version.to_owned(),
        status,
        headers,
        body: Vec::new(),
        close_delimited: false,
    }
}
