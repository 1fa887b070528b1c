//! `hush file send|get|delete` and `hush files`: transfers with a progress bar on a
//! terminal (silent otherwise and with `--json`).
use std::io::IsTerminal;
use std::ops::ControlFlow;
use std::path::Path;

use hush_client::Target;
use hush_client::events::Event;
use hush_client::files::{Progress, display_name, human_size};
use hush_proto::ids::FileId;
use indicatif::{ProgressBar, ProgressStyle};

use super::{Failure, FileCommand, open};

/// A bar on stderr when it is a terminal and the output is for people.
fn bar(label: &str, json: bool) -> Option<ProgressBar> {
    if json || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(0);
    let style = ProgressStyle::with_template(
        "{msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(label.to_owned());
    Some(bar)
}

fn tick(bar: &Option<ProgressBar>) -> impl FnMut(Progress) -> ControlFlow<()> + Send + '_ {
    move |p: Progress| {
        if let Some(b) = bar {
            b.set_length(p.total);
            b.set_position(p.done);
        }
        ControlFlow::Continue(())
    }
}

fn file_id(s: &str) -> Result<FileId, Failure> {
    FileId::parse_hex(s.trim()).map_err(|e| Failure {
        code: 2,
        error: anyhow::anyhow!("{e}"),
    })
}

pub(crate) async fn file(dir: &Path, command: FileCommand) -> Result<(), Failure> {
    match command {
        FileCommand::Send {
            target,
            path,
            name: offered_name,
            json,
        } => {
            let to = Target::parse(&target)?;
            let client = open(dir).await?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let bar = bar(&format!("sending {name}"), json);
            let sent = client
                .send_file(&to, &path, offered_name.as_deref(), &mut tick(&bar))
                .await;
            if let Some(b) = &bar {
                b.finish_and_clear();
            }
            client.close().await;
            let sent = sent?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "file_id": sent.file_id.to_string(),
                        "name": sent.name,
                        "size": sent.size,
                        "to": to.name(),
                        "resumed_from": sent.resumed_from,
                    })
                );
            } else {
                if sent.resumed_from > 0 {
                    eprintln!(
                        "resumed the upload after {} the server already had",
                        human_size(sent.resumed_from)
                    );
                }
                println!(
                    "sent file {} ({}, {}) to {}",
                    sent.file_id,
                    display_name(&sent.name),
                    human_size(sent.size),
                    to.name()
                );
            }
        }
        FileCommand::Get {
            file_id: id,
            output,
            force,
            json,
        } => {
            let id = file_id(&id)?;
            let client = open(dir).await?;
            let bar = bar(&format!("fetching {id}"), json);
            let saved = client
                .get_file(id, output.as_deref(), force, &mut tick(&bar))
                .await;
            if let Some(b) = &bar {
                b.finish_and_clear();
            }
            client.close().await;
            let saved = saved?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "file_id": saved.file_id.to_string(),
                        "path": saved.path.to_string_lossy(),
                        "size": saved.size,
                        "resumed_from": saved.resumed_from,
                    })
                );
            } else {
                if saved.resumed_from > 0 {
                    eprintln!(
                        "resumed the download after {} already saved",
                        human_size(saved.resumed_from)
                    );
                }
                println!(
                    "saved file {} to {} ({})",
                    saved.file_id,
                    saved.path.display(),
                    human_size(saved.size)
                );
            }
        }
        FileCommand::Delete { file_id: id } => {
            let id = file_id(&id)?;
            let client = open(dir).await?;
            let done = client.delete_file(id).await;
            client.close().await;
            done?;
            println!("deleted file {id} from the server");
        }
    }
    Ok(())
}

pub(crate) async fn list(dir: &Path, target: Option<String>, json: bool) -> Result<(), Failure> {
    let conversation = match &target {
        Some(t) => Some(Target::parse(t)?.name()),
        None => None,
    };
    let client = open(dir).await?;
    let offered = client.files(conversation).await;
    client.close().await;
    for o in offered? {
        if json {
            let mut v = o.event.to_json();
            v["saved_to"] = serde_json::json!(o.saved_to);
            println!("{v}");
        } else if let Event::File {
            conversation,
            from,
            file_id,
            name,
            size,
            sent_at_ms,
            ..
        } = &o.event
        {
            let saved = o
                .saved_to
                .map(|p| format!(", saved to {p}"))
                .unwrap_or_default();
            println!(
                "{file_id}  {}  {}  {conversation} <{from}> {}{saved}",
                display_name(name),
                human_size(*size),
                hush_client::events::minute(*sent_at_ms)
            );
        }
    }
    Ok(())
}
