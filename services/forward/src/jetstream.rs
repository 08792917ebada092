//! The forward log of a cluster (ADR 0026): the JetStream stream
//! `GATEHOUSE_FORWARD`, appended to by every ingest process once it has
//! stored a batch, read by the forwarders of the ingest that holds the
//! forward lease. Retention by bytes and age drops the oldest entries
//! (discard old): a dead destination never holds agents up.
//!
//! Exact line accounting with several writers: each entry carries, in its
//! headers, the lines appended before it, and is published with
//! `Nats-Expected-Last-Sequence`, so a writer whose view of the tail is
//! stale is refused, re-reads the tail and tries again (optimistic
//! concurrency; ingest appends once per fetch, not per batch). The tail
//! is also kept in the settings bucket, so the count survives the stream
//! emptying by age. `Nats-Msg-Id` (the batch id) makes a re-sent batch one
//! entry. Cursors and settings live in the JetStream KV bucket
//! `gatehouse_forward`.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::kv;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream;
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use gatehouse_core::ports::{ForwardBounds, ForwardCursor, ForwardEntry, ForwardError, ForwardLog};
use gatehouse_core::time::Clock;

pub const STREAM: &str = "GATEHOUSE_FORWARD";
pub const SUBJECT: &str = "gatehouse.forward";
pub const BUCKET: &str = "gatehouse_forward";

const H_FIRST_LINE: &str = "Gatehouse-First-Line";
const H_LINES: &str = "Gatehouse-Lines";
const H_AT: &str = "Gatehouse-At";
/// Bound on one JetStream call.
/// Where the tail is kept (outside the settings' `s/` namespace).
const TAIL_KEY: &str = "t/tail";
const CALL: Duration = Duration::from_secs(5);
/// Tries of one append against other writers before giving up.
const APPEND_TRIES: usize = 32;

/// How the stream is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JetStreamForwardConfig {
    pub max_bytes: u64,
    pub max_age: Duration,
    /// Copies of the stream and the bucket (3 in production).
    pub replicas: usize,
    /// A re-sent batch within this window is one entry.
    pub duplicate_window: Duration,
}

/// The newest entry as a writer knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tail {
    /// Its sequence number (0: none ever).
    seq: u64,
    /// Lines appended up to and including it.
    next_line: u64,
    at_ms: i64,
}

/// The cluster's forward log.
pub struct JetStreamForwardLog {
    stream: stream::Stream,
    js: async_nats::jetstream::Context,
    kv: kv::Store,
    clock: Arc<dyn Clock>,
    /// This process's view of the tail (`None`: read it again).
    tail: tokio::sync::Mutex<Option<Tail>>,
    /// Bumped whenever anyone appends (a core subscription to the subject).
    appended: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for JetStreamForwardLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JetStreamForwardLog")
    }
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> ForwardError {
    ForwardError::Unavailable(format!("JetStream forward log: {what}: {e}"))
}

async fn within<T, E: std::fmt::Display>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, ForwardError> {
    match tokio::time::timeout(CALL, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(unavailable(what, e)),
        Err(_) => Err(unavailable(what, "no answer within 5 s")),
    }
}

/// A stream with `max_bytes` reserves that much of nats-server's
/// JetStream storage when it is created; name the setting when the
/// server has less left.
fn storage_hint(e: async_nats::jetstream::context::CreateStreamError, max_bytes: u64) -> String {
    use async_nats::jetstream::ErrorCode;
    use async_nats::jetstream::context::CreateStreamErrorKind;
    match e.kind() {
        CreateStreamErrorKind::JetStream(j)
            if j.error_code() == ErrorCode::STORAGE_RESOURCES_EXCEEDED =>
        {
            format!(
                "{e}: nats-server has less JetStream storage left than forward.max_bytes \
                 ({max_bytes} bytes) reserves; lower forward.max_bytes or raise the \
                 server's jetstream max_file_store"
            )
        }
        _ => e.to_string(),
    }
}

fn num<T: std::str::FromStr>(h: &HeaderMap, name: &str) -> Option<T> {
    h.get(name)?.as_str().parse().ok()
}

fn setting_key(k: &str) -> String {
    format!("s/{k}")
}

fn cursor_key(reader: &str) -> String {
    format!("c/{reader}")
}

fn encode_pair(a: u64, b: u64) -> Bytes {
    Bytes::from(format!("{a} {b}"))
}

fn decode_pair(v: &[u8]) -> Option<(u64, u64)> {
    let s = std::str::from_utf8(v).ok()?;
    let (a, b) = s.split_once(' ')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

impl JetStreamForwardLog {
    /// Opens (creating if needed) the stream and the bucket.
    pub async fn open(
        client: async_nats::Client,
        cfg: JetStreamForwardConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ForwardError> {
        let js = async_nats::jetstream::new(client.clone());
        let stream = within("creating the stream", async {
            js.get_or_create_stream(stream::Config {
                name: STREAM.into(),
                subjects: vec![SUBJECT.into()],
                retention: stream::RetentionPolicy::Limits,
                discard: stream::DiscardPolicy::Old,
                max_bytes: i64::try_from(cfg.max_bytes).unwrap_or(i64::MAX),
                max_age: cfg.max_age,
                duplicate_window: cfg.duplicate_window,
                num_replicas: cfg.replicas,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| storage_hint(e, cfg.max_bytes))
        })
        .await?;
        let kv = match js.get_key_value(BUCKET).await {
            Ok(kv) => kv,
            Err(_) => {
                within(
                    "creating the settings bucket",
                    js.create_key_value(kv::Config {
                        bucket: BUCKET.into(),
                        history: 1,
                        num_replicas: cfg.replicas,
                        ..Default::default()
                    }),
                )
                .await?
            }
        };
        let (appended, _) = tokio::sync::watch::channel(0u64);
        let log = Self {
            stream,
            js,
            kv,
            clock,
            tail: tokio::sync::Mutex::new(None),
            appended,
        };
        // Wake readers on anyone's appends (a missed wake-up costs a
        // reader its wait bound, never an entry).
        if let Ok(mut sub) = client.subscribe(SUBJECT).await {
            let tx = log.appended.clone();
            tokio::spawn(async move {
                while sub.next().await.is_some() {
                    tx.send_modify(|n| *n += 1);
                    if tx.is_closed() {
                        break;
                    }
                }
            });
        }
        Ok(log)
    }

    async fn info(&self) -> Result<stream::State, ForwardError> {
        Ok(within("stream info", self.stream.get_info()).await?.state)
    }

    /// One entry (`None`: trimmed, or never there).
    async fn entry(&self, seq: u64) -> Result<Option<ForwardEntry>, ForwardError> {
        match tokio::time::timeout(CALL, self.stream.get_raw_message(seq)).await {
            Ok(Ok(m)) => Ok(Some(ForwardEntry {
                seq: m.sequence,
                first_line: num(&m.headers, H_FIRST_LINE).unwrap_or(0),
                lines: num(&m.headers, H_LINES).unwrap_or(0),
                at_ms: num(&m.headers, H_AT)
                    .unwrap_or_else(|| m.time.unix_timestamp_nanos().div_euclid(1_000_000) as i64),
                payload: m.payload,
            })),
            Ok(Err(e))
                if e.kind()
                    == async_nats::jetstream::stream::RawMessageErrorKind::NoMessageFound =>
            {
                Ok(None)
            }
            Ok(Err(e)) => Err(unavailable("reading an entry", e)),
            Err(_) => Err(unavailable("reading an entry", "no answer within 5 s")),
        }
    }

    /// The tail as the stream (or, emptied by age, the bucket) has it.
    async fn read_tail(&self, state: &stream::State) -> Result<Tail, ForwardError> {
        if state.messages > 0
            && let Some(e) = self.entry(state.last_sequence).await?
        {
            return Ok(Tail {
                seq: e.seq,
                next_line: e.first_line + u64::from(e.lines),
                at_ms: e.at_ms,
            });
        }
        let kept = within("reading the tail", self.kv.get(TAIL_KEY)).await?;
        let (seq, next_line) = kept.and_then(|v| decode_pair(&v)).unwrap_or((0, 0));
        Ok(Tail {
            seq: state.last_sequence.max(seq),
            next_line,
            at_ms: 0,
        })
    }
}

#[async_trait]
impl ForwardLog for JetStreamForwardLog {
    async fn append(&self, id: &str, lines: u32, payload: Bytes) -> Result<u64, ForwardError> {
        let mut tail = self.tail.lock().await;
        for _ in 0..APPEND_TRIES {
            let t = match *tail {
                Some(t) => t,
                None => {
                    let state = self.info().await?;
                    self.read_tail(&state).await?
                }
            };
            let at = self.clock.now_ms().max(t.at_ms);
            let msg = PublishMessage::build()
                .payload(payload.clone())
                .message_id(id)
                .expected_last_sequence(t.seq)
                .header(H_FIRST_LINE, t.next_line.to_string().as_str())
                .header(H_LINES, lines.to_string().as_str())
                .header(H_AT, at.to_string().as_str());
            let ack = async {
                self.js
                    .send_publish(SUBJECT, msg)
                    .await
                    .map_err(|e| (PublishErrorKind::Other, e.to_string()))?
                    .await
                    .map_err(|e| (e.kind(), e.to_string()))
            };
            match tokio::time::timeout(CALL, ack).await {
                Ok(Ok(a)) if a.duplicate => return Ok(a.sequence),
                Ok(Ok(a)) => {
                    let next = Tail {
                        seq: a.sequence,
                        next_line: t.next_line + u64::from(lines),
                        at_ms: at,
                    };
                    *tail = Some(next);
                    // Kept for when age empties the stream.
                    within(
                        "keeping the tail",
                        self.kv.put(TAIL_KEY, encode_pair(next.seq, next.next_line)),
                    )
                    .await?;
                    self.appended.send_modify(|n| *n += 1);
                    return Ok(a.sequence);
                }
                Ok(Err((PublishErrorKind::WrongLastSequence, _))) => {
                    // Another writer appended: read the tail again.
                    *tail = None;
                }
                Ok(Err((_, e))) => {
                    *tail = None;
                    return Err(unavailable("appending", e));
                }
                Err(_) => {
                    *tail = None;
                    return Err(unavailable("appending", "no acknowledgement within 5 s"));
                }
            }
        }
        Err(unavailable(
            "appending",
            format!("other writers kept appending first ({APPEND_TRIES} tries)"),
        ))
    }

    async fn read(&self, from: u64, max: usize) -> Result<Vec<ForwardEntry>, ForwardError> {
        let state = self.info().await?;
        let start = from.max(state.first_sequence).max(1);
        let end = state
            .last_sequence
            .min(start.saturating_add(max as u64).saturating_sub(1));
        if start > end {
            return Ok(Vec::new());
        }
        let got: Vec<Option<ForwardEntry>> = futures_util::stream::iter(start..=end)
            .map(|seq| self.entry(seq))
            .buffered(16)
            .try_collect()
            .await?;
        Ok(got.into_iter().flatten().collect())
    }

    async fn bounds(&self) -> Result<ForwardBounds, ForwardError> {
        let state = self.info().await?;
        let tail = self.read_tail(&state).await?;
        let next = state.last_sequence.max(tail.seq) + 1;
        let empty = ForwardBounds {
            first: next,
            first_line: tail.next_line,
            next,
            next_line: tail.next_line,
            first_at_ms: None,
        };
        if state.messages == 0 {
            return Ok(empty);
        }
        // The oldest may be trimmed between the two calls: take the next.
        let mut first = state.first_sequence.max(1);
        while first < next {
            if let Some(e) = self.entry(first).await? {
                return Ok(ForwardBounds {
                    first: e.seq,
                    first_line: e.first_line,
                    first_at_ms: Some(e.at_ms),
                    ..empty
                });
            }
            first += 1;
        }
        Ok(empty)
    }

    async fn wait_for(&self, seq: u64, within_: Duration) {
        let mut rx = self.appended.subscribe();
        if let Ok(state) = self.info().await
            && state.last_sequence >= seq
        {
            return;
        }
        let _ = tokio::time::timeout(within_, rx.changed()).await;
    }

    async fn seek(&self, at_ms: i64) -> Result<ForwardCursor, ForwardError> {
        let b = self.bounds().await?;
        let (mut lo, mut hi) = (b.first, b.next);
        // Entry times never go back within one writer; across writers
        // they are close enough for a bisection to land on the minute.
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.entry(mid).await? {
                Some(e) if e.at_ms < at_ms => lo = mid + 1,
                _ => hi = mid,
            }
        }
        if lo >= b.next {
            return Ok(b.newest());
        }
        match self.entry(lo).await? {
            Some(e) => Ok(ForwardCursor {
                seq: e.seq,
                line: e.first_line,
            }),
            None => Ok(b.oldest()),
        }
    }

    async fn cursor(&self, reader: &str) -> Result<Option<ForwardCursor>, ForwardError> {
        let v = within("reading a cursor", self.kv.get(cursor_key(reader))).await?;
        Ok(v.and_then(|v| decode_pair(&v))
            .map(|(seq, line)| ForwardCursor { seq, line }))
    }

    async fn set_cursor(&self, reader: &str, c: ForwardCursor) -> Result<(), ForwardError> {
        within(
            "saving a cursor",
            self.kv.put(cursor_key(reader), encode_pair(c.seq, c.line)),
        )
        .await
        .map(|_| ())
    }

    async fn health(&self) -> Result<(), ForwardError> {
        self.info().await.map(|_| ())
    }

    async fn setting(&self, key: &str) -> Result<Option<Bytes>, ForwardError> {
        within("reading a setting", self.kv.get(setting_key(key))).await
    }

    async fn settings(&self, prefix: &str) -> Result<Vec<(String, Bytes)>, ForwardError> {
        let full = setting_key(prefix);
        let keys: Vec<String> = within("listing settings", async {
            let keys = self.kv.keys().await.map_err(|e| e.to_string())?;
            keys.try_collect::<Vec<String>>()
                .await
                .map_err(|e| e.to_string())
        })
        .await?;
        let mut keys: Vec<String> = keys.into_iter().filter(|k| k.starts_with(&full)).collect();
        keys.sort();
        let mut out = Vec::new();
        for k in keys {
            if let Some(v) = within("reading a setting", self.kv.get(&k)).await? {
                out.push((k[2..].to_owned(), v));
            }
        }
        Ok(out)
    }

    async fn put_setting(&self, key: &str, value: Option<Bytes>) -> Result<(), ForwardError> {
        let k = setting_key(key);
        match value {
            Some(v) => within("saving a setting", self.kv.put(k, v))
                .await
                .map(|_| ()),
            None => within("removing a setting", self.kv.delete(k)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_bus::nats_test_server::NatsTestServer;
    use gatehouse_core::time::ShiftedClock;

    fn cfg() -> JetStreamForwardConfig {
        JetStreamForwardConfig {
            max_bytes: 64 << 20,
            max_age: Duration::from_secs(3600),
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_conformance() {
        let nats = NatsTestServer::start().expect("nats-server");
        let client = async_nats::connect(nats.url()).await.expect("connect");
        let clock = Arc::new(ShiftedClock::new());
        let log = JetStreamForwardLog::open(client, cfg(), clock.clone())
            .await
            .expect("open");
        crate::conformance::order_dedup_and_cursors(&log).await;
        crate::conformance::seek_by_time(&log, &clock).await;
        crate::conformance::settings_are_kept(&log).await;
        crate::conformance::waiting_readers_wake(Arc::new(log)).await;
    }

    /// A reservation larger than nats-server's storage is refused with an
    /// error naming the setting to change.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reservation_beyond_the_servers_storage_names_the_setting() {
        let nats = NatsTestServer::start().expect("nats-server");
        let client = async_nats::connect(nats.url()).await.expect("connect");
        let too_much = JetStreamForwardConfig {
            max_bytes: 1 << 60,
            ..cfg()
        };
        let Err(e) =
            JetStreamForwardLog::open(client, too_much, Arc::new(ShiftedClock::new())).await
        else {
            panic!("a reservation of 2^60 bytes was accepted");
        };
        let msg = e.to_string();
        assert!(
            msg.contains("forward.max_bytes") && msg.contains(&(1u64 << 60).to_string()),
            "{msg}"
        );
    }

    /// Two processes appending at once: every entry's line count follows
    /// its predecessor's exactly, whoever wrote it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_keep_the_line_count_exact() {
        let nats = NatsTestServer::start().expect("nats-server");
        let clock: Arc<dyn Clock> = Arc::new(ShiftedClock::new());
        let mut logs = Vec::new();
        for _ in 0..2 {
            let client = async_nats::connect(nats.url()).await.expect("connect");
            logs.push(Arc::new(
                JetStreamForwardLog::open(client, cfg(), clock.clone())
                    .await
                    .expect("open"),
            ));
        }
        let tasks: Vec<_> = logs
            .iter()
            .enumerate()
            .map(|(w, log)| {
                let log = log.clone();
                tokio::spawn(async move {
                    for i in 0..40u32 {
                        log.append(&format!("w{w}-{i}"), i % 7 + 1, Bytes::from("x"))
                            .await
                            .expect("append");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("writer");
        }
        let all = logs[0].read(1, 1000).await.expect("read");
        assert_eq!(all.len(), 80);
        let mut line = 0;
        for e in &all {
            assert_eq!(e.first_line, line, "entry {}", e.seq);
            line += u64::from(e.lines);
        }
        let expected: u64 = 2 * (0..40u64).map(|i| i % 7 + 1).sum::<u64>();
        assert_eq!(line, expected);
        assert_eq!(logs[1].bounds().await.expect("bounds").next_line, expected);
    }
}
