//! Word wrapping in terminal columns, so the message pane knows how many rows each
//! line takes (scrolling is measured in rows) and can indent continuation rows.
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

/// Columns `s` takes on a terminal.
pub fn width(s: &str) -> usize {
    UnicodeWidthStr::width(s)
}

/// Cuts `text` into rows of at most `columns` columns, at spaces where it can and
/// inside a word only when the word alone is wider than a row. A newline starts a new
/// row. Never returns no rows.
pub fn wrap(text: &str, columns: usize) -> Vec<String> {
    let columns = columns.max(1);
    let mut rows = Vec::new();
    for paragraph in text.split('\n') {
        let mut row = String::new();
        let mut used = 0;
        for (i, word) in paragraph.split(' ').enumerate() {
            let w = width(word);
            let gap = usize::from(i > 0);
            if used + gap + w <= columns {
                if gap == 1 {
                    row.push(' ');
                }
                row.push_str(word);
                used += gap + w;
                continue;
            }
            if !row.is_empty() {
                rows.push(std::mem::take(&mut row));
                used = 0;
            }
            if w <= columns {
                row.push_str(word);
                used = w;
                continue;
            }
            for c in word.chars() {
                let cw = c.width().unwrap_or(0);
                if used + cw > columns && !row.is_empty() {
                    rows.push(std::mem::take(&mut row));
                    used = 0;
                }
                row.push(c);
                used += cw;
            }
        }
        rows.push(row);
    }
    rows
}

/// What a peer's text may not put on the terminal: control characters (escape
/// sequences, carriage returns, bells) become U+FFFD, tabs a space; newlines stay.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\n' => '\n',
            '\t' => ' ',
            c if c.is_control() => '\u{fffd}',
            // Bidirectional overrides could make a line read differently from what it is.
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => '\u{fffd}',
            c => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_at_spaces_and_cuts_only_long_words() {
        assert_eq!(wrap("hello there world", 11), ["hello there", "world"]);
        assert_eq!(wrap("abcdefghij", 4), ["abcd", "efgh", "ij"]);
        assert_eq!(wrap("a bcdefghij", 4), ["a", "bcde", "fghi", "j"]);
        assert_eq!(wrap("", 5), [""]);
        assert_eq!(wrap("one\ntwo", 10), ["one", "two"]);
        assert_eq!(wrap("x", 0), ["x"]);
        // Wide characters count two columns.
        assert_eq!(wrap("日本語", 4), ["日本", "語"]);
        for row in wrap(&"word ".repeat(100), 17) {
            assert!(width(&row) <= 17, "{row:?}");
        }
    }

    #[test]
    fn control_characters_never_reach_the_terminal() {
        assert_eq!(
            printable("a\x1b[2Jb\rc\x07\td\u{202e}e\nf"),
            "a\u{fffd}[2Jb\u{fffd}c\u{fffd} d\u{fffd}e\nf"
        );
    }
}
