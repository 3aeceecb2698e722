//! Edge: text from the network made safe where it leaves this program for a person. Terminal
//! renderers escape control characters (a server or cluster name holding an escape sequence must
//! not drive the operator's terminal), and remediation commands quote names for a POSIX shell (a
//! name holding a quote must not break out of a command that is copied and pasted).

use std::borrow::Cow;

/// True for a character a terminal may act on rather than show: C0 and C1 controls (newline and
/// tab included: inside a field they would forge lines and columns), DEL, and the Unicode
/// marks that reorder or hide text (bidirectional overrides and isolates).
pub(crate) fn unsafe_for_terminal(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// `text` as one field of terminal output: every character a terminal may act on written as
/// its Rust escape (`\u{1b}` for ESC, `\u{a}` for a newline), the rest unchanged.
pub fn terminal_field(text: &str) -> Cow<'_, str> {
    if !text.chars().any(unsafe_for_terminal) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_for_terminal(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Escapes every string (object keys too) of a reply or event with [`terminal_field`], before it
/// is rendered as text. JSON output is printed from the raw bytes instead: serde escapes there.
pub fn escape_json_strings(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) => {
            if let Cow::Owned(escaped) = terminal_field(s) {
                *s = escaped;
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(escape_json_strings),
        serde_json::Value::Object(map) => {
            let entries = std::mem::take(map);
            for (key, mut item) in entries {
                escape_json_strings(&mut item);
                map.insert(terminal_field(&key).into_owned(), item);
            }
        }
        _ => {}
    }
}

/// Decodes a JSON reply or event for a terminal renderer: every string escaped
/// ([`escape_json_strings`]), so no renderer prints raw network text.
pub fn decode_for_terminal<T: serde::de::DeserializeOwned>(
    body: &[u8],
) -> Result<T, serde_json::Error> {
    let mut value: serde_json::Value = serde_json::from_slice(body)?;
    escape_json_strings(&mut value);
    serde_json::from_value(value)
}

/// `word` as one argument of a POSIX shell command: bare when it holds only characters no
/// shell treats specially, else in single quotes, each embedded `'` written `'\''`. Inside
/// single quotes nothing expands (`$(...)`, backticks, `$VAR`, globs, newlines are literal).
pub fn shell_quote(word: &str) -> Cow<'_, str> {
    let bare = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.,:/@%+=".contains(&b));
    if bare {
        Cow::Borrowed(word)
    } else {
        Cow::Owned(format!("'{}'", word.replace('\'', r"'\''")))
    }
}

#[cfg(test)]
/// Names a test can put anywhere a server, cluster or domain name goes: quotes, command
/// substitution, backticks, spaces, newlines, terminal escape sequences, bidi overrides.
pub(crate) const HOSTILE_NAMES: &[&str] = &[
    "n'1",
    "$(touch /tmp/pwned)",
    "`id`",
    "two words",
    "line\nbreak",
    "\u{1b}]0;owned\u{7}\u{1b}[2J\u{1b}[31mred",
    "a\u{9b}31mb\u{202e}c\r\t",
    "';rm -rf ~;'",
];

/// The words a POSIX shell (`sh`) makes of `command` without running it: it runs `printf` on
/// them instead, so a command substitution that escaped its quotes would show (and run) here.
#[cfg(test)]
pub(crate) fn shell_words(command: &str) -> Vec<String> {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("printf '%s\\0' {command}"))
        .output()
        .expect("sh runs");
    assert!(out.status.success(), "{command}: {out:?}");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    text.split_terminator('\0').map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn through_sh(quoted: &str) -> String {
        let words = shell_words(quoted);
        assert_eq!(words.len(), 1, "{quoted}: {words:?}");
        words[0].clone()
    }

    #[test]
    fn hostile_names_reach_the_shell_as_one_literal_word() {
        for name in HOSTILE_NAMES
            .iter()
            .chain(&["n1", "peer-abc.x:4222", "it's"])
        {
            let quoted = shell_quote(name);
            assert_eq!(through_sh(&quoted), *name, "{quoted}");
        }
        assert_eq!(shell_quote("n1"), "n1");
        assert_eq!(shell_quote("ZnRYvR3s"), "ZnRYvR3s");
        assert_eq!(shell_quote("n'1"), r"'n'\''1'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_words("a ''"), ["a", ""]);
        assert_eq!(shell_quote("$(x)"), "'$(x)'");
    }

    #[test]
    fn terminal_fields_carry_no_control_characters() {
        for name in HOSTILE_NAMES {
            let shown = terminal_field(name);
            assert!(!shown.chars().any(unsafe_for_terminal), "{shown:?}");
        }
        assert_eq!(terminal_field("n1 (east)"), "n1 (east)");
        assert_eq!(terminal_field("é→✓"), "é→✓");
        assert_eq!(terminal_field("\u{1b}[2J"), r"\u{1b}[2J");
        assert_eq!(terminal_field("a\nb"), r"a\u{a}b");
        let mut value = serde_json::json!({"k\u{1b}": ["x\u{7}", {"y": "\u{9b}"}], "n": 1});
        escape_json_strings(&mut value);
        assert_eq!(
            value,
            serde_json::json!({r"k\u{1b}": [r"x\u{7}", {"y": r"\u{9b}"}], "n": 1})
        );
    }
}
