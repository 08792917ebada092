//! The file destination: JSON lines, one agent line per line, as osquery's
//! filesystem logger writes them, for file shippers (Splunk forwarder,
//! Vector, file.d, Filebeat). Results and status lines go to files of
//! their own (or one), and so do audit records and alerts when taken. A file is rotated by size and age between lines,
//! never inside one: renamed to `NAME.<UTC time>` (a shipper following the
//! name reopens it; one following the inode reads the rest), then gzipped
//! to `NAME.<UTC time>.gz` when asked; the newest `keep` rotated files are
//! kept. A batch is synced before it counts as delivered.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use gatehouse_core::time::Clock;
use serde::{Deserialize, Serialize};

use crate::destination::{DeliveryError, Destination};
use crate::line::{Line, LogType};

fn default_results() -> String {
    "osqueryd.results.log".into()
}

fn default_status() -> String {
    "osqueryd.status.log".into()
}

fn default_audit() -> String {
    "gatehouse.audit.log".into()
}

fn default_alerts() -> String {
    "gatehouse.alerts.log".into()
}

fn default_rotate_bytes() -> u64 {
    100 * 1024 * 1024
}

fn default_rotate_secs() -> u64 {
    24 * 3600
}

fn default_keep() -> usize {
    10
}

fn yes() -> bool {
    true
}

/// `kind = "file"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The directory the files are written in (created if missing).
    pub dir: PathBuf,
    /// Result lines' file name.
    #[serde(default = "default_results")]
    pub results_file: String,
    /// Status lines' file name (the same name as `results_file`: one file).
    #[serde(default = "default_status")]
    pub status_file: String,
    /// The audit log's file name (when the filter takes `audit`).
    #[serde(default = "default_audit")]
    pub audit_file: String,
    /// Alerts' file name (when the filter takes `alerts`).
    #[serde(default = "default_alerts")]
    pub alerts_file: String,
    /// Rotate a file before it would pass this size (0: never).
    #[serde(default = "default_rotate_bytes")]
    pub rotate_bytes: u64,
    /// Rotate a file this long after it was started (0: never).
    #[serde(default = "default_rotate_secs")]
    pub rotate_secs: u64,
    /// Rotated files kept per file (the oldest are deleted).
    #[serde(default = "default_keep")]
    pub keep: usize,
    /// Gzip rotated files.
    #[serde(default = "yes")]
    pub compress: bool,
}

impl FileConfig {
    pub fn validate(&self) -> Result<(), String> {
        for (field, name) in [
            ("results_file", &self.results_file),
            ("status_file", &self.status_file),
            ("audit_file", &self.audit_file),
            ("alerts_file", &self.alerts_file),
        ] {
            if name.is_empty() || name.contains('/') || name.starts_with('.') {
                return Err(format!(
                    "{field}: a plain file name is needed, got {name:?}"
                ));
            }
        }
        if self.keep == 0 {
            return Err("keep: at least 1 rotated file".into());
        }
        Ok(())
    }
}

struct Open {
    file: File,
    size: u64,
    started_ms: i64,
}

/// Writes lines to files under `dir`.
pub struct FileDestination {
    inner: Arc<Files>,
}

struct Files {
    cfg: FileConfig,
    clock: Arc<dyn Clock>,
    open: Mutex<HashMap<String, Open>>,
}

impl std::fmt::Debug for FileDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileDestination")
            .field("dir", &self.inner.cfg.dir)
            .finish()
    }
}

fn io(what: &str, path: &Path, e: std::io::Error) -> DeliveryError {
    DeliveryError::Retry(format!("{what} {}: {e}", path.display()))
}

/// `YYYYMMDDTHHMMSS.mmmZ`: sorts in time order, safe in file names.
fn stamp(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, mo, d) = gatehouse_core::time::civil_from_days(days);
    format!(
        "{y:04}{mo:02}{d:02}T{:02}{:02}{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms.rem_euclid(1000)
    )
}

impl FileDestination {
    pub fn new(cfg: FileConfig, clock: Arc<dyn Clock>) -> Result<Self, String> {
        cfg.validate()?;
        std::fs::create_dir_all(&cfg.dir).map_err(|e| format!("dir {}: {e}", cfg.dir.display()))?;
        Ok(Self {
            inner: Arc::new(Files {
                cfg,
                clock,
                open: Mutex::new(HashMap::new()),
            }),
        })
    }

    fn file_for(&self, t: LogType) -> &str {
        let c = &self.inner.cfg;
        match t {
            LogType::Results => &c.results_file,
            LogType::Status => &c.status_file,
            LogType::Audit => &c.audit_file,
            LogType::Alerts => &c.alerts_file,
        }
    }
}

impl Files {
    fn open_file(&self, name: &str) -> Result<Open, DeliveryError> {
        let path = self.cfg.dir.join(name);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io("opening", &path, e))?;
        let size = file.metadata().map_err(|e| io("reading", &path, e))?.len();
        Ok(Open {
            file,
            size,
            started_ms: self.clock.now_ms(),
        })
    }

    /// Renames `name` aside (gzipped when asked) and drops the oldest
    /// rotated files past `keep`.
    fn rotate(&self, name: &str) -> Result<(), DeliveryError> {
        let path = self.cfg.dir.join(name);
        let mut aside = self
            .cfg
            .dir
            .join(format!("{name}.{}", stamp(self.clock.now_ms())));
        let mut n = 1;
        while aside.exists() || aside.with_extension("gz").exists() {
            aside = self
                .cfg
                .dir
                .join(format!("{name}.{}-{n}", stamp(self.clock.now_ms())));
            n += 1;
        }
        std::fs::rename(&path, &aside).map_err(|e| io("rotating", &path, e))?;
        if self.cfg.compress {
            let gz = PathBuf::from(format!("{}.gz", aside.display()));
            let mut input = File::open(&aside).map_err(|e| io("reading", &aside, e))?;
            let out = File::create(&gz).map_err(|e| io("creating", &gz, e))?;
            let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::default());
            std::io::copy(&mut input, &mut enc).map_err(|e| io("compressing", &gz, e))?;
            let out = enc.finish().map_err(|e| io("compressing", &gz, e))?;
            out.sync_all().map_err(|e| io("syncing", &gz, e))?;
            std::fs::remove_file(&aside).map_err(|e| io("removing", &aside, e))?;
        }
        let prefix = format!("{name}.");
        let mut rotated: Vec<String> = std::fs::read_dir(&self.cfg.dir)
            .map_err(|e| io("listing", &self.cfg.dir, e))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|f| f.starts_with(&prefix))
            .collect();
        rotated.sort();
        let excess = rotated.len().saturating_sub(self.cfg.keep);
        for old in &rotated[..excess] {
            let p = self.cfg.dir.join(old);
            std::fs::remove_file(&p).map_err(|e| io("removing", &p, e))?;
        }
        Ok(())
    }

    /// Appends each line (with its newline) to its file.
    fn write(&self, lines: Vec<(String, Vec<u8>)>) -> Result<(), DeliveryError> {
        let mut open = self
            .open
            .lock()
            .map_err(|_| DeliveryError::Retry("file destination state poisoned".into()))?;
        let mut touched = Vec::new();
        for (name, bytes) in lines {
            let len = bytes.len() as u64;
            let now = self.clock.now_ms();
            let rotate_ms =
                i64::try_from(self.cfg.rotate_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
            let due = open.get(&name).is_some_and(|o| {
                o.size > 0
                    && ((self.cfg.rotate_bytes > 0 && o.size + len > self.cfg.rotate_bytes)
                        || (rotate_ms > 0 && now - o.started_ms >= rotate_ms))
            });
            if due && let Some(o) = open.remove(&name) {
                o.file
                    .sync_data()
                    .map_err(|e| io("syncing", &self.cfg.dir.join(&name), e))?;
                drop(o);
                self.rotate(&name)?;
            }
            if !open.contains_key(&name) {
                let o = self.open_file(&name)?;
                open.insert(name.clone(), o);
            }
            let Some(o) = open.get_mut(&name) else {
                continue;
            };
            if let Err(e) = o.file.write_all(&bytes) {
                // A partial line must not stay: the file is reopened and
                // cut back to its last whole line at the next attempt.
                let path = self.cfg.dir.join(&name);
                let keep = o.size;
                open.remove(&name);
                if let Ok(f) = OpenOptions::new().write(true).open(&path) {
                    let _ = f.set_len(keep);
                }
                return Err(io("writing", &path, e));
            }
            o.size += len;
            if !touched.contains(&name) {
                touched.push(name);
            }
        }
        for name in touched {
            if let Some(o) = open.get(&name) {
                o.file
                    .sync_data()
                    .map_err(|e| io("syncing", &self.cfg.dir.join(&name), e))?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Destination for FileDestination {
    async fn deliver(&self, lines: &[Line]) -> Result<(), DeliveryError> {
        let items: Vec<(String, Vec<u8>)> = lines
            .iter()
            .map(|l| {
                let mut bytes = l.to_json();
                bytes.push(b'\n');
                (self.file_for(l.log_type).to_owned(), bytes)
            })
            .collect();
        let files = self.inner.clone();
        tokio::task::spawn_blocking(move || files.write(items))
            .await
            .map_err(|e| DeliveryError::Retry(format!("file destination task failed: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_core::time::ShiftedClock;
    use serde_json::json;

    fn line(t: LogType, n: usize) -> Line {
        Line {
            log_type: t,
            host_id: "h".into(),
            name: Some("users".into()),
            unix_time: 1,
            line_id: format!("l{n}"),
            body: json!({"name": "users", "n": n, "pad": "x".repeat(50)})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        }
    }

    /// Every line of every file (rotated ones gunzipped), as a shipper
    /// reads them, in order.
    fn read_all(dir: &Path, name: &str) -> Vec<serde_json::Value> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .and_then(|f| f.to_str())
                    .is_some_and(|f| f.starts_with(&format!("{name}.")))
            })
            .collect();
        files.sort();
        files.push(dir.join(name));
        let mut out = Vec::new();
        for f in files {
            let mut text = String::new();
            let raw = std::fs::read(&f).unwrap_or_default();
            if f.extension().is_some_and(|e| e == "gz") {
                use std::io::Read;
                flate2::read::GzDecoder::new(&raw[..])
                    .read_to_string(&mut text)
                    .unwrap();
            } else {
                text = String::from_utf8(raw).unwrap();
            }
            assert!(
                text.is_empty() || text.ends_with('\n'),
                "{f:?} ends mid-line"
            );
            for l in text.lines() {
                out.push(serde_json::from_str(l).expect("every line whole JSON"));
            }
        }
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rotation_by_size_never_splits_or_loses_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = FileConfig {
            dir: dir.path().to_path_buf(),
            results_file: default_results(),
            status_file: default_status(),
            audit_file: default_audit(),
            alerts_file: default_alerts(),
            rotate_bytes: 1000,
            rotate_secs: 0,
            keep: 100,
            compress: true,
        };
        let d = FileDestination::new(cfg, Arc::new(ShiftedClock::new())).unwrap();
        for batch in 0..10 {
            let lines: Vec<Line> = (0..7)
                .map(|i| line(LogType::Results, batch * 7 + i))
                .collect();
            d.deliver(&lines).await.unwrap();
        }
        d.deliver(&[line(LogType::Status, 999)]).await.unwrap();
        let got = read_all(dir.path(), "osqueryd.results.log");
        let ns: Vec<u64> = got.iter().map(|v| v["n"].as_u64().unwrap()).collect();
        assert_eq!(ns, (0..70).collect::<Vec<_>>(), "every line once, in order");
        let rotated = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".gz")
            })
            .count();
        assert!(rotated >= 5, "rotated and compressed: {rotated}");
        for e in std::fs::read_dir(dir.path()).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_none_or(|e| e != "gz") {
                assert!(std::fs::metadata(&p).unwrap().len() <= 1000, "{p:?}");
            }
        }
        assert_eq!(read_all(dir.path(), "osqueryd.status.log").len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rotation_by_age_and_retention_by_count() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ShiftedClock::new());
        let cfg = FileConfig {
            dir: dir.path().to_path_buf(),
            results_file: "all.log".into(),
            status_file: "all.log".into(),
            audit_file: default_audit(),
            alerts_file: default_alerts(),
            rotate_bytes: 0,
            rotate_secs: 60,
            keep: 2,
            compress: false,
        };
        let d = FileDestination::new(cfg, clock.clone()).unwrap();
        for n in 0..5 {
            d.deliver(&[line(LogType::Results, n), line(LogType::Status, 100 + n)])
                .await
                .unwrap();
            clock.advance(std::time::Duration::from_secs(61));
        }
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 3, "the file and two rotated: {names:?}");
        let got = read_all(dir.path(), "all.log");
        let ns: Vec<u64> = got.iter().map(|v| v["n"].as_u64().unwrap()).collect();
        assert_eq!(ns, vec![2, 102, 3, 103, 4, 104], "one file, oldest dropped");
    }

    #[test]
    fn file_names_must_be_plain() {
        let cfg = FileConfig {
            dir: "/tmp".into(),
            results_file: "../x".into(),
            status_file: default_status(),
            audit_file: default_audit(),
            alerts_file: default_alerts(),
            rotate_bytes: 0,
            rotate_secs: 0,
            keep: 1,
            compress: false,
        };
        assert!(cfg.validate().unwrap_err().contains("results_file"));
    }
}
