//! Plausible rows for common osquery tables, generated deterministically
//! from (machine seed, table, row id) so no per-agent row sets are kept in
//! memory. Also a tiny "SQL engine": it finds the table in `FROM <table>`
//! and answers with rows, or with `no such table` as the agent would.

use serde_json::{Map, Value};

use crate::osinfo::splitmix;

/// How a table behaves when scheduled.
#[derive(Debug, Clone, Copy)]
pub struct TableShape {
    /// Rows a typical host returns.
    pub rows: u32,
    /// Rows that change per run, per thousand rows.
    pub churn_per_mille: u32,
}

pub fn shape(table: &str) -> Option<TableShape> {
    let (rows, churn_per_mille) = match table {
        "processes" => (180, 40),
        "listening_ports" => (25, 20),
        "users" => (12, 0),
        "logged_in_users" => (3, 100),
        "crontab" => (8, 0),
        "kernel_modules" => (90, 0),
        "startup_items" => (30, 2),
        "uptime" => (1, 1000),
        "interface_addresses" => (6, 5),
        "os_version" | "osquery_info" | "system_info" | "platform_info" => (1, 0),
        "shell_history" => (40, 25),
        "usb_devices" => (6, 10),
        "deb_packages" | "rpm_packages" | "programs" | "apps" => (900, 1),
        "file" | "hash" => (20, 10),
        "process_open_sockets" => (120, 60),
        "time" => (1, 1000),
        "carves" => (1, 0),
        // The starter packs' tables (examples/packs).
        "interface_details" => (6, 5),
        "process_events" | "process_etw_events" => (40, 1000),
        "disk_encryption" | "bitlocker_info" => (2, 0),
        "sip_config" => (10, 0),
        "gatekeeper" | "alf" | "secureboot" | "windows_security_center" | "selinux_settings" => {
            (1, 0)
        }
        "scheduled_tasks" => (150, 2),
        "services" => (250, 2),
        _ => return None,
    };
    Some(TableShape {
        rows,
        churn_per_mille,
    })
}

/// The first table named after `FROM` (case-insensitive), if any.
pub fn table_of(sql: &str) -> Option<String> {
    let lower = sql.to_ascii_lowercase();
    let mut words =
        lower.split(|c: char| c.is_whitespace() || c == ',' || c == ';' || c == '(' || c == ')');
    while let Some(w) = words.next() {
        if w == "from" {
            return words.find(|w| !w.is_empty()).map(str::to_owned);
        }
    }
    None
}

/// Appends `v` to `out` as a JSON string.
pub fn push_str(out: &mut String, v: &str) {
    out.reserve(v.len() + 2);
    out.push('"');
    push_escaped(out, v);
    out.push('"');
}

/// Appends `v` to `out` escaped as the inside of a JSON string.
fn push_escaped(out: &mut String, v: &str) {
    // Runs without a character to escape go in one copy; the bytes that
    // need one are ASCII, so every cut falls on a character boundary.
    let mut run = 0;
    for (i, b) in v.bytes().enumerate() {
        if needs_escape(b) {
            out.push_str(&v[run..i]);
            match b {
                b'"' => out.push_str("\\\""),
                b'\\' => out.push_str("\\\\"),
                _ => {
                    use std::fmt::Write;
                    let _ = write!(out, "\\u{b:04x}");
                }
            }
            run = i + 1;
        }
    }
    out.push_str(&v[run..]);
}

fn needs_escape(b: u8) -> bool {
    b == b'"' || b == b'\\' || b < 0x20
}

/// Appends `n` in decimal.
pub fn push_u64(out: &mut String, n: u64) {
    out.push_str(itoa::Buffer::new().format(n));
}

/// A column value, written as the inside of a JSON string: integers and
/// plain text without the formatting machinery, anything else through it.
pub trait Val {
    fn write(self, out: &mut String);
}

impl Val for &str {
    fn write(self, out: &mut String) {
        out.push_str(self);
    }
}

impl Val for u64 {
    fn write(self, out: &mut String) {
        push_u64(out, self);
    }
}

impl Val for i32 {
    fn write(self, out: &mut String) {
        out.push_str(itoa::Buffer::new().format(self));
    }
}

impl Val for std::fmt::Arguments<'_> {
    fn write(self, out: &mut String) {
        use std::fmt::Write;
        let _ = out.write_fmt(self);
    }
}

/// Writes one JSON object member after the first: `,"key":"value"`
/// (`first` leaves the comma out).
struct Obj<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> Obj<'a> {
    fn open(out: &'a mut String) -> Self {
        out.push('{');
        Self { out, first: true }
    }

    fn field(&mut self, key: &str, value: impl Val) -> &mut Self {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        self.out.push('"');
        self.out.push_str(key);
        // Every column value is a string (§6.4, without numerics).
        self.out.push_str("\":\"");
        let start = self.out.len();
        value.write(self.out);
        if self.out[start..].bytes().any(needs_escape) {
            let raw = self.out.split_off(start);
            push_escaped(self.out, &raw);
        }
        self.out.push('"');
        self
    }

    fn close(&mut self) {
        self.out.push('}');
    }
}

/// Row `id` of `table` on the machine with `seed`, as a JSON object. Every
/// value is a string, as distributed results and (without numerics) result
/// logs carry them; columns in name order, as osquery's rows are.
pub fn write_row(out: &mut String, table: &str, seed: u64, id: u64) {
    let h = splitmix(seed ^ splitmix(id) ^ table.len() as u64);
    let mut o = Obj::open(out);
    match table {
        "processes" => {
            const NAMES: [&str; 8] = [
                "sshd",
                "systemd",
                "nginx",
                "postgres",
                "chrome",
                "python3",
                "node",
                "containerd",
            ];
            let name = NAMES[(h % 8) as usize];
            o.field(
                "cmdline",
                format_args!("/usr/bin/{name} --worker {}", h % 97),
            )
            .field("name", name)
            .field("parent", 1)
            .field("path", format_args!("/usr/bin/{name}"))
            .field("pid", 1000 + id)
            .field("resident_size", 4096 * (h % 100_000))
            .field("start_time", 1_717_000_000 + id)
            .field("uid", h % 3 * 500);
        }
        "listening_ports" => {
            o.field("address", "0.0.0.0")
                .field("family", 2)
                .field("pid", 1000 + h % 5000)
                .field("port", 1024 + (h % 60000))
                .field("protocol", 6);
        }
        "users" | "logged_in_users" => {
            o.field("directory", format_args!("/home/user{id}"))
                .field("shell", "/bin/bash")
                .field("uid", 1000 + id)
                .field("username", format_args!("user{id}"));
        }
        "osquery_info" => {
            o.field("build_platform", "ubuntu")
                .field("config_valid", 1)
                .field("instance_id", format_args!("{h:016x}"))
                .field("version", "5.23.1");
        }
        "uptime" | "time" => {
            o.field("days", 1).field("total_seconds", 100_000 + id);
        }
        _ => {
            o.field("id", id)
                .field("name", format_args!("{table}-{}", h % 10_000))
                .field("path", format_args!("/var/lib/{table}/{}", h % 1000))
                .field("value", format_args!("{h:016x}"));
        }
    }
    o.close();
}

/// [`write_row`] as a JSON map (distributed answers, tests).
pub fn row(table: &str, seed: u64, id: u64) -> Map<String, Value> {
    let mut out = String::with_capacity(256);
    write_row(&mut out, table, seed, id);
    serde_json::from_str(&out).unwrap_or_default()
}

/// What a distributed query returns on this machine.
pub fn run_sql(sql: &str, seed: u64) -> Result<Vec<Value>, String> {
    let table = table_of(sql).ok_or_else(|| "near \"\": syntax error".to_owned())?;
    let shape = shape(&table).ok_or_else(|| format!("no such table: {table}"))?;
    let n = u64::from(shape.rows.min(200));
    Ok((0..n)
        .map(|id| Value::Object(row(&table, seed, id)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_and_errors() {
        assert_eq!(
            table_of("SELECT * FROM processes WHERE pid = 1").as_deref(),
            Some("processes")
        );
        assert_eq!(
            table_of("select name from  Users;").as_deref(),
            Some("users")
        );
        assert_eq!(
            run_sql("SELECT 1 FROM nope", 1),
            Err("no such table: nope".into())
        );
        assert_eq!(
            run_sql("SELECT * FROM osquery_info", 1).map(|r| r.len()),
            Ok(1)
        );
        assert_eq!(
            row("processes", 5, 3),
            row("processes", 5, 3),
            "deterministic"
        );
        let r = row("processes", 5, 3);
        assert_eq!(r.len(), 8, "{r:?}");
        assert!(r.values().all(Value::is_string));
        for v in [
            "a\"b\\c\n",
            "",
            "plain",
            "\"",
            "ünï\u{1}cödé\t/Users/Zoë \"x\"\\",
            "末尾\u{1f}",
        ] {
            let mut out = String::new();
            push_str(&mut out, v);
            assert_eq!(
                serde_json::from_str::<String>(&out).ok().as_deref(),
                Some(v),
                "{out}"
            );
        }
    }
}
