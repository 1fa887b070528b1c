//! The interactive loop: terminal keys and the client engine's event stream, on one
//! task. State lives in [`App`]; connecting, syncing and reconnecting are the engine's
//! ([`hush_client::Client`]), so this file only draws what the stream says and turns
//! keys into commands. Every message shown comes from the local history, so nothing is
//! lost or shown twice across reconnects.
use std::io::Write;

use crossterm::event::{Event as TermEvent, EventStream, KeyEventKind};
use futures::StreamExt;
use hush_client::events::{ConnectionState, Event};
use hush_client::hush_proto::content::GroupName;
use hush_client::{Client, ClientError, Target};

use crate::app::{Action, App, Ask, Connection};
use crate::ui;

/// Runs one command; `Ok(false)` to quit.
async fn perform(client: &Client, app: &mut App, action: Action) -> Result<bool, ClientError> {
    match action {
        Action::Quit => return Ok(false),
        Action::Send { target, text } => {
            // The message itself arrives on the event stream once it is in history.
            let sent = match Target::parse(&target) {
                Ok(t) => client.send(&t, &text).await,
                Err(e) => Err(e),
            };
            if let Err(e) = sent {
                app.say(&format!("not sent: {e}"));
            }
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
                Ok(()) => app.say(&format!("you left {group}")),
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
                    app.set_members(&group, members.len());
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
            Ok(events) => {
                let i = app.conversations.iter().position(|c| c.name == target);
                if let Some(i) = i {
                    app.conversations[i].lines.clear();
                }
                for e in &events {
                    app.on_event(e, false);
                }
            }
            Err(e) => app.say(&e.to_string()),
        },
    }
    Ok(true)
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
        app.set_members(conversation, members.len());
    }
}

/// Runs the interactive client until the user quits.
pub async fn run(client: Client) -> Result<(), ClientError> {
    let stored = client.stored_account().await?;
    let mut app = App::new(stored.username.as_str(), &stored.server);
    // Subscribe before reading history, so nothing falls between the two.
    let mut events = client.events();
    let mut shown = 0;
    for chat in client.chats().await? {
        for e in client.history(&chat.name, 50).await? {
            shown = shown.max(e.row().unwrap_or(0));
            app.on_event(&e, false);
        }
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
    app.verified = client
        .contacts()
        .await?
        .into_iter()
        .filter(|c| c.verified && c.changed_key.is_none() && c.username != app.me)
        .map(|c| c.username)
        .collect();

    offer_lobby(&client, &mut app).await;
    let mut terminal = ratatui::init();
    let result = event_loop(&client, &mut app, &mut events, shown, &mut terminal).await;
    ratatui::restore();
    client.close().await;
    result
}

fn draw(terminal: &mut ratatui::DefaultTerminal, app: &mut App) -> Result<(), ClientError> {
    terminal
        .draw(|f| ui::draw(f, app))
        .map_err(|e| ClientError::Invalid(format!("terminal: {e}")))?;
    if std::mem::take(&mut app.bell) {
        let mut out = std::io::stdout();
        let _ = out.write_all(b"\x07");
        let _ = out.flush();
    }
    Ok(())
}

async fn event_loop(
    client: &Client,
    app: &mut App,
    events: &mut hush_client::Events,
    mut shown: i64,
    terminal: &mut ratatui::DefaultTerminal,
) -> Result<(), ClientError> {
    let mut keys = EventStream::new();
    draw(terminal, app)?;
    loop {
        tokio::select! {
            key = keys.next() => match key {
                Some(Ok(TermEvent::Key(k))) if k.kind == KeyEventKind::Press => {
                    if let Some(action) = app.on_key(k) {
                        let offline = !matches!(app.connection, Connection::Online);
                        if offline && !matches!(action, Action::Quit | Action::History { .. }) {
                            app.say("offline: try again once connected");
                        } else if !perform(client, app, action).await? {
                            return Ok(());
                        }
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(ClientError::Invalid(format!("terminal: {e}"))),
                None => return Ok(()),
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
                                .any(|c| &c.name == conversation && c.members.is_some());
                            if matches!(e, Event::Membership { .. }) || !known {
                                refresh_members(client, app, conversation).await;
                            }
                        }
                        _ => {}
                    }
                }
                None => return Ok(()),
            },
        }
        draw(terminal, app)?;
    }
}
