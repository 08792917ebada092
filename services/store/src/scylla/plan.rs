//! Planning of scatter reads over time-bucketed partitions.
//!
//! A log search reads the partitions an index table lists (a host's days
//! and query names). Partitions bucketed by the agent's time hold
//! only rows of their own unit, so they are read in ascending unit order
//! and the search stops as soon as `limit` rows older than every unread
//! partition are in hand. Partitions flagged `skewed` also hold lines an
//! agent with a wrong clock sent (bucketed by receive time, any agent
//! time), so they are read first, whatever the window.

/// A partition listed by an index row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part<K> {
    /// Day number (units since the epoch).
    pub unit: i64,
    pub key: K,
    pub skewed: bool,
}

/// Partitions read together; rows of later groups are never older than
/// `start` of the next group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group<K> {
    /// Smallest agent time a row of this group can have (`i64::MIN` for
    /// the skewed group).
    pub start: i64,
    pub parts: Vec<Part<K>>,
}

/// Groups to read for the window `[since, until)`, in reading order.
pub fn plan<K>(parts: Vec<Part<K>>, unit_secs: i64, since: i64, until: i64) -> Vec<Group<K>> {
    let mut skewed = Vec::new();
    let mut normal: Vec<Part<K>> = Vec::new();
    for p in parts {
        if p.skewed {
            skewed.push(p);
        } else {
            let start = p.unit.saturating_mul(unit_secs);
            let end = start.saturating_add(unit_secs);
            if start < until && end > since {
                normal.push(p);
            }
        }
    }
    normal.sort_by_key(|p| p.unit);
    let mut groups = Vec::new();
    if !skewed.is_empty() {
        groups.push(Group {
            start: i64::MIN,
            parts: skewed,
        });
    }
    for p in normal {
        let start = p.unit.saturating_mul(unit_secs);
        match groups.last_mut() {
            Some(g) if g.start == start => g.parts.push(p),
            _ => groups.push(Group {
                start,
                parts: vec![p],
            }),
        }
    }
    groups
}

/// True when `limit` collected rows are older than `next_start`, so no
/// unread group can change the first `limit` rows.
pub fn can_stop(collected_times: impl Iterator<Item = i64>, next_start: i64, limit: usize) -> bool {
    collected_times.filter(|t| *t < next_start).count() >= limit
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(unit: i64, key: &str, skewed: bool) -> Part<String> {
        Part {
            unit,
            key: key.into(),
            skewed,
        }
    }

    #[test]
    fn skewed_first_then_units_in_the_window_ascending() {
        let parts = vec![
            p(12, "users", false),
            p(10, "users", false),
            p(10, "procs", false),
            p(3, "clock", true),
            p(2, "users", false),
        ];
        // Window covers days 10..=12 (day = 100 s here).
        let g = plan(parts, 100, 1_000, 1_250);
        assert_eq!(g.len(), 3);
        assert_eq!(g[0].start, i64::MIN);
        assert_eq!(g[0].parts, vec![p(3, "clock", true)]);
        assert_eq!(g[1].start, 1_000);
        assert_eq!(g[1].parts.len(), 2);
        assert_eq!(g[2].start, 1_200);
    }

    #[test]
    fn stops_only_when_limit_rows_precede_every_unread_group() {
        assert!(can_stop([1, 2, 3].into_iter(), 4, 3));
        assert!(!can_stop([1, 2, 9].into_iter(), 4, 3));
        assert!(!can_stop(std::iter::empty(), i64::MAX, 1));
    }
}
