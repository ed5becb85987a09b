//! What every test vendor shares: a small read-only page listing what it received (`GET /`,
//! for people watching the demo) and an adjustable answer latency (for fault tests).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::response::{Html, IntoResponse};

/// Extra time answers take; zero by default. `before` delays the handling (the vendor is
/// slow to act), `after` delays only the answer (the vendor acted, the caller waits).
#[derive(Debug, Clone, Default)]
pub struct Latency {
    before: Arc<AtomicU64>,
    after: Arc<AtomicU64>,
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

    /// Requests already carried out whose answers [`Self::set_after`] still holds back.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// Wraps `router` so its answers wait for the current latencies.
    pub(crate) fn wrap(&self, router: Router) -> Router {
        let (before, after, held) = (self.before.clone(), self.after.clone(), self.held.clone());
        router.layer(axum::middleware::from_fn(move |req: axum::extract::Request, next: axum::middleware::Next| {
            let wait_before = Duration::from_millis(before.load(Ordering::Relaxed));
            let wait_after = Duration::from_millis(after.load(Ordering::Relaxed));
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
    let head: String = columns.iter().map(|c| format!("<th>{}</th>", escape(c))).collect();
    let body: String = rows
        .iter()
        .map(|r| format!("<tr>{}</tr>", r.iter().map(|c| format!("<td>{}</td>", escape(c))).collect::<String>()))
        .collect();
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"2\">\
         <title>{t}</title><style>body{{font:14px system-ui,sans-serif;margin:2em}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left}}</style>\
         </head><body><h1>{t}</h1><p>{n} Read-only; development stand-in, not the vendor.</p>\
         <table><tr>{head}</tr>{body}</table><p>{count} received</p></body></html>",
        t = escape(title),
        n = escape(note),
        count = rows.len(),
    ))
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
