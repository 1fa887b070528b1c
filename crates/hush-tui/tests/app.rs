//! The interactive client's state, input and drawing, without a terminal.
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use hush_client::events::Event;
use hush_tui::app::{Action, App, STATUS};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

fn ctrl(c: char) -> KeyEvent {
    KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)
}

fn typed(app: &mut App, text: &str) -> Option<Action> {
    let mut last = None;
    for c in text.chars() {
        last = app.on_key(key(KeyCode::Char(c)));
    }
    last
}

fn message(conversation: &str, from: &str, text: &str) -> Event {
    Event::Message {
        row: 1,
        id: "00".repeat(16),
        conversation: conversation.into(),
        from: from.into(),
        device: "11".repeat(16),
        sent_at_ms: 1_767_225_600_000,
        text: text.into(),
        outgoing: false,
        state: hush_client::events::MessageState::Received,
    }
}

fn screen(terminal: &Terminal<TestBackend>) -> String {
    let buf = terminal.backend().buffer();
    let width = buf.area.width as usize;
    buf.content()
        .chunks(width)
        .map(|row| row.iter().map(|c| c.symbol()).collect::<String>())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn typing_with_editing_keys_then_sending() {
    let mut app = App::new("ann", "127.0.0.1:5535");
    typed(&mut app, "/msg ben");
    assert_eq!(
        app.on_key(key(KeyCode::Enter)),
        Some(Action::Open {
            user: "ben".into(),
            text: None
        }),
        "a user not in the list is looked up first"
    );
    // The network side found ben.
    app.select("ben");
    assert_eq!(app.current().name, "ben");

    typed(&mut app, "helo wrld");
    for _ in 0..3 {
        app.on_key(key(KeyCode::Left));
    }
    app.on_key(key(KeyCode::Char('o')));
    app.on_key(key(KeyCode::Home));
    app.on_key(key(KeyCode::Right));
    app.on_key(key(KeyCode::Right));
    app.on_key(key(KeyCode::Right));
    app.on_key(key(KeyCode::Char('l')));
    assert_eq!(app.input, "hello world");
    app.on_key(key(KeyCode::End));
    app.on_key(key(KeyCode::Backspace));
    assert_eq!(app.input, "hello worl");
    app.on_key(ctrl('w'));
    assert_eq!(app.input, "hello ");
    typed(&mut app, "there");
    assert_eq!(
        app.on_key(key(KeyCode::Enter)),
        Some(Action::Send {
            target: "ben".into(),
            text: "hello there".into()
        })
    );
    assert_eq!(app.input, "");

    // Input history.
    app.on_key(key(KeyCode::Up));
    assert_eq!(app.input, "hello there");
    app.on_key(key(KeyCode::Up));
    assert_eq!(app.input, "/msg ben");
    app.on_key(key(KeyCode::Down));
    assert_eq!(app.input, "hello there");
    app.on_key(key(KeyCode::Down));
    assert_eq!(app.input, "");
    app.on_key(ctrl('u'));
}

#[test]
fn switching_conversations_and_unread_counts() {
    let mut app = App::new("ann", "h:1");
    app.select("ben");
    app.on_event(&message("cat", "cat", "psst"), true);
    app.on_event(&message("cat", "cat", "psst again"), true);
    app.on_event(&message("ben", "ben", "in view"), true);
    let cat = app.conversations.iter().find(|c| c.name == "cat").unwrap();
    assert_eq!(cat.unread, 2);
    assert!(app.bell, "a message out of view rings the bell");
    assert_eq!(
        app.current().unread,
        0,
        "the conversation in view stays read"
    );

    app.on_key(key(KeyCode::Tab));
    assert_eq!(app.current().name, "cat");
    assert_eq!(app.current().unread, 0);
    app.on_key(KeyEvent::new(KeyCode::BackTab, KeyModifiers::SHIFT));
    assert_eq!(app.current().name, "ben");
    app.on_key(ctrl('n'));
    app.on_key(ctrl('n'));
    assert_eq!(app.current().name, STATUS, "wraps around");
    typed(&mut app, "no target");
    assert_eq!(
        app.on_key(key(KeyCode::Enter)),
        None,
        "status is not a conversation"
    );
}

#[test]
fn slash_commands_and_their_errors() {
    let mut app = App::new("ann", "h:1");
    let run = |app: &mut App, line: &str| {
        typed(app, line);
        app.on_key(key(KeyCode::Enter))
    };
    assert_eq!(run(&mut app, "/frobnicate"), None);
    assert!(
        app.current()
            .lines
            .last()
            .unwrap()
            .text
            .contains("unknown command /frobnicate")
    );
    assert_eq!(
        run(&mut app, "/join team"),
        Some(Action::Join {
            name: "#team".into(),
            password: None,
            code: None
        })
    );
    // Joined (as the network side reports), it is the current conversation.
    app.select("#team");
    assert_eq!(app.current().name, "#team");
    assert_eq!(
        run(&mut app, "/members"),
        Some(Action::Members("#team".into()))
    );
    assert_eq!(
        run(&mut app, "/history 5"),
        Some(Action::History {
            target: "#team".into(),
            limit: 5
        })
    );
    assert_eq!(run(&mut app, "/history x"), None);
    assert!(
        app.current()
            .lines
            .last()
            .unwrap()
            .text
            .contains("usage: /history")
    );
    assert_eq!(
        run(&mut app, "/file notes.txt"),
        Some(Action::SendFile {
            target: "#team".into(),
            path: "notes.txt".into()
        })
    );
    assert_eq!(
        run(&mut app, "/verify ben"),
        Some(Action::Verify("ben".into()))
    );
    assert_eq!(run(&mut app, "/verify"), None);
    assert!(
        app.current()
            .lines
            .last()
            .unwrap()
            .text
            .contains("bad arguments")
    );
    assert_eq!(
        run(&mut app, "/msg cat hi there"),
        Some(Action::Open {
            user: "cat".into(),
            text: Some("hi there".into())
        })
    );
    run(&mut app, "/help");
    assert!(
        app.current()
            .lines
            .iter()
            .any(|l| l.text.starts_with("/join #NAME"))
    );
    assert_eq!(run(&mut app, "/shutdown"), Some(Action::Shutdown));
    assert_eq!(run(&mut app, "/exit"), Some(Action::Quit));
    assert_eq!(app.on_key(ctrl('c')), Some(Action::Quit));
}

#[test]
fn draws_at_80x24_and_survives_resizes() {
    let mut app = App::new("ann", "127.0.0.1:5535");
    app.select("ben");
    app.on_event(&message("ben", "ben", "hello ann"), true);
    app.on_event(&message("cat", "cat", "unread one"), true);
    typed(&mut app, "draft");
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
    terminal.draw(|f| hush_tui::ui::draw(f, &app)).unwrap();
    let text = screen(&terminal);
    assert!(text.contains("<ben> hello ann"), "{text}");
    assert!(
        text.contains("cat (1)"),
        "unread count in the list:\n{text}"
    );
    assert!(text.contains("to ben"), "{text}");
    assert!(text.contains("draft"), "{text}");
    assert!(text.contains("ann @ 127.0.0.1:5535 | connecting"), "{text}");
    assert!(text.lines().count() == 24 && text.lines().all(|l| l.chars().count() == 80));

    for (w, h) in [(40, 12), (20, 6), (120, 40), (1, 1)] {
        terminal.backend_mut().resize(w, h);
        terminal.draw(|f| hush_tui::ui::draw(f, &app)).unwrap();
    }
    let text = screen(&terminal);
    assert_eq!(text.chars().count(), 1);
}

#[test]
fn invitations_and_missed_messages_are_said_in_view() {
    let mut app = App::new("ann", "127.0.0.1:5535");
    app.on_event(
        &Event::Invited {
            by: "mallory".into(),
        },
        true,
    );
    app.on_event(&Event::Missed { count: 3 }, true);
    let said: Vec<String> = app.current().lines.iter().map(|l| l.text.clone()).collect();
    assert!(
        said.iter().any(|t| t.contains("hush accept mallory")),
        "{said:?}"
    );
    assert!(said.iter().any(|t| t.starts_with("3 message")), "{said:?}");
}

#[test]
fn a_group_title_line_shows_its_member_count() {
    let mut app = App::new("ann", "127.0.0.1:5535");
    app.on_event(&message("#team", "ben", "hello team"), true);
    app.select("#team");
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
    terminal.draw(|f| hush_tui::ui::draw(f, &app)).unwrap();
    assert!(
        !screen(&terminal).contains("members"),
        "no count before the roster is read"
    );
    app.set_members("#team", 5);
    terminal.draw(|f| hush_tui::ui::draw(f, &app)).unwrap();
    let text = screen(&terminal);
    assert!(text.contains("#team: 5 members"), "{text}");
    app.set_members("#team", 1);
    terminal.draw(|f| hush_tui::ui::draw(f, &app)).unwrap();
    assert!(screen(&terminal).contains("#team: 1 member"));
    // With the roster read: how many of the others are verified.
    app.set_roster("#team", vec!["ann".into(), "ben".into(), "cat".into()]);
    app.verified.insert("ben".into());
    terminal.draw(|f| hush_tui::ui::draw(f, &app)).unwrap();
    assert!(
        screen(&terminal).contains("#team: 3 members, 1 of 2 verified"),
        "{}",
        screen(&terminal)
    );
    app.verified.insert("cat".into());
    terminal.draw(|f| hush_tui::ui::draw(f, &app)).unwrap();
    assert!(screen(&terminal).contains("#team: 3 members, all verified ✓"));
    app.changed.insert("cat".into());
    terminal.draw(|f| hush_tui::ui::draw(f, &app)).unwrap();
    assert!(screen(&terminal).contains("KEY CHANGED: cat"));
}

#[test]
fn join_asks_a_channel_for_its_password_and_code_without_showing_or_keeping_them() {
    let mut app = App::new("ann", "127.0.0.1:5535");
    typed(&mut app, "/join team");
    assert_eq!(
        app.on_key(key(KeyCode::Enter)),
        Some(Action::Join {
            name: "#team".into(),
            password: None,
            code: None
        }),
        "a channel this home is not in is joined"
    );
    // The server said it needs a password: the next line is that, drawn as stars.
    app.ask("#team", hush_tui::app::Ask::Password, None);
    typed(&mut app, "s3cret pw");
    let mut terminal = Terminal::new(TestBackend::new(80, 20)).unwrap();
    terminal.draw(|f| hush_tui::ui::draw(f, &app)).unwrap();
    let drawn = screen(&terminal);
    assert!(!drawn.contains("s3cret"), "{drawn}");
    assert!(drawn.contains("*********"), "{drawn}");
    assert!(drawn.contains("password for #team"), "{drawn}");
    assert_eq!(
        app.on_key(key(KeyCode::Enter)),
        Some(Action::Join {
            name: "#team".into(),
            password: Some("s3cret pw".into()),
            code: None
        })
    );
    // Then the code, with the password kept for the second try.
    app.ask("#team", hush_tui::app::Ask::Code, Some("s3cret pw".into()));
    typed(&mut app, "123456");
    assert_eq!(
        app.on_key(key(KeyCode::Enter)),
        Some(Action::Join {
            name: "#team".into(),
            password: Some("s3cret pw".into()),
            code: Some("123456".into())
        })
    );
    // Neither is in the input history.
    app.on_key(key(KeyCode::Up));
    assert_eq!(app.input, "/join team");
    // Esc cancels a prompt.
    app.input.clear();
    app.ask("#team", hush_tui::app::Ask::Password, None);
    typed(&mut app, "abc");
    app.on_key(key(KeyCode::Esc));
    assert!(app.prompt.is_none());
    assert_eq!(app.on_key(key(KeyCode::Enter)), None);
}

#[test]
fn part_leaves_the_current_group_only() {
    let mut app = App::new("ann", "127.0.0.1:5535");
    typed(&mut app, "/part");
    assert_eq!(app.on_key(key(KeyCode::Enter)), None, "not in a group");
    app.on_event(&message("#team", "ben", "hi"), false);
    app.select("#team");
    typed(&mut app, "/part");
    assert_eq!(
        app.on_key(key(KeyCode::Enter)),
        Some(Action::Part("#team".into()))
    );
    typed(&mut app, "/join #team");
    assert_eq!(
        app.on_key(key(KeyCode::Enter)),
        None,
        "a known group is switched to"
    );
}

fn message_at(conversation: &str, from: &str, text: &str, row: i64, at_ms: i64) -> Event {
    Event::Message {
        row,
        id: format!("{row:032x}"),
        conversation: conversation.into(),
        from: from.into(),
        device: "11".repeat(16),
        sent_at_ms: at_ms,
        text: text.into(),
        outgoing: from == "ann",
        state: if from == "ann" {
            hush_client::events::MessageState::Sent
        } else {
            hush_client::events::MessageState::Received
        },
    }
}

/// ann in a conversation with ben holding `n` numbered messages, all history loaded.
fn with_history(n: usize) -> App {
    let mut app = App::new("ann", "127.0.0.1:5535");
    let events: Vec<Event> = (0..n)
        .map(|i| {
            message_at(
                "ben",
                "ben",
                &format!("message {i}"),
                i as i64 + 1,
                1_767_225_600_000 + i as i64 * 1000,
            )
        })
        .collect();
    app.set_history("ben", 10_000, &events);
    app.select("ben");
    app
}

fn draw(terminal: &mut Terminal<TestBackend>, app: &App) -> String {
    terminal.draw(|f| hush_tui::ui::draw(f, app)).unwrap();
    screen(terminal)
}

#[test]
fn the_newest_message_stays_visible_below_a_long_wrapped_line() {
    let mut app = with_history(30);
    let long = format!("start {} finish", "lorem ipsum dolor ".repeat(25));
    app.on_event(
        &message_at("ben", "ben", &long, 31, 1_767_225_700_000),
        true,
    );
    app.on_event(
        &message_at("ben", "ben", "the newest one", 32, 1_767_225_701_000),
        true,
    );
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
    let text = draw(&mut terminal, &app);
    assert!(text.contains("<ben> the newest one"), "{text}");
    assert!(text.contains("finish"), "the long line's end:\n{text}");
    assert!(!text.contains("more below"), "{text}");
    // Continuation rows hang under the text, not under the time.
    let pane: Vec<&str> = text.lines().filter_map(|r| r.split("││").nth(1)).collect();
    let first = pane.iter().position(|r| r.contains("<ben> start")).unwrap();
    let column = pane[first].find("start").unwrap();
    let next = pane[first + 1];
    assert!(
        next[..column].trim().is_empty() && !next[column..].starts_with(' '),
        "hanging indent:\n{}\n{next}",
        pane[first]
    );
}

#[test]
fn scrolling_to_the_top_and_back_in_wrapped_rows() {
    let mut app = with_history(200);
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
    let bottom = draw(&mut terminal, &app);
    assert!(bottom.contains("message 199"), "{bottom}");
    // Page by page to the top: never past the first message into a blank pane.
    let mut pages = 0;
    while !draw(&mut terminal, &app).contains("the beginning of this conversation") {
        assert_eq!(
            app.on_key(key(KeyCode::PageUp)),
            None,
            "all history is loaded"
        );
        pages += 1;
        assert!(pages < 100, "never reached the top");
    }
    assert!(
        pages > 5,
        "a page is a screenful, not one line ({pages} pages)"
    );
    for _ in 0..5 {
        app.on_key(key(KeyCode::PageUp));
    }
    let top = draw(&mut terminal, &app);
    assert!(top.contains("message 0"), "{top}");
    assert!(top.contains("more below"), "{top}");
    assert!(!top.contains("message 199"), "{top}");
    // A page down moves by a page, End comes back to the newest.
    app.on_key(key(KeyCode::PageDown));
    assert!(!draw(&mut terminal, &app).contains("message 0 "));
    app.on_key(key(KeyCode::End));
    let back = draw(&mut terminal, &app);
    assert_eq!(app.scroll, 0);
    assert!(
        back.contains("message 199") && !back.contains("more below"),
        "{back}"
    );
    // Home, then the mouse wheel down.
    app.on_key(key(KeyCode::Home));
    assert!(draw(&mut terminal, &app).contains("message 0"));
    let wheel = crossterm::event::MouseEvent {
        kind: crossterm::event::MouseEventKind::ScrollDown,
        column: 40,
        row: 10,
        modifiers: KeyModifiers::NONE,
    };
    app.on_mouse(wheel);
    assert!(app.scroll > 0);
    app.on_key(KeyEvent::new(KeyCode::End, KeyModifiers::CONTROL));
    assert_eq!(app.scroll, 0);
}

#[test]
fn older_history_is_asked_for_at_the_top_and_keeps_the_view() {
    let mut app = App::new("ann", "127.0.0.1:5535");
    let all: Vec<Event> = (0..400)
        .map(|i| {
            message_at(
                "ben",
                "ben",
                &format!("message {i}"),
                i + 1,
                1_767_225_600_000 + i * 1000,
            )
        })
        .collect();
    app.set_history("ben", 100, &all[300..]);
    app.select("ben");
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
    draw(&mut terminal, &app);
    let mut asked = None;
    for _ in 0..50 {
        if let Some(a) = app.on_key(key(KeyCode::PageUp)) {
            asked = Some(a);
            break;
        }
    }
    assert_eq!(
        asked,
        Some(Action::History {
            target: "ben".into(),
            limit: 300
        })
    );
    assert_eq!(
        app.on_key(key(KeyCode::PageUp)),
        None,
        "asked once at a time"
    );
    let before = draw(&mut terminal, &app);
    assert!(before.contains("message 300"), "{before}");
    app.set_history("ben", 300, &all[100..]);
    let after = draw(&mut terminal, &app);
    assert_eq!(before, after, "older lines load above what is in view");
    app.on_key(key(KeyCode::PageUp));
    assert!(draw(&mut terminal, &app).contains("message 2"));
}

#[test]
fn a_line_arriving_while_scrolled_up_shows_the_more_below_marker() {
    let mut app = with_history(100);
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
    draw(&mut terminal, &app);
    app.on_key(key(KeyCode::PageUp));
    let before = draw(&mut terminal, &app);
    assert!(before.contains("-- more below --"), "{before}");
    app.on_event(
        &message_at("ben", "ben", "fresh news", 101, 1_767_225_800_000),
        true,
    );
    let after = draw(&mut terminal, &app);
    assert!(after.contains("-- more below (1 new) --"), "{after}");
    assert!(!after.contains("fresh news"), "{after}");
    let strip = |s: &str| s.lines().take(15).collect::<Vec<_>>().join("\n");
    assert_eq!(strip(&before), strip(&after), "the view did not move");
    app.on_key(key(KeyCode::End));
    let bottom = draw(&mut terminal, &app);
    assert!(
        bottom.contains("fresh news") && !bottom.contains("more below"),
        "{bottom}"
    );
}

#[test]
fn alt_digits_switch_conversations_without_touching_the_input() {
    let mut app = App::new("ann", "127.0.0.1:5535");
    for c in ["ben", "cat", "#team"] {
        app.on_event(&message(c, "ben", "hi"), false);
    }
    typed(&mut app, "draft");
    let alt = |c: char| KeyEvent::new(KeyCode::Char(c), KeyModifiers::ALT);
    app.on_key(alt('3'));
    assert_eq!(app.current().name, "cat");
    app.on_key(alt('4'));
    assert_eq!(app.current().name, "#team");
    app.on_key(alt('9'));
    assert_eq!(app.current().name, "#team", "no ninth conversation");
    app.on_key(alt('1'));
    assert_eq!(app.current().name, STATUS);
    app.on_key(alt('x'));
    app.on_key(KeyEvent::new(KeyCode::Right, KeyModifiers::ALT));
    assert_eq!(app.current().name, "ben");
    app.on_key(KeyEvent::new(KeyCode::Left, KeyModifiers::ALT));
    assert_eq!(app.current().name, STATUS);
    assert_eq!(app.input, "draft");
    assert_eq!(app.cursor, 5);
}

#[test]
fn a_line_written_offline_shows_as_pending_until_the_server_has_it() {
    use hush_client::events::MessageState;
    let mut app = App::new("ann", "127.0.0.1:5535");
    app.select("ben");
    let pending = Event::Message {
        row: 7,
        id: "ab".repeat(16),
        conversation: "ben".into(),
        from: "ann".into(),
        device: "11".repeat(16),
        sent_at_ms: 1_767_225_600_000,
        text: "written offline".into(),
        outgoing: true,
        state: MessageState::Sending,
    };
    app.on_event(&pending, true);
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
    let text = draw(&mut terminal, &app);
    assert!(text.contains("<ann> written offline (sending…)"), "{text}");
    assert!(text.contains("1 unsent"), "{text}");
    app.on_event(
        &Event::Delivery {
            row: 7,
            id: "ab".repeat(16),
            conversation: "ben".into(),
            state: MessageState::Sent,
        },
        true,
    );
    let text = draw(&mut terminal, &app);
    assert!(text.contains("<ann> written offline"), "{text}");
    assert!(
        !text.contains("sending") && !text.contains("unsent"),
        "{text}"
    );
}

#[test]
fn mentions_and_direct_messages_alert_group_chatter_only_counts() {
    let config = hush_tui::config::Config::parse("notify = \"osc777\"").unwrap();
    let mut app = App::with_config("ann", "127.0.0.1:5535", config);
    app.select("ben");
    app.on_event(&message("#team", "cat", "lunch anyone?"), true);
    assert!(
        !app.bell && app.notification.is_none(),
        "group chatter is quiet"
    );
    app.on_event(&message("#team", "cat", "@ann, are you in?"), true);
    assert!(app.bell);
    let note = app.notification.take().unwrap();
    assert_eq!(note, "cat in #team: @ann, are you in?");
    let escape = hush_tui::run::notification(hush_tui::config::Notify::Osc777, &note).unwrap();
    assert!(escape.starts_with("\x1b]777;notify;hush;") && escape.ends_with("\x1b\\"));
    let team = app
        .conversations
        .iter()
        .find(|c| c.name == "#team")
        .unwrap();
    assert_eq!((team.unread, team.mentions), (2, 1));
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
    assert!(draw(&mut terminal, &app).contains("#team (2 @1)"));
    app.bell = false;
    app.on_event(&message("dan", "dan", "psst"), true);
    assert!(app.bell, "a direct message out of view");
    app.bell = false;
    app.on_event(&message("ben", "ben", "annie? anna?"), true);
    assert!(!app.bell, "in view, and not a mention of ann");
    app.select("#team");
    let team = app.current();
    assert_eq!((team.unread, team.mentions), (0, 0));
    assert!(team.lines.iter().any(|l| l.mention));
}

#[test]
fn a_peer_cannot_put_escape_sequences_on_the_terminal() {
    let mut app = App::new("ann", "127.0.0.1:5535");
    app.select("ben");
    app.on_event(
        &message("ben", "ben", "hi\x1b]0;owned\x07\x1b[2J there"),
        true,
    );
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
    let text = draw(&mut terminal, &app);
    assert!(!text.contains('\x1b') && !text.contains('\x07'), "{text:?}");
    assert!(text.contains("hi\u{fffd}]0;owned"), "{text}");
}

#[test]
fn group_commands_me_clear_and_help() {
    let mut app = App::new("ann", "127.0.0.1:5535");
    let run = |app: &mut App, line: &str| {
        typed(app, line);
        app.on_key(key(KeyCode::Enter))
    };
    let last = |app: &App| app.current().lines.last().unwrap().text.clone();
    assert_eq!(
        run(&mut app, "/create #dev ben cat"),
        Some(Action::Create {
            name: "#dev".into(),
            members: vec!["ben".into(), "cat".into()]
        })
    );
    assert_eq!(
        run(&mut app, "/create dev"),
        None,
        "a group name starts with #"
    );
    assert!(
        last(&app).contains("usage: /create #NAME"),
        "{}",
        last(&app)
    );
    assert_eq!(run(&mut app, "/add dan"), None, "not in a group");
    assert!(last(&app).contains("works in a group"));
    app.on_event(&message("#dev", "ben", "hello"), false);
    app.select("#dev");
    assert_eq!(
        run(&mut app, "/add dan eve"),
        Some(Action::Add {
            group: "#dev".into(),
            users: vec!["dan".into(), "eve".into()]
        })
    );
    assert_eq!(
        run(&mut app, "/remove dan"),
        Some(Action::Remove {
            group: "#dev".into(),
            users: vec!["dan".into()]
        })
    );
    assert_eq!(
        run(&mut app, "/promote ben"),
        Some(Action::Promote {
            group: "#dev".into(),
            users: vec!["ben".into()]
        })
    );
    assert_eq!(run(&mut app, "/leave"), Some(Action::Part("#dev".into())));
    assert_eq!(
        run(&mut app, "/part #ops"),
        Some(Action::Part("#ops".into()))
    );
    assert_eq!(
        run(&mut app, "/me waves at   everyone"),
        Some(Action::Send {
            target: "#dev".into(),
            text: "/me waves at   everyone".into()
        })
    );
    assert_eq!(
        run(&mut app, "//slash at the start"),
        Some(Action::Send {
            target: "#dev".into(),
            text: "/slash at the start".into()
        })
    );
    app.on_event(&message("#dev", "ben", "/me waves back"), false);
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
    assert!(draw(&mut terminal, &app).contains("* ben waves back"));
    assert_eq!(run(&mut app, "/clear"), None);
    assert!(app.current().lines.is_empty());
    assert!(!draw(&mut terminal, &app).contains("waves back"));
    run(&mut app, "/help join");
    assert!(last(&app).starts_with("/join #NAME: "), "{}", last(&app));
    run(&mut app, "/help nope");
    assert!(last(&app).contains("no command /nope"));
    run(&mut app, "/help");
    assert!(
        app.current()
            .lines
            .iter()
            .any(|l| l.text.starts_with("/create #NAME"))
    );
    assert!(last(&app).contains("Alt-1..9"));
    // A title line says who a 1:1 contact is verified as.
    app.select("ben");
    assert!(draw(&mut terminal, &app).contains("ben: not verified (/verify ben)"));
    app.verified.insert("ben".into());
    assert!(draw(&mut terminal, &app).contains("ben: verified ✓"));
    app.changed.insert("ben".into());
    assert!(draw(&mut terminal, &app).contains("ben: KEY CHANGED"));
}

#[test]
fn key_bindings_come_from_the_config() {
    let config =
        hush_tui::config::Config::parse("[keys]\nnext = [\"f2\"]\nquit = [\"ctrl-q\"]").unwrap();
    let mut app = App::with_config("ann", "127.0.0.1:5535", config);
    app.on_event(&message("ben", "ben", "hi"), false);
    app.on_key(key(KeyCode::F(2)));
    assert_eq!(app.current().name, "ben");
    app.on_key(key(KeyCode::Tab));
    assert_eq!(app.current().name, "ben", "Tab is no longer bound");
    assert_eq!(app.on_key(ctrl('q')), Some(Action::Quit));
    assert_eq!(
        app.on_key(ctrl('c')),
        Some(Action::Quit),
        "Ctrl-C always quits"
    );
}

fn offer(conversation: &str, from: &str, file_id: &str, name: &str, row: i64) -> Event {
    Event::File {
        row,
        id: format!("{row:032x}"),
        conversation: conversation.into(),
        from: from.into(),
        device: "11".repeat(16),
        sent_at_ms: 1_767_225_600_000,
        file_id: file_id.into(),
        name: name.into(),
        size: 3 * 1024 * 1024,
        media_type: "application/pdf".into(),
        outgoing: false,
        state: hush_client::events::MessageState::Received,
    }
}

#[test]
fn file_offers_are_shown_and_saved_with_file_and_save() {
    let mut app = App::new("ann", "127.0.0.1:5535");
    app.on_event(&message("ben", "ben", "here it comes"), true);
    app.on_key(KeyEvent::new(KeyCode::Char('2'), KeyModifiers::ALT));
    app.on_event(
        &offer("ben", "ben", &"ab".repeat(16), "report\u{1b}[2J.pdf", 2),
        true,
    );
    app.on_event(&offer("ben", "ben", &"cd".repeat(16), "notes.txt", 3), true);
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
    let shown = draw(&mut terminal, &app);
    assert!(shown.contains("<ben> [file abababab] report"), "{shown}");
    assert!(shown.contains("[2J.pdf (3.0 MiB)"), "{shown}");
    assert!(
        shown.contains("[file cdcdcdcd] notes.txt (3.0 MiB)"),
        "{shown}"
    );
    assert!(!shown.contains('\u{1b}'));

    typed(&mut app, "/save");
    assert_eq!(
        app.on_key(key(KeyCode::Enter)),
        Some(Action::SaveFile {
            file_id: "cd".repeat(16),
            path: None
        }),
        "the newest offer"
    );
    typed(&mut app, "/save 2 /tmp/x.pdf");
    assert_eq!(
        app.on_key(key(KeyCode::Enter)),
        Some(Action::SaveFile {
            file_id: "ab".repeat(16),
            path: Some("/tmp/x.pdf".into())
        })
    );
    typed(&mut app, "/save abab");
    assert!(matches!(
        app.on_key(key(KeyCode::Enter)),
        Some(Action::SaveFile { file_id, .. }) if file_id == "ab".repeat(16)
    ));
    typed(&mut app, "/save 9");
    assert_eq!(app.on_key(key(KeyCode::Enter)), None);
    typed(&mut app, "/file /home/ann/My Report.pdf");
    assert_eq!(
        app.on_key(key(KeyCode::Enter)),
        Some(Action::SendFile {
            target: "ben".into(),
            path: "/home/ann/My Report.pdf".into()
        }),
        "a path may hold spaces"
    );
}

/// Regression (issue 28): after `/part` or being removed, the title kept "3 members" and
/// the input line "to #tuigroup". Both say at once that this user is no longer in it,
/// and are back once the user is added again.
#[test]
fn a_group_this_user_left_or_was_removed_from_says_so_at_once() {
    use hush_client::events::MembershipKind;
    let membership = |kind, member: &str, you| Event::Membership {
        row: 2,
        conversation: "#team".into(),
        kind,
        member: member.into(),
        by: "ben".into(),
        at_ms: 1_767_225_600_000,
        you,
    };
    let mut app = App::new("ann", "127.0.0.1:5535");
    app.set_roster("#team", vec!["ann".into(), "ben".into(), "cat".into()]);
    app.select("#team");
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
    let text = draw(&mut terminal, &app);
    assert!(text.contains("#team: 3 members"), "{text}");
    assert!(text.contains("to #team"), "{text}");

    // Someone else leaving is news, not a change of this user's state.
    app.on_event(&membership(MembershipKind::Left, "cat", false), true);
    assert!(draw(&mut terminal, &app).contains("to #team"));

    app.on_event(&membership(MembershipKind::Removed, "ann", true), true);
    let text = draw(&mut terminal, &app);
    assert!(text.contains("#team: you are no longer in it"), "{text}");
    assert!(!text.contains("3 members"), "{text}");
    assert!(!text.contains("to #team"), "{text}");
    assert!(text.contains("ben removed you from #team"), "{text}");

    app.on_event(&membership(MembershipKind::Added, "ann", true), true);
    app.set_roster("#team", vec!["ann".into(), "ben".into()]);
    let text = draw(&mut terminal, &app);
    assert!(text.contains("#team: 2 members"), "{text}");
    assert!(text.contains("to #team"), "{text}");

    // /part marks it at once too (the front end calls mark_left when it succeeds).
    app.mark_left("#team");
    assert!(draw(&mut terminal, &app).contains("you are no longer in #team"));
}
