//! What the management API's resources share at the edge: turning extractor rejections into
//! JSON 400s, the page size and cursor of lists, and building a [`Page`].

use serde::Deserialize;
use uuid::Uuid;

use super::{ApiError, Page};

/// The largest page a list answers.
const MAX_LIMIT: i64 = 200;
const DEFAULT_LIMIT: i64 = 50;

/// Turns an extractor's rejection (bad JSON, query or path) into a 400 that says why.
pub fn input<T, R: std::fmt::Display>(extracted: Result<T, R>) -> Result<T, ApiError> {
    extracted.map_err(|rejection| ApiError::BadRequest(rejection.to_string()))
}

/// `?limit=&cursor=` of a list; the cursor is the id the previous page ended with.
#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    pub limit: Option<i64>,
    pub cursor: Option<Uuid>,
}

impl PageQuery {
    /// The page size, 1 to 200 (default 50).
    pub fn limit(&self) -> i64 {
        self.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT)
    }
}

/// Builds a page from up to `limit + 1` rows: the extra row only says there is a next page.
pub fn page<T: serde::Serialize>(mut rows: Vec<T>, limit: i64, id: impl Fn(&T) -> Uuid) -> Page<T> {
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next = more
        .then(|| rows.last().map(|row| id(row).to_string()))
        .flatten();
    Page { items: rows, next }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_points_at_its_last_item_only_when_more_follow() {
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        let full = page(ids.clone(), 2, |id| *id);
        assert_eq!(full.items.len(), 2);
        assert_eq!(full.next, Some(ids[1].to_string()));
        let last = page(ids[..2].to_vec(), 2, |id| *id);
        assert_eq!(last.next, None);
    }

    #[test]
    fn limits_are_clamped() {
        assert_eq!(PageQuery::default().limit(), 50);
        let huge = PageQuery {
            limit: Some(10_000),
            cursor: None,
        };
        assert_eq!(huge.limit(), 200);
    }
}
