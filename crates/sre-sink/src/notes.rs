//! Notes carried between tools, written once for every sink: how a note is written on a
//! page or a ticket (the note, who wrote it and where, and a short mark that names it), how
//! a sink tells its own notes from a person's when they come back by webhook, and the marks
//! a record keeps so each note is posted once across redeliveries, replicas and a crash
//! mid-call. Pure.
//!
//! A note is claimed in its record (compare-and-set) before the vendor call and marked
//! posted after it. A claim left by a crash goes stale as any claim does (`claim`); the
//! next delivery then looks for the note's mark on the page or ticket before posting it
//! again, so a note the vendor took before the crash is not posted twice.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::claim::{Liveness, liveness};

/// What opens the mark every note this integration writes ends with.
const MARK_OPEN: &str = "[sre-note ";

/// How many notes a record remembers (the most recent): enough for any redelivery, bounded
/// so a record stays small.
pub const REMEMBERED: usize = 64;

/// The id of a note: from the fact's idempotency key (the same on every delivery).
pub fn note_id(key: &str) -> String {
    let derived = sre_resilience::idempotency::derive_key("note", &[key]);
    derived.rsplit(':').next().unwrap_or(&derived)[..12].to_owned()
}

/// The mark a note's text ends with.
pub fn mark(id: &str) -> String {
    format!("{MARK_OPEN}{id}]")
}

/// Whether `text` is a note this integration wrote (it carries a mark): a webhook of it is
/// an echo, never a person's note.
pub fn is_ours(text: &str) -> bool {
    text.contains(MARK_OPEN)
}

/// `text` with its mark moved to the front, for a vendor whose webhooks may cut a long
/// note short (PagerDuty's `trimmed`): the copy that comes back still carries the mark, so
/// it is still an echo.
pub fn mark_first(text: &str) -> String {
    match text.rfind(MARK_OPEN) {
        Some(at) => {
            let (body, mark) = text.split_at(at);
            format!("{} {}", mark.trim_end(), body.trim_end())
        }
        None => text.to_owned(),
    }
}

/// Whether `text` carries the mark of note `id`.
pub fn carries(text: &str, id: &str) -> bool {
    text.contains(&mark(id))
}

/// A vendor's name as people know it (`vendor` as `ExternalOrigin.vendor` says it).
pub fn vendor_title(vendor: &str) -> &str {
    match vendor {
        "pagerduty" => "PagerDuty",
        "opsgenie" => "Opsgenie",
        "jsm" => "Jira Service Management",
        "jira" => "Jira",
        "github" => "GitHub",
        "" => "the SRE platform",
        other => other,
    }
}

/// A note as written on another tool: the note, then who wrote it and where, and the mark.
/// `place` is where it was written (`vendor_title`, and the object when known).
pub fn render(note: &str, author: &str, place: &str, id: &str) -> String {
    let by = if author.is_empty() { String::new() } else { format!("{author}, ") };
    format!("{}{SIGNATURE}{by}in {place} {}", note.trim_end(), mark(id))
}

/// What stands between a note and who wrote it (see [`render`]).
const SIGNATURE: &str = "\n\n— ";

/// The id and text of a note the domain announced (`IncidentAnnotated`): the id from
/// the fact's idempotency key (else its content), the note cut to
/// [`crate::limits::NOTE_MAX`], rendered with who wrote it and where.
pub fn annotated(fact: &sre_contracts::domain::v1::IncidentAnnotated) -> (String, String) {
    let key = fact.meta.as_ref().map(|m| m.idempotency_key.clone()).filter(|k| !k.is_empty());
    let id = note_id(&key.unwrap_or_else(|| format!("{}\n{}\n{}", fact.incident_id, fact.author, fact.note)));
    let origin = fact.origin.clone().unwrap_or_default();
    let note = crate::limits::fit(&fact.note, crate::limits::NOTE_MAX);
    let text = render(&note, &fact.author, &place(&origin.vendor, &origin.object_id), &id);
    (id, text)
}

/// A rendered note within `max` characters: the note is cut, who wrote it, where, and the
/// mark are kept.
pub fn fit(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let Some(at) = text.rfind(SIGNATURE) else { return sre_runtime::outbound::clip(text, max) };
    let (body, tail) = text.split_at(at);
    let room = max.saturating_sub(tail.chars().count());
    format!("{}{tail}", sre_runtime::outbound::clip(body, room))
}

/// Where a note was written, for [`render`]: the vendor, and its object when known.
pub fn place(vendor: &str, object_id: &str) -> String {
    let title = vendor_title(vendor);
    if object_id.is_empty() { title.to_owned() } else { format!("{title} {object_id}") }
}

/// One note a record remembers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    /// The note's id.
    pub id: String,
    /// When its post was claimed (the claim's sign of life).
    pub at: Timestamp,
    /// Whether the vendor took it.
    #[serde(default)]
    pub posted: bool,
}

/// Where one note stands in a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteState {
    /// Never claimed: claim it, then post it.
    New,
    /// Posted.
    Posted,
    /// Another delivery is posting it: look again after this long.
    Live(std::time::Duration),
    /// Its post was claimed by a delivery that died: look for its mark first.
    Stale,
}

/// Where note `id` stands among `marks` at `now`.
pub fn state(marks: &[Mark], id: &str, now: Timestamp) -> NoteState {
    match marks.iter().find(|m| m.id == id) {
        None => NoteState::New,
        Some(m) if m.posted => NoteState::Posted,
        Some(m) => match liveness(Some(m.at), now) {
            Liveness::Live { look_again } => NoteState::Live(look_again),
            Liveness::Stale => NoteState::Stale,
        },
    }
}

/// `marks` with note `id` claimed at `now` (the oldest forgotten beyond [`REMEMBERED`]).
pub fn claimed(marks: &[Mark], id: &str, now: Timestamp) -> Vec<Mark> {
    let mut next: Vec<Mark> = marks.iter().filter(|m| m.id != id).cloned().collect();
    next.push(Mark { id: id.to_owned(), at: now, posted: false });
    let extra = next.len().saturating_sub(REMEMBERED);
    next.drain(..extra);
    next
}

/// Renews the claims of the notes `ids` still being posted (their delivery is alive).
pub fn renew(marks: &mut [Mark], ids: &[String], now: Timestamp) {
    for m in marks.iter_mut().filter(|m| !m.posted && ids.contains(&m.id)) {
        m.at = now;
    }
}

/// `marks` with note `id` posted.
pub fn posted(marks: &[Mark], id: &str, now: Timestamp) -> Vec<Mark> {
    let mut next = claimed(marks, id, now);
    if let Some(m) = next.iter_mut().find(|m| m.id == id) {
        m.posted = true;
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::SignedDuration;

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).expect("ts")
    }

    #[test]
    fn a_note_names_who_and_where_and_carries_its_mark() {
        let id = note_id("note:evt-1");
        assert_eq!(id, note_id("note:evt-1"), "the same on every delivery");
        assert!(id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        let text = render("rolling back  \n", "Ada Lovelace", &place("pagerduty", "PGR0VU2"), &id);
        assert_eq!(text, format!("rolling back\n\n— Ada Lovelace, in PagerDuty PGR0VU2 [sre-note {id}]"));
        assert!(is_ours(&text) && carries(&text, &id) && !carries(&text, "other"));
        assert!(!is_ours("a person's note"));
        let first = mark_first(&text);
        assert!(first.starts_with(&mark(&id)) && carries(&first, &id), "{first}");
        assert_eq!(mark_first("a person's note"), "a person's note");
        // Cut to fit, the note gives way; who, where and the mark stay.
        let long = render(&"x".repeat(500), "Ada", &place("jira", "OPS-7"), &id);
        let cut = fit(&long, 100);
        assert!(cut.chars().count() <= 100 && cut.ends_with(&format!("— Ada, in Jira OPS-7 {}", mark(&id))), "{cut}");
        assert_eq!(fit(&text, 10_000), text);
        assert_eq!(render("x", "", "the SRE platform", "abc"), "x\n\n— in the SRE platform [sre-note abc]");
    }

    #[test]
    fn each_note_is_claimed_posted_and_taken_over_once_stale() {
        let id = "n1";
        assert_eq!(state(&[], id, now()), NoteState::New);
        let marks = claimed(&[], id, now());
        assert!(matches!(state(&marks, id, now()), NoteState::Live(_)));
        assert_eq!(state(&marks, id, now() + SignedDuration::from_secs(30)), NoteState::Stale);
        let marks = posted(&marks, id, now());
        assert_eq!(state(&marks, id, now() + SignedDuration::from_secs(30)), NoteState::Posted);
        assert_eq!(marks.len(), 1, "one mark per note");
        // Bounded: the oldest are forgotten.
        let many = (0..100).fold(Vec::new(), |m, i| posted(&m, &format!("n{i}"), now()));
        assert_eq!(many.len(), REMEMBERED);
        assert_eq!(state(&many, "n99", now()), NoteState::Posted);
        assert_eq!(state(&many, "n0", now()), NoteState::New);
    }
}
