//! `hush recv`: catch up with the mailbox, print what is new, and with `--follow` keep
//! listening, reconnecting with backoff when the connection drops.
use std::time::Duration;

use hush_client::ClientError;
use hush_client::account;
use hush_client::history;
use hush_client::home::Home;
use hush_client::hush_proto::response::Response;
use hush_client::messaging::Messenger;
use tokio::time::Instant;

use crate::output;

/// Prints events not yet streamed and marks them; returns how many.
fn print_new(home: &Home, json: bool) -> Result<usize, ClientError> {
    let events = history::unstreamed(home)?;
    for e in &events {
        output::event(e, json).map_err(|e| ClientError::Invalid(format!("writing output: {e}")))?;
    }
    history::mark_streamed(home, &events)?;
    Ok(events.len())
}

enum Outcome {
    Done,
    /// The connection dropped while following.
    Lost(ClientError),
}

async fn session_once(
    home: &Home,
    follow: bool,
    json: bool,
    deadline: Option<Instant>,
    printed: &mut usize,
) -> Result<Outcome, ClientError> {
    let session = account::resume(home).await?;
    let mut pushes = session
        .conn
        .pushes()
        .ok_or_else(|| ClientError::Invalid("push stream already taken".into()))?;
    let messenger = Messenger::open(home, &session.conn, session.account.clone()).await?;
    messenger.flush_outbox().await?;
    messenger.sync().await?;
    *printed += print_new(home, json)?;
    loop {
        if !follow && (*printed > 0 || deadline.is_none()) {
            return Ok(Outcome::Done);
        }
        let next = match deadline {
            Some(d) => match tokio::time::timeout_at(d, pushes.recv()).await {
                Ok(p) => p,
                Err(_) => return Ok(Outcome::Done),
            },
            None => pushes.recv().await,
        };
        match next {
            Some(Response::MailboxChanged) => {
                messenger.sync().await?;
                *printed += print_new(home, json)?;
            }
            Some(_) => {}
            None => return Ok(Outcome::Lost(ClientError::Disconnected(None))),
        }
    }
}

pub async fn run(
    home: &Home,
    follow: bool,
    json: bool,
    timeout: Option<u64>,
) -> Result<(), ClientError> {
    let deadline = timeout.map(|s| Instant::now() + Duration::from_secs(s));
    let mut printed = 0;
    let mut backoff = Duration::from_millis(250);
    loop {
        let outcome = match session_once(home, follow, json, deadline, &mut printed).await {
            Ok(o) => o,
            Err(
                e @ (ClientError::Unreachable { .. }
                | ClientError::Disconnected(_)
                | ClientError::Timeout(_)),
            ) if follow => Outcome::Lost(e),
            Err(e) => return Err(e),
        };
        match outcome {
            Outcome::Done => return Ok(()),
            Outcome::Lost(e) => {
                if !follow {
                    return Err(e);
                }
                if deadline.is_some_and(|d| Instant::now() + backoff >= d) {
                    return Ok(());
                }
                eprintln!("warning: {e}; reconnecting in {} ms", backoff.as_millis());
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}
