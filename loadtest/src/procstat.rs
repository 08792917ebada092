//! CPU time and memory of a process from `/proc` (Linux): the harness's own
//! cost, and the server's when it runs on the same machine.

use std::time::Instant;

/// Clock ticks per second for `/proc/<pid>/stat` (100 on Linux/x86_64 and
/// arm64 kernels).
const CLK_TCK: f64 = 100.0;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub cpu_secs: f64,
    pub rss_bytes: u64,
    pub peak_rss_bytes: u64,
    pub at: Instant,
}

/// `pid` = "self", a number, or several numbers separated by commas (a
/// cluster's processes: their CPU time and memory are added up).
pub fn sample(pid: &str) -> Option<Sample> {
    if pid.contains(',') {
        let all: Vec<Sample> = pid
            .split(',')
            .map(|p| sample_one(p.trim()))
            .collect::<Option<_>>()?;
        return Some(Sample {
            cpu_secs: all.iter().map(|s| s.cpu_secs).sum(),
            rss_bytes: all.iter().map(|s| s.rss_bytes).sum(),
            peak_rss_bytes: all.iter().map(|s| s.peak_rss_bytes).sum(),
            at: Instant::now(),
        });
    }
    sample_one(pid)
}

fn sample_one(pid: &str) -> Option<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are
    // the 14th and 15th fields of the whole line.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = |key: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Some(Sample {
        cpu_secs: (utime + stime) / CLK_TCK,
        rss_bytes: kb("VmRSS:") * 1024,
        peak_rss_bytes: kb("VmHWM:") * 1024,
        at: Instant::now(),
    })
}

/// CPU use between two samples, in percent of one core.
pub fn cpu_pct(a: &Sample, b: &Sample) -> f64 {
    let wall = b.at.duration_since(a.at).as_secs_f64();
    if wall <= 0.0 {
        0.0
    } else {
        (b.cpu_secs - a.cpu_secs) / wall * 100.0
    }
}

/// The pid of the one process whose command name is `name` (`Ok(None)`:
/// none); `Err` with every candidate when there are several, since which
/// one is meant cannot be told.
pub fn find_pid(name: &str) -> Result<Option<String>, Vec<u64>> {
    let me = std::process::id().to_string();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Ok(None);
    };
    let mut found: Vec<u64> = procs
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|p| p.chars().all(|c| c.is_ascii_digit()) && *p != me)
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == name)
        })
        .filter_map(|p| p.parse().ok())
        .collect();
    found.sort();
    match found.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.to_string())),
        _ => Err(found),
    }
}

/// A short description of this machine for reports.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let nofile = rlimit::getrlimit(rlimit::Resource::NOFILE)
        .map(|(s, h)| format!("{s}/{h}"))
        .unwrap_or_default();
    format!(
        "{cores} cores ({cpu}), {mem_gib:.1} GiB RAM, Linux {}, open-file limit {nofile}",
        kernel.trim()
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn samples_self() {
        let s = super::sample("self").expect("no /proc");
        assert!(s.rss_bytes > 0 && s.peak_rss_bytes >= s.rss_bytes);
    }
}
