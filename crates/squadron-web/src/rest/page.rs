//! SQUAD's two list envelopes: limit/offset with `count`, and cursor
//! pagination without (DRF's `CursorPagination`, page size in `limit`).
//! Plus DRF's `?ordering=` and `?search=` on limit/offset lists.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};
use squadron_store::sql::{Row, Sql};

use super::context::{form_urlencoded, Rest};
use crate::error::ApiError;

/// SQUAD's page size.
const PAGE_SIZE: i64 = 50;

/// A row with an integer primary key.
pub(crate) trait Keyed {
    fn key(&self) -> i64;
}

/// Implements [`Keyed`] for row types whose key is their `id` field.
macro_rules! keyed_by_id {
    ($row:ty) => {
        impl $crate::rest::page::Keyed for $row {
            fn key(&self) -> i64 {
                self.id
            }
        }
    };
}
pub(crate) use keyed_by_id;

/// How a list is paginated and ordered.
pub(crate) enum Paging {
    /// limit/offset, ordered by `default` unless `?ordering=` names one of
    /// `fields` (`(parameter, column)`); `?search=` looks in `search` columns.
    LimitOffset {
        default: &'static str,
        fields: &'static [(&'static str, &'static str)],
        search: &'static [&'static str],
    },
    /// Cursor pagination on the id column, newest first when `descending`.
    Cursor { descending: bool },
}

/// Cursor pagination as `?ordering=id` (the default) or `-id` asks; `what`
/// names the list in the 400 for any other ordering.
pub(crate) fn id_cursor(rest: &Rest, what: &str) -> Result<Paging, ApiError> {
    match rest.param("ordering") {
        None | Some("id") => Ok(Paging::Cursor { descending: false }),
        Some("-id") => Ok(Paging::Cursor { descending: true }),
        Some(_) => Err(ApiError::bad_request(format!("ordering {what} by anything but id is not supported yet"))),
    }
}

/// One page of a list.
pub(crate) struct Page<T> {
    pub rows: Vec<T>,
    count: Option<i64>,
    next: Option<String>,
    previous: Option<String>,
}

impl<T> Page<T> {
    /// The page in its envelope, each row rendered by `render`.
    pub fn into_json(self, render: impl Fn(&T) -> Value) -> Value {
        let results: Vec<Value> = self.rows.iter().map(render).collect();
        match self.count {
            Some(count) => json!({"count": count, "next": self.next, "previous": self.previous, "results": results}),
            None => json!({"next": self.next, "previous": self.previous, "results": results}),
        }
    }
}

impl<T> Page<T> {
    /// The page in its envelope, each row written by `write` straight
    /// into the response body.
    pub fn into_body(self, mut write: impl FnMut(&T, &mut Vec<u8>)) -> axum::response::Response {
        let mut out = Vec::with_capacity(512 + self.rows.len() * 640);
        out.push(b'{');
        if let Some(count) = self.count {
            out.extend_from_slice(format!("\"count\":{count},").as_bytes());
        }
        for (key, link) in [("next", &self.next), ("previous", &self.previous)] {
            out.extend_from_slice(format!("\"{key}\":").as_bytes());
            serde_json::to_writer(&mut out, link).expect("writing to memory");
            out.push(b',');
        }
        out.extend_from_slice(b"\"results\":[");
        for (i, row) in self.rows.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write(row, &mut out);
        }
        out.extend_from_slice(b"]}");
        super::raw("application/json", out)
    }
}

fn positive(raw: Option<&str>) -> Option<i64> {
    raw.and_then(|v| v.parse::<i64>().ok()).filter(|&n| n > 0)
}

/// The request's parameters without `names`, then `extra`.
fn with_params(rest: &Rest, names: &[&str], extra: &[(&str, String)]) -> String {
    let mut params: Vec<(String, String)> =
        rest.params.iter().filter(|(k, _)| !names.contains(&k.as_str())).cloned().collect();
    params.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    rest.self_url(&params)
}

/// Fetches one page of `select` + `conditions` (which starts with
/// ` WHERE`), `id` being the id column's expression.
pub(crate) async fn fetch<T: Row + Keyed>(
    rest: &Rest,
    select: &str,
    conditions: Sql,
    id: &str,
    paging: &Paging,
) -> Result<Page<T>, ApiError> {
    match paging {
        Paging::LimitOffset { default, fields, search } => {
            limit_offset(rest, select, conditions, id, default, fields, search).await
        }
        Paging::Cursor { descending } => cursor(rest, select, conditions, id, *descending).await,
    }
}

async fn limit_offset<T: Row>(
    rest: &Rest,
    select: &str,
    mut conditions: Sql,
    id: &str,
    default: &str,
    fields: &[(&str, &str)],
    search_columns: &[&str],
) -> Result<Page<T>, ApiError> {
    if let Some(terms) = rest.param("search").filter(|_| !search_columns.is_empty()) {
        for term in terms.split(|c: char| c.is_whitespace() || c == ',').filter(|t| !t.is_empty()) {
            let pattern = format!("%{}%", term.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
            conditions.push(" AND (");
            for (i, column) in search_columns.iter().enumerate() {
                if i > 0 {
                    conditions.push(" OR ");
                }
                conditions.push(&format!("LOWER({column}) LIKE LOWER(")).bind(pattern.clone()).push(") ESCAPE '\\'");
            }
            conditions.push(")");
        }
    }
    let ordering: Vec<String> = rest
        .param("ordering")
        .map(|o| {
            o.split(',')
                .filter_map(|term| {
                    let (desc, name) = term.trim().strip_prefix('-').map_or((false, term.trim()), |n| (true, n));
                    fields
                        .iter()
                        .find(|(f, _)| *f == name)
                        .map(|(_, c)| format!("{c}{}", if desc { " DESC" } else { "" }))
                })
                .collect()
        })
        .unwrap_or_default();
    let order = if ordering.is_empty() { default.to_string() } else { ordering.join(", ") };
    let limit = positive(rest.param("limit")).unwrap_or(PAGE_SIZE);
    let offset = rest.param("offset").and_then(|v| v.parse::<i64>().ok()).filter(|&n| n >= 0).unwrap_or(0);

    let mut count_sql = Sql::new(&format!("SELECT COUNT(*) FROM ({select}"));
    count_sql.append(&conditions).push(") AS listed");
    let count = rest.state.store.fetch_count(&count_sql).await?;
    let mut sql = Sql::new(select);
    sql.append(&conditions).push(&format!(" ORDER BY {order}, {id} LIMIT ")).bind(limit).push(" OFFSET ").bind(offset);
    let rows = rest.state.store.fetch_all(&sql).await?;

    let next = (offset + limit < count).then(|| {
        with_params(
            rest,
            &["limit", "offset"],
            &[("limit", limit.to_string()), ("offset", (offset + limit).to_string())],
        )
    });
    let previous = (offset > 0).then(|| {
        let back = offset - limit;
        if back <= 0 {
            with_params(rest, &["limit", "offset"], &[("limit", limit.to_string())])
        } else {
            with_params(rest, &["limit", "offset"], &[("limit", limit.to_string()), ("offset", back.to_string())])
        }
    });
    Ok(Page { rows, count: Some(count), next, previous })
}

/// A decoded cursor: where the page starts, and whether it goes backwards.
struct Cursor {
    reverse: bool,
    position: i64,
}

fn decode_cursor(raw: &str) -> Option<Cursor> {
    let bytes = STANDARD.decode(raw.trim()).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let params = form_urlencoded(&text);
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    Some(Cursor { reverse: get("r") == Some("1"), position: get("p")?.parse().ok()? })
}

fn encode_cursor(reverse: bool, position: i64) -> String {
    let text = if reverse { format!("r=1&p={position}") } else { format!("p={position}") };
    STANDARD.encode(text)
}

async fn cursor<T: Row + Keyed>(
    rest: &Rest,
    select: &str,
    mut conditions: Sql,
    id: &str,
    descending: bool,
) -> Result<Page<T>, ApiError> {
    let cursor = match rest.param("cursor") {
        Some(raw) => Some(decode_cursor(raw).ok_or_else(|| ApiError::not_found("Invalid cursor"))?),
        None => None,
    };
    let reverse = cursor.as_ref().is_some_and(|c| c.reverse);
    let backwards = descending != reverse;
    if let Some(c) = &cursor {
        conditions.push(&format!(" AND {id} {} ", if backwards { "<" } else { ">" })).bind(c.position);
    }
    let limit = positive(rest.param("limit")).unwrap_or(PAGE_SIZE);
    let mut sql = Sql::new(select);
    sql.append(&conditions)
        .push(&format!(" ORDER BY {id} {} LIMIT ", if backwards { "DESC" } else { "ASC" }))
        .bind(limit + 1);
    let mut rows: Vec<T> = rest.state.store.fetch_all(&sql).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    if reverse {
        rows.reverse();
    }
    let link =
        |reverse: bool, position: i64| with_params(rest, &["cursor"], &[("cursor", encode_cursor(reverse, position))]);
    let (has_next, has_previous) = if reverse { (true, more) } else { (more, cursor.is_some()) };
    let next = rows.last().filter(|_| has_next).map(|r| link(false, r.key()));
    let previous = rows.first().filter(|_| has_previous).map(|r| link(true, r.key()));
    Ok(Page { rows, count: None, next, previous })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        let c = decode_cursor(&encode_cursor(true, 42)).unwrap();
        assert!(c.reverse && c.position == 42);
        let c = decode_cursor(&encode_cursor(false, 7)).unwrap();
        assert!(!c.reverse && c.position == 7);
        assert!(decode_cursor("not base64!").is_none());
        assert!(decode_cursor(&STANDARD.encode("p=abc")).is_none());
    }
}
