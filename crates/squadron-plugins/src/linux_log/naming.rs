//! How SQUAD 1.98 turns a snippet into a test name and a fingerprint
//! (`BaseLogParser.remove_numbers_and_time`, `create_name`,
//! `create_shasum`, the build parser's `create_name` and
//! `post_process_test_name`, and Django's `slugify`).

use std::sync::LazyLock;

use regex::Regex;
use sha2::{Digest, Sha256};
use unicode_normalization::UnicodeNormalization;

fn regex(pattern: &str) -> Regex {
    Regex::new(pattern).unwrap_or_else(|e| panic!("bad built-in pattern {pattern}: {e}"))
}

/// A pattern with word boundaries (`{B}`), compiled twice: with Unicode
/// boundaries as Python has them, and with ASCII ones, which give the same
/// matches on ASCII text and let the regex engine use its fast DFAs.
struct Bounded {
    unicode: Regex,
    ascii: Regex,
}

impl Bounded {
    fn new(pattern: &str) -> Self {
        Bounded { unicode: regex(&pattern.replace("{B}", r"\b")), ascii: regex(&pattern.replace("{B}", r"(?-u:\b)")) }
    }

    fn get(&self, ascii: bool) -> &Regex {
        if ascii {
            &self.ascii
        } else {
            &self.unicode
        }
    }
}

static SECONDS: LazyLock<Bounded> = LazyLock::new(|| Bounded::new(r"{B}\d+\.\d+s{B}"));
static TAINTED: LazyLock<Regex> = LazyLock::new(|| regex(r"(Not t|T)ainted.*"));
static HEX_WORD: LazyLock<Bounded> = LazyLock::new(|| Bounded::new(r"{B}(?:0x)?[a-fA-F0-9]+{B}"));
// SQUAD: `(0x[a-f0-9]+|[<\[][0-9a-f]+?[>\]]|\b\d+\b(?!\s*\())`; the
// lookahead is checked by hand in `remove_numbers`.
static NUMBERS: LazyLock<Bounded> = LazyLock::new(|| Bounded::new(r"0x[a-f0-9]+|[<\[][0-9a-f]+?[>\]]|{B}\d+{B}"));
static CALL_PAREN: LazyLock<Regex> = LazyLock::new(|| regex(r"^\s*\("));
static LEADING_TIME: LazyLock<Regex> = LazyLock::new(|| regex(r"^<?>?\[[^\]]+\](\[[^\]]+\])?"));
static TMP_OBJECT: LazyLock<Regex> = LazyLock::new(|| regex(r"/tmp\S*?/\S*?\.o"));
static OBJECT_IN_PARENS: LazyLock<Regex> = LazyLock::new(|| regex(r"\(\S*?\.o\)"));
static PATH_PUNCTUATION: LazyLock<Regex> = LazyLock::new(|| regex(r"[/\.]"));
static ANY_NUMBER: LazyLock<Regex> = LazyLock::new(|| regex(r"0x[a-f0-9]+|[<\[][0-9a-f]+?[>\]]|\d+"));
static BRACES: LazyLock<Regex> = LazyLock::new(|| regex(r"\{.+?\}"));
static BRACKETS: LazyLock<Regex> = LazyLock::new(|| regex(r"\[.+?\]"));

/// SQUAD's `remove_numbers_and_time`: drops `12.34s` durations, the rest of
/// `Tainted`/`Not tainted` lines, hex and decimal words (but not numbers
/// that are part of a function name), and a leading `<n>[ time][ Tn]`.
pub(crate) fn remove_numbers_and_time(snippet: &str) -> String {
    let ascii = snippet.is_ascii();
    let text = SECONDS.get(ascii).replace_all(snippet, "");
    let text = TAINTED.replace_all(&text, "");
    let text = HEX_WORD.get(ascii).replace_all(&text, "");
    let text = remove_numbers(&text);
    LEADING_TIME.replace(&text, "").into_owned()
}

/// Removes `0x..` numbers, `<hex>`/`[hex]` and decimal words not followed by
/// `(` (a decimal word followed by `(` is kept, as SQUAD's lookahead does).
fn remove_numbers(text: &str) -> String {
    let numbers = NUMBERS.get(text.is_ascii());
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut from = 0;
    while let Some(found) = numbers.find_at(text, from) {
        // The first two alternatives start with `0x`, `<` or `[`; the
        // third, a decimal word, is kept when a `(` follows.
        let word = found.as_str();
        let decimal = !(word.starts_with("0x") || word.starts_with(['<', '[']));
        if !(decimal && CALL_PAREN.is_match(&text[found.end()..])) {
            out.push_str(&text[copied..found.start()]);
            copied = found.end();
        }
        from = found.end();
    }
    out.push_str(&text[copied..]);
    out
}

/// The build parser's clean-up of an extracted name before slugifying it.
pub(crate) fn clean_build_name(text: &str) -> String {
    let text = remove_numbers(text);
    let text = TMP_OBJECT.replace_all(&text, "");
    let text = OBJECT_IN_PARENS.replace_all(&text, "");
    post_process_build_name(&text)
}

/// SQUAD's `post_process_test_name` (build parser).
fn post_process_build_name(text: &str) -> String {
    let text = text.replace("builds/linux", "");
    let text = PATH_PUNCTUATION.replace_all(&text, "_");
    let text = ANY_NUMBER.replace_all(&text, "");
    let text = BRACES.replace_all(&text, "");
    BRACKETS.replace_all(&text, "").into_owned()
}

/// SQUAD's `create_name`: the slug of the cleaned first match of `extract`
/// in the snippet, or `None` when there is no match or the slug is empty.
pub(crate) fn create_name(snippet: &str, extract: &Regex, clean: fn(&str) -> String) -> Option<String> {
    let found = extract.find(snippet)?;
    let slug = slugify(&clean(found.as_str()));
    (!slug.is_empty()).then_some(slug)
}

/// SQUAD's `create_shasum`: hex SHA-256 of the snippet without numbers and times.
pub(crate) fn shasum(snippet: &str) -> String {
    hex::encode(Sha256::digest(remove_numbers_and_time(snippet).as_bytes()))
}

/// Django's `slugify` (without `allow_unicode`): NFKD, drop what is not
/// ASCII, lower-case, drop what is not a word character, space or `-`,
/// collapse runs of spaces and `-` into one `-`, strip `-` and `_` at both ends.
pub(crate) fn slugify(text: &str) -> String {
    // Python's `\s` on ASCII also takes the information separators 0x1c-0x1f.
    let is_space = |c: char| matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c' | '\x1c'..='\x1f');
    let mut slug = String::with_capacity(text.len());
    let mut separator = false;
    let mut add = |c: char| {
        let c = c.to_ascii_lowercase();
        if c == '-' || is_space(c) {
            separator = true;
        } else if c.is_ascii_alphanumeric() || c == '_' {
            if separator {
                slug.push('-');
                separator = false;
            }
            slug.push(c);
        }
    };
    // NFKD leaves ASCII text as it is: skip the (slow) decomposition then.
    if text.is_ascii() {
        text.chars().for_each(&mut add);
    } else {
        text.nfkd().filter(char::is_ascii).for_each(&mut add);
    }
    slug.trim_matches(['-', '_']).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linux_log::engine::python_regex;

    fn vectors() -> Vec<serde_json::Value> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../testdata/squad/log_parser_base/name-normalization-vectors.json"
        );
        let text = std::fs::read_to_string(path).expect("name-normalization-vectors.json");
        let json: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        json["vectors"].as_array().expect("vectors").clone()
    }

    #[test]
    fn squad_unit_vectors() {
        let mut checked = 0;
        for vector in vectors() {
            let args = vector["args"].as_array().expect("args");
            let expected = &vector["squad_1_98_output"];
            let text = args[0].as_str().unwrap_or_default();
            let regex_arg = || args[1].as_str().map(python_regex);
            let got = match vector["function"].as_str().expect("function") {
                "base.remove_numbers_and_time" => serde_json::json!(remove_numbers_and_time(text)),
                "base.create_shasum" => serde_json::json!(shasum(text)),
                "base.create_name" => {
                    let name = regex_arg().and_then(|re| create_name(text, &re, remove_numbers_and_time));
                    serde_json::json!(name)
                }
                "build.create_name" => {
                    serde_json::json!(regex_arg().and_then(|re| create_name(text, &re, clean_build_name)))
                }
                "build.post_process_test_name" => serde_json::json!(post_process_build_name(text)),
                // Naming-dictionary and split vectors are covered through the
                // parsers' fixture tests.
                _ => continue,
            };
            assert_eq!(&got, expected, "{vector}");
            checked += 1;
        }
        assert_eq!(checked, 12);
    }

    #[test]
    fn kfence_seconds_are_removed() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/squad/log_parser_base");
        let expected = std::fs::read_to_string(format!("{dir}/kfence-seconds-expected.log")).expect("expected log");
        let json = std::fs::read_to_string(format!("{dir}/kfence-seconds.expected.json")).expect("expected json");
        let json: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        let snippet = json["reference_output_squad_1_98"][0]["snippets"][0].as_str().expect("snippet");
        assert_eq!(remove_numbers_and_time(snippet).trim(), expected.trim());
    }

    #[test]
    fn slugify_like_django() {
        assert_eq!(slugify(" Hello, World! "), "hello-world");
        assert_eq!(slugify("_-a  --  b_-"), "a-b");
        assert_eq!(slugify("Ça\u{fb01}ne"), "cafine");
        assert_eq!(slugify("x\u{fffd}y"), "xy");
    }
}
