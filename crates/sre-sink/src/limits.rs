//! What an incident carries has no size limit; what a sink keeps and sends has: a bus
//! message (1 MB by default), a vendor's field (Jira 32,767 characters, GitHub 65,536,
//! PagerDuty 512 KB an event). Text is cut here, at a character boundary, with a visible
//! note saying how much was left out, never refused and never lost silently.

use std::borrow::Cow;

/// A ticket's description or a page's details, as a sink sends and keeps it.
pub const BODY_MAX: usize = 32_000;
/// One note or comment a sink carries from another tool.
pub const NOTE_MAX: usize = 16_000;
/// A reason or a why (a reopen's, a severity change's).
pub const REASON_MAX: usize = 2_000;
/// A short value a record keeps (a title, a label's name or value).
pub const SHORT_MAX: usize = 1_024;
/// A name or URL a record keeps (a service, an environment, a link).
pub const FIELD_MAX: usize = 2_048;

/// `text` in at most `max` characters: as it is when it fits, else its beginning and a
/// note saying how much of it that is.
pub fn fit(text: &str, max: usize) -> Cow<'_, str> {
    let total = text.chars().count();
    if total <= max {
        return Cow::Borrowed(text);
    }
    let note =
        |kept: usize| format!("\n\n[… cut: the first {kept} of {total} characters; the rest is in the SRE platform]");
    let kept = max.saturating_sub(note(max).chars().count());
    let end = text.char_indices().nth(kept).map_or(text.len(), |(i, _)| i);
    Cow::Owned(format!("{}{}", &text[..end], note(kept)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_that_fits_is_kept_and_the_rest_is_cut_with_a_note_at_a_character() {
        assert_eq!(fit("short", 10), "short");
        let long = "é".repeat(50_000);
        let cut = fit(&long, BODY_MAX);
        assert!(cut.chars().count() <= BODY_MAX, "{}", cut.chars().count());
        assert!(cut.starts_with("éé") && cut.ends_with("of 50000 characters; the rest is in the SRE platform]"));
        assert!(cut.contains("[… cut: the first 31"), "{}", &cut[cut.len() - 120..]);
        // Tiny limits still give valid text.
        assert!(fit(&long, 5).chars().count() <= 120);
    }
}
