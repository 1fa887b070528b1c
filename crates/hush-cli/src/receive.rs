//! `hush recv`: print what is new in this home's history (the engine has caught up with
//! the mailbox by then) and, with `--follow`, keep printing the engine's events as they
//! come. Reconnecting is the engine's; this only reports it on stderr.
use std::time::Duration;

use hush_client::events::{ConnectionState, Event};
use hush_client::{Client, ClientError};
use tokio::time::Instant;

use crate::output;

fn print(e: &Event, json: bool) -> Result<(), ClientError> {
    output::event(e, json).map_err(|e| ClientError::Invalid(format!("writing output: {e}")))
}

pub async fn run(
    client: &Client,
    follow: bool,
    json: bool,
    timeout: Option<u64>,
) -> Result<(), ClientError> {
    let deadline = timeout.map(|s| Instant::now() + Duration::from_secs(s));
    // Subscribe first, so nothing falls between the catch-up and the stream.
    let mut events = client.events();
    match client.sync().await {
        Ok(_) => {}
        Err(e) if follow && e.is_transport() => {
            eprintln!("warning: {e}; retrying in the background")
        }
        Err(e) => return Err(e),
    }
    let mut last = 0;
    let mut printed = 0;
    let waiting = client.unstreamed().await?;
    for e in &waiting {
        print(e, json)?;
        last = last.max(e.row().unwrap_or(0));
        printed += 1;
    }
    client
        .mark_streamed(waiting.iter().filter_map(Event::row).collect())
        .await?;
    loop {
        if !follow && (printed > 0 || deadline.is_none()) {
            return Ok(());
        }
        let next = match deadline {
            Some(d) => match tokio::time::timeout_at(d, events.next()).await {
                Ok(e) => e,
                Err(_) => return Ok(()),
            },
            None => events.next().await,
        };
        let Some(event) = next else {
            return Ok(());
        };
        match &event {
            // This home's own outgoing messages are not news.
            Event::Message { outgoing: true, .. } | Event::File { outgoing: true, .. } => {}
            e if e.row().is_some_and(|r| r > last) => {
                print(e, json)?;
                last = e.row().unwrap_or(last);
                printed += 1;
                client.mark_streamed(vec![last]).await?;
            }
            Event::Connection(ConnectionState::Offline {
                reason,
                retry_in_ms,
            }) => eprintln!("warning: {reason}; reconnecting in {retry_in_ms} ms"),
            Event::Connection(ConnectionState::Failed { reason }) => {
                return Err(ClientError::Invalid(reason.clone()));
            }
            Event::LocalError { message } => eprintln!("warning: {message}"),
            _ => {}
        }
    }
}
