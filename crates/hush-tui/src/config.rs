//! `HOME/tui.toml`: timestamp format, mouse, bell and notifications, colours and key
//! bindings. The documented default (`crates/hush-tui/tui.toml`) is compiled in and is
//! what a missing file or key means, so the documentation and the defaults agree.
use std::path::Path;
use std::str::FromStr;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::style::Color;
use serde::Deserialize;
use time::format_description::OwnedFormatItem;

/// The documented default file.
pub const DEFAULT: &str = include_str!("../tui.toml");

/// What a bound key does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAction {
    Next,
    Prev,
    PageUp,
    PageDown,
    Top,
    Bottom,
    Quit,
}

/// A desktop notification escape the terminal understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notify {
    Off,
    Osc777,
    Osc9,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Colors {
    pub time: Color,
    pub own: Color,
    pub notice: Color,
    pub security: Color,
    pub mention: Color,
    pub pending: Color,
    pub nicks: Vec<Color>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub timestamp: OwnedFormatItem,
    pub mouse: bool,
    pub bell: bool,
    pub notify: Notify,
    pub colors: Colors,
    keys: Vec<(KeyCode, KeyModifiers, KeyAction)>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Raw {
    timestamp: Option<String>,
    mouse: Option<bool>,
    bell: Option<bool>,
    notify: Option<String>,
    #[serde(default)]
    colors: RawColors,
    #[serde(default)]
    keys: RawKeys,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawColors {
    time: Option<String>,
    own: Option<String>,
    notice: Option<String>,
    security: Option<String>,
    mention: Option<String>,
    pending: Option<String>,
    nicks: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawKeys {
    next: Option<Vec<String>>,
    prev: Option<Vec<String>>,
    page_up: Option<Vec<String>>,
    page_down: Option<Vec<String>>,
    top: Option<Vec<String>>,
    bottom: Option<Vec<String>>,
    quit: Option<Vec<String>>,
}

fn color(what: &str, s: &str) -> Result<Color, String> {
    Color::from_str(s).map_err(|_| format!("{what}: {s:?} is not a colour"))
}

/// `ctrl-n`, `alt-right`, `pageup`, `shift-tab`, `x`, `f5`.
pub fn parse_key(s: &str) -> Result<(KeyCode, KeyModifiers), String> {
    let bad = || format!("{s:?} is not a key");
    let mut mods = KeyModifiers::NONE;
    let mut rest = s.trim();
    loop {
        let lower = rest.to_ascii_lowercase();
        let (m, n) = if lower.starts_with("ctrl-") {
            (KeyModifiers::CONTROL, 5)
        } else if lower.starts_with("alt-") {
            (KeyModifiers::ALT, 4)
        } else if lower.starts_with("shift-") {
            (KeyModifiers::SHIFT, 6)
        } else {
            break;
        };
        mods |= m;
        rest = &rest[n..];
    }
    let name = rest.to_ascii_lowercase();
    let code = match name.as_str() {
        "tab" => KeyCode::Tab,
        "backtab" => KeyCode::BackTab,
        "enter" => KeyCode::Enter,
        "esc" => KeyCode::Esc,
        "up" => KeyCode::Up,
        "down" => KeyCode::Down,
        "left" => KeyCode::Left,
        "right" => KeyCode::Right,
        "home" => KeyCode::Home,
        "end" => KeyCode::End,
        "pageup" => KeyCode::PageUp,
        "pagedown" => KeyCode::PageDown,
        "insert" => KeyCode::Insert,
        "delete" => KeyCode::Delete,
        "space" => KeyCode::Char(' '),
        f if f.len() > 1 && f.starts_with('f') => {
            let n: u8 = f[1..].parse().map_err(|_| bad())?;
            if !(1..=12).contains(&n) {
                return Err(bad());
            }
            KeyCode::F(n)
        }
        _ => {
            let mut chars = rest.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) if !c.is_control() => KeyCode::Char(c.to_ascii_lowercase()),
                _ => return Err(bad()),
            }
        }
    };
    Ok((code, mods))
}

/// What the terminal reports, in the form bindings are written: Shift is part of an
/// upper-case letter and of BackTab, so it is dropped there.
fn normal(key: KeyEvent) -> (KeyCode, KeyModifiers) {
    let mut mods =
        key.modifiers & (KeyModifiers::CONTROL | KeyModifiers::ALT | KeyModifiers::SHIFT);
    let code = match key.code {
        KeyCode::Char(c) if c.is_ascii_uppercase() => {
            mods.remove(KeyModifiers::SHIFT);
            KeyCode::Char(c.to_ascii_lowercase())
        }
        KeyCode::Char(c) => {
            if !c.is_ascii_alphabetic() {
                mods.remove(KeyModifiers::SHIFT);
            }
            KeyCode::Char(c)
        }
        KeyCode::BackTab => {
            mods.remove(KeyModifiers::SHIFT);
            KeyCode::BackTab
        }
        other => other,
    };
    (code, mods)
}

impl Default for Config {
    fn default() -> Self {
        // The compiled-in file is checked by a unit test; should it ever fail, the
        // built-in values below still make a working client.
        Config::parse("").unwrap_or_else(|_| Config {
            timestamp: OwnedFormatItem::Compound(Box::new([])),
            mouse: true,
            bell: true,
            notify: Notify::Off,
            colors: Colors {
                time: Color::DarkGray,
                own: Color::Cyan,
                notice: Color::Yellow,
                security: Color::Red,
                mention: Color::LightMagenta,
                pending: Color::DarkGray,
                nicks: vec![Color::Green],
            },
            keys: Vec::new(),
        })
    }
}

impl Config {
    /// Reads `path`; a missing file is the default.
    pub fn load(path: &Path) -> Result<Config, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// `text` over the documented default.
    pub fn parse(text: &str) -> Result<Config, String> {
        let base: Raw = toml::from_str(DEFAULT).map_err(|e| format!("built-in default: {e}"))?;
        let user: Raw = toml::from_str(text).map_err(|e| e.to_string())?;
        let missing = |k: &str| format!("built-in default lacks {k}");
        let timestamp = user
            .timestamp
            .or(base.timestamp)
            .ok_or_else(|| missing("timestamp"))?;
        let timestamp = time::format_description::parse_owned::<2>(&timestamp)
            .map_err(|e| format!("timestamp {timestamp:?}: {e}"))?;
        let notify = match user
            .notify
            .or(base.notify)
            .ok_or_else(|| missing("notify"))?
            .as_str()
        {
            "off" => Notify::Off,
            "osc777" => Notify::Osc777,
            "osc9" => Notify::Osc9,
            other => {
                return Err(format!(
                    "notify: {other:?} is not one of \"off\", \"osc777\", \"osc9\""
                ));
            }
        };
        let (u, b) = (user.colors, base.colors);
        let pick = |what: &str, u: Option<String>, b: Option<String>| {
            color(what, &u.or(b).ok_or_else(|| missing(what))?)
        };
        let nicks = u
            .nicks
            .or(b.nicks)
            .ok_or_else(|| missing("nicks"))?
            .iter()
            .map(|s| color("colors.nicks", s))
            .collect::<Result<Vec<_>, _>>()?;
        if nicks.is_empty() {
            return Err("colors.nicks: give at least one colour".into());
        }
        let colors = Colors {
            time: pick("colors.time", u.time, b.time)?,
            own: pick("colors.own", u.own, b.own)?,
            notice: pick("colors.notice", u.notice, b.notice)?,
            security: pick("colors.security", u.security, b.security)?,
            mention: pick("colors.mention", u.mention, b.mention)?,
            pending: pick("colors.pending", u.pending, b.pending)?,
            nicks,
        };
        let (u, b) = (user.keys, base.keys);
        let mut keys = Vec::new();
        for (name, action, mine, default) in [
            ("next", KeyAction::Next, u.next, b.next),
            ("prev", KeyAction::Prev, u.prev, b.prev),
            ("page_up", KeyAction::PageUp, u.page_up, b.page_up),
            ("page_down", KeyAction::PageDown, u.page_down, b.page_down),
            ("top", KeyAction::Top, u.top, b.top),
            ("bottom", KeyAction::Bottom, u.bottom, b.bottom),
            ("quit", KeyAction::Quit, u.quit, b.quit),
        ] {
            for k in mine.or(default).ok_or_else(|| missing(name))? {
                let (code, mods) = parse_key(&k).map_err(|e| format!("keys.{name}: {e}"))?;
                if mods == KeyModifiers::NONE && matches!(code, KeyCode::Char(_)) {
                    return Err(format!(
                        "keys.{name}: {k:?} would stop that letter from being typed"
                    ));
                }
                keys.push((code, mods, action));
            }
        }
        Ok(Config {
            timestamp,
            mouse: user.mouse.or(base.mouse).ok_or_else(|| missing("mouse"))?,
            bell: user.bell.or(base.bell).ok_or_else(|| missing("bell"))?,
            notify,
            colors,
            keys,
        })
    }

    /// The action bound to `key`, if any (the first binding wins).
    pub fn action(&self, key: KeyEvent) -> Option<KeyAction> {
        let (code, mods) = normal(key);
        self.keys
            .iter()
            .find(|(c, m, _)| *c == code && *m == mods)
            .map(|(_, _, a)| *a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_default_is_the_default() {
        let c = Config::parse("").unwrap();
        assert!(c.mouse && c.bell);
        assert_eq!(c.notify, Notify::Off);
        assert_eq!(c.colors.own, Color::Cyan);
        assert_eq!(c.colors.nicks.len(), 8);
        let press = |code, mods| KeyEvent::new(code, mods);
        assert_eq!(
            c.action(press(KeyCode::Char('n'), KeyModifiers::CONTROL)),
            Some(KeyAction::Next)
        );
        assert_eq!(
            c.action(press(KeyCode::BackTab, KeyModifiers::SHIFT)),
            Some(KeyAction::Prev)
        );
        assert_eq!(
            c.action(press(KeyCode::Right, KeyModifiers::ALT)),
            Some(KeyAction::Next)
        );
        assert_eq!(
            c.action(press(KeyCode::Char('n'), KeyModifiers::NONE)),
            None
        );
        assert_eq!(
            c.action(press(KeyCode::End, KeyModifiers::CONTROL)),
            Some(KeyAction::Bottom)
        );
    }

    #[test]
    fn a_file_overrides_what_it_names_and_refuses_what_it_gets_wrong() {
        let c = Config::parse(
            "notify = \"osc9\"\ntimestamp = \"[hour]:[minute]:[second]\"\n[colors]\nown = \"#ff8800\"\n[keys]\nnext = [\"f2\", \"ctrl-shift-x\"]\n",
        )
        .unwrap();
        assert_eq!(c.notify, Notify::Osc9);
        assert_eq!(c.colors.own, Color::Rgb(0xff, 0x88, 0x00));
        assert_eq!(c.colors.notice, Color::Yellow, "the rest stays default");
        let press = |code, mods| KeyEvent::new(code, mods);
        assert_eq!(
            c.action(press(KeyCode::F(2), KeyModifiers::NONE)),
            Some(KeyAction::Next)
        );
        assert_eq!(
            c.action(press(KeyCode::Tab, KeyModifiers::NONE)),
            None,
            "a list replaces the default list"
        );
        assert_eq!(
            c.action(press(KeyCode::Char('p'), KeyModifiers::CONTROL)),
            Some(KeyAction::Prev)
        );
        for (bad, says) in [
            ("colour = 1", "unknown field"),
            ("[colors]\nown = \"plaid\"", "not a colour"),
            ("[keys]\nquit = [\"hyper-q\"]", "not a key"),
            ("[keys]\nquit = [\"q\"]", "stop that letter"),
            ("notify = \"loud\"", "notify"),
            ("timestamp = \"[hour\"", "timestamp"),
            ("[colors]\nnicks = []", "at least one"),
        ] {
            let e = Config::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
