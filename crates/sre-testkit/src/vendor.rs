//! What every test vendor shares: a small page listing what it received (`GET /`, for
//! people watching the demo, with buttons for what a person would do there), an adjustable
//! answer latency (for fault tests), and webhook delivery as the vendors do it (signed,
//! retried by the vendor's own rule, in the background).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::response::{Html, IntoResponse};

/// Extra time answers take; zero by default. `before` delays the handling (the vendor is
/// slow to act), `after` delays only the answer (the vendor acted, the caller waits).
#[derive(Debug, Clone, Default)]
pub struct Latency {
    before: Arc<AtomicU64>,
    after: Arc<AtomicU64>,
    /// `after` holds back only the answers to writes (reads answer at once).
    writes_only: Arc<std::sync::atomic::AtomicBool>,
    /// Requests carried out whose answers are still held back.
    held: Arc<AtomicU64>,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Latency {
    /// Every request from now on waits `delay` before it is handled.
    pub fn set(&self, delay: Duration) {
        self.before.store(millis(delay), Ordering::Relaxed);
    }

    /// Every request from now on is handled at once, and answered `delay` later.
    pub fn set_after(&self, delay: Duration) {
        self.after.store(millis(delay), Ordering::Relaxed);
    }

    /// Every write (not `GET`) from now on is handled at once, and answered `delay` later;
    /// reads answer at once: a caller that dies meanwhile did the write without hearing of
    /// it, and the reads it makes first still get through.
    pub fn set_after_writes(&self, delay: Duration) {
        self.writes_only.store(true, Ordering::Relaxed);
        self.after.store(millis(delay), Ordering::Relaxed);
    }

    /// Requests already carried out whose answers [`Self::set_after`] still holds back.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// Wraps `router` so its answers wait for the current latencies.
    pub(crate) fn wrap(&self, router: Router) -> Router {
        let (before, after, held) = (self.before.clone(), self.after.clone(), self.held.clone());
        let writes_only = self.writes_only.clone();
        router.layer(axum::middleware::from_fn(move |req: axum::extract::Request, next: axum::middleware::Next| {
            let wait_before = Duration::from_millis(before.load(Ordering::Relaxed));
            let read = req.method() == axum::http::Method::GET;
            let wait_after = if read && writes_only.load(Ordering::Relaxed) {
                Duration::ZERO
            } else {
                Duration::from_millis(after.load(Ordering::Relaxed))
            };
            let held = held.clone();
            async move {
                if !wait_before.is_zero() {
                    tokio::time::sleep(wait_before).await;
                }
                // Handled in its own task: the vendor finishes what it started even when the
                // caller goes away (a killed client does not undo a created ticket).
                let answer = tokio::spawn(next.run(req)).await;
                if !wait_after.is_zero() {
                    held.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(wait_after).await;
                    held.fetch_sub(1, Ordering::Relaxed);
                }
                match answer {
                    Ok(answer) => answer,
                    Err(_) => axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                }
            }
        }))
    }
}

/// A read-only HTML page: a title, a note, and one table.
pub(crate) fn page(title: &str, note: &str, columns: &[&str], rows: &[Vec<String>]) -> Html<String> {
    page_with_actions(title, note, columns, rows, &[])
}

/// What a person does on a stand-in's page: a button (`label`) that posts to
/// `/_person/<verb>?key=<key>`.
pub(crate) type Action = (&'static str, &'static str, String);

/// [`page`] with, per row, the buttons of what a person may do to it there (acknowledge,
/// resolve, close). A press acts as the person `PERSON` would, webhook included.
pub(crate) fn page_with_actions(
    title: &str,
    note: &str,
    columns: &[&str],
    rows: &[Vec<String>],
    actions: &[Vec<Action>],
) -> Html<String> {
    let acts = !actions.is_empty();
    let head: String =
        columns.iter().chain(acts.then_some(&"act as a person")).map(|c| format!("<th>{}</th>", escape(c))).collect();
    let body: String = rows
        .iter()
        .enumerate()
        .map(|(n, r)| {
            let cells: String = r.iter().map(|c| format!("<td>{}</td>", escape(c))).collect();
            let buttons: String = actions
                .get(n)
                .map(|a| {
                    a.iter()
                        .map(|(label, verb, key)| {
                            format!(
                                "<form method=\"post\" action=\"/_person/{verb}?key={}\" style=\"display:inline\">\
                                 <button>{}</button></form>",
                                percent(key),
                                escape(label)
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let act = if acts { format!("<td>{buttons}</td>") } else { String::new() };
            format!("<tr>{cells}{act}</tr>")
        })
        .collect();
    let mode = if acts {
        format!("Buttons act as the person <i>{}</i> would, and send the vendor's webhook.", escape(PERSON))
    } else {
        "Read-only.".to_owned()
    };
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"2\">\
         <title>{t}</title><style>body{{font:14px system-ui,sans-serif;margin:2em}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left}}</style>\
         </head><body><h1>{t}</h1><p>{n} {mode} Development stand-in, not the vendor.</p>\
         <table><tr>{head}</tr>{body}</table><p>{count} received</p></body></html>",
        t = escape(title),
        n = escape(note),
        count = rows.len(),
    ))
}

/// Who presses the stand-ins' buttons.
pub const PERSON: &str = "Dana On-call";

/// The answer to a button press: back to the page.
pub(crate) fn back() -> axum::response::Response {
    axum::response::Redirect::to("/").into_response()
}

/// The `key` of a button's `/_person/<verb>?key=…`.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct Pressed {
    pub key: String,
}

fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// HMAC-SHA256 of `body` under `secret`, lower-case hex: what PagerDuty, GitHub and Jira sign.
pub(crate) fn hmac_hex(secret: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Which answers a vendor delivers a webhook again after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retries {
    /// Never (GitHub; Opsgenie documents none).
    Never,
    /// 5xx, 429 and no answer (PagerDuty).
    Transient,
    /// As `Transient`, plus 408, 409 and 425 (Jira Cloud).
    Jira,
}

impl Retries {
    fn again(self, status: u16) -> bool {
        match self {
            Retries::Never => false,
            Retries::Transient => status == 0 || status == 429 || status >= 500,
            Retries::Jira => status == 0 || matches!(status, 408 | 409 | 425 | 429) || status >= 500,
        }
    }
}

/// One webhook a stand-in delivered (or gave up on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The vendor's event name (`incident.acknowledged`, `jira:issue_updated`, `issues`…).
    pub event: String,
    /// Who acted: a person's name, or the integration's own account.
    pub by: String,
    /// The last answer's status; 0 when there never was one.
    pub status: u16,
    /// Attempts made.
    pub attempts: u32,
}

/// Where a stand-in sends its webhooks, and what it has sent.
#[derive(Debug, Clone, Default)]
pub(crate) struct Outbox {
    subscription: Arc<Mutex<Option<(String, String)>>>,
    delivered: Arc<Mutex<Vec<Delivery>>>,
    sent: Arc<AtomicU64>,
    /// While set, webhooks wait here instead of going out (a receiver outage, a network
    /// policy in the way): [`Outbox::release`] delivers them late.
    held: Arc<Mutex<Option<Vec<Held>>>>,
}

type Held = (String, String, Vec<(String, String)>, String, Retries);

impl Outbox {
    /// Subscribes `url` (`http://127.0.0.1:<port>/<path>`) with `secret`.
    pub(crate) fn subscribe(&self, url: &str, secret: &str) {
        *self.subscription.lock().unwrap_or_else(PoisonError::into_inner) = Some((url.to_owned(), secret.to_owned()));
    }

    /// The subscription's secret, and a fresh delivery number; `None` when unsubscribed.
    pub(crate) fn next(&self) -> Option<(String, u64)> {
        let secret = self.subscription.lock().unwrap_or_else(PoisonError::into_inner).as_ref()?.1.clone();
        Some((secret, self.sent.fetch_add(1, Ordering::Relaxed) + 1))
    }

    /// Delivers `body` with `headers` in the background, retrying as `retries` says (a
    /// quarter second apart, for thirty seconds, where the vendor's own schedule is hours).
    pub(crate) fn send(&self, event: &str, by: &str, headers: Vec<(String, String)>, body: String, retries: Retries) {
        if let Some(held) = self.held.lock().unwrap_or_else(PoisonError::into_inner).as_mut() {
            held.push((event.to_owned(), by.to_owned(), headers, body, retries));
            return;
        }
        let Some((url, _)) = self.subscription.lock().unwrap_or_else(PoisonError::into_inner).clone() else { return };
        let (delivered, event, by) = (self.delivered.clone(), event.to_owned(), by.to_owned());
        std::thread::spawn(move || {
            let rest = url.trim_start_matches("http://");
            let (host, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
            let port: u16 = host.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or(80);
            let mut all: Vec<(&str, &str)> = vec![("Content-Type", "application/json")];
            all.extend(headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            let (mut status, mut attempts) = (0, 0);
            while attempts < 120 {
                if attempts > 0 {
                    std::thread::sleep(Duration::from_millis(250)); // the vendor's retry delay
                }
                attempts += 1;
                status = crate::service::http_request(port, "POST", &path, &all, body.as_bytes()).map_or(0, |(s, _)| s);
                if !retries.again(status) {
                    break;
                }
            }
            delivered.lock().unwrap_or_else(PoisonError::into_inner).push(Delivery { event, by, status, attempts });
        });
    }

    /// Holds every webhook from now on (none reaches the receiver) until [`Outbox::release`].
    pub(crate) fn hold(&self) {
        self.held.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert_with(Vec::new);
    }

    /// Delivers what was held, in order, and stops holding; how many there were.
    pub(crate) fn release(&self) -> usize {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner).take().unwrap_or_default();
        let n = held.len();
        for (event, by, headers, body, retries) in held {
            self.send(&event, &by, headers, body, retries);
        }
        n
    }

    /// Webhooks sent whose delivery has not ended yet (answered, or given up on).
    pub(crate) fn in_flight(&self) -> u64 {
        let ended = self.delivered.lock().unwrap_or_else(PoisonError::into_inner).len() as u64;
        self.sent.load(Ordering::Relaxed).saturating_sub(ended)
    }

    /// What was delivered so far, in the order deliveries ended.
    pub(crate) fn delivered(&self) -> Vec<Delivery> {
        self.delivered.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_escape_what_they_show() {
        let Html(html) = page("Jira", "Issues.", &["key"], &[vec!["<script>alert(1)</script>".into()]]);
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{html}");
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("1 received"), "{html}");
    }
}
