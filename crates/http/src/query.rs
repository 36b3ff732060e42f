//! Query-string access that keeps repeated keys (`?tag=a&tag=b`).

use axum::http::request::Parts;

/// Decoded query parameters in order.
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    /// Parses the request's query string.
    pub fn of(req: &Parts) -> Self {
        let q = req.uri.query().unwrap_or("");
        Query(
            form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`.
    pub fn all(&self, key: &str) -> impl Iterator<Item = &str> {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}
