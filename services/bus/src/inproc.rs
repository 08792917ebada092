//! An in-process bus with NATS semantics.
//!
//! Subscriptions are kept in a list under a mutex; a publish walks it,
//! delivers a copy to every plain subscriber whose pattern matches and to
//! one member (round robin) of each matching queue group. A request is a
//! publish with a one-shot reply slot: the first reply wins.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use gatehouse_core::ports::{Bus, BusError, BusMessage, Replier, Subscription};
use tokio::sync::{mpsc, oneshot};

const SUBSCRIPTION_BUFFER: usize = 4096;

struct Sub {
    id: u64,
    pattern: Vec<String>,
    group: Option<String>,
    tx: mpsc::Sender<BusMessage>,
}

#[derive(Default)]
struct Inner {
    subs: Mutex<Vec<Sub>>,
    next_id: AtomicU64,
    round_robin: AtomicU64,
}

/// The in-process bus; clones share one subject space.
#[derive(Clone, Default)]
pub struct InProcBus {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for InProcBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InProcBus")
    }
}

/// Whether a NATS-style pattern matches a subject.
pub fn subject_matches(pattern: &[String], subject: &str) -> bool {
    let mut tokens = subject.split('.');
    for (i, p) in pattern.iter().enumerate() {
        if p == ">" {
            return tokens.next().is_some() && i == pattern.len() - 1;
        }
        match tokens.next() {
            Some(t) if p == "*" || p == t => {}
            _ => return false,
        }
    }
    tokens.next().is_none()
}

fn valid_subject(s: &str, allow_wildcards: bool) -> bool {
    !s.is_empty()
        && s.split('.').all(|t| {
            !t.is_empty()
                && !t.contains(char::is_whitespace)
                && (allow_wildcards || (t != "*" && t != ">"))
        })
}

struct OneShotReplier {
    slot: Arc<Mutex<Option<oneshot::Sender<Bytes>>>>,
}

#[async_trait]
impl Replier for OneShotReplier {
    async fn reply(self: Box<Self>, payload: Bytes) -> Result<(), BusError> {
        let tx = self.slot.lock().map_err(|_| BusError::Closed)?.take();
        // A second replier (another plain subscriber) is silently ignored,
        // as on NATS; a requester that gave up is not an error either.
        if let Some(tx) = tx {
            let _ = tx.send(payload);
        }
        Ok(())
    }
}

struct Unsubscribe {
    inner: Weak<Inner>,
    id: u64,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.upgrade()
            && let Ok(mut subs) = inner.subs.lock()
        {
            subs.retain(|s| s.id != self.id);
        }
    }
}

impl InProcBus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Picks the receivers of one message on `subject`.
    fn targets(&self, subject: &str) -> Result<Vec<mpsc::Sender<BusMessage>>, BusError> {
        let subs = self.inner.subs.lock().map_err(|_| BusError::Closed)?;
        let mut plain = Vec::new();
        let mut groups: BTreeMap<&str, Vec<&mpsc::Sender<BusMessage>>> = BTreeMap::new();
        for s in subs
            .iter()
            .filter(|s| !s.tx.is_closed() && subject_matches(&s.pattern, subject))
        {
            match &s.group {
                None => plain.push(s.tx.clone()),
                Some(g) => groups.entry(g.as_str()).or_default().push(&s.tx),
            }
        }
        for members in groups.values() {
            let n = self.inner.round_robin.fetch_add(1, Ordering::Relaxed) as usize;
            plain.push(members[n % members.len()].clone());
        }
        Ok(plain)
    }

    async fn deliver(
        &self,
        subject: &str,
        payload: Bytes,
        slot: Option<Arc<Mutex<Option<oneshot::Sender<Bytes>>>>>,
    ) -> Result<usize, BusError> {
        let targets = self.targets(subject)?;
        let mut delivered = 0;
        for tx in targets {
            let msg = BusMessage {
                subject: subject.to_owned(),
                payload: payload.clone(),
                reply: slot
                    .clone()
                    .map(|slot| Box::new(OneShotReplier { slot }) as Box<dyn Replier>),
            };
            if tx.send(msg).await.is_ok() {
                delivered += 1;
            }
        }
        Ok(delivered)
    }
}

#[async_trait]
impl Bus for InProcBus {
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<(), BusError> {
        if !valid_subject(subject, false) {
            return Err(BusError::Unavailable(format!(
                "invalid subject {subject:?}"
            )));
        }
        self.deliver(subject, payload, None).await.map(|_| ())
    }

    async fn request(
        &self,
        subject: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, BusError> {
        if !valid_subject(subject, false) {
            return Err(BusError::Unavailable(format!(
                "invalid subject {subject:?}"
            )));
        }
        let (tx, rx) = oneshot::channel();
        let slot = Arc::new(Mutex::new(Some(tx)));
        let n = self.deliver(subject, payload, Some(slot)).await?;
        if n == 0 {
            return Err(BusError::NoResponders(subject.to_owned()));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            // Every receiver dropped the message without answering.
            Ok(Err(_)) => Err(BusError::NoResponders(subject.to_owned())),
            Err(_) => Err(BusError::Timeout(subject.to_owned())),
        }
    }

    async fn subscribe(
        &self,
        subject: &str,
        queue_group: Option<&str>,
    ) -> Result<Subscription, BusError> {
        if !valid_subject(subject, true) {
            return Err(BusError::Unavailable(format!(
                "invalid subject pattern {subject:?}"
            )));
        }
        let (tx, rx) = mpsc::channel(SUBSCRIPTION_BUFFER);
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.inner
            .subs
            .lock()
            .map_err(|_| BusError::Closed)?
            .push(Sub {
                id,
                pattern: subject.split('.').map(str::to_owned).collect(),
                group: queue_group.map(str::to_owned),
                tx,
            });
        Ok(Subscription {
            messages: rx,
            guard: Box::new(Unsubscribe {
                inner: Arc::downgrade(&self.inner),
                id,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Vec<String> {
        s.split('.').map(str::to_owned).collect()
    }

    #[test]
    fn matching() {
        assert!(subject_matches(&p("a.b"), "a.b"));
        assert!(!subject_matches(&p("a.b"), "a.b.c"));
        assert!(subject_matches(&p("a.*"), "a.b"));
        assert!(!subject_matches(&p("a.*"), "a"));
        assert!(subject_matches(&p("a.>"), "a.b.c"));
        assert!(!subject_matches(&p("a.>"), "a"));
        assert!(subject_matches(&p("*.b.>"), "x.b.c"));
    }

    #[tokio::test]
    async fn in_process_bus_passes_conformance() {
        let bus = InProcBus::new();
        crate::conformance::run_all(&bus).await;
        crate::conformance::run_pair(&bus, &bus.clone()).await;
    }
}
