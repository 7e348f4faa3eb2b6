//! A Server-Sent Events decoder: bytes in, `(event, data)` pairs out.
//!
//! Owns only framing (fields, line endings, blank-line dispatch). It keeps at most
//! `MAX_EVENT_BYTES` of an unfinished event, and takes at most `MAX_STREAM_BYTES` in all, so
//! a server that never ends an event, or never ends the stream, cannot grow memory without
//! bound (the response is built from every event).

/// Largest single event accepted, in bytes.
pub const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;
/// Largest whole stream accepted, in bytes: far beyond any answer a model gives in one call.
pub const MAX_STREAM_BYTES: usize = 64 * 1024 * 1024;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field, or empty when the server sent none.
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SseError {
    #[error("an event of more than {MAX_EVENT_BYTES} bytes")]
    TooLarge,
    #[error("an event stream of more than {MAX_STREAM_BYTES} bytes")]
    StreamTooLarge,
    #[error("the event stream is not UTF-8")]
    NotUtf8,
}

/// Incremental decoder: feed chunks as they arrive, take complete events.
#[derive(Default)]
pub struct Decoder {
    buf: Vec<u8>,
    event: String,
    data: Vec<String>,
    /// Bytes fed so far.
    total: usize,
    /// How much of `buf` is known to hold no line end: a long line arriving in many chunks is
    /// scanned once, not once per chunk.
    scanned: usize,
}

impl Decoder {
    /// Add a chunk and return every event it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<Event>, SseError> {
        self.total = self.total.saturating_add(chunk.len());
        if self.total > MAX_STREAM_BYTES {
            return Err(SseError::StreamTooLarge);
        }
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(at) = self.buf[start.max(self.scanned)..]
            .iter()
            .position(|&b| b == b'\n')
        {
            let end = start.max(self.scanned) + at;
            let line = &self.buf[start..end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let line = std::str::from_utf8(line)
                .map_err(|_| SseError::NotUtf8)?
                .to_owned();
            start = end + 1;
            if let Some(event) = self.line(&line) {
                out.push(event);
            }
        }
        // One shift of the unfinished line to the front, not one per line taken.
        self.buf.drain(..start);
        self.scanned = self.buf.len();
        let pending = self.buf.len() + self.data.iter().map(String::len).sum::<usize>();
        if pending > MAX_EVENT_BYTES {
            return Err(SseError::TooLarge);
        }
        Ok(out)
    }

    fn line(&mut self, line: &str) -> Option<Event> {
        if line.is_empty() {
            if self.data.is_empty() {
                self.event.clear();
                return None;
            }
            let data = std::mem::take(&mut self.data).join("\n");
            return Some(Event {
                event: std::mem::take(&mut self.event),
                data,
            });
        }
        if line.starts_with(':') {
            return None; // a comment, e.g. a keep-alive
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = value.to_owned(),
            "data" => self.data.push(value.to_owned()),
            _ => {} // id, retry and unknown fields are not used
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks() {
        let mut d = Decoder::default();
        assert!(d.feed(b"event: ping\nda").unwrap().is_empty());
        let ev = d.feed(b"ta: {\"a\":1}\n\n").unwrap();
        assert_eq!(
            ev,
            vec![Event {
                event: "ping".into(),
                data: "{\"a\":1}".into()
            }]
        );
    }

    #[test]
    fn crlf_comments_and_multiline_data() {
        let mut d = Decoder::default();
        let ev = d
            .feed(b": keep-alive\r\ndata: a\r\ndata: b\r\n\r\ndata:[DONE]\n\n")
            .unwrap();
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].data, "a\nb");
        assert_eq!(ev[1].data, "[DONE]");
        assert_eq!(ev[1].event, "");
    }

    #[test]
    fn unbounded_event_is_refused() {
        let mut d = Decoder::default();
        let big = vec![b'x'; MAX_EVENT_BYTES + 1];
        assert_eq!(d.feed(&big), Err(SseError::TooLarge));
    }

    #[test]
    fn an_endless_stream_of_small_events_is_refused() {
        let mut d = Decoder::default();
        let event = format!("data: {}\n\n", "x".repeat(1 << 20));
        let mut fed = 0;
        let refused = loop {
            match d.feed(event.as_bytes()) {
                Ok(events) => assert_eq!(events.len(), 1),
                Err(e) => break e,
            }
            fed += event.len();
            assert!(fed <= MAX_STREAM_BYTES, "kept taking past the limit");
        };
        assert_eq!(refused, SseError::StreamTooLarge);
    }

    /// Random streams of events, comments, CRLF and LF lines and multi-byte text, fed in
    /// random chunks: the same events as when fed whole.
    #[test]
    fn random_chunkings_give_the_same_events() {
        let lines = [
            "event: a",
            "data: x",
            "data:y",
            "data: é日😀",
            ": ping",
            "",
            "",
            "id: 7",
            "data",
            "event:",
            "retry: 5",
        ];
        let mut rng = fastrand::Rng::with_seed(0x55e);
        for case in 0..2_000 {
            let mut stream = String::new();
            for _ in 0..rng.usize(0..30) {
                stream.push_str(lines[rng.usize(..lines.len())]);
                stream.push_str(if rng.bool() { "\n" } else { "\r\n" });
            }
            let whole = Decoder::default().feed(stream.as_bytes()).unwrap();
            let bytes = stream.as_bytes();
            let mut d = Decoder::default();
            let mut events = Vec::new();
            let mut at = 0;
            while at < bytes.len() {
                let end = (at + rng.usize(0..12)).min(bytes.len());
                events.extend(d.feed(&bytes[at..end]).unwrap());
                at = end;
            }
            assert_eq!(events, whole, "case {case}: {stream:?}");
        }
    }

    #[test]
    fn invalid_utf8_is_an_error_not_a_panic() {
        let mut d = Decoder::default();
        assert_eq!(d.feed(b"data: \xff\n\n"), Err(SseError::NotUtf8));
    }
}
