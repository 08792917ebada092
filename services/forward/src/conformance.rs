//! What every forward log must do: the checks each adapter runs
//! ([`crate::log::EmbeddedForwardLog`], [`crate::jetstream::JetStreamForwardLog`]).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gatehouse_core::ports::{ForwardCursor, ForwardLog};

fn batch(n: u32) -> Bytes {
    Bytes::from(format!("batch-{n}"))
}

/// Appends are ordered and gapless, a re-sent id is appended once,
/// reads start anywhere, cursors are kept per reader.
pub async fn order_dedup_and_cursors(log: &dyn ForwardLog) {
    let b0 = log.bounds().await.expect("bounds");
    assert_eq!(b0.first, b0.next, "empty");
    log.health().await.expect("a fresh log takes appends");
    let s1 = log.append("a", 3, batch(1)).await.expect("append");
    let s2 = log.append("b", 2, batch(2)).await.expect("append");
    assert_eq!(s2, s1 + 1);
    assert_eq!(log.append("a", 3, batch(1)).await.expect("re-send"), s1);
    let s3 = log.append("c", 5, batch(3)).await.expect("append");
    let all = log.read(s1, 100).await.expect("read");
    assert_eq!(
        all.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![s1, s2, s3]
    );
    assert_eq!(all[0].payload, batch(1));
    assert_eq!(all[1].first_line, all[0].first_line + 3);
    assert_eq!(all[2].first_line, all[1].first_line + 2);
    assert_eq!(
        log.read(s2, 1).await.expect("read").first().map(|e| e.seq),
        Some(s2)
    );
    assert!(log.read(s3 + 1, 10).await.expect("read").is_empty());
    let b = log.bounds().await.expect("bounds");
    assert_eq!(b.next, s3 + 1);
    assert_eq!(b.next_line, b.first_line + 10);
    assert!(log.cursor("splunk").await.expect("cursor").is_none());
    let c = ForwardCursor {
        seq: s2,
        line: all[1].first_line,
    };
    log.set_cursor("splunk", c).await.expect("set");
    assert_eq!(log.cursor("splunk").await.expect("cursor"), Some(c));
    assert!(log.cursor("file").await.expect("cursor").is_none());
}

/// A reader waiting for the next entry wakes when it is appended.
pub async fn waiting_readers_wake(log: Arc<dyn ForwardLog>) {
    let next = log.bounds().await.expect("bounds").next;
    let waiter = {
        let log = log.clone();
        tokio::spawn(async move {
            log.wait_for(next, Duration::from_secs(30)).await;
            log.read(next, 10).await.expect("read").len()
        })
    };
    log.append("w", 1, batch(9)).await.expect("append");
    assert_eq!(waiter.await.expect("waiter"), 1);
}

/// Seeking by time finds the first entry appended at or after it.
pub async fn seek_by_time(log: &dyn ForwardLog, clock: &gatehouse_core::time::ShiftedClock) {
    // Entries appended before are strictly older (a fast machine appends
    // several in one millisecond).
    clock.advance(Duration::from_secs(10));
    let s1 = log.append("t1", 2, batch(1)).await.unwrap();
    let at1 = log.read(s1, 1).await.unwrap()[0].at_ms;
    clock.advance(Duration::from_secs(10));
    let s2 = log.append("t2", 3, batch(2)).await.unwrap();
    let e2 = log.read(s2, 1).await.unwrap()[0].clone();
    assert_eq!(log.seek(at1).await.unwrap().seq, s1);
    let c = log.seek(at1 + 1).await.unwrap();
    assert_eq!(
        c,
        ForwardCursor {
            seq: s2,
            line: e2.first_line
        }
    );
    let after = log.seek(e2.at_ms + 1).await.unwrap();
    assert_eq!(after.seq, s2 + 1, "past the newest: the next entry");
    assert_eq!(after.line, e2.first_line + 3);
    assert_eq!(
        log.seek(0).await.unwrap().seq,
        log.bounds().await.unwrap().first
    );
}

/// Settings are kept, listed by prefix in key order, and removed.
pub async fn settings_are_kept(log: &dyn ForwardLog) {
    assert!(log.setting("dest/a").await.unwrap().is_none());
    log.put_setting("dest/b", Some(Bytes::from("2")))
        .await
        .unwrap();
    log.put_setting("dest/a", Some(Bytes::from("1")))
        .await
        .unwrap();
    log.put_setting("paused/a", Some(Bytes::from("x")))
        .await
        .unwrap();
    log.put_setting("dest/a", Some(Bytes::from("one")))
        .await
        .unwrap();
    assert_eq!(
        log.setting("dest/a").await.unwrap(),
        Some(Bytes::from("one"))
    );
    let listed = log.settings("dest/").await.unwrap();
    assert_eq!(
        listed,
        vec![
            ("dest/a".to_owned(), Bytes::from("one")),
            ("dest/b".to_owned(), Bytes::from("2"))
        ]
    );
    log.put_setting("dest/a", None).await.unwrap();
    assert!(log.setting("dest/a").await.unwrap().is_none());
    assert_eq!(log.settings("dest/").await.unwrap().len(), 1);
    // Removing what is not there is no error.
    log.put_setting("dest/zz", None).await.unwrap();
}
