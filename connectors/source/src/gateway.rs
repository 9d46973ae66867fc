//! The bus's side: rows go to the city's gateway as `events:batch` requests of one topic, so
//! that they pass the same checks, encoding, sealing and signing as any agency's events, and
//! are committed in one Kafka transaction, all or nothing. A request sent again (after a crash,
//! a timeout or an unknown outcome) carries the same event ids, and the gateway answers it
//! with the original receipts: the log holds each event once.

use std::time::Duration;

use lienthong_registry::client::Credentials;
use serde::Deserialize;

use crate::config::GatewayTarget;
use crate::error::{SourceError, with_causes};
use crate::outbox::OutboxRow;

/// What the gateway said of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Committed to Kafka (201), or already there under the same event ids (200).
    Accepted,
    /// Refused for what the events hold (4xx): sending them again will not help.
    Refused {
        /// The HTTP status.
        status: u16,
        /// The gateway's error code (`invalid_event`, `forbidden`, …).
        error: String,
        /// The gateway's message, with each problem's path.
        reason: String,
    },
}

/// A client of one gateway, as one agency.
#[derive(Debug, Clone)]
pub struct GatewayClient {
    http: reqwest::Client,
    base: reqwest::Url,
    credentials: Credentials,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
    message: String,
    #[serde(default)]
    problems: Vec<Problem>,
}

#[derive(Deserialize)]
struct Problem {
    #[serde(default)]
    path: String,
    #[serde(default)]
    problem: String,
}

/// A refusal's text is kept, but not without bound.
const MAX_REASON_BYTES: usize = 4096;

impl GatewayClient {
    /// A client of the gateway at `target.url`, sending `credentials`.
    pub fn new(target: &GatewayTarget, credentials: Credentials) -> Result<Self, SourceError> {
        let base = reqwest::Url::parse(&target.url)
            .map_err(|e| SourceError::Config(format!("gateway.url: {e}")))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(target.request_timeout_secs))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| SourceError::Config(format!("gateway client: {e}")))?;
        Ok(GatewayClient {
            http,
            base,
            credentials,
        })
    }

    fn batch_url(&self, topic: &str) -> Result<reqwest::Url, SourceError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| SourceError::Config(format!("gateway.url {} has no path", self.base)))?
            .pop_if_empty()
            .extend(["topics", topic, "events:batch"]);
        Ok(url)
    }

    /// Send `rows` (each with a payload) to `topic` in one request, in order.
    pub async fn post(&self, topic: &str, rows: &[&OutboxRow]) -> Result<Answer, SourceError> {
        let size = rows
            .iter()
            .map(|r| r.payload.as_deref().map_or(0, str::len) + 1)
            .sum::<usize>();
        let mut body = Vec::with_capacity(size + 2);
        body.push(b'[');
        for (i, row) in rows.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(row.payload.as_deref().unwrap_or("null").as_bytes());
        }
        body.push(b']');
        let request = self
            .http
            .post(self.batch_url(topic)?)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        let response = self
            .credentials
            .authorize(request)
            .send()
            .await
            .map_err(|e| SourceError::Gateway(with_causes(&e)))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| {
            SourceError::Gateway(format!(
                "reading the answer ({status}): {}",
                with_causes(&e)
            ))
        })?;
        classify(status.as_u16(), &text)
    }
}

/// What an answer means for the rows sent.
pub fn classify(status: u16, body: &str) -> Result<Answer, SourceError> {
    match status {
        200 | 201 => Ok(Answer::Accepted),
        401 => Err(SourceError::Unauthenticated(truncate(body))),
        408 | 429 | 500..=599 => Err(SourceError::Gateway(format!(
            "{status}: {}",
            truncate(body)
        ))),
        400..=499 => {
            let (error, reason) = match serde_json::from_str::<ErrorBody>(body) {
                Ok(b) => {
                    let mut reason = b.message;
                    for p in b.problems {
                        reason.push_str(&format!("; {}: {}", p.path, p.problem));
                    }
                    (b.error, reason)
                }
                Err(_) => (format!("http_{status}"), body.to_string()),
            };
            Ok(Answer::Refused {
                status,
                error,
                reason: truncate(&reason),
            })
        }
        other => Err(SourceError::Gateway(format!(
            "unexpected status {other}: {}",
            truncate(body)
        ))),
    }
}

fn truncate(text: &str) -> String {
    if text.len() <= MAX_REASON_BYTES {
        return text.to_string();
    }
    let mut end = MAX_REASON_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn answers_are_told_apart() {
        assert_eq!(classify(201, "{}").unwrap(), Answer::Accepted);
        assert_eq!(classify(200, "{}").unwrap(), Answer::Accepted);
        assert!(matches!(
            classify(401, ""),
            Err(SourceError::Unauthenticated(_))
        ));
        for transient in [408, 429, 500, 503] {
            let e = classify(transient, "busy").unwrap_err();
            assert!(e.is_transient(), "{transient}: {e}");
        }
        let body = r#"{"error":"invalid_event","message":"1 problem","problems":[{"index":3,"path":"$[3].kind","problem":"unknown branch"}]}"#;
        assert_eq!(
            classify(400, body).unwrap(),
            Answer::Refused {
                status: 400,
                error: "invalid_event".into(),
                reason: "1 problem; $[3].kind: unknown branch".into(),
            }
        );
        let Answer::Refused { error, reason, .. } = classify(404, "not json").unwrap() else {
            panic!("a 404 refuses");
        };
        assert_eq!((error.as_str(), reason.as_str()), ("http_404", "not json"));
        let long = "é".repeat(MAX_REASON_BYTES);
        let Answer::Refused { reason, .. } = classify(413, &long).unwrap() else {
            panic!("a 413 refuses");
        };
        assert!(reason.len() <= MAX_REASON_BYTES + "…".len());
    }

    #[test]
    fn the_topic_is_one_path_segment() {
        let target = GatewayTarget {
            url: "http://gw:8080/base/".into(),
            agency: "STP".into(),
            token: Some("t".into()),
            token_file: None,
            request_timeout_secs: 5,
        };
        let client = GatewayClient::new(&target, Credentials::None).unwrap();
        assert_eq!(
            client.batch_url("hcm.case.events").unwrap().as_str(),
            "http://gw:8080/base/topics/hcm.case.events/events:batch"
        );
        assert_eq!(
            client.batch_url("../admin").unwrap().as_str(),
            "http://gw:8080/base/topics/..%2Fadmin/events:batch"
        );
    }
}
