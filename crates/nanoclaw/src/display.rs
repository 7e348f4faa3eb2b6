//! Text from outside (memory files, task names and prompts, the agent's replies, approval
//! requests in every channel) as it is shown to a person: control characters, bidirectional
//! overrides and invisible format characters (zero-width spaces and joiners, Unicode tag
//! characters, variation selectors, soft hyphens, fillers) become visible escapes
//! (`\u{1b}`), so nothing shown can move the cursor, erase or hide a line, reorder what a
//! reviewer reads, or hide text inside what looks like `inv.txt`. Line breaks and tabs stay. Never applied to output a program reads back
//! (JSON, exports), which carries the text exactly.

use std::borrow::Cow;

/// Whether `c` would act on the terminal or on the order of the text, or show as nothing.
fn hides(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t') || invisible(c)
}

/// Characters that render as nothing (or as blank) in common fonts: Unicode's format
/// characters (general category Cf) and the default-ignorable and blank ones outside it.
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{00ad}' | '\u{034f}' | '\u{061c}' | '\u{0600}'..='\u{0605}' | '\u{06dd}'
        | '\u{070f}' | '\u{0890}'..='\u{0891}' | '\u{08e2}' | '\u{115f}'..='\u{1160}'
        | '\u{17b4}'..='\u{17b5}' | '\u{180b}'..='\u{180f}' | '\u{200b}'..='\u{200f}'
        | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{206f}' | '\u{3164}' | '\u{fe00}'..='\u{fe0f}'
        | '\u{feff}' | '\u{ffa0}' | '\u{fff0}'..='\u{fffb}' | '\u{110bd}' | '\u{110cd}'
        | '\u{13430}'..='\u{1343f}' | '\u{1bca0}'..='\u{1bca3}' | '\u{1d173}'..='\u{1d17a}'
        | '\u{e0000}'..='\u{e0fff}')
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

/// `text` for one line of a listing: as [`for_terminal`], and line breaks and tabs as escapes
/// too, so a name or prompt cannot start a line that looks like another entry.
pub fn one_line(text: &str) -> String {
    for_terminal(text).replace('\n', "\\n").replace('\t', "\\t")
}

/// What a line on the terminal's stderr is, for its colour.
#[derive(Clone, Copy)]
pub enum Tone {
    /// A tool call starting or ending: dim.
    Progress,
    /// An approval request or answer: bold yellow.
    Approval,
    /// A failure or refusal: red.
    Problem,
}

/// Print one line (escaped with [`for_terminal`]) on stderr, in `tone`'s colour only when
/// stderr is a terminal and `NO_COLOR` is not set.
pub fn tell(tone: Tone, text: &str) {
    use std::io::IsTerminal;
    let text = for_terminal(text);
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let code = match tone {
        Tone::Progress => "2",
        Tone::Approval => "1;33",
        Tone::Problem => "31",
    };
    if colour {
        eprintln!("\u{1b}[{code}m{text}\u{1b}[0m");
    } else {
        eprintln!("{text}");
    }
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

    // The red team's approval prompt: `inv\u{200b}\u{E0041}.txt` showed as `inv.txt`.
    #[test]
    fn invisible_and_tag_characters_show_as_escapes() {
        assert_eq!(
            for_terminal("inv\u{200b}\u{e0041}.txt"),
            "inv\\u{200b}\\u{e0041}.txt"
        );
        for c in [
            '\u{ad}',
            '\u{200d}',
            '\u{2060}',
            '\u{feff}',
            '\u{fe0f}',
            '\u{e0001}',
            '\u{e007f}',
            '\u{3164}',
            '\u{2028}',
        ] {
            assert_ne!(
                for_terminal(&c.to_string()),
                c.to_string(),
                "{:x}",
                c as u32
            );
        }
    }
}
