//! The interactive client's state and input handling, apart from drawing and from the
//! network, so both are tested without a terminal (ratatui's `TestBackend`).
//!
//! Scrolling is counted in rendered rows (after wrapping at the pane's width) up from
//! the newest row, so the newest line is at the bottom unless the user scrolled up, and
//! lines loaded above (older history) or arriving below do not move what is in view.
use std::cell::Cell;
use std::collections::BTreeSet;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseEvent, MouseEventKind};
use hush_client::events::{Event, MessageState};

use crate::config::{Config, KeyAction};
use crate::wrap::printable;

/// The pseudo-conversation that holds notices and help.
pub const STATUS: &str = "*status*";
/// History events read per conversation at start.
pub const FIRST_LOAD: u32 = 100;
/// More history events read each time the user scrolls past the oldest loaded line.
pub const HISTORY_PAGE: u32 = 200;
/// Rows one mouse wheel step scrolls.
const WHEEL_ROWS: usize = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineKind {
    Message,
    /// `/me waves`: shown as `* ann waves`.
    Action,
    Notice,
    Security,
    /// P560: a file offered; `/save` fetches it.
    File,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Milliseconds since the epoch.
    pub at_ms: i64,
    pub from: Option<String>,
    /// Printable: control characters were replaced.
    pub text: String,
    pub kind: LineKind,
    /// An outgoing message's id and delivery state (pending until the server has it).
    pub id: Option<String>,
    pub state: Option<MessageState>,
    /// Names this account's user.
    pub mention: bool,
    /// A file offer's id, for `/save`.
    pub file: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    pub name: String,
    pub unread: u32,
    /// Unread lines that mention this account's user.
    pub mentions: u32,
    pub lines: Vec<Line>,
    /// For a group: how many members its MLS roster has, once read.
    pub members: Option<usize>,
    /// For a group: its members' usernames, once read (for the verification state).
    pub roster: Vec<String>,
    /// How many history events were asked for the last time it was loaded.
    pub loaded: u32,
    /// Every history event is loaded: there is nothing older to ask for.
    pub complete: bool,
    /// Older history was asked for and has not arrived yet.
    pub loading: bool,
    /// This user is no longer in it (left, removed, or it was deleted): its history
    /// stays readable, nothing can be sent.
    pub left: bool,
}

impl Conversation {
    fn new(name: &str) -> Self {
        Conversation {
            name: name.to_owned(),
            unread: 0,
            mentions: 0,
            lines: Vec::new(),
            members: None,
            roster: Vec::new(),
            loaded: 0,
            complete: name == STATUS,
            loading: false,
            left: false,
        }
    }

    /// The title line of the conversation pane: `#team: 5 members`, or the name.
    pub fn title(&self) -> String {
        if self.left {
            return format!("{}: you are no longer in it", self.name);
        }
        match self.members {
            Some(1) => format!("{}: 1 member", self.name),
            Some(n) => format!("{}: {n} members", self.name),
            None => self.name.clone(),
        }
    }

    pub fn is_group(&self) -> bool {
        self.name.starts_with('#')
    }

    fn is_direct(&self) -> bool {
        !self.is_group() && self.name != STATUS
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connection {
    Connecting,
    Online,
    Offline(String),
}

/// What the input asks the network side to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// To a conversation in the list: sent, or kept in the outbox while offline.
    Send {
        target: String,
        text: String,
    },
    /// `/msg USER [TEXT]` to someone not in the list: the user must exist.
    Open {
        user: String,
        text: Option<String>,
    },
    Members(String),
    /// `/file PATH`: send in the background.
    SendFile {
        target: String,
        path: String,
    },
    /// `/save`: fetch an offered file in the background.
    SaveFile {
        file_id: String,
        path: Option<String>,
    },
    /// (Re)load the newest `limit` history events of `target`.
    History {
        target: String,
        limit: u32,
    },
    Shutdown,
    Verify(String),
    /// Join a channel (P553) with what was asked so far.
    Join {
        name: String,
        password: Option<String>,
        code: Option<String>,
    },
    /// Leave a group or channel.
    Part(String),
    Create {
        name: String,
        members: Vec<String>,
    },
    Add {
        group: String,
        users: Vec<String>,
    },
    Remove {
        group: String,
        users: Vec<String>,
    },
    Promote {
        group: String,
        users: Vec<String>,
    },
    Quit,
}

/// What the input line is asking for instead of a message: never echoed, never kept
/// in the input history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ask {
    Password,
    Code,
}

/// A channel join waiting for a secret typed at the input line.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretPrompt {
    pub channel: String,
    pub ask: Ask,
    password: Option<String>,
}

impl std::fmt::Debug for SecretPrompt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretPrompt")
            .field("channel", &self.channel)
            .field("ask", &self.ask)
            .finish_non_exhaustive()
    }
}

pub struct App {
    pub me: String,
    pub server: String,
    pub connection: Connection,
    pub conversations: Vec<Conversation>,
    pub selected: usize,
    pub input: String,
    /// Cursor position in characters.
    pub cursor: usize,
    history: Vec<String>,
    history_pos: Option<usize>,
    /// Rendered rows scrolled up from the newest; 0 follows new lines.
    pub scroll: usize,
    /// Lines that arrived in view below while scrolled up.
    pub new_below: usize,
    /// The message pane's inside (columns, rows) at the last draw.
    pub viewport: Cell<(u16, u16)>,
    /// Ring the terminal bell at the next draw.
    pub bell: bool,
    /// A desktop notification to send at the next draw.
    pub notification: Option<String>,
    /// Contacts whose safety number was verified (marked in the list).
    pub verified: BTreeSet<String>,
    /// Contacts whose key changed since it was verified.
    pub changed: BTreeSet<String>,
    /// A channel join asking for its password or code (input masked).
    pub prompt: Option<SecretPrompt>,
    pub config: Config,
}

/// `(name, usage, what it does)`, for `/help` and `/help NAME`.
const COMMANDS: &[(&str, &str, &str)] = &[
    (
        "msg",
        "/msg USER [TEXT]",
        "open (and write to) a 1:1 conversation; the user must exist",
    ),
    (
        "join",
        "/join #NAME",
        "switch to a group, or join a channel (asks its password and code)",
    ),
    (
        "part",
        "/part [#NAME]",
        "leave the current (or the named) group or channel; also /leave",
    ),
    (
        "create",
        "/create #NAME [USER...]",
        "create a group with you as its admin and these members",
    ),
    ("add", "/add USER...", "add users to the current group"),
    (
        "remove",
        "/remove USER...",
        "remove users from the current group (admins)",
    ),
    (
        "promote",
        "/promote USER...",
        "make members admins of the current group (admins)",
    ),
    ("members", "/members", "list the current group's members"),
    ("me", "/me TEXT", "say what you do: shown as * you TEXT"),
    (
        "history",
        "/history [N]",
        "reload the last N events of this conversation (default 100)",
    ),
    (
        "clear",
        "/clear",
        "clear this pane (history is kept: /history brings it back)",
    ),
    (
        "file",
        "/file PATH",
        "send a file here, encrypted; the transfer runs in the background",
    ),
    (
        "save",
        "/save [N|ID] [PATH]",
        "save the newest file offered here (or the Nth newest, or the one whose id starts with ID) to PATH or the current directory",
    ),
    (
        "verify",
        "/verify USER",
        "show the safety number to compare with USER",
    ),
    (
        "shutdown",
        "/shutdown",
        "stop the server (server admins only)",
    ),
    ("help", "/help [COMMAND]", "this list, or one command"),
    ("exit", "/exit", "quit; also /quit and Ctrl-C"),
];

const KEYS_HELP: &str = "Alt-1..9 pick a conversation; Tab, Ctrl-N/P, Alt-Left/Right switch; PgUp/PgDn page, Home/End (empty input) or Ctrl-Home/End jump, the mouse wheel scrolls; Up/Down recall input";

/// Does `text` name `me`, as a word (`ann`, `@ann`, `Ann:`)?
pub fn mentions(text: &str, me: &str) -> bool {
    text.split(|c: char| !(c.is_alphanumeric() || "_.-@".contains(c)))
        .map(|w| w.trim_start_matches('@').trim_end_matches(['.', '-']))
        .any(|w| w.eq_ignore_ascii_case(me))
}

impl App {
    pub fn new(me: &str, server: &str) -> Self {
        App::with_config(me, server, Config::default())
    }

    pub fn with_config(me: &str, server: &str, config: Config) -> Self {
        let mut app = App {
            me: me.to_owned(),
            server: server.to_owned(),
            connection: Connection::Connecting,
            conversations: vec![Conversation::new(STATUS)],
            selected: 0,
            input: String::new(),
            cursor: 0,
            history: Vec::new(),
            history_pos: None,
            scroll: 0,
            new_below: 0,
            viewport: Cell::new((78, 18)),
            bell: false,
            notification: None,
            verified: Default::default(),
            changed: Default::default(),
            prompt: None,
            config,
        };
        app.notice(
            STATUS,
            "Welcome to hush. /help lists commands; /msg USER starts a conversation.",
        );
        app
    }

    pub fn current(&self) -> &Conversation {
        &self.conversations[self.selected.min(self.conversations.len() - 1)]
    }

    /// The title of the pane in view: the name, a group's member count, and whether a
    /// 1:1 contact's safety number was verified.
    pub fn title(&self) -> String {
        let c = self.current();
        if c.is_group() && !c.left {
            let others: Vec<&String> = c.roster.iter().filter(|u| **u != self.me).collect();
            if others.is_empty() {
                return c.title();
            }
            let changed: Vec<&str> = others
                .iter()
                .filter(|u| self.changed.contains(**u))
                .map(|u| u.as_str())
                .collect();
            let verified = others
                .iter()
                .filter(|u| self.verified.contains(**u))
                .count();
            return if !changed.is_empty() {
                format!("{}, KEY CHANGED: {}", c.title(), changed.join(", "))
            } else if verified == others.len() {
                format!("{}, all verified ✓", c.title())
            } else {
                format!("{}, {verified} of {} verified", c.title(), others.len())
            };
        }
        if !c.is_direct() {
            return c.title();
        }
        if self.changed.contains(&c.name) {
            format!("{}: KEY CHANGED, /verify {}", c.name, c.name)
        } else if self.verified.contains(&c.name) {
            format!("{}: verified ✓", c.name)
        } else {
            format!("{}: not verified (/verify {})", c.name, c.name)
        }
    }

    fn index_of(&mut self, name: &str) -> usize {
        if let Some(i) = self.conversations.iter().position(|c| c.name == name) {
            return i;
        }
        self.conversations.push(Conversation::new(name));
        self.conversations.len() - 1
    }

    pub fn knows(&self, name: &str) -> bool {
        self.conversations.iter().any(|c| c.name == name)
    }

    /// Records a group's member count (from its roster) for its title line.
    pub fn set_members(&mut self, name: &str, count: usize) {
        let i = self.index_of(name);
        self.conversations[i].members = Some(count);
    }

    /// This user is no longer in `name`: its title and input line say so at once.
    pub fn mark_left(&mut self, name: &str) {
        let i = self.index_of(name);
        let c = &mut self.conversations[i];
        c.left = true;
        c.members = None;
        c.roster.clear();
    }

    /// Records a group's roster: its count and who is in it, for the title line.
    pub fn set_roster(&mut self, name: &str, users: Vec<String>) {
        let i = self.index_of(name);
        self.conversations[i].members = Some(users.len());
        self.conversations[i].roster = users;
    }

    /// Shows `name`, creating it if needed, and marks it read.
    pub fn select(&mut self, name: &str) {
        let i = self.index_of(name);
        self.selected = i;
        self.conversations[i].unread = 0;
        self.conversations[i].mentions = 0;
        self.scroll = 0;
        self.new_below = 0;
    }

    /// A notice line in `conversation`.
    pub fn notice(&mut self, conversation: &str, text: &str) {
        let i = self.index_of(conversation);
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        self.push(
            i,
            Line {
                at_ms,
                from: None,
                text: printable(text),
                kind: LineKind::Notice,
                id: None,
                state: None,
                mention: false,
                file: None,
            },
        );
    }

    /// A notice in the conversation in view.
    pub fn say(&mut self, text: &str) {
        let name = self.current().name.clone();
        self.notice(&name, text);
    }

    /// Appends a line; while scrolled up in that conversation the view stays where it
    /// is and the line is counted as new below.
    fn push(&mut self, i: usize, line: Line) {
        let in_view = i == self.selected && self.scroll > 0;
        let before = if in_view { self.total_rows() } else { 0 };
        self.conversations[i].lines.push(line);
        if in_view {
            self.scroll += self.total_rows().saturating_sub(before);
            self.new_below += 1;
        }
    }

    /// Rows the conversation in view takes at the pane's width.
    pub fn total_rows(&self) -> usize {
        let (width, _) = self.viewport.get();
        crate::ui::rows(self, self.current(), width).len()
    }

    /// Replaces a conversation's lines with `limit` history events just read.
    pub fn set_history(&mut self, target: &str, limit: u32, events: &[Event]) {
        let i = self.index_of(target);
        let c = &mut self.conversations[i];
        c.lines.clear();
        c.loaded = limit;
        c.complete = events.len() < limit as usize;
        c.loading = false;
        // Rows count up from the newest, so what was in view stays in view as older
        // lines come in above it.
        let (scroll, new_below) = (self.scroll, self.new_below);
        self.scroll = 0;
        for e in events {
            self.on_event(e, false);
        }
        self.scroll = scroll.min(self.max_scroll());
        self.new_below = new_below;
    }

    /// Adds an event from the client library's stream. `live` ones count as unread and
    /// ring the bell (a mention, or a direct message) when out of view.
    pub fn on_event(&mut self, e: &Event, live: bool) {
        use hush_client::events::ConnectionState;
        match e {
            Event::Connection(state) => {
                self.connection = match state {
                    ConnectionState::Connecting => Connection::Connecting,
                    ConnectionState::Online => Connection::Online,
                    ConnectionState::Offline { .. } | ConnectionState::Failed { .. } => {
                        Connection::Offline(e.to_text())
                    }
                };
                return;
            }
            Event::LocalError { message } => {
                self.say(&format!("local error: {message}"));
                return;
            }
            Event::Delivery {
                id,
                conversation,
                state,
                ..
            } => {
                if let Some(line) = self
                    .conversations
                    .iter_mut()
                    .filter(|c| &c.name == conversation)
                    .flat_map(|c| c.lines.iter_mut())
                    .find(|l| l.id.as_deref() == Some(id))
                {
                    line.state = Some(*state);
                }
                return;
            }
            // Not about one conversation: the status line says it.
            Event::Missed { .. } | Event::Invited { .. } => {
                self.say(&e.to_text());
                return;
            }
            _ => {}
        }
        let Some(conversation) = e.conversation() else {
            return;
        };
        let (line, outgoing) = match e {
            Event::Message {
                id,
                from,
                sent_at_ms,
                text,
                outgoing,
                state,
                ..
            } => {
                let (kind, text) = match text.strip_prefix("/me ") {
                    Some(rest) => (LineKind::Action, rest),
                    None => (LineKind::Message, text.as_str()),
                };
                (
                    Line {
                        at_ms: *sent_at_ms,
                        from: Some(from.clone()),
                        text: printable(text),
                        kind,
                        id: Some(id.clone()),
                        state: outgoing.then_some(*state),
                        mention: !outgoing && mentions(text, &self.me),
                        file: None,
                    },
                    *outgoing,
                )
            }
            Event::Membership { at_ms, .. } => (
                Line {
                    at_ms: *at_ms,
                    from: None,
                    text: printable(e.to_text().split(" -- ").nth(1).unwrap_or_default()),
                    kind: LineKind::Notice,
                    id: None,
                    state: None,
                    mention: false,
                    file: None,
                },
                false,
            ),
            Event::Security {
                at_ms,
                kind,
                reason,
                ..
            } => (
                Line {
                    at_ms: *at_ms,
                    from: None,
                    text: printable(&format!("security ({}): {reason}", kind.as_str())),
                    kind: LineKind::Security,
                    id: None,
                    state: None,
                    mention: false,
                    file: None,
                },
                false,
            ),
            Event::File {
                id,
                from,
                sent_at_ms,
                file_id,
                name,
                size,
                outgoing,
                state,
                ..
            } => (
                Line {
                    at_ms: *sent_at_ms,
                    from: Some(from.clone()),
                    text: printable(&format!(
                        "[file {}] {} ({}){}",
                        &file_id[..8.min(file_id.len())],
                        name,
                        hush_client::files::human_size(*size),
                        if *outgoing { "" } else { " · /save" }
                    )),
                    kind: LineKind::File,
                    id: Some(id.clone()),
                    state: outgoing.then_some(*state),
                    mention: false,
                    file: Some(file_id.clone()),
                },
                *outgoing,
            ),
            _ => return,
        };
        if let Event::Membership { kind, you, .. } = e {
            use hush_client::events::MembershipKind;
            match (kind, you) {
                (MembershipKind::Deleted, _)
                | (MembershipKind::Removed | MembershipKind::Left, true) => {
                    self.mark_left(conversation)
                }
                (MembershipKind::Added | MembershipKind::Joined, true) => {
                    let i = self.index_of(conversation);
                    self.conversations[i].left = false;
                }
                _ => {}
            }
        }
        let i = self.index_of(conversation);
        let mention = line.mention;
        let alert = live
            && !outgoing
            && matches!(
                line.kind,
                LineKind::Message | LineKind::Action | LineKind::File
            );
        let summary = format!(
            "{} in {}: {}",
            line.from.as_deref().unwrap_or("hush"),
            conversation,
            line.text
        );
        self.push(i, line);
        if !live || outgoing {
            return;
        }
        let in_view = i == self.selected;
        let c = &mut self.conversations[i];
        if !in_view {
            c.unread += 1;
            if mention {
                c.mentions += 1;
            }
        }
        if alert && (mention || c.is_direct()) && (!in_view || self.scroll > 0) {
            self.bell = self.config.bell;
            if self.config.notify != crate::config::Notify::Off {
                self.notification = Some(summary);
            }
        }
    }

    fn insert(&mut self, c: char) {
        let at = self.byte_at(self.cursor);
        self.input.insert(at, c);
        self.cursor += 1;
    }

    fn byte_at(&self, chars: usize) -> usize {
        self.input
            .char_indices()
            .nth(chars)
            .map_or(self.input.len(), |(b, _)| b)
    }

    fn len(&self) -> usize {
        self.input.chars().count()
    }

    fn cycle(&mut self, forward: bool) {
        let n = self.conversations.len();
        let next = if forward {
            (self.selected + 1) % n
        } else {
            (self.selected + n - 1) % n
        };
        let name = self.conversations[next].name.clone();
        self.select(&name);
    }

    /// The highest useful scroll: the first row at the top of the pane, with the
    /// "more below" marker taking the pane's last row.
    fn max_scroll(&self) -> usize {
        let (_, height) = self.viewport.get();
        let height = usize::from(height).max(1);
        let total = self.total_rows();
        if total <= height {
            0
        } else {
            total - (height - 1).max(1)
        }
    }

    fn page(&self) -> usize {
        usize::from(self.viewport.get().1).saturating_sub(2).max(1)
    }

    /// Scrolls up `rows`; at the oldest loaded line, asks for older history.
    fn scroll_up(&mut self, rows: usize) -> Option<Action> {
        let max = self.max_scroll();
        let at_top = self.scroll >= max;
        self.scroll = (self.scroll + rows).min(max);
        if at_top || self.scroll == max {
            return self.older();
        }
        None
    }

    fn scroll_down(&mut self, rows: usize) {
        self.scroll = self.scroll.saturating_sub(rows);
        if self.scroll == 0 {
            self.new_below = 0;
        }
    }

    fn older(&mut self) -> Option<Action> {
        let i = self.selected.min(self.conversations.len() - 1);
        let c = &mut self.conversations[i];
        if c.complete || c.loading {
            return None;
        }
        c.loading = true;
        Some(Action::History {
            target: c.name.clone(),
            limit: c.loaded.max(FIRST_LOAD) + HISTORY_PAGE,
        })
    }

    fn key_action(&mut self, action: KeyAction) -> Option<Action> {
        match action {
            KeyAction::Quit => return Some(Action::Quit),
            KeyAction::Next => self.cycle(true),
            KeyAction::Prev => self.cycle(false),
            KeyAction::PageUp => return self.scroll_up(self.page()),
            KeyAction::PageDown => self.scroll_down(self.page()),
            KeyAction::Top => return self.scroll_up(usize::MAX / 2),
            KeyAction::Bottom => self.scroll_down(usize::MAX),
        }
        None
    }

    /// The mouse wheel scrolls the messages.
    pub fn on_mouse(&mut self, m: MouseEvent) -> Option<Action> {
        match m.kind {
            MouseEventKind::ScrollUp => self.scroll_up(WHEEL_ROWS),
            MouseEventKind::ScrollDown => {
                self.scroll_down(WHEEL_ROWS);
                None
            }
            _ => None,
        }
    }

    /// Handles one key; returns what the network side must do, if anything.
    pub fn on_key(&mut self, key: KeyEvent) -> Option<Action> {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let alt = key.modifiers.contains(KeyModifiers::ALT);
        if key.code == KeyCode::Char('c') && ctrl {
            return Some(Action::Quit);
        }
        if let Some(action) = self.config.action(key) {
            return self.key_action(action);
        }
        match key.code {
            KeyCode::Esc if self.prompt.is_some() => {
                self.prompt = None;
                self.input.clear();
                self.cursor = 0;
                self.say("join cancelled");
            }
            // Alt-digit picks a conversation by its place in the list; no other Alt
            // combination types anything.
            KeyCode::Char(d @ '0'..='9') if alt => {
                let n = if d == '0' {
                    10
                } else {
                    d as usize - '0' as usize
                };
                if let Some(c) = self.conversations.get(n - 1) {
                    let name = c.name.clone();
                    self.select(&name);
                }
            }
            KeyCode::Char(_) if alt => {}
            KeyCode::Char('a') if ctrl => self.cursor = 0,
            KeyCode::Char('e') if ctrl => self.cursor = self.len(),
            KeyCode::Char('u') if ctrl => {
                self.input.clear();
                self.cursor = 0;
            }
            KeyCode::Char('w') if ctrl => {
                let before: String = self.input.chars().take(self.cursor).collect();
                let kept = before.trim_end().rfind(' ').map_or(0, |i| i + 1);
                let rest: String = self.input.chars().skip(self.cursor).collect();
                self.input = format!("{}{rest}", &before[..kept]);
                self.cursor = before[..kept].chars().count();
            }
            KeyCode::Char(c) if !ctrl => self.insert(c),
            KeyCode::Backspace if self.cursor > 0 => {
                self.cursor -= 1;
                let at = self.byte_at(self.cursor);
                self.input.remove(at);
            }
            KeyCode::Delete if self.cursor < self.len() => {
                let at = self.byte_at(self.cursor);
                self.input.remove(at);
            }
            KeyCode::Left => self.cursor = self.cursor.saturating_sub(1),
            KeyCode::Right => self.cursor = (self.cursor + 1).min(self.len()),
            KeyCode::Home if self.input.is_empty() => return self.key_action(KeyAction::Top),
            KeyCode::End if self.input.is_empty() => return self.key_action(KeyAction::Bottom),
            KeyCode::Home => self.cursor = 0,
            KeyCode::End => self.cursor = self.len(),
            KeyCode::Up if !self.history.is_empty() && self.prompt.is_none() => {
                let pos = match self.history_pos {
                    Some(p) => p.saturating_sub(1),
                    None => self.history.len() - 1,
                };
                self.history_pos = Some(pos);
                self.input = self.history[pos].clone();
                self.cursor = self.len();
            }
            KeyCode::Down => match self.history_pos {
                Some(p) if p + 1 < self.history.len() => {
                    self.history_pos = Some(p + 1);
                    self.input = self.history[p + 1].clone();
                    self.cursor = self.len();
                }
                _ => {
                    self.history_pos = None;
                    self.input.clear();
                    self.cursor = 0;
                }
            },
            KeyCode::Enter => return self.submit(),
            _ => {}
        }
        None
    }

    /// Asks for the channel's password or code at the input line; the join is sent
    /// again with it (`password`: what was given already).
    pub fn ask(&mut self, channel: &str, ask: Ask, password: Option<String>) {
        self.say(match ask {
            Ask::Password => "type the channel's password (not shown), or Esc to cancel",
            Ask::Code => "type the code from the channel's authenticator entry, or Esc to cancel",
        });
        self.prompt = Some(SecretPrompt {
            channel: channel.to_owned(),
            ask,
            password,
        });
    }

    /// The prompt's answer becomes the join's password or code.
    fn answer(&mut self, prompt: SecretPrompt) -> Option<Action> {
        let secret = std::mem::take(&mut self.input);
        self.cursor = 0;
        if secret.is_empty() {
            self.say("join cancelled");
            return None;
        }
        Some(match prompt.ask {
            Ask::Password => Action::Join {
                name: prompt.channel,
                password: Some(secret),
                code: None,
            },
            Ask::Code => Action::Join {
                name: prompt.channel,
                password: prompt.password,
                code: Some(secret.trim().to_owned()),
            },
        })
    }

    fn submit(&mut self) -> Option<Action> {
        if let Some(prompt) = self.prompt.take() {
            return self.answer(prompt);
        }
        let line = std::mem::take(&mut self.input);
        self.cursor = 0;
        self.history_pos = None;
        let line = line.trim().to_owned();
        if line.is_empty() {
            return None;
        }
        if self.history.last() != Some(&line) {
            self.history.push(line.clone());
        }
        // `//text` sends `/text`.
        if let Some(cmd) = line.strip_prefix('/')
            && !cmd.starts_with('/')
        {
            return self.command(cmd);
        }
        let text = line.strip_prefix('/').unwrap_or(&line).to_owned();
        self.send_here(text)
    }

    fn send_here(&mut self, text: String) -> Option<Action> {
        let target = self.current().name.clone();
        if target == STATUS {
            self.say("Pick a conversation first: /msg USER or /join #NAME.");
            return None;
        }
        self.scroll = 0;
        self.new_below = 0;
        Some(Action::Send { target, text })
    }

    /// The current conversation, if it is a group; otherwise says why `/cmd` needs one.
    fn current_group(&mut self, cmd: &str) -> Option<String> {
        let current = self.current().name.clone();
        if current.starts_with('#') {
            Some(current)
        } else {
            self.say(&format!("/{cmd} works in a group (#name)."));
            None
        }
    }

    fn help(&mut self, topic: Option<&str>) {
        match topic.map(|t| t.trim_start_matches('/')) {
            None => {
                for (_, usage, what) in COMMANDS {
                    self.say(&format!("{usage:<24} {what}"));
                }
                self.say(KEYS_HELP);
            }
            Some("leave") => self.help(Some("part")),
            Some("quit") => self.help(Some("exit")),
            Some(t) => match COMMANDS.iter().find(|(name, _, _)| *name == t) {
                Some((_, usage, what)) => self.say(&format!("{usage}: {what}")),
                None => self.say(&format!("no command /{t}; /help lists them")),
            },
        }
    }

    fn command(&mut self, cmd: &str) -> Option<Action> {
        let mut words = cmd.split_whitespace();
        let name = words.next().unwrap_or_default();
        let rest: Vec<&str> = words.collect();
        let users = |rest: &[&str]| rest.iter().map(|u| (*u).to_owned()).collect::<Vec<_>>();
        match (name, rest.as_slice()) {
            ("msg", [user, text @ ..]) if !user.starts_with('#') => {
                let text = (!text.is_empty()).then(|| text.join(" "));
                if self.knows(user) {
                    self.select(user);
                    return text.map(|text| Action::Send {
                        target: (*user).to_owned(),
                        text,
                    });
                }
                Some(Action::Open {
                    user: (*user).to_owned(),
                    text,
                })
            }
            ("join", [group]) => {
                let group = if group.starts_with('#') {
                    (*group).to_owned()
                } else {
                    format!("#{group}")
                };
                if self.knows(&group) {
                    self.select(&group);
                    None
                } else {
                    Some(Action::Join {
                        name: group,
                        password: None,
                        code: None,
                    })
                }
            }
            ("part" | "leave", []) => self.current_group(name).map(Action::Part),
            ("part" | "leave", [group]) if group.starts_with('#') => {
                Some(Action::Part((*group).to_owned()))
            }
            ("create", [group, members @ ..]) if group.starts_with('#') => Some(Action::Create {
                name: (*group).to_owned(),
                members: users(members),
            }),
            ("add", [_, ..]) => self.current_group(name).map(|group| Action::Add {
                group,
                users: users(&rest),
            }),
            ("remove", [_, ..]) => self.current_group(name).map(|group| Action::Remove {
                group,
                users: users(&rest),
            }),
            ("promote", [_, ..]) => self.current_group(name).map(|group| Action::Promote {
                group,
                users: users(&rest),
            }),
            ("members", []) => self.current_group(name).map(Action::Members),
            ("me", [_, ..]) => {
                let text = format!("/me {}", cmd.trim_start()["me".len()..].trim());
                self.send_here(text)
            }
            ("clear", []) => {
                let i = self.selected.min(self.conversations.len() - 1);
                let c = &mut self.conversations[i];
                c.lines.clear();
                c.loaded = 0;
                c.complete = c.name == STATUS;
                self.scroll = 0;
                self.new_below = 0;
                None
            }
            ("history", args) if args.len() <= 1 => {
                let limit = match args.first().map(|n| n.parse::<u32>()) {
                    None => FIRST_LOAD,
                    Some(Ok(n)) if n > 0 => n,
                    Some(_) => {
                        self.say("usage: /history [N], N a positive number");
                        return None;
                    }
                };
                let target = self.current().name.clone();
                if target == STATUS {
                    self.say("Pick a conversation first.");
                    return None;
                }
                Some(Action::History { target, limit })
            }
            ("file", [_, ..]) => {
                let target = self.current().name.clone();
                if target == STATUS {
                    self.say("Pick a conversation first.");
                    return None;
                }
                let path = cmd.trim_start()["file".len()..].trim().to_owned();
                Some(Action::SendFile { target, path })
            }
            ("save", args) if args.len() <= 2 => {
                let pick = args.first().copied();
                let path = args.get(1).map(|p| (*p).to_owned());
                let offers: Vec<&str> = self
                    .current()
                    .lines
                    .iter()
                    .rev()
                    .filter_map(|l| l.file.as_deref())
                    .collect();
                let chosen = match pick {
                    None => offers.first().copied(),
                    Some(n) if n.len() <= 2 && n.parse::<usize>().is_ok() => n
                        .parse::<usize>()
                        .ok()
                        .and_then(|n| n.checked_sub(1))
                        .and_then(|n| offers.get(n).copied()),
                    Some(prefix) => offers.iter().copied().find(|f| f.starts_with(prefix)),
                };
                match chosen {
                    Some(file_id) => Some(Action::SaveFile {
                        file_id: file_id.to_owned(),
                        path,
                    }),
                    None => {
                        self.say(
                            "no such file offered in this conversation (scroll up, or /history)",
                        );
                        None
                    }
                }
            }
            ("verify", [user]) => Some(Action::Verify((*user).to_owned())),
            ("shutdown", []) => Some(Action::Shutdown),
            ("help", []) => {
                self.help(None);
                None
            }
            ("help", [topic]) => {
                self.help(Some(topic));
                None
            }
            ("exit" | "quit", []) => Some(Action::Quit),
            (known, _)
                if known == "leave"
                    || known == "quit"
                    || COMMANDS.iter().any(|(n, _, _)| *n == known) =>
            {
                let known = match known {
                    "leave" => "part",
                    "quit" => "exit",
                    k => k,
                };
                let usage = COMMANDS
                    .iter()
                    .find(|(n, _, _)| *n == known)
                    .map_or("", |(_, u, _)| u);
                self.say(&format!("bad arguments for /{name}; usage: {usage}"));
                None
            }
            _ => {
                self.say(&format!("unknown command /{name}; /help lists commands"));
                None
            }
        }
    }
}
