//! The interactive client's state and input handling, apart from drawing and from the
//! network, so both are tested without a terminal (ratatui's `TestBackend`).
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use hush_client::events::Event;

/// The pseudo-conversation that holds notices and help.
pub const STATUS: &str = "*status*";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineKind {
    Message,
    Notice,
    Security,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// `HH:MM` (UTC).
    pub time: String,
    pub from: Option<String>,
    pub text: String,
    pub kind: LineKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    pub name: String,
    pub unread: u32,
    pub lines: Vec<Line>,
    /// For a group: how many members its MLS roster has, once read.
    pub members: Option<usize>,
}

impl Conversation {
    /// The title line of the conversation pane: `#team: 5 members`, or the name.
    pub fn title(&self) -> String {
        match self.members {
            Some(1) => format!("{}: 1 member", self.name),
            Some(n) => format!("{}: {n} members", self.name),
            None => self.name.clone(),
        }
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
    Send {
        target: String,
        text: String,
    },
    Members(String),
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
    /// Lines scrolled up from the newest.
    pub scroll: usize,
    /// Ring the terminal bell at the next draw.
    pub bell: bool,
    /// Contacts whose safety number was verified (marked in the list).
    pub verified: std::collections::BTreeSet<String>,
    /// A channel join asking for its password or code (input masked).
    pub prompt: Option<SecretPrompt>,
}

const HELP: &[&str] = &[
    "/msg USER [TEXT]  open (and write to) a 1:1 conversation",
    "/join #NAME       switch to a group, or join a channel (asks its password and code)",
    "/part             leave the current group or channel",
    "/members          members of the current group",
    "/history [N]      reload the last N messages (default 100)",
    "/file PATH        send a file (not available yet)",
    "/verify USER      show the safety number to compare with USER",
    "/shutdown         stop the server (server admins only)",
    "/help             this list;  /exit  quit",
    "Tab/Shift-Tab or Ctrl-N/Ctrl-P switch conversations; PgUp/PgDn scroll; Up/Down recall input",
];

fn now_hhmm() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("{:02}:{:02}", (secs / 3600) % 24, (secs / 60) % 60)
}

/// `HH:MM` of an RFC 3339 time.
fn hhmm(rfc3339: &str) -> String {
    rfc3339.get(11..16).unwrap_or("--:--").to_owned()
}

impl App {
    pub fn new(me: &str, server: &str) -> Self {
        let mut app = App {
            me: me.to_owned(),
            server: server.to_owned(),
            connection: Connection::Connecting,
            conversations: vec![Conversation {
                name: STATUS.to_owned(),
                unread: 0,
                lines: Vec::new(),
                members: None,
            }],
            selected: 0,
            input: String::new(),
            cursor: 0,
            history: Vec::new(),
            history_pos: None,
            scroll: 0,
            bell: false,
            verified: Default::default(),
            prompt: None,
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

    fn index_of(&mut self, name: &str) -> usize {
        if let Some(i) = self.conversations.iter().position(|c| c.name == name) {
            return i;
        }
        self.conversations.push(Conversation {
            name: name.to_owned(),
            unread: 0,
            lines: Vec::new(),
            members: None,
        });
        self.conversations.len() - 1
    }

    /// Records a group's member count (from its roster) for its title line.
    pub fn set_members(&mut self, name: &str, count: usize) {
        let i = self.index_of(name);
        self.conversations[i].members = Some(count);
    }

    /// Shows `name`, creating it if needed, and marks it read.
    pub fn select(&mut self, name: &str) {
        let i = self.index_of(name);
        self.selected = i;
        self.conversations[i].unread = 0;
        self.scroll = 0;
    }

    /// A notice line in `conversation`.
    pub fn notice(&mut self, conversation: &str, text: &str) {
        let i = self.index_of(conversation);
        self.conversations[i].lines.push(Line {
            time: now_hhmm(),
            from: None,
            text: text.to_owned(),
            kind: LineKind::Notice,
        });
    }

    /// A notice in the conversation in view.
    pub fn say(&mut self, text: &str) {
        let name = self.current().name.clone();
        self.notice(&name, text);
    }

    /// Adds an event from the client library's stream. `live` ones count as unread and
    /// ring the bell when their conversation is not in view.
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
            Event::Delivery { .. } => return,
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
        let v = e.to_json();
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
        let (line, outgoing) = match e {
            Event::Message { outgoing, .. } => (
                Line {
                    time: hhmm(&s("sent_at")),
                    from: Some(s("from")),
                    text: s("text"),
                    kind: LineKind::Message,
                },
                *outgoing,
            ),
            Event::Membership { .. } => (
                Line {
                    time: hhmm(&s("at")),
                    from: None,
                    text: e
                        .to_text()
                        .split(" -- ")
                        .nth(1)
                        .unwrap_or_default()
                        .to_owned(),
                    kind: LineKind::Notice,
                },
                false,
            ),
            Event::Security { .. } => (
                Line {
                    time: hhmm(&s("at")),
                    from: None,
                    text: format!("security ({}): {}", s("kind"), s("reason")),
                    kind: LineKind::Security,
                },
                false,
            ),
            _ => return,
        };
        let i = self.index_of(conversation);
        self.conversations[i].lines.push(line);
        if live && !outgoing && i != self.selected {
            self.conversations[i].unread += 1;
            self.bell = true;
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

    /// Handles one key; returns what the network side must do, if anything.
    pub fn on_key(&mut self, key: KeyEvent) -> Option<Action> {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        match key.code {
            KeyCode::Char('c') if ctrl => return Some(Action::Quit),
            KeyCode::Esc if self.prompt.is_some() => {
                self.prompt = None;
                self.input.clear();
                self.cursor = 0;
                self.say("join cancelled");
            }
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
            KeyCode::Char('n') if ctrl => self.cycle(true),
            KeyCode::Char('p') if ctrl => self.cycle(false),
            KeyCode::Tab => self.cycle(true),
            KeyCode::BackTab => self.cycle(false),
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
            KeyCode::PageUp => self.scroll = self.scroll.saturating_add(10),
            KeyCode::PageDown => self.scroll = self.scroll.saturating_sub(10),
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
        if let Some(cmd) = line.strip_prefix('/') {
            return self.command(cmd);
        }
        let target = self.current().name.clone();
        if target == STATUS {
            self.say("Pick a conversation first: /msg USER or /join #NAME.");
            return None;
        }
        self.scroll = 0;
        Some(Action::Send { target, text: line })
    }

    fn command(&mut self, cmd: &str) -> Option<Action> {
        let mut words = cmd.split_whitespace();
        let name = words.next().unwrap_or_default();
        let rest: Vec<&str> = words.collect();
        match (name, rest.as_slice()) {
            ("msg", [user, text @ ..]) if !user.starts_with('#') => {
                self.select(user);
                if text.is_empty() {
                    None
                } else {
                    Some(Action::Send {
                        target: (*user).to_owned(),
                        text: text.join(" "),
                    })
                }
            }
            ("join", [group]) => {
                let group = if group.starts_with('#') {
                    (*group).to_owned()
                } else {
                    format!("#{group}")
                };
                if self.conversations.iter().any(|c| c.name == group) {
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
            ("part", []) => {
                let current = self.current().name.clone();
                if current.starts_with('#') {
                    Some(Action::Part(current))
                } else {
                    self.say("/part leaves a group or channel (#name).");
                    None
                }
            }
            ("members", []) => {
                let current = self.current().name.clone();
                if current.starts_with('#') {
                    Some(Action::Members(current))
                } else {
                    self.say("/members works in a group (#name).");
                    None
                }
            }
            ("history", args) if args.len() <= 1 => {
                let limit = match args.first().map(|n| n.parse::<u32>()) {
                    None => 100,
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
            ("file", [_path]) => {
                self.say("/file is not available in this version of hush yet.");
                None
            }
            ("verify", [user]) => Some(Action::Verify((*user).to_owned())),
            ("shutdown", []) => Some(Action::Shutdown),
            ("help", []) => {
                for h in HELP {
                    self.say(h);
                }
                None
            }
            ("exit" | "quit", []) => Some(Action::Quit),
            (
                "msg" | "join" | "part" | "members" | "history" | "file" | "verify" | "shutdown"
                | "help" | "exit" | "quit",
                _,
            ) => {
                self.say(&format!("bad arguments for /{name}; /help shows usage"));
                None
            }
            _ => {
                self.say(&format!("unknown command /{name}; /help lists commands"));
                None
            }
        }
    }
}
