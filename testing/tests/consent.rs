//! Consent for groups (P460–P463): someone an account never reached out to cannot put
//! it in a group; the invitation waits until it is accepted or declined.
mod inproc;

use std::process::Command;

use hush_client::events::Event;
use hush_client::home::InvitationPolicy;
use hush_client::hush_proto::content::GroupName;
use hush_client::{Client, ClientOptions};
use hush_testing::{Server, bin};
use inproc::{register, texts, to, user};

fn dirs<const N: usize>() -> [tempfile::TempDir; N] {
    std::array::from_fn(|_| tempfile::tempdir().unwrap())
}

fn group(name: &str) -> GroupName {
    GroupName::parse(name).unwrap()
}

async fn conversations(client: &Client) -> Vec<String> {
    client
        .chats()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect()
}

/// `hush --home DIR ARGS` (the account's password is not needed for these).
fn hush(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(bin("hush"))
        .arg("--home")
        .arg(dir)
        .args(args)
        .env_remove("HUSH_HOME")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "hush {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p460_a_strangers_group_waits_for_an_answer_a_friends_does_not() {
    let server = Server::start(&[]);
    let d = dirs::<4>();
    let ann = register(&server, d[0].path(), "ann", Default::default()).await;
    let ben = register(&server, d[1].path(), "ben", Default::default()).await;
    let mallory = register(&server, d[2].path(), "mallory", Default::default()).await;
    let cat = register(&server, d[3].path(), "cat", Default::default()).await;
    ben.set_invitation_policy(InvitationPolicy::Known)
        .await
        .unwrap();

    // A stranger's group: held, and ben is told who asked.
    mallory
        .create_group(&group("#spam"), &[user("ben")])
        .await
        .unwrap();
    mallory.send(&to("#spam"), "buy now").await.unwrap();
    let mut events = ben.events();
    ben.sync().await.unwrap();
    let told = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            if let Some(Event::Invited { by }) = events.next().await {
                return by;
            }
        }
    })
    .await
    .expect("ben is told about the invitation");
    assert_eq!(told, "mallory");
    assert!(!conversations(&ben).await.contains(&"#spam".to_string()));
    let waiting = ben.requests().await.unwrap();
    assert_eq!(waiting.len(), 1);
    assert_eq!(
        (waiting[0].inviter.as_str(), waiting[0].groups),
        ("mallory", 1)
    );

    // Someone ben wrote to may add him straight away.
    ben.send(&to("ann"), "hi ann").await.unwrap();
    ann.sync().await.unwrap();
    ann.create_group(&group("#team"), &[user("ben")])
        .await
        .unwrap();
    ben.sync().await.unwrap();
    assert!(conversations(&ben).await.contains(&"#team".to_string()));
    assert_eq!(
        ben.requests().await.unwrap().len(),
        1,
        "still only mallory's"
    );

    // Accepting joins the group with everything sent meanwhile, in order.
    ben.answer_request(&user("mallory"), true).await.unwrap();
    assert_eq!(texts(&ben, "#spam").await, ["buy now"]);
    assert!(ben.requests().await.unwrap().is_empty());

    // Declining: nothing of cat's group ever reaches ben.
    cat.create_group(&group("#junk"), &[user("ben")])
        .await
        .unwrap();
    ben.sync().await.unwrap();
    ben.close().await;
    let listed = hush(d[1].path(), &["requests", "--json"]);
    let line: serde_json::Value = serde_json::from_str(listed.trim()).unwrap();
    assert_eq!(line["from"], "cat");
    assert_eq!(line["groups"], 1);
    assert!(hush(d[1].path(), &["decline", "cat"]).contains("declined"));
    assert!(hush(d[1].path(), &["requests"]).contains("no invitations"));
    cat.send(&to("#junk"), "are you there").await.unwrap();
    let ben = Client::open(d[1].path(), ClientOptions::default())
        .await
        .unwrap();
    ben.sync().await.unwrap();
    assert!(!conversations(&ben).await.contains(&"#junk".to_string()));
    assert!(hush(d[1].path(), &["invitations"]).contains("known"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p463_by_default_invitations_are_accepted_by_the_client() {
    let server = Server::start(&[]);
    let d = dirs::<2>();
    let ann = register(&server, d[0].path(), "ann", Default::default()).await;
    let ben = register(&server, d[1].path(), "ben", Default::default()).await;
    ann.create_group(&group("#team"), &[user("ben")])
        .await
        .unwrap();
    ann.send(&to("#team"), "welcome").await.unwrap();
    ben.sync().await.unwrap();
    assert_eq!(texts(&ben, "#team").await, ["welcome"]);
    assert!(
        ben.requests().await.unwrap().is_empty(),
        "accepted, not waiting"
    );
}
