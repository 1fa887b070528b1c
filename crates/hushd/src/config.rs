//! hushd's settings: a TOML file parsed raw, flags laid over it, then resolved into one
//! validated [`Settings`]. `hushd config example` prints [`example`], generated from the
//! same defaults the server uses.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use hush_server::{Limits, RegistrationMode, ServerConfig};
pub use hush_store_postgres::url::DatabaseUrl;
use serde::Deserialize;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:5535";
pub const DEFAULT_DATA_DIR: &str = "./hushd-data";

/// The config file as written; every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<DatabaseUrl>,
    /// PostgreSQL connections per node (default 16).
    pub database_pool: Option<u32>,
    pub registration: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub log: Option<String>,
    /// P556: the lobby's name (without '#'); "" turns it off.
    pub lobby: Option<String>,
    /// Every limit, defaulted one by one (see `hush_server::Limits`).
    #[serde(default)]
    pub limits: Limits,
}

/// Where the server keeps its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    Sqlite(PathBuf),
    Postgres(DatabaseUrl),
}

/// Everything hushd runs with, validated.
#[derive(Debug)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database: Database,
    /// PostgreSQL connections per node.
    pub database_pool: u32,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub log: String,
    pub server: ServerConfig,
}

/// Flags that override the file.
#[derive(Debug, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<DatabaseUrl>,
    pub registration: Option<String>,
    pub log: Option<String>,
}

pub fn load_file(path: &Path) -> anyhow::Result<RawConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
}

pub fn parse_database_url(given: &DatabaseUrl) -> anyhow::Result<Database> {
    let url = given.expose();
    if let Some(path) = url.strip_prefix("sqlite:") {
        let path = path.strip_prefix("//").unwrap_or(path);
        if path.is_empty() {
            bail!("database URL {url:?} names no file");
        }
        Ok(Database::Sqlite(PathBuf::from(path)))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Database::Postgres(given.clone()))
    } else {
        bail!(
            "unsupported database URL {:?}: use sqlite:PATH or postgres://...",
            given.redacted()
        )
    }
}

pub fn resolve(raw: RawConfig, flags: Overrides) -> anyhow::Result<Settings> {
    let listen_text = flags
        .listen
        .or(raw.listen)
        .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    let listen: SocketAddr = listen_text.parse().with_context(|| {
        format!("--listen {listen_text:?} is not an address like 127.0.0.1:5535")
    })?;
    let data_dir = flags
        .data_dir
        .or(raw.data_dir)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    let database = match flags.database_url.or(raw.database_url) {
        Some(url) => parse_database_url(&url)?,
        None => Database::Sqlite(data_dir.join("hushd.db")),
    };
    let registration: RegistrationMode = flags
        .registration
        .or(raw.registration)
        .unwrap_or_else(|| "open".to_owned())
        .parse()
        .map_err(anyhow::Error::msg)?;
    let tls = match (raw.tls_cert, raw.tls_key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => bail!("tls_cert and tls_key must be given together"),
    };
    let limits = raw.limits;
    limits.validate().map_err(anyhow::Error::msg)?;
    let lobby = match raw.lobby.as_deref() {
        None => Some("lobby"),
        Some("") => None,
        Some(name) => Some(name.trim_start_matches('#')),
    }
    .map(hush_proto::content::GroupName::parse)
    .transpose()
    .map_err(|e| anyhow::anyhow!("lobby: {e}"))?;
    Ok(Settings {
        listen,
        data_dir,
        database,
        database_pool: raw.database_pool.unwrap_or(16).clamp(2, 1_000),
        tls,
        log: flags.log.or(raw.log).unwrap_or_else(|| "info".to_owned()),
        server: ServerConfig {
            registration,
            limits,
            lobby,
        },
    })
}

/// A commented example config with every setting at its default.
pub fn example() -> String {
    format!(
        r#"# hushd configuration. Every setting is optional; flags override this file.

# Address to accept client connections on.
listen = "{DEFAULT_LISTEN}"

# Where hushd keeps its database and TLS identity. Created on first start.
data_dir = "{DEFAULT_DATA_DIR}"

# sqlite:PATH (default: hushd.db inside data_dir) or postgres://user@host/db for a cluster.
# database_url = "sqlite:{DEFAULT_DATA_DIR}/hushd.db"
# Every node of a cluster names the same PostgreSQL database, and presents the TLS
# identity kept in it (docs/operators/cluster.md). The password may also come from
# the HUSHD_DATABASE_URL variable, keeping it out of this file and the process list.
# database_url = "postgres://hush:PASSWORD@db.example:5432/hush"

# PostgreSQL connections per node.
# database_pool = 16

# Who may create accounts: "open", "invite" (codes from `hushd invite create`) or "closed".
registration = "open"

# A CA-signed certificate chain and key (PEM) instead of the self-generated identity.
# Clients pin the public key, so keep the key when renewing the certificate.
# tls_cert = "/etc/hushd/fullchain.pem"
# tls_key = "/etc/hushd/privkey.pem"

# Log filter, as in RUST_LOG: "info", "debug", "hush_server=debug,info".
log = "info"

# The open channel every new account is offered (`/join #lobby`); "" for none.
lobby = "lobby"

[limits]
{}"#,
        limits_example()
    )
}

/// The `[limits]` table at its defaults, each setting with its meaning.
fn limits_example() -> String {
    let defaults = toml::Table::try_from(Limits::default()).unwrap_or_default();
    let mut out = String::new();
    for (key, doc) in Limits::documented() {
        let value = defaults
            .get(*key)
            .map(|v| v.to_string())
            .unwrap_or_default();
        out.push_str(&format!("# {doc}\n{key} = {value}\n"));
    }
    out
}

/// Parses a duration like `90s`, `30m`, `24h`, `7d` or `2w`.
pub fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .with_context(|| format!("duration {s:?} must start with a number, like 24h"))?;
    let unit_secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => bail!("duration {s:?} needs a unit: s, m, h, d or w (like 24h)"),
    };
    n.checked_mul(unit_secs)
        .map(Duration::from_secs)
        .context("duration is too long")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_parses_back_to_the_defaults() {
        let raw: RawConfig = toml::from_str(&example()).unwrap();
        let s = resolve(raw, Overrides::default()).unwrap();
        let d = resolve(RawConfig::default(), Overrides::default()).unwrap();
        assert_eq!(s.listen, d.listen);
        assert_eq!(s.data_dir, d.data_dir);
        assert_eq!(s.database, d.database);
        assert_eq!(s.server.registration, RegistrationMode::Open);
        assert_eq!(s.server.limits.max_frame_len, d.server.limits.max_frame_len);
        assert_eq!(s.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(
            toml::Table::try_from(&s.server.limits).unwrap(),
            toml::Table::try_from(&d.server.limits).unwrap(),
            "every limit in the example is at its default"
        );
    }

    #[test]
    fn every_limit_is_in_the_example_with_its_meaning() {
        let keys: std::collections::BTreeSet<String> = toml::Table::try_from(Limits::default())
            .unwrap()
            .keys()
            .cloned()
            .collect();
        let documented: std::collections::BTreeSet<String> = Limits::documented()
            .iter()
            .map(|(k, _)| k.to_string())
            .collect();
        assert_eq!(keys, documented);
        let example = example();
        for key in keys {
            assert!(example.contains(&format!("\n{key} = ")), "{key} missing");
        }
    }

    #[test]
    fn p556_the_lobby_is_on_by_default_and_may_be_renamed_or_turned_off() {
        let lobby = |text: &str| {
            let raw: RawConfig = toml::from_str(text).unwrap();
            resolve(raw, Overrides::default()).map(|s| s.server.lobby.map(|l| l.to_string()))
        };
        assert_eq!(lobby("").unwrap().as_deref(), Some("#lobby"));
        assert_eq!(lobby("lobby = \"hall\"").unwrap().as_deref(), Some("#hall"));
        assert_eq!(
            lobby("lobby = \"#hall\"").unwrap().as_deref(),
            Some("#hall")
        );
        assert_eq!(lobby("lobby = \"\"").unwrap(), None);
        let bad = lobby("lobby = \"Not A Name\"").unwrap_err().to_string();
        assert!(bad.contains("lobby"), "{bad}");
    }

    #[test]
    fn limits_are_read_and_checked() {
        let raw: RawConfig =
            toml::from_str("[limits]\nmailbox_max_entries = 5\nidle_timeout_secs = 9").unwrap();
        let s = resolve(raw, Overrides::default()).unwrap();
        assert_eq!(s.server.limits.mailbox_max_entries, 5);
        assert_eq!(s.server.limits.idle_timeout, Duration::from_secs(9));
        assert_eq!(
            s.server.limits.devices_per_account, 20,
            "others keep defaults"
        );
        let bad: RawConfig = toml::from_str("[limits]\nrequests_per_second = 0").unwrap();
        let e = resolve(bad, Overrides::default()).unwrap_err().to_string();
        assert!(e.contains("requests_per_second"), "{e}");
        assert!(toml::from_str::<RawConfig>("[limits]\nmailbox_entries = 1").is_err());
    }

    #[test]
    fn flags_override_the_file() {
        let raw: RawConfig =
            toml::from_str("listen = \"127.0.0.1:1\"\nregistration = \"closed\"").unwrap();
        let s = resolve(
            raw,
            Overrides {
                listen: Some("127.0.0.1:2".into()),
                data_dir: Some("/tmp/x".into()),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(s.listen.port(), 2);
        assert_eq!(s.server.registration, RegistrationMode::Closed);
        assert_eq!(s.database, Database::Sqlite("/tmp/x/hushd.db".into()));
    }

    #[test]
    fn bad_settings_are_explained() {
        let e = resolve(
            RawConfig::default(),
            Overrides {
                registration: Some("maybe".into()),
                ..Default::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("open, invite or closed"), "{e}");
        assert!(
            toml::from_str::<RawConfig>("lisen = 1").is_err(),
            "unknown keys refused"
        );
        assert!(parse_database_url(&DatabaseUrl::new("mysql://x")).is_err());
    }

    #[test]
    fn database_passwords_never_show() {
        // Redaction itself is hush_store_postgres::url's; here: settings keep it.
        for url in [
            "postgres://hush:s3cret@db:5432/hush",
            "postgres://hush@db/hush?password=s3cret&sslmode=require",
        ] {
            let u = DatabaseUrl::new(url);
            let settings = resolve(
                RawConfig::default(),
                Overrides {
                    database_url: Some(u.clone()),
                    ..Default::default()
                },
            )
            .unwrap();
            assert!(!format!("{settings:?}").contains("s3cret"), "{settings:?}");
            assert_eq!(settings.database, Database::Postgres(u));
        }
        let raw: RawConfig = toml::from_str(r#"database_url = "postgres://a:s3cret@b/c""#).unwrap();
        assert!(!format!("{raw:?}").contains("s3cret"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(
            parse_duration("2w").unwrap(),
            Duration::from_secs(1_209_600)
        );
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }
}
