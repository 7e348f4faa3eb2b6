//! Text from outside (memory files, task names and prompts, the agent's replies) as it is shown
//! on a terminal: control characters and bidirectional overrides become visible escapes
//! (`\u{1b}`), so nothing printed can move the cursor, erase or hide a line, or reorder what a
//! reviewer reads. Line breaks and tabs stay. Never applied to output a program reads back
//! (JSON, exports), which carries the text exactly.

use std::borrow::Cow;

/// Whether `c` would act on the terminal or on the order of the text instead of showing.
fn hides(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every character that [`hides`] written as `\u{XX}`.
pub fn for_terminal(text: &str) -> Cow<'_, str> {
    if !text.chars().any(hides) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if hides(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_overrides_show_as_text() {
        assert_eq!(for_terminal("plain\n\ttext"), "plain\n\ttext");
        assert_eq!(
            for_terminal("ok\u{1b}[2K\rbackup\u{1b}[8m hidden"),
            "ok\\u{1b}[2K\\u{d}backup\\u{1b}[8m hidden"
        );
        assert_eq!(
            for_terminal("a\u{202e}cba\u{2069}"),
            "a\\u{202e}cba\\u{2069}"
        );
        assert_eq!(for_terminal("\u{7f}\u{9b}"), "\\u{7f}\\u{9b}");
        assert!(matches!(for_terminal("日本 é"), Cow::Borrowed(_)));
    }
}
