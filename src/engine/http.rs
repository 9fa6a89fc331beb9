//! HTTP steps: one request per attempt through a client that reaches only
//! permitted addresses (see `egress`), with the step's idempotency key.
//!
//! Redirects are followed here, not by the client, so that each hop is
//! checked by the egress guard and every header that carries a credential
//! (`Authorization`, `Cookie`, `X-Api-Key` and the like) is dropped when a
//! redirect leaves the request's origin.
//!
//! A response with a status below 400 succeeds with
//! `{"status", "headers", "body", "truncated"}`: the body is parsed when it
//! is JSON, kept as text otherwise, and cut at the size limit (`truncated`
//! is then true and the body is the text read so far). A status of 400 or
//! more fails the attempt, so the step's retry policy applies.

use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, LOCATION};
use reqwest::redirect;
use serde_json::{Map, Value, json};

use crate::config::Settings;
use crate::egress::{self, GuardedResolver, PrivateAccess, Refused};
use crate::workflows::definition::{HttpConfig, REDACTED, is_credential_header, parse_http_url};

/// Most redirects one request follows.
const MAX_REDIRECTS: usize = 10;
/// Most characters of a failed response's body quoted in the step's error.
const ERROR_BODY_CHARS: usize = 500;

/// The HTTP client HTTP steps share.
#[derive(Clone)]
pub struct HttpSteps {
    client: reqwest::Client,
    access: Arc<PrivateAccess>,
    max_response_bytes: usize,
    default_timeout: Duration,
}

impl HttpSteps {
    /// A client with the egress guard, no proxy (a proxy would resolve names
    /// where the guard cannot see them), and the settings' limits.
    pub fn new(settings: &Settings) -> anyhow::Result<Self> {
        let access = Arc::new(settings.http_allow_private.clone());
        let client = reqwest::Client::builder()
            .user_agent(concat!("FlowPilot/", env!("CARGO_PKG_VERSION")))
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver::new(access.clone())))
            .redirect(redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self {
            client,
            access,
            max_response_bytes: settings.http_max_response_bytes,
            default_timeout: Duration::from_millis(settings.http_timeout_ms),
        })
    }

    /// Sends `request`; `timeout` is the step's, when it has one.
    pub async fn send(
        &self,
        request: HttpConfig,
        idempotency_key: &str,
        timeout: Option<Duration>,
    ) -> Result<Value, String> {
        let url = parse_http_url(&request.url)?;
        egress::check_literal(&self.access, &url)?;
        let method = reqwest::Method::from_bytes(request.method.as_bytes())
            .map_err(|_| format!("`{}` is not an HTTP method", request.method))?;
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static("idempotency-key"),
            HeaderValue::from_str(idempotency_key).map_err(|e| e.to_string())?,
        );
        for (name, value) in &request.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
            let value = HeaderValue::from_str(value).map_err(|e| e.to_string())?;
            headers.insert(name, value);
        }
        let body = match request.body {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => {
                headers
                    .entry(CONTENT_TYPE)
                    .or_insert(HeaderValue::from_static("text/plain; charset=utf-8"));
                Some(text)
            }
            Some(json) => {
                headers
                    .entry(CONTENT_TYPE)
                    .or_insert(HeaderValue::from_static("application/json"));
                Some(json.to_string())
            }
        };
        let deadline = tokio::time::Instant::now() + timeout.unwrap_or(self.default_timeout);
        let mut response = self
            .follow_redirects(
                Hop {
                    method: method.clone(),
                    url: url.clone(),
                    headers,
                    body,
                },
                deadline,
            )
            .await?;
        let status = response.status();
        let is_json = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("json"));
        let recorded_headers = record_headers(response.headers());
        let mut bytes: Vec<u8> = Vec::new();
        let mut truncated = false;
        while let Some(chunk) = response.chunk().await.map_err(describe)? {
            let room = self.max_response_bytes - bytes.len();
            if chunk.len() > room {
                bytes.extend_from_slice(&chunk[..room]);
                truncated = true;
                break;
            }
            bytes.extend_from_slice(&chunk);
        }
        let body = if bytes.is_empty() {
            Value::Null
        } else if is_json && !truncated {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        } else {
            Value::String(String::from_utf8_lossy(&bytes).into_owned())
        };
        if status.as_u16() >= 400 {
            let text = match &body {
                Value::String(text) => text.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            let quoted: String = text.chars().take(ERROR_BODY_CHARS).collect();
            return Err(format!(
                "{method} {} answered {status}: {quoted}",
                redact_query(&url)
            ));
        }
        Ok(json!({
            "status": status.as_u16(),
            "headers": recorded_headers,
            "body": body,
            "truncated": truncated,
        }))
    }
}

/// One request of a chain of redirects.
struct Hop {
    method: reqwest::Method,
    url: url::Url,
    headers: HeaderMap,
    body: Option<String>,
}

impl HttpSteps {
    /// Sends `hop`, and follows redirects until a response that is not one,
    /// all before `deadline`.
    async fn follow_redirects(
        &self,
        mut hop: Hop,
        deadline: tokio::time::Instant,
    ) -> Result<reqwest::Response, String> {
        let mut redirects = 0;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let mut builder = self
                .client
                .request(hop.method.clone(), hop.url.clone())
                .headers(hop.headers.clone())
                .timeout(left);
            if let Some(body) = &hop.body {
                builder = builder.body(body.clone());
            }
            let response = builder.send().await.map_err(describe)?;
            let status = response.status();
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let follows = matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308);
            let Some(location) = location.filter(|_| follows) else {
                return Ok(response);
            };
            if redirects >= MAX_REDIRECTS {
                return Err(format!("more than {MAX_REDIRECTS} redirects"));
            }
            let next = hop
                .url
                .join(&location)
                .map_err(|_| "a redirect named an address that is not a URL".to_owned())?;
            if !matches!(next.scheme(), "http" | "https") {
                return Err(format!(
                    "refused a redirect to `{}`: not http or https",
                    redact_query(&next)
                ));
            }
            egress::check_literal(&self.access, &next)
                .map_err(|refusal| format!("on a redirect, {refusal}"))?;
            hop = hop.redirected(status, next);
            redirects += 1;
        }
    }
}

impl Hop {
    /// The request a redirect with `status` to `next` asks for: credentials
    /// stay with their origin, and 301, 302 and 303 turn a POST (303: any
    /// method but HEAD) into a GET without a body, as browsers do.
    fn redirected(mut self, status: reqwest::StatusCode, next: url::Url) -> Self {
        if next.origin() != self.url.origin() {
            let credentials: Vec<HeaderName> = self
                .headers
                .keys()
                .filter(|name| is_credential_header(name.as_str()))
                .cloned()
                .collect();
            for name in credentials {
                self.headers.remove(name);
            }
        }
        let to_get = match status.as_u16() {
            303 => self.method != reqwest::Method::HEAD,
            301 | 302 => self.method == reqwest::Method::POST,
            _ => false,
        };
        if to_get {
            self.method = reqwest::Method::GET;
            self.body = None;
            self.headers.remove(CONTENT_TYPE);
        }
        self.url = next;
        self
    }
}

/// Response headers by lower-case name, repeated ones joined with `, `,
/// credentials (`set-cookie` and the like) redacted.
fn record_headers(headers: &HeaderMap) -> Map<String, Value> {
    let mut recorded = Map::new();
    for name in headers.keys() {
        let value = if is_credential_header(name.as_str()) {
            REDACTED.to_owned()
        } else {
            headers
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect::<Vec<_>>()
                .join(", ")
        };
        recorded.insert(name.as_str().to_owned(), Value::String(value));
    }
    recorded
}

/// The URL without its query, which may carry credentials, for errors.
fn redact_query(url: &url::Url) -> String {
    let mut url = url.clone();
    if url.query().is_some() {
        url.set_query(Some("…"));
    }
    url.set_fragment(None);
    url.to_string()
}

/// The reason a request failed: the egress refusal when there was one,
/// otherwise reqwest's error and its causes.
fn describe(err: reqwest::Error) -> String {
    let mut source = err.source();
    while let Some(cause) = source {
        if let Some(refused) = cause.downcast_ref::<Refused>() {
            return refused.to_string();
        }
        source = cause.source();
    }
    if err.is_timeout() {
        return "the request timed out".to_owned();
    }
    let mut causes = String::new();
    let mut source = err.source();
    while let Some(cause) = source {
        causes.push_str(": ");
        causes.push_str(&cause.to_string());
        source = cause.source();
    }
    format!("{}{causes}", err.without_url())
}
