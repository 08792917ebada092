//! `gatehouse ctl`'s command line: the commands and their arguments.

use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Args, Debug)]
pub struct CtlArgs {
    /// The API: `https://host:8444` (default: the one `--data`'s server
    /// listens on, else `https://127.0.0.1:8444`).
    #[arg(long, env = "GATEHOUSE_URL")]
    pub url: Option<String>,
    /// A local server's data directory: the API URL, the admin token and
    /// the CA come from it unless given (`endpoints.json`,
    /// `secrets/admin_token`, `tls/ca.pem`).
    #[arg(long, env = "GATEHOUSE_DATA")]
    pub data: Option<PathBuf>,
    /// An API token (a user's, or the bootstrap admin token).
    #[arg(long, env = "GATEHOUSE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Read the token from this file (e.g. gatehouse-data/secrets/admin_token).
    #[arg(long, env = "GATEHOUSE_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// CA bundle the API's certificate chains to, e.g.
    /// gatehouse-data/tls/ca.pem (default: `--data`'s CA, else the
    /// system's roots).
    #[arg(long, env = "GATEHOUSE_CA")]
    pub ca: Option<PathBuf>,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub what: What,
}

#[derive(Subcommand, Debug)]
pub enum What {
    /// The caller's name and role.
    Whoami,
    #[command(subcommand)]
    Hosts(Hosts),
    #[command(subcommand)]
    Queries(Queries),
    #[command(subcommand)]
    Schedules(Schedules),
    /// Options, decorators and file paths by label (define them with
    /// `apply`: kind `label_config`).
    #[command(subcommand, name = "label-configs")]
    LabelConfigs(ByLabel),
    /// Dynamic labels (define them with `apply`: kind `label_query`).
    #[command(subcommand, name = "label-queries")]
    LabelQueries(ByLabel),
    /// Stored result lines of scheduled queries, by host and/or query.
    Results {
        /// Host id.
        #[arg(long)]
        host: Option<String>,
        /// Scheduled query name as the agent logs it (e.g. `pack_inventory_users`).
        #[arg(long)]
        query: Option<String>,
        /// Only lines of the last this many minutes.
        #[arg(long)]
        since_minutes: Option<u64>,
        /// Newest lines first.
        #[arg(long)]
        newest: bool,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Continue after a previous page (the cursor it printed).
        #[arg(long)]
        after: Option<String>,
    },
    /// Live queries.
    #[command(subcommand)]
    Query(LiveQuery),
    #[command(subcommand)]
    Campaigns(Campaigns),
    /// File carves: list (with host name and path), one carve, download.
    #[command(subcommand)]
    Carves(Carves),
    #[command(subcommand)]
    Users(Users),
    #[command(subcommand)]
    Tokens(Tokens),
    #[command(subcommand, name = "enroll-secrets")]
    EnrollSecrets(EnrollSecrets),
    /// Rules (define them with `apply`: kind `rule`).
    #[command(subcommand)]
    Rules(Rules),
    /// Alert history, newest first.
    Alerts {
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Continue after a previous page (the cursor it printed).
        #[arg(long)]
        after: Option<String>,
    },
    /// Webhook deliveries that failed every attempt.
    #[command(subcommand, name = "dead-letters")]
    DeadLetters(DeadLetters),
    /// Log destinations (`[[destinations]]` in the configuration file, or
    /// defined here).
    #[command(subcommand)]
    Destinations(Destinations),
    /// The audit log, newest first.
    Audit {
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Continue after a previous page (the cursor it printed).
        #[arg(long)]
        after: Option<String>,
        /// Only what this user did.
        #[arg(long)]
        actor: Option<String>,
        /// Only this action (`host.set_labels`) or resource (`host`).
        #[arg(long)]
        action: Option<String>,
        /// Only calls on this target (a host id, a name).
        #[arg(long)]
        target: Option<String>,
        /// Only this outcome: accepted, denied, failed or pending.
        #[arg(long)]
        outcome: Option<String>,
        /// Only the last N minutes.
        #[arg(long)]
        since_minutes: Option<u64>,
    },
    /// Makes the server's queries, schedules, label configs and rules match the
    /// YAML specs in DIR (`kind`, `name`, `spec` per document): shows the
    /// difference and changes only what differs; nothing is deleted.
    Apply {
        /// A spec file or a directory of them (`*.yaml`, `*.yml`; not its
        /// subdirectories); repeat for more.
        #[arg(short = 'f', long = "filename", required = true)]
        paths: Vec<PathBuf>,
        /// Show what would change, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Exports definitions as the specs `apply` reads.
    Get {
        /// queries, schedules, label-configs, label-queries, rules, users
        /// (admin) or all (every kind but users).
        kind: String,
        /// yaml or json.
        #[arg(short = 'o', long = "output", default_value = "yaml")]
        output: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum Hosts {
    List {
        #[arg(long)]
        label: Option<String>,
        #[arg(long)]
        platform: Option<String>,
        #[arg(long)]
        online: Option<bool>,
        /// Text in the hostname, identifier, id or last IP.
        #[arg(long)]
        search: Option<String>,
        /// Only hosts not seen for this many minutes (stale hosts).
        #[arg(long)]
        silent_for: Option<u64>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Continue after a previous page (the cursor it printed).
        #[arg(long)]
        after: Option<String>,
        /// Order: id (the default), hostname (A to Z) or last_seen (most
        /// recent check-in first).
        #[arg(long, value_parser = ["id", "hostname", "last_seen"])]
        sort: Option<String>,
    },
    Get {
        id: String,
    },
    /// Forget a host (its agent must enroll again to come back).
    Delete {
        id: String,
    },
    /// The config the host is served.
    Config {
        id: String,
    },
    /// Replace the host's operator labels.
    Label {
        id: String,
        labels: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum Queries {
    List,
    Put {
        name: String,
        sql: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    Delete {
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum ByLabel {
    List,
    Delete { label: String },
}

#[derive(Subcommand, Debug)]
pub enum Schedules {
    List,
    /// Create or replace a scheduled query.
    Put {
        name: String,
        /// The saved query it runs.
        #[arg(long)]
        query: String,
        /// Seconds between runs (1 to 604800).
        #[arg(long)]
        interval: u32,
        /// Log every run's full result instead of what changed.
        #[arg(long)]
        snapshot: bool,
        /// Do not log rows that disappeared (differential only).
        #[arg(long)]
        no_removed: bool,
        /// Hosts with any of these labels run it (comma-separated).
        #[arg(long, value_delimiter = ',', required = true)]
        labels: Vec<String>,
        /// Deliver it inside this pack (logged as `pack_<pack>_<name>`).
        #[arg(long)]
        pack: Option<String>,
        /// osquery's platform filter, e.g. `darwin,linux`.
        #[arg(long)]
        platform: Option<String>,
        /// Minimum osquery version.
        #[arg(long)]
        version: Option<String>,
        /// Percentage of hosts that run it (1-100).
        #[arg(long)]
        shard: Option<u8>,
    },
    Delete {
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum LiveQuery {
    /// Runs SQL on the targets and follows the answers. Exit status: 0
    /// when every targeted host answered with rows (or none), 3 when some
    /// hosts answered with an error, 4 when some never answered within
    /// the wait, 5 for both (the answers are printed in every case).
    Run {
        sql: String,
        /// Targets, comma-separated: `all`, `label:NAME`, `platform:linux`,
        /// `host:ID-OR-NAME`, or a bare name (a label, or a host by id,
        /// hostname or host identifier; one that could be either is refused).
        #[arg(long, value_delimiter = ',', required = true)]
        targets: Vec<String>,
        /// Stop following after this many seconds (the campaign goes on
        /// for offline hosts until it expires).
        #[arg(long, default_value_t = 60)]
        wait: u64,
        /// Seconds the campaign waits for offline hosts.
        #[arg(long)]
        expires_in: Option<u64>,
    },
}

#[derive(Subcommand, Debug)]
pub enum Campaigns {
    List {
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Continue after a previous page (the cursor it printed).
        #[arg(long)]
        after: Option<String>,
    },
    Get {
        id: String,
    },
    Results {
        id: String,
    },
    /// Stop a running campaign: hosts that have not answered are no
    /// longer asked (its creator or an admin).
    Cancel {
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum Carves {
    List {
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Continue after a previous page (the cursor it printed).
        #[arg(long)]
        after: Option<String>,
    },
    Get {
        /// The carve's session id (from `carves list`).
        id: String,
    },
    /// Save a complete carve's archive (checked against its SHA-256).
    Download {
        id: String,
        /// Where to write it (default: `<carve id>.tar`, or `.tar.zst`
        /// when the agent compressed it).
        #[arg(long, short = 'o')]
        output: Option<std::path::PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum Users {
    List,
    Create {
        name: String,
        role: String,
    },
    /// Change the role, or disable/enable.
    Update {
        name: String,
        #[arg(long)]
        role: Option<String>,
        #[arg(long)]
        disabled: Option<bool>,
    },
    /// Set a person's console password (12 characters or more), read from
    /// the file, else from standard input (its first line).
    SetPassword {
        name: String,
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// Print a one-time link (valid 72 h) with which a person sets their
    /// console password and signs in.
    Invite {
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum Tokens {
    List,
    /// Prints the secret once.
    Create {
        user: String,
        #[arg(long, default_value = "")]
        description: String,
        #[arg(long)]
        expires_in: Option<u64>,
    },
    Revoke {
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum Rules {
    List,
    Delete {
        name: String,
    },
    /// Turn a rule on.
    Enable {
        name: String,
    },
    /// Turn a rule off (it stays defined; no alerts until enabled).
    Disable {
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum Destinations {
    /// Each one's cursor, lag, delivered, failed, dropped, missed lines
    /// and last error.
    List,
    /// Stop delivering (it falls behind) until resumed or restarted.
    Pause { name: String },
    /// Deliver again; it catches up.
    Resume { name: String },
    /// Deliver again from the oldest retained line, or from a time.
    Replay {
        name: String,
        /// From the oldest line the forward log retains.
        #[arg(long, conflicts_with = "since_minutes")]
        oldest: bool,
        /// From the lines stored in the last this many minutes.
        #[arg(long, required_unless_present = "oldest")]
        since_minutes: Option<u64>,
    },
    /// Define (or redefine) a destination from a file holding one
    /// `[[destinations]]` entry without its name, as TOML (`*.toml`) or
    /// JSON; it starts at once (admins).
    Put {
        name: String,
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Remove a destination defined through the API (admins).
    Delete { name: String },
}

#[derive(Subcommand, Debug)]
pub enum DeadLetters {
    List,
    /// Send it again now; it leaves the list once delivered.
    Redrive {
        id: String,
    },
    /// Drop it without sending.
    Delete {
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum EnrollSecrets {
    List,
    /// Prints the value once.
    Create {
        id: String,
        #[arg(long, value_delimiter = ',')]
        labels: Vec<String>,
        #[arg(long)]
        expires_in: Option<u64>,
    },
    Revoke {
        id: String,
    },
}
