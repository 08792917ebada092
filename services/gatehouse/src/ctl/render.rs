//! How `ctl` prints answers: aligned tables of chosen columns for people,
//! the API's JSON with `--json`.

use serde_json::Value;

pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// Columns holding a time in Unix milliseconds (`last_seen`, `at`,
/// `*_at`): tables show them as UTC; `--json` keeps the number.
fn is_time(col: &str) -> bool {
    col == "at" || col == "last_seen" || col.ends_with("_at")
}

fn column_cell(col: &str, v: &Value) -> String {
    match v.as_i64() {
        Some(ms) if is_time(col) => gatehouse_core::time::utc_string(ms),
        _ => cell(v),
    }
}

/// A plain aligned table of `cols` of each row.
pub fn table(rows: &[Value], cols: &[&str]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| cols.iter().map(|c| column_cell(c, &r[*c])).collect())
        .collect();
    let widths: Vec<usize> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |vals: Vec<String>| {
        vals.iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = vec![line(cols.iter().map(|c| c.to_uppercase()).collect())];
    out.extend(cells.into_iter().map(line));
    out.join("\n")
}

pub fn show(json_out: bool, v: &Value, cols: &[&str]) -> String {
    if json_out {
        return serde_json::to_string_pretty(v).unwrap_or_default();
    }
    match v {
        Value::Array(rows) => table(rows, cols),
        Value::Object(_) => table(std::slice::from_ref(v), cols),
        other => other.to_string(),
    }
}

/// One object, every field on its own line (`hosts get`): nested objects
/// as dotted names (`details.os_version.name`), times in UTC as in tables.
pub fn details(json_out: bool, v: &Value) -> String {
    fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, x) in m {
                    let name = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    flatten(&name, x, out);
                }
            }
            other => {
                let last = prefix.rsplit('.').next().unwrap_or(prefix);
                out.push((prefix.to_owned(), column_cell(last, other)));
            }
        }
    }
    if json_out {
        return serde_json::to_string_pretty(v).unwrap_or_default();
    }
    let mut rows = Vec::new();
    flatten("", v, &mut rows);
    let width = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    rows.iter()
        .map(|(k, x)| format!("{k:<width$}  {x}").trim_end().to_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// `v` (any answer) as JSON, for the table printer.
pub fn json(v: &impl serde::Serialize) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_and_show_missing_cells() {
        let rows = vec![
            json!({"name": "alice", "role": "operator"}),
            json!({"name": "bo", "role": null}),
        ];
        assert_eq!(
            table(&rows, &["name", "role"]),
            "NAME   ROLE\nalice  operator\nbo     -"
        );
    }

    #[test]
    fn details_list_every_field() {
        let v =
            json!({"id": "ab", "last_seen": 0, "labels": ["all", "x"], "details": {"os": "linux"}});
        assert_eq!(
            details(false, &v),
            "details.os  linux\nid          ab\nlabels      all,x\nlast_seen   1970-01-01 00:00:00Z"
        );
    }

    #[test]
    fn times_are_shown_in_utc_and_other_numbers_as_they_are() {
        let rows = vec![json!({"id": 7, "last_seen": 1_796_386_496_789_i64, "expires_at": null})];
        assert_eq!(
            table(&rows, &["id", "last_seen", "expires_at"]),
            "ID  LAST_SEEN             EXPIRES_AT\n7   2026-12-04 12:14:56Z  -"
        );
    }
}
