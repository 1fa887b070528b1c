//! Drawing: conversation list, message pane, input line and status line. Works from
//! 80x24 down to tiny terminals without panicking. The message pane is drawn from
//! rows wrapped here ([`rows`]), the same rows [`App`] scrolls by.
use hush_client::events::MessageState;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Position};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line as TextLine, Span};
use ratatui::widgets::{Block, Borders, List, ListItem, ListState, Paragraph};
use time::OffsetDateTime;

use crate::app::{App, Ask, Connection, Conversation, Line, LineKind, STATUS};
use crate::wrap::{width, wrap};

fn datetime(ms: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)).ok()
}

fn day(ms: i64) -> String {
    let format = time::macros::format_description!("[weekday repr:short] [year]-[month]-[day]");
    datetime(ms)
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_default()
}

/// A name's colour: the same for the same name, whatever else is on screen.
pub fn nick_color(app: &App, name: &str) -> Color {
    if name == app.me {
        return app.config.colors.own;
    }
    // FNV-1a: stable across runs and platforms (std's hasher is seeded).
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let nicks = &app.config.colors.nicks;
    nicks
        .get((hash % nicks.len().max(1) as u64) as usize)
        .copied()
        .unwrap_or(Color::Reset)
}

fn suffix(line: &Line) -> &'static str {
    match line.state {
        Some(MessageState::Sending) => " (sending…)",
        Some(MessageState::Failed) => " (not sent)",
        Some(MessageState::Partial) => " (not to every device)",
        Some(MessageState::Restored) => " (restored)",
        _ => "",
    }
}

/// One line as rows of at most `columns` columns: time and nick, then the text with
/// continuation rows indented under it (or, when the pane is too narrow for that,
/// the text on rows of its own).
fn line_rows(app: &App, line: &Line, columns: usize, out: &mut Vec<TextLine<'static>>) {
    let colors = &app.config.colors;
    let time = datetime(line.at_ms)
        .and_then(|t| t.format(&app.config.timestamp).ok())
        .unwrap_or_default();
    let mut prefix = vec![Span::styled(
        format!("{time} "),
        Style::default().fg(colors.time),
    )];
    let from = line.from.clone().unwrap_or_default();
    let (text_style, marker) = match line.kind {
        LineKind::Message | LineKind::File => {
            prefix.push(Span::styled(
                format!("<{from}> "),
                Style::default()
                    .fg(nick_color(app, &from))
                    .add_modifier(Modifier::BOLD),
            ));
            let style = if line.mention {
                Style::default()
                    .fg(colors.mention)
                    .add_modifier(Modifier::BOLD)
            } else {
                Style::default()
            };
            (style, "")
        }
        LineKind::Action => {
            prefix.push(Span::styled(
                format!("* {from} "),
                Style::default().fg(nick_color(app, &from)),
            ));
            (Style::default().add_modifier(Modifier::ITALIC), "")
        }
        LineKind::Notice => (Style::default().fg(colors.notice), "-- "),
        LineKind::Security => (Style::default().fg(colors.security), "!! "),
    };
    if !marker.is_empty() {
        prefix.push(Span::styled(marker, text_style));
    }
    let prefix_width: usize = prefix.iter().map(|s| width(&s.content)).sum();
    let end = suffix(line);
    let text = format!("{}{end}", line.text);
    let end_style = match line.state {
        Some(MessageState::Sending) => Style::default().fg(colors.pending),
        _ => Style::default().fg(colors.security),
    };
    // The text's rows, the suffix styled apart on the last one when it stayed whole.
    let styled = |row: String, last: bool| -> Vec<Span<'static>> {
        match row.strip_suffix(end) {
            Some(body) if last && !end.is_empty() => vec![
                Span::styled(body.to_owned(), text_style),
                Span::styled(end, end_style),
            ],
            _ => vec![Span::styled(row, text_style)],
        }
    };
    let hanging = prefix_width * 2 <= columns;
    let text_columns = if hanging {
        columns - prefix_width
    } else {
        columns
    };
    let wrapped = wrap(&text, text_columns);
    let n = wrapped.len();
    if hanging {
        for (i, row) in wrapped.into_iter().enumerate() {
            let mut spans = if i == 0 {
                prefix.clone()
            } else {
                vec![Span::raw(" ".repeat(prefix_width))]
            };
            spans.extend(styled(row, i + 1 == n));
            out.push(TextLine::from(spans));
        }
    } else {
        let head: String = prefix.iter().map(|s| s.content.as_ref()).collect();
        for row in wrap(head.trim_end(), columns) {
            out.push(TextLine::from(Span::styled(
                row,
                Style::default().fg(colors.time),
            )));
        }
        for (i, row) in wrapped.into_iter().enumerate() {
            out.push(TextLine::from(styled(row, i + 1 == n)));
        }
    }
}

/// Every row of `conv` at `columns` columns: a day separator where the date changes,
/// then each line's rows.
pub fn rows(app: &App, conv: &Conversation, columns: u16) -> Vec<TextLine<'static>> {
    let columns = usize::from(columns).max(1);
    let mut out = Vec::new();
    if conv.complete && conv.name != STATUS && !conv.lines.is_empty() {
        out.push(separator(
            "the beginning of this conversation",
            columns,
            app,
        ));
    }
    // Above the oldest loaded line the day is said only once nothing older is left to
    // load, so loading older lines never shifts what is in view.
    let mut last_day = match conv.lines.first() {
        Some(first) if !conv.complete => Some(day(first.at_ms)),
        _ => None,
    };
    for line in &conv.lines {
        let d = day(line.at_ms);
        if last_day.as_ref() != Some(&d) {
            out.push(separator(&d, columns, app));
            last_day = Some(d);
        }
        line_rows(app, line, columns, &mut out);
    }
    out
}

fn separator(text: &str, columns: usize, app: &App) -> TextLine<'static> {
    let label = format!(" {text} ");
    let side = columns.saturating_sub(width(&label)) / 2;
    let mut row = format!("{}{label}{}", "─".repeat(side), "─".repeat(side));
    if width(&row) > columns {
        row = wrap(text, columns).swap_remove(0);
    }
    TextLine::from(Span::styled(
        row,
        Style::default().fg(app.config.colors.time),
    ))
}

fn list_label(app: &App, i: usize, c: &Conversation) -> String {
    let number = match i {
        0..=8 => format!("{} ", i + 1),
        9 => "0 ".to_owned(),
        _ => "  ".to_owned(),
    };
    let mark = if app.changed.contains(&c.name) {
        " !"
    } else if app.verified.contains(&c.name) {
        " ✓"
    } else {
        ""
    };
    match (c.unread, c.mentions) {
        (0, _) => format!("{number}{}{mark}", c.name),
        (n, 0) => format!("{number}{}{mark} ({n})", c.name),
        (n, m) => format!("{number}{}{mark} ({n} @{m})", c.name),
    }
}

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
        .enumerate()
        .map(|(i, c)| {
            let style = match (c.unread, c.mentions) {
                (0, _) => Style::default(),
                (_, 0) => Style::default().add_modifier(Modifier::BOLD),
                _ => Style::default()
                    .fg(app.config.colors.mention)
                    .add_modifier(Modifier::BOLD),
            };
            ListItem::new(list_label(app, i, c)).style(style)
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
    let (columns, height) = (pane.width.saturating_sub(2), pane.height.saturating_sub(2));
    app.viewport.set((columns, height));
    let all = rows(app, current, columns);
    let height = usize::from(height);
    let scrolled = app.scroll > 0 && height >= 2 && all.len() > height;
    let room = height - usize::from(scrolled);
    let end = all
        .len()
        .saturating_sub(if scrolled { app.scroll } else { 0 });
    let end = end.max(room.min(all.len()));
    let start = end.saturating_sub(room);
    let mut visible: Vec<TextLine<'_>> = all[start..end].to_vec();
    if scrolled {
        let text = match app.new_below {
            0 => "-- more below --".to_owned(),
            n => format!("-- more below ({n} new) --"),
        };
        visible.push(TextLine::from(Span::styled(
            text,
            Style::default().add_modifier(Modifier::REVERSED),
        )));
    }
    f.render_widget(
        Paragraph::new(visible).block(Block::default().borders(Borders::ALL).title(app.title())),
        pane,
    );

    let title = match &app.prompt {
        Some(p) => match p.ask {
            Ask::Password => format!("password for {} (hidden)", p.channel),
            Ask::Code => format!("code for {}", p.channel),
        },
        None if current.name == STATUS => "type /help".to_owned(),
        None if current.left => format!("you are no longer in {}", current.name),
        None if matches!(app.connection, Connection::Online) => format!("to {}", current.name),
        None => format!("to {} (sent when back online)", current.name),
    };
    // A channel password is never drawn.
    let shown: String = match &app.prompt {
        Some(p) if p.ask == Ask::Password => "*".repeat(app.input.chars().count()),
        _ => app.input.clone(),
    };
    // Long input scrolls sideways so the cursor stays in view.
    let room = usize::from(input.width.saturating_sub(3)).max(1);
    let skip = app.cursor.saturating_sub(room);
    let shown: String = shown.chars().skip(skip).collect();
    f.render_widget(
        Paragraph::new(shown).block(Block::default().borders(Borders::ALL).title(title)),
        input,
    );
    let cursor_x = input.x + 1 + ((app.cursor - skip) as u16).min(input.width.saturating_sub(3));
    f.set_cursor_position(Position::new(cursor_x, input.y + 1));

    let (state_text, color) = match &app.connection {
        Connection::Online => ("online".to_owned(), Color::Green),
        Connection::Connecting => ("connecting…".to_owned(), Color::Yellow),
        Connection::Offline(why) => (why.clone(), Color::Red),
    };
    let unsent = app
        .conversations
        .iter()
        .flat_map(|c| &c.lines)
        .filter(|l| l.state == Some(MessageState::Sending))
        .count();
    let mut spans = vec![Span::raw(format!(" {} @ {} | ", app.me, app.server))];
    if unsent > 0 {
        spans.push(Span::raw(format!("{unsent} unsent | ")));
    }
    spans.push(Span::styled(state_text, Style::default().fg(color)));
    spans.push(Span::raw(" | /help"));
    f.render_widget(Paragraph::new(TextLine::from(spans)), status);
}
