//! A broker that speaks the Kafka wire protocol itself, for the Kafka
//! destination's test and benchmark (see `tests/kafka.rs` for what it
//! covers and what it cannot): ApiVersions v0 to v2 (v3 answered with
//! UNSUPPORTED_VERSION, as Kafka does), Metadata v1, Produce v3 with record
//! batches v2, plain or gzip, each batch's CRC-32C checked.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::{Arc, Mutex};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A record as the broker stored it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub topic: String,
    pub partition: i32,
    pub acks: i16,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: BTreeMap<String, Vec<u8>>,
}

pub struct Broker {
    pub port: u16,
    pub stored: Arc<Mutex<Vec<Stored>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Topics and their partition counts; a topic named `too-large` refuses
/// every produce with MESSAGE_TOO_LARGE.
pub async fn broker(topics: &[(&str, i32)]) -> Broker {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let stored = Arc::new(Mutex::new(Vec::new()));
    let topics: BTreeMap<String, i32> = topics.iter().map(|(t, n)| ((*t).to_owned(), *n)).collect();
    let (s, t) = (stored.clone(), Arc::new(topics));
    let task = tokio::spawn(async move {
        while let Ok((c, _)) = l.accept().await {
            // As Kafka's own socket server does.
            let _ = c.set_nodelay(true);
            tokio::spawn(serve(c, port, t.clone(), s.clone()));
        }
    });
    Broker { port, stored, task }
}

fn string(b: &mut Bytes) -> Option<String> {
    let n = b.get_i16();
    if n < 0 {
        return None;
    }
    let s = b.split_to(n as usize);
    Some(String::from_utf8(s.to_vec()).unwrap())
}

fn put_string(o: &mut BytesMut, s: &str) {
    o.put_i16(s.len() as i16);
    o.put_slice(s.as_bytes());
}

fn varint(b: &mut Bytes) -> i64 {
    let (mut n, mut shift) = (0u64, 0);
    loop {
        let byte = b.get_u8();
        n |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    ((n >> 1) as i64) ^ -((n & 1) as i64)
}

fn bytes_of(b: &mut Bytes) -> Option<Vec<u8>> {
    let n = varint(b);
    (n >= 0).then(|| b.split_to(n as usize).to_vec())
}

/// A record's key, value and headers.
type Decoded = (Option<Vec<u8>>, Vec<u8>, BTreeMap<String, Vec<u8>>);

/// The records of a record batch v2 (several batches may follow).
fn records(mut b: Bytes) -> Vec<Decoded> {
    let mut out = Vec::new();
    while b.remaining() > 0 {
        let _base_offset = b.get_i64();
        let len = b.get_i32() as usize;
        let mut batch = b.split_to(len);
        let _epoch = batch.get_i32();
        assert_eq!(batch.get_i8(), 2, "magic");
        let crc = batch.get_u32();
        assert_eq!(crc, crc32c::crc32c(&batch), "crc32c of the batch");
        let attributes = batch.get_i16();
        batch.advance(4 + 8 + 8 + 8 + 2 + 4);
        let count = batch.get_i32();
        let mut body = match attributes & 7 {
            0 => batch,
            1 => {
                let mut raw = Vec::new();
                flate2::read::GzDecoder::new(&batch[..])
                    .read_to_end(&mut raw)
                    .unwrap();
                Bytes::from(raw)
            }
            c => panic!("compression {c}"),
        };
        for _ in 0..count {
            let len = varint(&mut body) as usize;
            let mut r = body.split_to(len);
            let _attributes = r.get_i8();
            let _ts = varint(&mut r);
            let _offset = varint(&mut r);
            let key = bytes_of(&mut r);
            let value = bytes_of(&mut r).unwrap_or_default();
            let mut headers = BTreeMap::new();
            for _ in 0..varint(&mut r) {
                let k = String::from_utf8(bytes_of(&mut r).unwrap()).unwrap();
                headers.insert(k, bytes_of(&mut r).unwrap_or_default());
            }
            out.push((key, value, headers));
        }
    }
    out
}

async fn serve(
    mut c: TcpStream,
    port: u16,
    topics: Arc<BTreeMap<String, i32>>,
    stored: Arc<Mutex<Vec<Stored>>>,
) {
    loop {
        let Ok(size) = c.read_i32().await else {
            return;
        };
        let mut frame = vec![0; size as usize];
        if c.read_exact(&mut frame).await.is_err() {
            return;
        }
        let mut b = Bytes::from(frame);
        let (api, version, correlation) = (b.get_i16(), b.get_i16(), b.get_i32());
        let _client = string(&mut b);
        let mut o = BytesMut::new();
        o.put_i32(correlation);
        match api {
            // ApiVersions: v3 is flexible; answer as Kafka does to a
            // version it does not take.
            18 if version >= 3 => {
                o.put_i16(35);
                o.put_i32(0);
            }
            18 => {
                o.put_i16(0);
                let apis = [(0i16, 3i16, 3i16), (3, 1, 1), (18, 0, 2)];
                o.put_i32(apis.len() as i32);
                for (k, min, max) in apis {
                    o.put_i16(k);
                    o.put_i16(min);
                    o.put_i16(max);
                }
                if version >= 1 {
                    o.put_i32(0);
                }
            }
            3 => {
                assert_eq!(version, 1);
                let n = b.get_i32();
                let wanted: Vec<String> = if n < 0 {
                    topics.keys().cloned().collect()
                } else {
                    (0..n).map(|_| string(&mut b).unwrap()).collect()
                };
                o.put_i32(1);
                o.put_i32(0);
                put_string(&mut o, "127.0.0.1");
                o.put_i32(i32::from(port));
                o.put_i16(-1);
                o.put_i32(0);
                o.put_i32(wanted.len() as i32);
                for t in wanted {
                    let partitions = topics.get(&t).copied();
                    o.put_i16(if partitions.is_some() { 0 } else { 3 });
                    put_string(&mut o, &t);
                    o.put_u8(0);
                    let n = partitions.unwrap_or(0);
                    o.put_i32(n);
                    for p in 0..n {
                        o.put_i16(0);
                        o.put_i32(p);
                        o.put_i32(0);
                        o.put_i32(1);
                        o.put_i32(0);
                        o.put_i32(1);
                        o.put_i32(0);
                    }
                }
            }
            0 => {
                assert_eq!(version, 3);
                let _txn = string(&mut b);
                let acks = b.get_i16();
                let _timeout = b.get_i32();
                let mut answers = Vec::new();
                for _ in 0..b.get_i32() {
                    let topic = string(&mut b).unwrap();
                    for _ in 0..b.get_i32() {
                        let partition = b.get_i32();
                        let len = b.get_i32();
                        let data = b.split_to(len.max(0) as usize);
                        let error = if topic == "too-large" {
                            10
                        } else {
                            let mut s = stored.lock().unwrap();
                            for (key, value, headers) in records(data) {
                                s.push(Stored {
                                    topic: topic.clone(),
                                    partition,
                                    acks,
                                    key,
                                    value,
                                    headers,
                                });
                            }
                            0
                        };
                        answers.push((topic.clone(), partition, error));
                    }
                }
                o.put_i32(answers.len() as i32);
                for (topic, partition, error) in answers {
                    put_string(&mut o, &topic);
                    o.put_i32(1);
                    o.put_i32(partition);
                    o.put_i16(error);
                    o.put_i64(0);
                    o.put_i64(-1);
                }
                o.put_i32(0);
            }
            other => panic!("api {other} v{version} not expected"),
        }
        let mut out = BytesMut::new();
        out.put_i32(o.len() as i32);
        out.put_slice(&o);
        if c.write_all(&out).await.is_err() {
            return;
        }
    }
}
