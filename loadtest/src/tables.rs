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

fn s(v: impl ToString) -> Value {
    Value::String(v.to_string())
}

/// Row `id` of `table` on the machine with `seed`. Every value is a string,
/// as distributed results and (without numerics) result logs carry them.
pub fn row(table: &str, seed: u64, id: u64) -> Map<String, Value> {
    let h = splitmix(seed ^ splitmix(id) ^ table.len() as u64);
    let mut m = Map::new();
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
            m.insert("pid".into(), s(1000 + id));
            m.insert("name".into(), s(name));
            m.insert("path".into(), s(format!("/usr/bin/{name}")));
            m.insert(
                "cmdline".into(),
                s(format!("/usr/bin/{name} --worker {}", h % 97)),
            );
            m.insert("uid".into(), s(h % 3 * 500));
            m.insert("parent".into(), s(1));
            m.insert("resident_size".into(), s(4096 * (h % 100_000)));
            m.insert("start_time".into(), s(1_717_000_000 + id));
        }
        "listening_ports" => {
            m.insert("pid".into(), s(1000 + h % 5000));
            m.insert("port".into(), s(1024 + (h % 60000)));
            m.insert("protocol".into(), s(6));
            m.insert("family".into(), s(2));
            m.insert("address".into(), s("0.0.0.0"));
        }
        "users" | "logged_in_users" => {
            m.insert("uid".into(), s(1000 + id));
            m.insert("username".into(), s(format!("user{id}")));
            m.insert("directory".into(), s(format!("/home/user{id}")));
            m.insert("shell".into(), s("/bin/bash"));
        }
        "osquery_info" => {
            m.insert("version".into(), s("5.23.1"));
            m.insert("build_platform".into(), s("ubuntu"));
            m.insert("instance_id".into(), s(format!("{h:016x}")));
            m.insert("config_valid".into(), s(1));
        }
        "uptime" | "time" => {
            m.insert("total_seconds".into(), s(100_000 + id));
            m.insert("days".into(), s(1));
        }
        _ => {
            m.insert("id".into(), s(id));
            m.insert("name".into(), s(format!("{table}-{}", h % 10_000)));
            m.insert("path".into(), s(format!("/var/lib/{table}/{}", h % 1000)));
            m.insert("value".into(), s(format!("{h:016x}")));
        }
    }
    m
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
    }
}
