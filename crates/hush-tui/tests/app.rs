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
    assert_eq!(typed(&mut app, "/msg ben"), None);
    assert_eq!(app.on_key(key(KeyCode::Enter)), None);
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
    assert_eq!(run(&mut app, "/file notes.txt"), None);
    assert!(
        app.current()
            .lines
            .last()
            .unwrap()
            .text
            .contains("not available")
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
        Some(Action::Send {
            target: "cat".into(),
            text: "hi there".into()
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
    assert!(text.contains("ben: hello ann"), "{text}");
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
