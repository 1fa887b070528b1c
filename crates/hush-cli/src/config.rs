//! `HOME/hush.toml`: defaults for `register` and `login` (PRODUCT.md §4) and for
//! output. Flags win over the file; without either, the server is `127.0.0.1:5535`,
//! output is text and `history` shows 100 messages.
use std::path::Path;

use anyhow::Context;
use serde::Deserialize;

/// Where `hush register` and `hush login` go when neither a flag nor the file says.
pub const DEFAULT_SERVER: &str = "127.0.0.1:5535";

/// The file's name inside the home.
pub const FILE: &str = "hush.toml";

#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `HOST:PORT` of the server.
    pub server: Option<String>,
    /// The account's username.
    pub username: Option<String>,
    /// `"text"` or `"json"`: what commands with `--json` print without a flag.
    pub output: Option<Output>,
    /// How many messages `hush history` shows without `--limit`.
    pub history_limit: Option<u32>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Output {
    Text,
    Json,
}

/// `hush history` without `--limit` or `history_limit`.
pub const HISTORY_LIMIT: u32 = 100;

impl Config {
    /// Reads `home/hush.toml`; a missing file is an empty config, a broken one an error
    /// naming it.
    pub fn load(home: &Path) -> anyhow::Result<Config> {
        let path = home.join(FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Self::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    fn parse(text: &str) -> anyhow::Result<Config> {
        let config: Config =
            toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.message()))?;
        Ok(config)
    }

    /// Whether commands print JSON when `--json` is not given (`text`: `--text`).
    pub fn json(&self, text: bool) -> bool {
        !text && self.output == Some(Output::Json)
    }

    /// `hush history`'s count: the flag, the file, or the default.
    pub fn history_limit(&self, flag: Option<u32>) -> u32 {
        flag.or(self.history_limit).unwrap_or(HISTORY_LIMIT).max(1)
    }

    /// The server to enrol with: the flag, the file, or the default.
    pub fn server(&self, flag: Option<String>) -> String {
        flag.or_else(|| self.server.clone())
            .unwrap_or_else(|| DEFAULT_SERVER.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_then_the_file_then_the_default() {
        let empty = Config::default();
        assert_eq!(empty.server(None), DEFAULT_SERVER);
        let file = Config::parse("server = \"chat.example:6000\"\nusername = \"ann\"\n").unwrap();
        assert_eq!(file.server(None), "chat.example:6000");
        assert_eq!(file.server(Some("other:1".into())), "other:1");
        assert_eq!(file.username.as_deref(), Some("ann"));
    }

    #[test]
    fn output_defaults_come_from_the_file_and_yield_to_flags() {
        let empty = Config::default();
        assert!(!empty.json(false));
        assert_eq!(empty.history_limit(None), HISTORY_LIMIT);
        let file = Config::parse("output = \"json\"\nhistory_limit = 20\n").unwrap();
        assert!(file.json(false));
        assert!(!file.json(true), "--text wins");
        assert_eq!(file.history_limit(None), 20);
        assert_eq!(file.history_limit(Some(5)), 5);
        let e = Config::parse("output = \"yaml\"").unwrap_err().to_string();
        assert!(e.contains("unknown variant"), "{e}");
    }

    #[test]
    fn unknown_keys_and_bad_types_are_explained() {
        let e = Config::parse("sever = \"x\"").unwrap_err().to_string();
        assert!(e.contains("unknown field `sever`"), "{e}");
        let e = Config::parse("server = 5").unwrap_err().to_string();
        assert!(e.contains("invalid type"), "{e}");
    }
}
