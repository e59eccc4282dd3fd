//! A Server-Sent Events reader for tests: connects, parses `id:`/`event:`/`data:` fields into
//! events, and waits for the ones a test is after, each wait bounded.

use std::time::Duration;

use serde_json::Value;

/// One event as the server sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    /// `id:` (empty when none).
    pub id: String,
    /// `event:` (`message` when none).
    pub event: String,
    /// `data:` lines joined with `\n`, parsed as JSON (`Null` when it is not JSON).
    pub data: Value,
}

/// An open event stream.
pub struct SseStream {
    response: reqwest::Response,
    /// Bytes received but not yet parsed into a complete event.
    buffer: String,
    /// The `retry:` hint, once seen.
    pub retry_ms: Option<u64>,
}

impl SseStream {
    /// Opens `url` with `headers` (e.g. `Last-Event-ID`); panics unless it answers 200 with
    /// `text/event-stream`.
    pub async fn connect(client: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> Self {
        let mut request = client.get(url).header("accept", "text/event-stream");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert_eq!(response.status(), 200, "GET {url}");
        assert!(
            content_type.starts_with("text/event-stream"),
            "GET {url}: content-type {content_type}"
        );
        Self {
            response,
            buffer: String::new(),
            retry_ms: None,
        }
    }

    /// The next event, or `None` if none comes within `within` (or the stream ended).
    pub async fn next(&mut self, within: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(event) = self.parse_one() {
                return Some(event);
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .ok()?
                .ok()??;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// The first event (skipping others) for which `wanted` holds, within `within`.
    pub async fn until(
        &mut self,
        within: Duration,
        mut wanted: impl FnMut(&SseEvent) -> bool,
    ) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let event = self.next(left).await?;
            if wanted(&event) {
                return Some(event);
            }
        }
    }

    /// Every event received within `within`.
    pub async fn collect_for(&mut self, within: Duration) -> Vec<SseEvent> {
        let deadline = tokio::time::Instant::now() + within;
        let mut events = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(e) => events.push(e),
                None => return events,
            }
        }
    }

    /// Takes one complete event (terminated by a blank line) off the buffer; comments and
    /// field-less blocks (heartbeats, the `retry:` block) are consumed without an event.
    fn parse_one(&mut self) -> Option<SseEvent> {
        loop {
            let normalized = self.buffer.replace("\r\n", "\n");
            self.buffer = normalized;
            let end = self.buffer.find("\n\n")?;
            let block: String = self.buffer.drain(..end + 2).collect();
            let (mut id, mut event, mut data) = (String::new(), String::new(), Vec::new());
            for line in block.lines() {
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "id" => id = value.to_owned(),
                    "event" => event = value.to_owned(),
                    "data" => data.push(value.to_owned()),
                    "retry" => self.retry_ms = value.parse().ok(),
                    _ => {}
                }
            }
            if data.is_empty() {
                continue;
            }
            let data = data.join("\n");
            return Some(SseEvent {
                id,
                event: if event.is_empty() {
                    "message".into()
                } else {
                    event
                },
                data: serde_json::from_str(&data).unwrap_or(Value::Null),
            });
        }
    }
}
