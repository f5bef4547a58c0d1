//! The one list contract of the management API (INTERFACE.md section 5), written once for
//! every list: `?limit=` (1 to 1000, default 100) and `?cursor=`, answered as
//! `{"items": [...], "next": <cursor or null>}`, newest first.
//!
//! A list pages by key, never by OFFSET: its rows are ordered by a unique sort key, and a page
//! asks for the rows past the key its predecessor ended with. Rows inserted while a client
//! walks the list therefore never shift the pages: nothing is skipped or repeated. The cursor
//! is opaque and URL-safe: base64url (no padding) of the JSON `[list, key]`, so it is passed
//! back as it came, and a cursor of another list, or none a list gave, is a 400 naming
//! `cursor`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::{Encode, Postgres, QueryBuilder, Type};

use super::ApiError;

/// The largest page a list answers.
pub const MAX_LIMIT: i64 = 1000;
/// The page size when `limit` is not given.
pub const DEFAULT_LIMIT: i64 = 100;

/// A page of a list: `{"items": [...], "next": <cursor or null>}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page<T: Serialize> {
    /// Newest first.
    pub items: Vec<T>,
    /// The cursor of the next page; null on the last one.
    pub next: Option<String>,
}

/// `limit` and `cursor`, as the document shows them (the handlers read them with
/// [`super::input::Params::page`]).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct PageParams {
    /// How many items a page holds at most.
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<i64>,
    /// The `next` of the previous page, passed back as it came.
    cursor: Option<String>,
}

/// Which page of list `list` is asked for: at most `limit` rows, after the row whose sort key
/// is `after` (the first page when `None`).
#[derive(Debug)]
pub struct PageRequest<K> {
    list: &'static str,
    pub limit: i64,
    pub after: Option<K>,
}

impl<K: Serialize + DeserializeOwned> PageRequest<K> {
    /// Reads `limit` and `cursor` as given (either may be absent) for list `list`.
    pub fn parse(
        list: &'static str,
        limit: Option<&str>,
        cursor: Option<&str>,
    ) -> Result<Self, ApiError> {
        let limit = match limit {
            None => DEFAULT_LIMIT,
            Some(text) => text
                .parse::<i64>()
                .ok()
                .filter(|limit| (1..=MAX_LIMIT).contains(limit))
                .ok_or_else(|| {
                    ApiError::invalid(
                        "limit",
                        format!("{text:?} is not a number from 1 to {MAX_LIMIT}"),
                    )
                })?,
        };
        let after = cursor.map(|cursor| decode(list, cursor)).transpose()?;
        Ok(PageRequest { list, limit, after })
    }

    /// How many rows to fetch: one more than the page holds, which only says whether a next
    /// page follows.
    pub fn fetch(&self) -> i64 {
        self.limit + 1
    }

    /// The page of up to [`Self::fetch`] rows in list order; `key` is a row's sort key, and the
    /// last row's becomes `next` when more follow.
    pub fn page<T: Serialize>(&self, mut rows: Vec<T>, key: impl Fn(&T) -> K) -> Page<T> {
        let more = rows.len() as i64 > self.limit;
        rows.truncate(self.limit as usize);
        let next = match rows.last() {
            Some(last) if more => Some(encode(self.list, &key(last))),
            _ => None,
        };
        Page { items: rows, next }
    }
}

/// Adds `<clause><value>` (`" AND uid = "`) to a list's statement when `value` is given. Each
/// combination of filters is then a statement of its own, planned with the index it can use;
/// one statement with `($1 IS NULL OR uid = $1)` for every filter may be planned once for all
/// of them, and scan.
pub fn filter<'args, T>(query: &mut QueryBuilder<'args, Postgres>, clause: &str, value: Option<T>)
where
    T: 'args + Encode<'args, Postgres> + Type<Postgres>,
{
    if let Some(value) = value {
        query.push(clause).push_bind(value);
    }
}

/// The cursor of list `list` that points after `key`.
fn encode<K: Serialize>(list: &str, key: &K) -> String {
    let json = serde_json::to_vec(&(list, key)).expect("sort keys serialize");
    URL_SAFE_NO_PAD.encode(json)
}

/// The key a cursor of list `list` points after; anything else is a 400 naming `cursor`.
fn decode<K: DeserializeOwned>(list: &str, cursor: &str) -> Result<K, ApiError> {
    let not_ours = || {
        ApiError::invalid(
            "cursor",
            "not a cursor of this list (pass `next` back as it came)",
        )
    };
    let json = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| not_ours())?;
    let (of, key): (String, K) = serde_json::from_slice(&json).map_err(|_| not_ours())?;
    if of != list {
        return Err(not_ours());
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn request(limit: Option<&str>, cursor: Option<&str>) -> Result<PageRequest<Uuid>, ApiError> {
        PageRequest::parse("things", limit, cursor)
    }

    #[test]
    fn a_page_points_at_its_last_item_only_when_more_follow() {
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        let first = request(Some("2"), None).unwrap();
        let full = first.page(ids.clone(), |id| *id);
        assert_eq!(full.items.len(), 2);
        let next = full.next.expect("a next page");
        let second = request(Some("2"), Some(&next)).unwrap();
        assert_eq!(second.after, Some(ids[1]));
        let last = second.page(ids[2..].to_vec(), |id| *id);
        assert_eq!(last.next, None);
    }

    #[test]
    fn a_cursor_is_url_safe() {
        let key = (Some(chrono::Utc::now()), "a+b/c?d".to_owned());
        let cursor = encode("things", &key);
        assert!(
            cursor
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{cursor}"
        );
        let decoded: (Option<chrono::DateTime<chrono::Utc>>, String) =
            decode("things", &cursor).unwrap();
        assert_eq!(decoded, key);
    }

    #[test]
    fn limits_default_to_100_and_outside_1_to_1000_are_refused() {
        assert_eq!(request(None, None).unwrap().limit, 100);
        assert_eq!(request(Some("1000"), None).unwrap().limit, 1000);
        for bad in ["0", "1001", "-1", "ten", ""] {
            match request(Some(bad), None) {
                Err(ApiError::Invalid { field, .. }) => assert_eq!(field, "limit", "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_cursor_of_another_list_or_none_at_all_is_refused() {
        let other = encode("other", &Uuid::now_v7());
        for bad in [other.as_str(), "garbage!", "", "W10"] {
            match request(None, Some(bad)) {
                Err(ApiError::Invalid { field, .. }) => assert_eq!(field, "cursor", "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
