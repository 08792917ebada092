//! What this process has used so far, from `/proc/self`: for benchmarks
//! that report CPU and bytes written per unit of work.

/// User + system CPU seconds (`/proc/self/stat`).
pub fn cpu_seconds() -> std::io::Result<f64> {
    let bad = || std::io::Error::other("unexpected /proc/self/stat");
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name, which may hold spaces, in brackets.
    let rest = stat
        .get(stat.rfind(')').ok_or_else(bad)? + 2..)
        .ok_or_else(bad)?;
    let f: Vec<&str> = rest.split(' ').collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).ok_or_else(bad);
    Ok((tick(11)? + tick(12)?) / 100.0)
}

/// Bytes this process has caused to be written to storage
/// (`/proc/self/io`, `write_bytes`).
pub fn written_bytes() -> std::io::Result<u64> {
    let io = std::fs::read_to_string("/proc/self/io")?;
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| std::io::Error::other("no write_bytes in /proc/self/io"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn usage_is_read_and_only_grows() {
        let cpu = super::cpu_seconds().unwrap();
        let written = super::written_bytes().unwrap();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_add(std::hint::black_box(i));
        }
        std::hint::black_box(x);
        assert!(super::cpu_seconds().unwrap() >= cpu);
        assert!(super::written_bytes().unwrap() >= written);
    }
}
