//! When to page: the escalation decision as a pure function of the severity, the policy,
//! the business hours and `now` (passed in, never read here).
//!
//! Business hours are civil times in an IANA zone on chosen weekdays, `[start, end)`. The
//! next opening is computed in that zone, so it follows daylight-saving changes: an opening
//! inside a spring-forward gap happens at the first instant after the gap, and an opening
//! in a repeated fall-back hour at its first occurrence (jiff's "compatible" rule, the one
//! RFC 5545 calendars use).

use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use serde::Deserialize;
use sre_contracts::domain::v1::Severity;

/// When a severity pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum When {
    /// At once, day or night.
    Immediate,
    /// At once inside business hours; outside them deferred to the next opening.
    BusinessHoursOnly,
    /// Never.
    Never,
}

/// A day of the week, as written in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Weekday {
    /// Monday.
    Mon,
    /// Tuesday.
    Tue,
    /// Wednesday.
    Wed,
    /// Thursday.
    Thu,
    /// Friday.
    Fri,
    /// Saturday.
    Sat,
    /// Sunday.
    Sun,
}

impl Weekday {
    fn of(date: Date) -> Self {
        match date.weekday() {
            jiff::civil::Weekday::Monday => Weekday::Mon,
            jiff::civil::Weekday::Tuesday => Weekday::Tue,
            jiff::civil::Weekday::Wednesday => Weekday::Wed,
            jiff::civil::Weekday::Thursday => Weekday::Thu,
            jiff::civil::Weekday::Friday => Weekday::Fri,
            jiff::civil::Weekday::Saturday => Weekday::Sat,
            jiff::civil::Weekday::Sunday => Weekday::Sun,
        }
    }
}

/// `HH:MM` or `HH:MM:SS`.
pub fn parse_time(s: &str) -> Option<Time> {
    let parts: Vec<&str> = s.split(':').collect();
    if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.len() != 2) {
        return None;
    }
    let n: Vec<i8> = parts.iter().map(|p| p.parse::<i8>().ok()).collect::<Option<_>>()?;
    Time::new(n[0], n[1], n.get(2).copied().unwrap_or(0), 0).ok()
}

/// Validated business hours.
#[derive(Debug, Clone, PartialEq)]
pub struct BusinessHours {
    /// Opening, local time.
    pub start: Time,
    /// Closing, local time (exclusive).
    pub end: Time,
    /// The zone.
    pub tz: TimeZone,
    /// Working days.
    pub weekdays: Vec<Weekday>,
}

impl BusinessHours {
    /// Whether `now` falls inside business hours.
    pub fn is_open(&self, now: Timestamp) -> bool {
        let local = now.to_zoned(self.tz.clone()).datetime();
        self.weekdays.contains(&Weekday::of(local.date())) && local.time() >= self.start && local.time() < self.end
    }

    /// The first opening after `now`.
    pub fn next_opening(&self, now: Timestamp) -> Option<Timestamp> {
        let today = now.to_zoned(self.tz.clone()).date();
        (0..=8).find_map(|d| {
            let date = today.checked_add(d.days()).ok()?;
            if !self.weekdays.contains(&Weekday::of(date)) {
                return None;
            }
            let opening = date.to_datetime(self.start).to_zoned(self.tz.clone()).ok()?.timestamp();
            (opening > now).then_some(opening)
        })
    }
}

/// The escalation policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// When critical incidents page.
    pub critical: When,
    /// When high incidents page.
    pub high: When,
    /// Business hours for `business_hours_only`.
    pub hours: BusinessHours,
}

/// What to do with a new incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Page now.
    PageNow,
    /// Page at this instant, unless the incident was acknowledged or resolved by then.
    DeferUntil(Timestamp),
    /// Never page (below high, or a policy of `never`).
    Never,
}

/// The decision for an incident of `severity` opened at `now`.
pub fn decide(severity: Severity, policy: &Policy, now: Timestamp) -> Decision {
    let when = match severity {
        Severity::Critical => policy.critical,
        Severity::High => policy.high,
        _ => return Decision::Never,
    };
    match when {
        When::Immediate => Decision::PageNow,
        When::Never => Decision::Never,
        When::BusinessHoursOnly if policy.hours.is_open(now) => Decision::PageNow,
        When::BusinessHoursOnly => policy.hours.next_opening(now).map_or(Decision::Never, Decision::DeferUntil),
    }
}

/// When a page deferred at `deferred_at` is due under `policy`, the configuration in
/// force now (not the one that deferred it): the first moment at or after `deferred_at`
/// its severity may page. A fixed time zone or window applies to pages already waiting:
/// an opening already passed under the new hours means due now, a later one means wait.
/// `None`: the policy no longer pages this severity at all.
pub fn due_under(severity: Severity, policy: &Policy, deferred_at: Timestamp) -> Option<Timestamp> {
    match decide(severity, policy, deferred_at) {
        Decision::PageNow => Some(deferred_at),
        Decision::DeferUntil(due) => Some(due),
        Decision::Never => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Weekday::*;

    fn hours(tz: &str, start: &str, end: &str, days: &[Weekday]) -> BusinessHours {
        BusinessHours {
            start: parse_time(start).expect("start"),
            end: parse_time(end).expect("end"),
            tz: TimeZone::get(tz).expect("zone"),
            weekdays: days.to_vec(),
        }
    }

    fn policy(h: BusinessHours) -> Policy {
        Policy { critical: When::Immediate, high: When::BusinessHoursOnly, hours: h }
    }

    fn at(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    const WORKWEEK: &[Weekday] = &[Mon, Tue, Wed, Thu, Fri];
    const EVERY_DAY: &[Weekday] = &[Mon, Tue, Wed, Thu, Fri, Sat, Sun];

    #[test]
    fn table_of_decisions() {
        let berlin = policy(hours("Europe/Berlin", "09:00", "17:00", WORKWEEK));
        // 2026-11-24 is a Tuesday; Berlin is UTC+1 in November.
        let cases = [
            ("critical at night pages at once", Severity::Critical, "2026-11-24T02:00:00Z", Decision::PageNow),
            ("high inside hours", Severity::High, "2026-11-24T09:00:00Z", Decision::PageNow),
            ("high at the opening minute", Severity::High, "2026-11-24T08:00:00Z", Decision::PageNow),
            (
                "high a second before opening",
                Severity::High,
                "2026-11-24T07:59:59Z",
                Decision::DeferUntil(at("2026-11-24T08:00:00Z")),
            ),
            (
                "high at closing (end is exclusive)",
                Severity::High,
                "2026-11-24T16:00:00Z",
                Decision::DeferUntil(at("2026-11-25T08:00:00Z")),
            ),
            (
                "high on Friday evening waits for Monday",
                Severity::High,
                "2026-11-27T18:30:00Z",
                Decision::DeferUntil(at("2026-11-30T08:00:00Z")),
            ),
            (
                "high on Sunday morning waits for Monday",
                Severity::High,
                "2026-11-29T10:00:00Z",
                Decision::DeferUntil(at("2026-11-30T08:00:00Z")),
            ),
            ("medium never pages", Severity::Medium, "2026-11-24T10:00:00Z", Decision::Never),
            ("low never pages", Severity::Low, "2026-11-24T10:00:00Z", Decision::Never),
            ("unspecified never pages", Severity::Unspecified, "2026-11-24T10:00:00Z", Decision::Never),
        ];
        for (name, severity, now, want) in cases {
            assert_eq!(decide(severity, &berlin, at(now)), want, "{name}");
        }
    }

    #[test]
    fn the_zone_decides_what_business_hours_mean() {
        let now = at("2026-11-24T15:00:00Z"); // Tuesday: 16:00 in Berlin, 10:00 in New York, 00:00 in Tokyo (Wed)
        assert!(hours("Europe/Berlin", "09:00", "17:00", WORKWEEK).is_open(now));
        assert!(hours("America/New_York", "09:00", "17:00", WORKWEEK).is_open(now));
        let tokyo = hours("Asia/Tokyo", "09:00", "17:00", WORKWEEK);
        assert!(!tokyo.is_open(now));
        assert_eq!(tokyo.next_opening(now), Some(at("2026-11-25T00:00:00Z")), "09:00 JST Wednesday");
    }

    #[test]
    fn openings_follow_daylight_saving_changes() {
        // Europe/Berlin springs forward on Sunday 2026-03-29 (02:00 → 03:00 local) and falls
        // back on Sunday 2026-10-25 (03:00 → 02:00).
        let nine = hours("Europe/Berlin", "09:00", "17:00", EVERY_DAY);
        assert_eq!(nine.next_opening(at("2026-03-28T20:00:00Z")), Some(at("2026-03-29T07:00:00Z")), "09:00 CEST");
        assert_eq!(nine.next_opening(at("2026-10-24T20:00:00Z")), Some(at("2026-10-25T08:00:00Z")), "09:00 CET");
        // An opening inside the gap happens at the first instant after it.
        let gap = hours("Europe/Berlin", "02:30", "17:00", EVERY_DAY);
        assert_eq!(gap.next_opening(at("2026-03-28T20:00:00Z")), Some(at("2026-03-29T01:30:00Z")), "03:30 CEST");
        // An opening in the repeated hour happens at its first occurrence.
        let fold = hours("Europe/Berlin", "02:30", "17:00", EVERY_DAY);
        assert_eq!(fold.next_opening(at("2026-10-24T20:00:00Z")), Some(at("2026-10-25T00:30:00Z")), "02:30 CEST");
        // The length of a business day is what the wall clock says, on either side.
        assert!(nine.is_open(at("2026-03-29T14:59:59Z")) && !nine.is_open(at("2026-03-29T15:00:00Z")));
        assert!(nine.is_open(at("2026-10-25T15:59:59Z")) && !nine.is_open(at("2026-10-25T16:00:00Z")));
    }

    #[test]
    fn times_with_seconds_and_bad_times() {
        assert_eq!(parse_time("09:30"), Time::new(9, 30, 0, 0).ok());
        assert_eq!(parse_time("23:59:59"), Time::new(23, 59, 59, 0).ok());
        for bad in ["9:30", "24:00", "12:60", "12", "12:00:00:00", "ab:cd"] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn policies_of_never_and_immediate() {
        let mut p = policy(hours("UTC", "09:00", "17:00", WORKWEEK));
        p.high = When::Immediate;
        assert_eq!(decide(Severity::High, &p, at("2026-11-28T03:00:00Z")), Decision::PageNow);
        p.critical = When::Never;
        assert_eq!(decide(Severity::Critical, &p, at("2026-11-24T10:00:00Z")), Decision::Never);
        p.critical = When::BusinessHoursOnly;
        assert_eq!(
            decide(Severity::Critical, &p, at("2026-11-28T03:00:00Z")),
            Decision::DeferUntil(at("2026-11-30T09:00:00Z"))
        );
    }

    proptest::proptest! {
        /// Every deferral lands on an instant that is inside business hours, after `now`,
        /// and no opening is skipped: one second before it the hours are closed.
        #[test]
        fn deferrals_land_on_the_next_opening(secs in 1_767_225_600i64..1_830_297_600, zone in 0usize..4) {
            let tz = ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "UTC"][zone];
            let h = hours(tz, "08:30", "18:00", WORKWEEK);
            let now = Timestamp::from_second(secs).expect("time");
            if let Decision::DeferUntil(t) = decide(Severity::High, &policy(h.clone()), now) {
                proptest::prop_assert!(t > now);
                proptest::prop_assert!(h.is_open(t));
                proptest::prop_assert!(!h.is_open(t - jiff::SignedDuration::from_secs(1)));
                proptest::prop_assert!(t.duration_since(now) < jiff::SignedDuration::from_hours(24 * 4));
            } else {
                proptest::prop_assert!(h.is_open(now));
            }
        }
    }

    #[test]
    fn pages_already_waiting_follow_the_hours_in_force() {
        let at = |s: &str| s.parse::<Timestamp>().expect("timestamp");
        let policy = |start: &str, end: &str, tz: &str| Policy {
            critical: When::Immediate,
            high: When::BusinessHoursOnly,
            hours: hours(tz, start, end, &[Mon, Tue, Wed, Thu, Fri]),
        };
        // Deferred on Tuesday 2026-12-01 at 20:00 UTC under 09:00-17:00 UTC: due Wednesday 09:00.
        let deferred = at("2026-12-01T20:00:00Z");
        let old = policy("09:00", "17:00", "UTC");
        assert_eq!(due_under(Severity::High, &old, deferred), Some(at("2026-12-02T09:00:00Z")));
        // The zone was wrong: the team is in Tokyo (UTC+9). Its next opening after the
        // deferral, 09:00 JST, is 00:00 UTC: due then, not at 09:00 UTC.
        let tokyo = policy("09:00", "17:00", "Asia/Tokyo");
        assert_eq!(due_under(Severity::High, &tokyo, deferred), Some(at("2026-12-02T00:00:00Z")));
        // Hours that open later than before: the page waits for the new opening.
        let later = policy("10:00", "18:00", "UTC");
        assert_eq!(due_under(Severity::High, &later, deferred), Some(at("2026-12-02T10:00:00Z")));
        // Hours open at the moment it was deferred: due at once.
        let evening = policy("18:00", "23:00", "UTC");
        assert_eq!(due_under(Severity::High, &evening, deferred), Some(deferred));
        // High made immediate: due at once; high no longer paged: nothing is due.
        let immediate = Policy { high: When::Immediate, ..old.clone() };
        assert_eq!(due_under(Severity::High, &immediate, deferred), Some(deferred));
        let never = Policy { high: When::Never, ..old };
        assert_eq!(due_under(Severity::High, &never, deferred), None);
    }
}
