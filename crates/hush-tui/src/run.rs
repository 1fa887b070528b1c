//! The interactive loop: terminal keys and the client engine's event stream, on one
//! task. State lives in [`App`]; connecting, syncing and reconnecting are the engine's
//! ([`hush_client::Client`]), so this file only draws what the stream says and turns
//! keys into commands. Every message shown comes from the local history, so nothing is
//! lost or shown twice across reconnects.
use std::io::Write;

use crossterm::event::{Event as TermEvent, EventStream, KeyEventKind};
use futures::StreamExt;
use hush_client::events::{ConnectionState, Event};
use hush_client::files::{Progress, display_name, human_size};
use hush_client::hush_proto::content::GroupName;
use hush_client::hush_proto::ids::FileId;
use hush_client::{Client, ClientError, Target};
use std::ops::ControlFlow;

use hush_client::hush_proto::ids::Username;

use crate::app::{Action, App, Ask, Connection, FIRST_LOAD};
use crate::config::{Config, Notify};
use crate::ui;

/// Lines from background transfers for the status pane.
type Notes = tokio::sync::mpsc::UnboundedSender<String>;

/// A progress callback that reports each quarter of a transfer.
fn quarters(notes: Notes, what: String) -> impl FnMut(Progress) -> ControlFlow<()> + Send {
    let mut said = 0;
    move |p: Progress| {
        let pct = (p.done * 100).checked_div(p.total).unwrap_or(100);
        let quarter = pct / 25;
        if quarter > said && pct < 100 {
            said = quarter;
            let _ = notes.send(format!(
                "{what}: {pct}% ({} of {})",
                human_size(p.done),
                human_size(p.total)
            ));
        }
        ControlFlow::Continue(())
    }
}

/// `/file PATH`, off the interactive loop: chat goes on meanwhile.
fn send_file(client: &Client, notes: &Notes, target: String, path: String) {
    let (client, notes) = (client.clone(), notes.clone());
    tokio::spawn(async move {
        let to = match Target::parse(&target) {
            Ok(t) => t,
            Err(e) => {
                let _ = notes.send(e.to_string());
                return;
            }
        };
        let path = std::path::PathBuf::from(path);
        let label = format!("sending {}", path.display());
        let _ = notes.send(format!("{label}…"));
        let mut on = quarters(notes.clone(), label);
        let said = match client.send_file(&to, &path, None, &mut on).await {
            Ok(sent) => format!(
                "sent file {} ({}, {}) to {target}",
                sent.file_id,
                display_name(&sent.name),
                human_size(sent.size)
            ),
            Err(e) => format!("could not send {}: {e}", path.display()),
        };
        let _ = notes.send(said);
    });
}

/// `/save`, off the interactive loop.
fn save_file(client: &Client, notes: &Notes, file_id: String, path: Option<String>) {
    let (client, notes) = (client.clone(), notes.clone());
    tokio::spawn(async move {
        let id = match FileId::parse_hex(&file_id) {
            Ok(id) => id,
            Err(e) => {
                let _ = notes.send(e.to_string());
                return;
            }
        };
        let label = format!("fetching {}", &file_id[..8.min(file_id.len())]);
        let mut on = quarters(notes.clone(), label);
        let output = path.map(std::path::PathBuf::from);
        let said = match client.get_file(id, output.as_deref(), false, &mut on).await {
            Ok(saved) => format!(
                "saved {} ({})",
                saved.path.display(),
                human_size(saved.size)
            ),
            Err(e) => format!("could not save the file: {e}"),
        };
        let _ = notes.send(said);
    });
}

/// Runs one command; `Ok(false)` to quit.
async fn perform(
    client: &Client,
    app: &mut App,
    notes: &Notes,
    action: Action,
) -> Result<bool, ClientError> {
    match action {
        Action::Quit => return Ok(false),
        Action::SendFile { target, path } => send_file(client, notes, target, path),
        Action::SaveFile { file_id, path } => save_file(client, notes, file_id, path),
        Action::Send { target, text } => send(client, app, &target, &text).await,
        Action::Open { user, text } => {
            let name = match Username::parse(&user) {
                Ok(name) => name,
                Err(e) => {
                    app.say(&e.to_string());
                    return Ok(true);
                }
            };
            if user == app.me {
                app.say("you cannot start a conversation with yourself");
                return Ok(true);
            }
            match client.user_exists(&name).await {
                Ok(true) => {
                    app.select(&user);
                    if let Some(text) = text {
                        send(client, app, &user, &text).await;
                    }
                }
                Ok(false) => {
                    let group = format!("#{user}");
                    if app.knows(&group) {
                        app.say(&format!(
                            "no user named {user}; did you mean /join {group}?"
                        ));
                    } else {
                        app.say(&format!("no user named {user}"));
                    }
                }
                Err(e) => app.say(&format!("not opened: {e}")),
            }
        }
        Action::Create { name, members } => match group_and_users(&name, &members) {
            Ok((group, users)) => match client.create_group(&group, &users).await {
                Ok(()) => {
                    app.select(&name);
                    app.say(&format!("created {name}"));
                    refresh_members(client, app, &name).await;
                }
                Err(e) => app.say(&format!("not created: {e}")),
            },
            Err(e) => app.say(&e),
        },
        Action::Add { group, users } => {
            change(client, app, &group, &users, Change::Add).await;
        }
        Action::Remove { group, users } => {
            change(client, app, &group, &users, Change::Remove).await;
        }
        Action::Promote { group, users } => {
            change(client, app, &group, &users, Change::Promote).await;
        }
        Action::Verify(user) => {
            let shown = match hush_client::hush_proto::ids::Username::parse(&user) {
                Ok(u) => client.verify(&u, false).await,
                Err(e) => Err(ClientError::Invalid(e.to_string())),
            };
            match shown {
                Ok(v) => {
                    app.say(&format!(
                        "safety number with {}: {}",
                        v.user, v.safety_number
                    ));
                    app.say(if v.key_changed {
                        "their key CHANGED: compare the new number, then `hush verify USER --confirm`"
                    } else if v.verified {
                        "verified"
                    } else {
                        "not verified: compare it in person, then `hush verify USER --confirm`"
                    });
                }
                Err(e) => app.say(&format!("not done: {e}")),
            }
        }
        Action::Join {
            name,
            password,
            code,
        } => join(client, app, &name, password, code).await,
        Action::Part(group) => match GroupName::parse(&group) {
            Ok(name) => match client.leave(&name).await {
                Ok(()) => {
                    app.mark_left(&group);
                    app.say(&format!("you left {group}"));
                }
                Err(e) => app.say(&format!("not done: {e}")),
            },
            Err(e) => app.say(&e.to_string()),
        },
        Action::Shutdown => match client.admin_shutdown().await {
            Ok(_) => app.say("the server is shutting down"),
            Err(e) => app.say(&format!("not done: {e}")),
        },
        Action::Members(group) => match GroupName::parse(&group) {
            Ok(name) => match client.members(&name).await {
                Ok(members) => {
                    app.set_roster(&group, members.iter().map(|m| m.username.clone()).collect());
                    let list: Vec<String> = members
                        .iter()
                        .map(|m| {
                            if m.admin {
                                format!("{} (admin)", m.username)
                            } else {
                                m.username.clone()
                            }
                        })
                        .collect();
                    app.say(&format!("{} members: {}", list.len(), list.join(", ")));
                }
                Err(e) => app.say(&e.to_string()),
            },
            Err(e) => app.say(&e.to_string()),
        },
        Action::History { target, limit } => match client.history(&target, limit).await {
            Ok(events) => app.set_history(&target, limit, &events),
            Err(e) => app.say(&e.to_string()),
        },
    }
    Ok(true)
}

/// Sends, or while offline keeps in the outbox (shown as sending until the server
/// has it). The line itself arrives on the event stream once it is in history.
async fn send(client: &Client, app: &mut App, target: &str, text: &str) {
    let sent = match Target::parse(target) {
        Ok(t) => client.send_or_queue(&t, text).await,
        Err(e) => Err(e),
    };
    if let Err(e) = sent {
        app.say(&format!("not sent: {e}"));
    }
}

#[derive(Clone, Copy)]
enum Change {
    Add,
    Remove,
    Promote,
}

fn group_and_users(group: &str, users: &[String]) -> Result<(GroupName, Vec<Username>), String> {
    let group = GroupName::parse(group).map_err(|e| e.to_string())?;
    let users = users
        .iter()
        .map(|u| Username::parse(u).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((group, users))
}

/// `/add`, `/remove`, `/promote`: the result shows as membership lines from the
/// group's MLS state; failures are said here.
async fn change(client: &Client, app: &mut App, group: &str, users: &[String], how: Change) {
    let (name, parsed) = match group_and_users(group, users) {
        Ok(v) => v,
        Err(e) => {
            app.say(&e);
            return;
        }
    };
    let done = match how {
        Change::Add => client.add_members(&name, &parsed).await,
        Change::Remove => client.remove_members(&name, &parsed).await,
        Change::Promote => client.promote(&name, &parsed).await,
    };
    match (done, how) {
        (Ok(()), Change::Promote) => {
            let verb = if users.len() == 1 {
                "administers"
            } else {
                "administer"
            };
            app.say(&format!("{} now {verb} {group}", users.join(", ")));
        }
        (Ok(()), _) => refresh_members(client, app, group).await,
        (Err(e), _) => app.say(&format!("not done: {e}")),
    }
}

/// `/join #NAME`: joins the channel, asking for its password and code at the input
/// line when the server says it needs them (P553).
async fn join(
    client: &Client,
    app: &mut App,
    name: &str,
    password: Option<String>,
    code: Option<String>,
) {
    use hush_client::hush_proto::ErrorCode;
    use hush_client::hush_proto::ids::{ChannelPassword, TotpCode};
    let parsed = GroupName::parse(name)
        .map_err(|e| e.to_string())
        .and_then(|n| {
            let p = password
                .as_deref()
                .map(ChannelPassword::parse)
                .transpose()
                .map_err(|e| e.to_string())?;
            let c = code
                .as_deref()
                .map(TotpCode::parse)
                .transpose()
                .map_err(|e| e.to_string())?;
            Ok((n, p, c))
        });
    let (channel, p, c) = match parsed {
        Ok(v) => v,
        Err(e) => {
            app.say(&e);
            return;
        }
    };
    match client.join_channel(&channel, p, c).await {
        Ok(()) => {
            app.select(name);
            app.say(&format!("you joined {name}"));
            refresh_members(client, app, name).await;
        }
        Err(ClientError::Server(e))
            if e.code == ErrorCode::ChannelPasswordWrong && password.is_none() =>
        {
            app.ask(name, Ask::Password, None);
        }
        Err(ClientError::Server(e)) if e.code == ErrorCode::SecondFactorRequired => {
            app.ask(name, Ask::Code, password);
        }
        Err(e) => app.say(&format!("not joined: {e}")),
    }
}

/// P556: a new account is offered the server's lobby on its first start.
async fn offer_lobby(client: &Client, app: &mut App) {
    if !app.conversations.iter().all(|c| !c.name.starts_with('#')) {
        return;
    }
    if let Ok(channels) = client.channels().await
        && let Some(lobby) = channels.iter().find(|c| c.lobby)
    {
        app.say(&format!(
            "Welcome! This server has an open lobby: type /join {} to meet everyone.",
            lobby.name
        ));
    }
}

/// Reads a group's roster for its member count (shown in its title line); a group
/// this device is not in (yet) keeps no count.
async fn refresh_members(client: &Client, app: &mut App, conversation: &str) {
    if !conversation.starts_with('#') {
        return;
    }
    let Ok(name) = GroupName::parse(conversation) else {
        return;
    };
    if let Ok(members) = client.members(&name).await {
        app.set_roster(
            conversation,
            members.into_iter().map(|m| m.username).collect(),
        );
    }
}

/// Runs the interactive client until the user quits.
pub async fn run(client: Client, config: Config) -> Result<(), ClientError> {
    let stored = client.stored_account().await?;
    let mouse = config.mouse;
    let notify = config.notify;
    let mut app = App::with_config(stored.username.as_str(), &stored.server, config);
    // Subscribe before reading history, so nothing falls between the two.
    let mut events = client.events();
    let mut shown = 0;
    for chat in client.chats().await? {
        let history = client.history(&chat.name, FIRST_LOAD).await?;
        for e in &history {
            shown = shown.max(e.row().unwrap_or(0));
        }
        app.set_history(&chat.name, FIRST_LOAD, &history);
        refresh_members(&client, &mut app, &chat.name).await;
    }
    let seen: Vec<i64> = client
        .unstreamed()
        .await?
        .iter()
        .filter_map(Event::row)
        .collect();
    client.mark_streamed(seen).await?;
    app.on_event(&Event::Connection(client.state()), false);
    for c in client.contacts().await? {
        if c.username == app.me {
            continue;
        }
        if c.changed_key.is_some() {
            app.changed.insert(c.username);
        } else if c.verified {
            app.verified.insert(c.username);
        }
    }

    offer_lobby(&client, &mut app).await;
    let mut terminal = ratatui::init();
    if mouse {
        let _ = crossterm::execute!(std::io::stdout(), crossterm::event::EnableMouseCapture);
    }
    let result = event_loop(&client, &mut app, &mut events, shown, &mut terminal, notify).await;
    if mouse {
        let _ = crossterm::execute!(std::io::stdout(), crossterm::event::DisableMouseCapture);
    }
    ratatui::restore();
    client.close().await;
    result
}

/// The escape sequence of a desktop notification (the text is printable already:
/// control characters were replaced when the line was made).
pub fn notification(how: Notify, text: &str) -> Option<String> {
    let text: String = text.chars().filter(|c| !c.is_control()).take(200).collect();
    match how {
        Notify::Off => None,
        Notify::Osc777 => Some(format!(
            "\x1b]777;notify;hush;{}\x1b\\",
            text.replace(';', ",")
        )),
        Notify::Osc9 => Some(format!("\x1b]9;{text}\x1b\\")),
    }
}

fn draw(
    terminal: &mut ratatui::DefaultTerminal,
    app: &mut App,
    notify: Notify,
) -> Result<(), ClientError> {
    terminal
        .draw(|f| ui::draw(f, app))
        .map_err(|e| ClientError::Invalid(format!("terminal: {e}")))?;
    let mut out = std::io::stdout();
    if std::mem::take(&mut app.bell) {
        let _ = out.write_all(b"\x07");
    }
    if let Some(escape) = app
        .notification
        .take()
        .and_then(|t| notification(notify, &t))
    {
        let _ = out.write_all(escape.as_bytes());
    }
    let _ = out.flush();
    Ok(())
}

async fn event_loop(
    client: &Client,
    app: &mut App,
    events: &mut hush_client::Events,
    mut shown: i64,
    terminal: &mut ratatui::DefaultTerminal,
    notify: Notify,
) -> Result<(), ClientError> {
    let mut keys = EventStream::new();
    let (notes, mut noted) = tokio::sync::mpsc::unbounded_channel::<String>();
    draw(terminal, app, notify)?;
    loop {
        tokio::select! {
            Some(note) = noted.recv() => app.say(&note),
            key = keys.next() => {
                let action = match key {
                    Some(Ok(TermEvent::Key(k))) if k.kind == KeyEventKind::Press => app.on_key(k),
                    Some(Ok(TermEvent::Mouse(m))) => app.on_mouse(m),
                    Some(Ok(_)) => None,
                    Some(Err(e)) => return Err(ClientError::Invalid(format!("terminal: {e}"))),
                    None => return Ok(()),
                };
                if let Some(action) = action {
                    let offline = !matches!(app.connection, Connection::Online);
                    // Messages wait in the outbox while offline; the rest needs the server.
                    let local = matches!(action, Action::Quit | Action::History { .. } | Action::Send { .. });
                    if offline && !local {
                        app.say("offline: try again once connected");
                    } else if !perform(client, app, &notes, action).await? {
                        return Ok(());
                    }
                }
            },
            event = events.next() => match event {
                Some(e) => {
                    if let Some(row) = e.row() {
                        if row <= shown {
                            continue;
                        }
                        shown = row;
                        client.mark_streamed(vec![row]).await?;
                    }
                    if let Event::Connection(ConnectionState::Failed { reason }) = &e {
                        app.say(&format!("stopped: {reason}"));
                    }
                    app.on_event(&e, true);
                    match &e {
                        // Joins and leaves change the count; a first message may be the
                        // first sight of a group.
                        Event::Membership { conversation, .. } | Event::Message { conversation, .. } => {
                            let known = app
                                .conversations
                                .iter()
                                .any(|c| &c.name == conversation && (c.members.is_some() || c.left));
                            let left = app.conversations.iter().any(|c| &c.name == conversation && c.left);
                            if !left && (matches!(e, Event::Membership { .. }) || !known) {
                                refresh_members(client, app, conversation).await;
                            }
                        }
                        _ => {}
                    }
                }
                None => return Ok(()),
            },
        }
        draw(terminal, app, notify)?;
    }
}
