//! The interactive loop: terminal keys, the server's pushes and reconnection with
//! backoff, all on one task. State lives in [`App`]; every message shown comes from
//! the client library's history, so nothing is lost or shown twice across reconnects.
use std::io::Write;
use std::time::Duration;

use crossterm::event::{Event as TermEvent, EventStream, KeyEventKind};
use futures::StreamExt;
use hush_client::ClientError;
use hush_client::account;
use hush_client::history;
use hush_client::home::Home;
use hush_client::hush_proto::content::GroupName;
use hush_client::hush_proto::ids::Username;
use hush_client::hush_proto::response::Response;
use hush_client::messaging::Messenger;

use crate::app::{Action, App, Connection};
use crate::ui;

/// Shows events not yet streamed, and marks them.
fn refresh(home: &Home, app: &mut App, live: bool) -> Result<(), ClientError> {
    let events = history::unstreamed(home)?;
    for e in &events {
        app.on_event(e, live);
    }
    history::mark_streamed(home, &events)
}

async fn perform(
    m: &Messenger<'_>,
    home: &Home,
    app: &mut App,
    action: Action,
) -> Result<bool, ClientError> {
    match action {
        Action::Quit => return Ok(false),
        Action::Send { target, text } => {
            let sent = if target.starts_with('#') {
                match GroupName::parse(&target) {
                    Ok(name) => m.send_to_group(&name, &text).await,
                    Err(e) => Err(ClientError::Invalid(e.to_string())),
                }
            } else {
                match Username::parse(&target) {
                    Ok(user) => m.send_text(&user, &text).await,
                    Err(e) => Err(ClientError::Invalid(e.to_string())),
                }
            };
            match sent {
                Ok(event) => app.on_event(&event, false),
                Err(
                    e @ (ClientError::Disconnected(_)
                    | ClientError::Timeout(_)
                    | ClientError::Unreachable { .. }),
                ) => {
                    return Err(e);
                }
                Err(e) => app.say(&format!("not sent: {e}")),
            }
        }
        Action::Shutdown => match account::admin_shutdown(m.connection()).await {
            Ok(()) => app.say("the server is shutting down"),
            Err(e) => app.say(&format!("not done: {e}")),
        },
        Action::Members(group) => match GroupName::parse(&group) {
            Ok(name) => match m.members(&name).await {
                Ok(members) => {
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
        Action::History { target, limit } => match history::conversation(home, &target, limit) {
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

/// Runs the interactive client until the user quits.
pub async fn run(home: &Home) -> Result<(), ClientError> {
    let stored = home.account()?.ok_or(ClientError::NoAccount)?;
    let mut app = App::new(stored.username.as_str(), &stored.server);
    for chat in history::chats(home)? {
        for e in history::conversation(home, &chat.name, 50)? {
            app.on_event(&e, false);
        }
    }
    refresh(home, &mut app, false)?;

    let mut terminal = ratatui::init();
    let result = event_loop(home, &mut app, &mut terminal).await;
    ratatui::restore();
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
    home: &Home,
    app: &mut App,
    terminal: &mut ratatui::DefaultTerminal,
) -> Result<(), ClientError> {
    let mut keys = EventStream::new();
    let mut backoff = Duration::from_millis(500);
    loop {
        app.connection = Connection::Connecting;
        draw(terminal, app)?;
        let session = match account::resume(home).await {
            Ok(s) => s,
            Err(
                e @ (ClientError::Disconnected(_)
                | ClientError::Timeout(_)
                | ClientError::Unreachable { .. }),
            ) => {
                app.connection =
                    Connection::Offline(format!("{e}; retrying in {} s", backoff.as_secs().max(1)));
                draw(terminal, app)?;
                // Keep the keyboard alive while waiting to reconnect.
                let wait = tokio::time::sleep(backoff);
                tokio::pin!(wait);
                loop {
                    tokio::select! {
                        _ = &mut wait => break,
                        key = keys.next() => {
                            if let Some(Ok(TermEvent::Key(k))) = key
                                && k.kind == KeyEventKind::Press {
                                    match app.on_key(k) {
                                        Some(Action::Quit) => return Ok(()),
                                        Some(_) => app.say("offline: try again once connected"),
                                        None => {}
                                    }
                                }
                            draw(terminal, app)?;
                        }
                    }
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
            Err(e) => return Err(e),
        };
        backoff = Duration::from_millis(500);
        let m = Messenger::open(home, &session.conn, session.account.clone()).await?;
        let Some(mut pushes) = session.conn.pushes() else {
            return Err(ClientError::Invalid("push stream already taken".into()));
        };
        app.connection = Connection::Online;
        let synced = async {
            m.flush_outbox().await?;
            m.sync().await
        }
        .await;
        if let Err(e) = synced {
            app.connection = Connection::Offline(e.to_string());
            continue;
        }
        refresh(home, app, true)?;
        draw(terminal, app)?;
        loop {
            tokio::select! {
                key = keys.next() => match key {
                    Some(Ok(TermEvent::Key(k))) if k.kind == KeyEventKind::Press => {
                        if let Some(action) = app.on_key(k) {
                            match perform(&m, home, app, action).await {
                                Ok(true) => {}
                                Ok(false) => {
                                    session.conn.close().await;
                                    return Ok(());
                                }
                                Err(e) => {
                                    app.connection = Connection::Offline(e.to_string());
                                    break;
                                }
                            }
                            refresh(home, app, true)?;
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(ClientError::Invalid(format!("terminal: {e}"))),
                    None => return Ok(()),
                },
                push = pushes.recv() => match push {
                    Some(Response::MailboxChanged) => {
                        if let Err(e) = m.sync().await {
                            app.connection = Connection::Offline(e.to_string());
                            break;
                        }
                        refresh(home, app, true)?;
                    }
                    Some(_) => {}
                    None => {
                        app.connection = Connection::Offline("connection lost".into());
                        break;
                    }
                },
            }
            draw(terminal, app)?;
        }
        draw(terminal, app)?;
        tokio::time::sleep(backoff).await;
    }
}
