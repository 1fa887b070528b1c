//! Named groups end to end: membership every member can verify, and a policy every
//! member enforces whatever the server relays.
mod inproc;

use std::time::Duration;

use hush_testing::{Client, Server, fails, json_lines, ok, texts};

const PW: &str = "correct horse battery";

fn users(server: &Server, names: &[&str]) -> Vec<Client> {
    hush_testing::registered(server, names, PW)
}

/// ann, ben and cat in `#team` (ann its admin), every member caught up.
fn team(server: &Server) -> Vec<Client> {
    let v = users(server, &["ann", "ben", "cat"]);
    ok(&v[0].run("", &["group", "create", "team", "--members", "ben,cat"]));
    v[1].recv(5);
    v[2].recv(5);
    v
}

fn device_of(c: &Client) -> String {
    c.whoami().unwrap()["device"].as_str().unwrap().to_owned()
}

#[test]
fn a_three_member_group_talks() {
    let server = Server::start(&[]);
    let v = users(&server, &["ann", "ben", "cat"]);
    let (ann, ben, cat) = (&v[0], &v[1], &v[2]);
    ok(&ann.run("", &["group", "create", "team", "--members", "ben,cat"]));
    fails(
        &ben.run("", &["group", "create", "team"]),
        1,
        "already exists",
    );

    ann.send("#team", "hello team");
    for c in [ben, cat] {
        let events = c.recv(5);
        assert_eq!(texts(&events), ["hello team"]);
        let m = events.iter().find(|e| e["type"] == "message").unwrap();
        assert_eq!(m["conversation"], "#team");
        assert_eq!(m["from"], "ann");
    }
    ben.send("#team", "hi from ben");
    assert_eq!(texts(&ann.recv(5)), ["hi from ben"]);
    assert_eq!(texts(&cat.recv(5)), ["hi from ben"]);
    // One text shape for history (and recv): `[YYYY-MM-DD HH:MM] #team <ben> text`,
    // your own lines included.
    for (who, c) in [("cat", &cat), ("ben", &ben)] {
        let history = ok(&c.run("", &["history", "#team"]));
        let line = history
            .lines()
            .find(|l| l.ends_with("hi from ben"))
            .unwrap_or_else(|| panic!("{who}: {history}"));
        let (stamp, rest) = line.split_once("] ").unwrap();
        assert_eq!(rest, "#team <ben> hi from ben", "{who}");
        let stamp = stamp.strip_prefix('[').unwrap();
        assert_eq!(stamp.len(), 16, "{stamp}");
        assert!(
            stamp.chars().enumerate().all(|(i, ch)| match i {
                4 | 7 => ch == '-',
                10 => ch == ' ',
                13 => ch == ':',
                _ => ch.is_ascii_digit(),
            }),
            "{stamp}"
        );
    }

    let members = json_lines(&ok(&cat.run("", &["group", "members", "#team", "--json"])));
    let names: Vec<&str> = members
        .iter()
        .map(|m| m["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ann", "ben", "cat"]);
    // The group's name without its #: a hint, not only "no user named team".
    fails(
        &cat.run("", &["send", "team", "hello"]),
        1,
        "no user named team; did you mean #team?",
    );
    let text = ok(&cat.run("", &["group", "members", "#team"]));
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        ["#team: 3 members", "ann (admin)", "ben", "cat"]
    );
    assert_eq!(members[0]["admin"], true);
    assert_eq!(members[1]["admin"], false);
    assert_eq!(
        texts(&ann.history("#team", 10)),
        ["hello team", "hi from ben"]
    );
}

#[test]
fn adds_and_removals_show_who_did_them_and_a_removed_member_cannot_decrypt() {
    let server = Server::start(&[]);
    let v = users(&server, &["ann", "ben", "cat"]);
    let (ann, ben, cat) = (&v[0], &v[1], &v[2]);
    ok(&ann.run("", &["group", "create", "team", "--members", "ben"]));
    ok(&ann.run("", &["group", "add", "team", "cat"]));
    let ben_events = ben.recv(5);
    let added: Vec<_> = ben_events
        .iter()
        .filter(|e| e["type"] == "member_added" && e["you"] != true)
        .collect();
    assert_eq!(added.len(), 1, "{ben_events:?}");
    // ben's own Welcome says who brought him in.
    assert!(
        ben_events.iter().any(|e| e["type"] == "member_added"
            && e["member"] == "ben"
            && e["by"] == "ann"
            && e["you"] == true),
        "{ben_events:?}"
    );
    assert_eq!(
        (added[0]["member"].as_str(), added[0]["by"].as_str()),
        (Some("cat"), Some("ann"))
    );

    ok(&ann.run("", &["group", "remove", "team", "cat"]));
    let cat_events = cat.recv(5);
    assert!(
        cat_events.iter().any(|e| e["type"] == "member_removed"
            && e["member"] == "cat"
            && e["by"] == "ann"
            && e["you"] == true),
        "{cat_events:?}"
    );
    ann.send("#team", "after cat left");

    // The server does not route it to cat; feed cat the ciphertext anyway (before ben
    // acknowledges it and the server forgets it).
    let cat_device = hex(&device_of(cat));
    let db = rusqlite::Connection::open(server.data_dir().join("hushd.db")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    let n = db
        .execute(
            "INSERT INTO deliveries (device_id, message_id)
             SELECT ?1, id FROM messages WHERE kind = 3 ORDER BY id DESC LIMIT 1",
            [cat_device],
        )
        .unwrap();
    assert_eq!(n, 1);
    drop(db);
    assert_eq!(texts(&ben.recv(5)), ["after cat left"]);
    let events = cat.recv(5);
    assert!(
        texts(&events).is_empty(),
        "a removed member read a later message: {events:?}"
    );
    assert!(events.iter().any(|e| e["type"] == "security"), "{events:?}");
    assert!(!format!("{events:?}").contains("after cat left"));
}

#[test]
fn non_admins_cannot_change_membership_even_through_the_server() {
    let server = Server::start(&[]);
    let v = team(&server);
    let (ann, ben, cat) = (&v[0], &v[1], &v[2]);
    // The honest client refuses.
    fails(
        &ben.run("", &["group", "remove", "team", "cat"]),
        1,
        "only admins",
    );

    // A modified client commits the removal anyway, and the server relays it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let m = hush_client::Client::open(ben.home.path(), Default::default())
            .await
            .unwrap();
        let name = hush_client::hush_proto::content::GroupName::parse("#team").unwrap();
        let members = m.members(&name).await.unwrap();
        assert_eq!(members.len(), 3);
        let cat_device =
            hush_client::hush_proto::ids::DeviceId::parse_hex(&device_of(cat)).unwrap();
        m.remove_devices_unchecked(&name, &[cat_device])
            .await
            .unwrap();
        m.close().await;
    });

    for c in [ann, cat] {
        let events = c.recv(5);
        let rejected: Vec<_> = events
            .iter()
            .filter(|e| e["kind"] == "commit_rejected")
            .collect();
        assert_eq!(rejected.len(), 1, "{events:?}");
        assert_eq!(rejected[0]["from"], "ben");
        assert!(
            rejected[0]["reason"]
                .as_str()
                .unwrap()
                .contains("not an admin")
        );
        assert!(!events.iter().any(|e| e["type"] == "member_removed"));
    }
    let members = json_lines(&ok(&ann.run("", &["group", "members", "#team", "--json"])));
    assert_eq!(
        members.len(),
        3,
        "cat is still a member for ann: {members:?}"
    );
}

#[test]
fn concurrent_commits_by_two_admins_converge() {
    let server = Server::start(&[]);
    let v = users(&server, &["ann", "ben", "dan", "eve"]);
    let (ann, ben) = (&v[0], &v[1]);
    ok(&ann.run("", &["group", "create", "team", "--members", "ben"]));
    ok(&ann.run("", &["group", "promote", "team", "ben"]));
    ben.recv(5);

    // Both admins add someone at the same epoch; the server takes one commit first,
    // the other client catches up and rebuilds its commit.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use hush_client::hush_proto::ids::Username;
        let m1 = hush_client::Client::open(ann.home.path(), Default::default())
            .await
            .unwrap();
        let m2 = hush_client::Client::open(ben.home.path(), Default::default())
            .await
            .unwrap();
        let team = hush_client::hush_proto::content::GroupName::parse("team").unwrap();
        let (dan, eve) = (
            [Username::parse("dan").unwrap()],
            [Username::parse("eve").unwrap()],
        );
        let (a, b) = tokio::join!(m1.add_members(&team, &dan), m2.add_members(&team, &eve));
        a.unwrap();
        b.unwrap();
        m1.close().await;
        m2.close().await;
    });

    // Everyone converged on one epoch: each can talk to all.
    for (i, c) in v.iter().enumerate() {
        c.recv(1);
        c.send("#team", &format!("from {i}"));
    }
    for c in &v {
        let events = c.recv(5);
        assert!(
            !events.iter().any(|e| e["type"] == "security"),
            "{events:?}"
        );
    }
    for c in &v {
        let history = texts(&c.history("#team", 50));
        for i in 0..4 {
            assert!(history.contains(&format!("from {i}")), "{history:?}");
        }
    }
    let members = json_lines(&ok(&v[3].run("", &["group", "members", "#team", "--json"])));
    assert_eq!(members.len(), 4, "ann, ben, dan, eve: {members:?}");
}

/// A 200-member group in one process: created with one batched add, and one message
/// reaches every member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_hundred_member_group() {
    use hush_client::hush_proto::content::GroupName;

    const N: usize = 200;
    // 200 accounts from one address: above the default per-address registration limit.
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("hushd.toml");
    std::fs::write(
        &config,
        "[limits]\nregistrations_per_address_per_hour = 1000\n",
    )
    .unwrap();
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    let dirs: Vec<tempfile::TempDir> = (0..N).map(|_| tempfile::tempdir().unwrap()).collect();
    let names: Vec<String> = (0..N).map(|i| format!("user{i:03}")).collect();
    let mut clients = Vec::new();
    for (dir, name) in dirs.iter().zip(&names) {
        clients.push(inproc::register(&server, dir.path(), name, Default::default()).await);
    }
    let team = GroupName::parse("#big").unwrap();
    let users: Vec<_> = names[1..].iter().map(|n| inproc::user(n)).collect();
    clients[0].create_group(&team, &users).await.unwrap();
    clients[0]
        .send(&inproc::to("#big"), "hello, all 200")
        .await
        .unwrap();
    for c in &clients[1..] {
        c.sync().await.unwrap();
        assert_eq!(inproc::texts(c, "#big").await, ["hello, all 200"]);
    }
    for c in clients {
        c.close().await;
    }
}

fn hex(device: &str) -> Vec<u8> {
    (0..device.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&device[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn admins_promote_and_the_promoted_can_then_manage_members() {
    let server = Server::start(&[]);
    let v = users(&server, &["ann", "ben", "cat"]);
    let (ann, ben, cat) = (&v[0], &v[1], &v[2]);
    ok(&ann.run("", &["group", "create", "team", "--members", "ben"]));
    fails(
        &ben.run("", &["group", "promote", "team", "ben"]),
        1,
        "only admins",
    );
    ok(&ann.run("", &["group", "promote", "team", "ben"]));
    let events = ben.recv(5);
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "member_promoted" && e["member"] == "ben" && e["by"] == "ann"),
        "{events:?}"
    );
    ok(&ben.run("", &["group", "add", "team", "cat"]));
    cat.recv(5);
    let members = json_lines(&ok(&cat.run("", &["group", "members", "team", "--json"])));
    let admins: Vec<&str> = members
        .iter()
        .filter(|m| m["admin"] == true)
        .map(|m| m["username"].as_str().unwrap())
        .collect();
    assert_eq!(admins, ["ann", "ben"]);
    let events = ann.recv(5);
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "member_added" && e["member"] == "cat" && e["by"] == "ben"),
        "{events:?}"
    );
}

#[test]
fn anyone_may_leave_and_the_others_see_it() {
    let server = Server::start(&[]);
    let v = team(&server);
    let (ann, ben, cat) = (&v[0], &v[1], &v[2]);
    // cat is no admin, and leaves.
    ok(&cat.run("", &["group", "leave", "team"]));
    let events = ann.recv(5);
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "member_left" && e["member"] == "cat"),
        "{events:?}"
    );
    // ben (no admin either) sends next: his client commits cat's departure first.
    ben.send("#team", "bye cat");
    let events = ann.recv(5);
    assert_eq!(texts(&events), ["bye cat"]);
    assert!(
        !events.iter().any(|e| e["type"] == "security"),
        "{events:?}"
    );
    let members = json_lines(&ok(&ann.run("", &["group", "members", "team", "--json"])));
    let names: Vec<&str> = members
        .iter()
        .map(|m| m["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ann", "ben"]);
    // cat's home no longer reads the group.
    let after = cat.recv(1);
    assert!(texts(&after).is_empty(), "{after:?}");
    assert!(!after.iter().any(|e| e["type"] == "security"), "{after:?}");
}

#[test]
fn a_new_device_joins_its_users_conversations() {
    let server = Server::start(&[]);
    let v = users(&server, &["ann", "ben"]);
    let (ann, ben) = (&v[0], &v[1]);
    ok(&ann.run("", &["group", "create", "team", "--members", "ben"]));
    ann.send("ben", "direct before");
    ben.recv(5);

    // ann logs in on a laptop; her first device adopts it on its next sync.
    let laptop = Client::new();
    ok(&laptop.login(&server, "ann", PW));
    ann.recv(1);
    ben.send("#team", "to the team");
    ben.send("ann", "to ann");
    let events = laptop.recv(5);
    let got = texts(&events);
    assert!(
        got.contains(&"to the team".to_owned()) && got.contains(&"to ann".to_owned()),
        "{events:?}"
    );
    assert_eq!(texts(&ann.recv(5)), ["to the team", "to ann"]);
    // Ben's client says so: ann has a new device in the group.
    let history = ben.history("#team", 20);
    assert!(
        history
            .iter()
            .any(|e| e["kind"] == "new_device" && e["from"] == "ann"),
        "{history:?}"
    );
}
