//! Drawing: conversation list, message pane, input line and status line. Works from
//! 80x24 down to tiny terminals without panicking.
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Position};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line as TextLine, Span};
use ratatui::widgets::{Block, Borders, List, ListItem, ListState, Paragraph, Wrap};

use crate::app::{App, Connection, LineKind, STATUS};

pub fn draw(f: &mut Frame<'_>, app: &App) {
    let [main, input, status] = Layout::vertical([
        Constraint::Min(3),
        Constraint::Length(3),
        Constraint::Length(1),
    ])
    .areas(f.area());
    let list_width = (main.width / 4).clamp(12, 24);
    let [list, pane] =
        Layout::horizontal([Constraint::Length(list_width), Constraint::Min(10)]).areas(main);

    let items: Vec<ListItem<'_>> = app
        .conversations
        .iter()
        .map(|c| {
            let mark = if app.verified.contains(&c.name) {
                " ✓"
            } else {
                ""
            };
            let label = if c.unread > 0 {
                format!("{}{mark} ({})", c.name, c.unread)
            } else {
                format!("{}{mark}", c.name)
            };
            let style = if c.unread > 0 {
                Style::default().add_modifier(Modifier::BOLD)
            } else {
                Style::default()
            };
            ListItem::new(label).style(style)
        })
        .collect();
    let mut state = ListState::default().with_selected(Some(app.selected));
    f.render_stateful_widget(
        List::new(items)
            .block(Block::default().borders(Borders::ALL).title("chats"))
            .highlight_style(Style::default().add_modifier(Modifier::REVERSED)),
        list,
        &mut state,
    );

    let current = app.current();
    let lines: Vec<TextLine<'_>> = current
        .lines
        .iter()
        .map(|l| {
            let time = Span::styled(format!("{} ", l.time), Style::default().fg(Color::DarkGray));
            match (&l.kind, &l.from) {
                (LineKind::Message, Some(from)) => {
                    let color = if *from == app.me {
                        Color::Cyan
                    } else {
                        Color::Green
                    };
                    TextLine::from(vec![
                        time,
                        Span::styled(
                            format!("{from}: "),
                            Style::default().fg(color).add_modifier(Modifier::BOLD),
                        ),
                        Span::raw(l.text.clone()),
                    ])
                }
                (LineKind::Security, _) => TextLine::from(vec![
                    time,
                    Span::styled(format!("!! {}", l.text), Style::default().fg(Color::Red)),
                ]),
                _ => TextLine::from(vec![
                    time,
                    Span::styled(format!("-- {}", l.text), Style::default().fg(Color::Yellow)),
                ]),
            }
        })
        .collect();
    let height = pane.height.saturating_sub(2) as usize;
    let end = lines.len().saturating_sub(app.scroll);
    let start = end.saturating_sub(height);
    let visible: Vec<TextLine<'_>> = lines[start..end].to_vec();
    f.render_widget(
        Paragraph::new(visible).wrap(Wrap { trim: false }).block(
            Block::default()
                .borders(Borders::ALL)
                .title(current.title()),
        ),
        pane,
    );

    let title = match &app.prompt {
        Some(p) => match p.ask {
            crate::app::Ask::Password => format!("password for {} (hidden)", p.channel),
            crate::app::Ask::Code => format!("code for {}", p.channel),
        },
        None if current.name == STATUS => "type /help".to_owned(),
        None => format!("to {}", current.name),
    };
    // A channel password is never drawn.
    let shown = match &app.prompt {
        Some(p) if p.ask == crate::app::Ask::Password => "*".repeat(app.input.chars().count()),
        _ => app.input.clone(),
    };
    f.render_widget(
        Paragraph::new(shown).block(Block::default().borders(Borders::ALL).title(title)),
        input,
    );
    let cursor_x = input.x + 1 + (app.cursor as u16).min(input.width.saturating_sub(3));
    f.set_cursor_position(Position::new(cursor_x, input.y + 1));

    let (state_text, color) = match &app.connection {
        Connection::Online => ("online".to_owned(), Color::Green),
        Connection::Connecting => ("connecting…".to_owned(), Color::Yellow),
        Connection::Offline(why) => (format!("offline: {why}"), Color::Red),
    };
    f.render_widget(
        Paragraph::new(TextLine::from(vec![
            Span::raw(format!(" {} @ {} | ", app.me, app.server)),
            Span::styled(state_text, Style::default().fg(color)),
            Span::raw(" | /help"),
        ])),
        status,
    );
}
