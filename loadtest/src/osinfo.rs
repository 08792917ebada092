//! OS templates: what `host_details` looks like on each platform (§4.2),
//! chosen by configurable weights. Every value is a string, tables appear
//! in sorted order, and `platform_info` is missing on some VMs, as real
//! agents send it.

use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Os {
    MacOs,
    Ubuntu,
    Debian,
    Rhel,
    AmazonLinux,
    Windows,
}

impl Os {
    pub fn all() -> [Os; 6] {
        [
            Os::MacOs,
            Os::Ubuntu,
            Os::Debian,
            Os::Rhel,
            Os::AmazonLinux,
            Os::Windows,
        ]
    }

    pub fn name(self) -> &'static str {
        match self {
            Os::MacOs => "macos",
            Os::Ubuntu => "ubuntu",
            Os::Debian => "debian",
            Os::Rhel => "rhel",
            Os::AmazonLinux => "amzn",
            Os::Windows => "windows",
        }
    }

    /// `platform_type` as the agent sends it (a decimal bitmask string).
    pub fn platform_type(self) -> &'static str {
        match self {
            Os::MacOs => "21",
            Os::Windows => "2",
            _ => "9",
        }
    }

    pub fn is_windows(self) -> bool {
        self == Os::Windows
    }

    pub fn is_linux(self) -> bool {
        !matches!(self, Os::MacOs | Os::Windows)
    }
}

/// Weights per OS, e.g. `macos=5,ubuntu=3,windows=2`.
#[derive(Debug, Clone)]
pub struct OsMix(pub Vec<(Os, u32)>);

impl Default for OsMix {
    fn default() -> Self {
        OsMix(vec![
            (Os::MacOs, 35),
            (Os::Ubuntu, 25),
            (Os::Debian, 5),
            (Os::Rhel, 10),
            (Os::AmazonLinux, 10),
            (Os::Windows, 15),
        ])
    }
}

impl std::str::FromStr for OsMix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for part in s.split(',').filter(|p| !p.trim().is_empty()) {
            let (name, w) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: expected os=weight"))?;
            let os = Os::all()
                .into_iter()
                .find(|o| o.name() == name.trim())
                .ok_or_else(|| {
                    format!("unknown os {name:?} (macos, ubuntu, debian, rhel, amzn, windows)")
                })?;
            out.push((
                os,
                w.trim()
                    .parse()
                    .map_err(|_| format!("{part:?}: weight must be a whole number"))?,
            ));
        }
        if out.iter().map(|(_, w)| w).sum::<u32>() == 0 {
            return Err("weights must not all be zero".into());
        }
        Ok(OsMix(out))
    }
}

impl OsMix {
    /// Deterministic pick for agent `n`.
    pub fn pick(&self, n: u64) -> Os {
        let total: u64 = self.0.iter().map(|(_, w)| u64::from(*w)).sum();
        let mut x = splitmix(n) % total.max(1);
        for (os, w) in &self.0 {
            if x < u64::from(*w) {
                return *os;
            }
            x -= u64::from(*w);
        }
        Os::Ubuntu
    }
}

pub fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

pub fn uuid_from(seed: u64, salt: u64) -> String {
    let a = splitmix(seed ^ salt);
    let b = splitmix(a);
    format!(
        "{:08X}-{:04X}-{:04X}-{:04X}-{:012X}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

/// A simulated machine's identity.
#[derive(Debug, Clone)]
pub struct Machine {
    pub os: Os,
    pub hostname: String,
    pub hardware_uuid: String,
    pub instance_id: String,
    pub seed: u64,
}

impl Machine {
    /// `run_id` keeps separate harness runs from colliding on one server.
    pub fn new(n: u64, mix: &OsMix, run_id: u64) -> Self {
        let seed = splitmix(n ^ run_id.rotate_left(17));
        let os = mix.pick(seed);
        // Unique per run too, so an operator (or `--live-single`) can
        // address one host by name on a server earlier runs also used.
        let run = run_id & 0xff_ffff;
        let hostname = match os {
            Os::MacOs => format!("mbp-{n:06}-{run:06x}.corp.example.com"),
            Os::Windows => format!("DESKTOP-{:07X}", seed & 0xfff_ffff),
            _ => format!("srv-{n:06}-{run:06x}.prod.example.com"),
        };
        Self {
            os,
            hostname,
            hardware_uuid: uuid_from(seed, 1),
            instance_id: uuid_from(seed, 2).to_lowercase(),
            seed,
        }
    }

    pub fn host_details(&self) -> Value {
        let (name, version, major, minor, platform, like, codename, build) = match self.os {
            Os::MacOs => ("macOS", "14.5", "14", "5", "darwin", "darwin", "", "23F79"),
            Os::Ubuntu => (
                "Ubuntu",
                "22.04.4 LTS (Jammy Jellyfish)",
                "22",
                "4",
                "ubuntu",
                "debian",
                "jammy",
                "",
            ),
            Os::Debian => (
                "Debian GNU/Linux",
                "12 (bookworm)",
                "12",
                "0",
                "debian",
                "",
                "bookworm",
                "",
            ),
            Os::Rhel => (
                "Red Hat Enterprise Linux",
                "9.4 (Plow)",
                "9",
                "4",
                "rhel",
                "fedora",
                "",
                "",
            ),
            Os::AmazonLinux => (
                "Amazon Linux",
                "2023",
                "2023",
                "0",
                "amzn",
                "fedora",
                "",
                "",
            ),
            Os::Windows => (
                "Microsoft Windows 11 Enterprise",
                "10.0.22631",
                "10",
                "0",
                "windows",
                "windows",
                "",
                "22631",
            ),
        };
        let mut d = json!({
            "os_version": {"arch": if self.os == Os::MacOs { "arm64" } else { "x86_64" }, "build": build, "codename": codename,
                "major": major, "minor": minor, "name": name, "patch": "0", "pid_with_namespace": "0",
                "platform": platform, "platform_like": like, "version": version},
            "osquery_info": {"build_distro": "centos7", "build_platform": platform, "config_hash": "", "config_valid": "0",
                "extensions": "active", "instance_id": self.instance_id, "pid": format!("{}", 1000 + self.seed % 60000),
                "platform_mask": self.os.platform_type(), "start_time": "1717000000", "uuid": self.hardware_uuid,
                "version": "5.23.1", "watcher": "900"},
            "system_info": {"board_model": "", "board_serial": "", "board_vendor": "", "board_version": "",
                "computer_name": self.hostname.split('.').next().unwrap_or(""), "cpu_brand": "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz",
                "cpu_logical_cores": "8", "cpu_microcode": "0xd0003d1", "cpu_physical_cores": "4", "cpu_sockets": "1",
                "cpu_subtype": "106", "cpu_type": "x86_64", "hardware_model": "m6i.2xlarge",
                "hardware_serial": format!("SN{:010X}", self.seed & 0xff_ffff_ffff), "hardware_vendor": "Amazon EC2",
                "hardware_version": "", "hostname": self.hostname, "local_hostname": self.hostname.split('.').next().unwrap_or(""),
                "physical_memory": "34359738368", "uuid": self.hardware_uuid}
        });
        // Some VMs have no platform_info row, so the table is left out.
        if !self.seed.is_multiple_of(5) {
            d["platform_info"] = json!({"address": "0xf0000", "date": "10/16/2017", "extra": "", "firmware_type": "uefi",
                "revision": "1.0", "size": "65536", "vendor": "Amazon EC2", "version": "1.0", "volume_size": "0"});
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_parses_and_picks_by_weight() {
        let m: OsMix = "macos=1,windows=3".parse().unwrap_or_default_mix();
        let wins = (0..4000).filter(|n| m.pick(*n) == Os::Windows).count();
        assert!((2700..3300).contains(&wins), "{wins}");
        assert!("bogus=1".parse::<OsMix>().is_err());
        assert!("macos=0".parse::<OsMix>().is_err());
    }

    trait OrDefault {
        fn unwrap_or_default_mix(self) -> OsMix;
    }
    impl OrDefault for Result<OsMix, String> {
        fn unwrap_or_default_mix(self) -> OsMix {
            self.unwrap()
        }
    }

    #[test]
    fn details_are_strings_and_identities_unique() {
        let a = Machine::new(1, &OsMix::default(), 7);
        let b = Machine::new(2, &OsMix::default(), 7);
        assert_ne!(a.hardware_uuid, b.hardware_uuid);
        let d = a.host_details();
        for (_, table) in d.as_object().into_iter().flatten() {
            for (_, v) in table.as_object().into_iter().flatten() {
                assert!(v.is_string());
            }
        }
    }
}
