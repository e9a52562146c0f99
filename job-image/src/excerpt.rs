//! Short excerpts of bad input for error messages: enough to find the problem, never a whole
//! file or record, which may be megabytes long (a parser's message may quote all of it).

use std::borrow::Cow;

/// Characters of bad input an error message quotes at most.
pub const EXCERPT_CHARS: usize = 240;

/// `text` cut after [`EXCERPT_CHARS`] characters, saying how many bytes were left out.
pub fn excerpt(text: &str) -> Cow<'_, str> {
    match text.char_indices().nth(EXCERPT_CHARS) {
        None => Cow::Borrowed(text),
        Some((cut, _)) => Cow::Owned(format!(
            "{}... ({} more bytes)",
            &text[..cut],
            text.len() - cut
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_kept_and_long_text_cut_on_a_character_boundary() {
        assert_eq!(excerpt("short"), "short");
        let long = "é".repeat(EXCERPT_CHARS + 10);
        let cut = excerpt(&long);
        assert!(cut.starts_with(&"é".repeat(EXCERPT_CHARS)));
        assert!(cut.ends_with("... (20 more bytes)"), "{cut}");
    }
}
