//! Filters as SQUAD's REST API takes them (django-rest-framework-filters):
//! `field=value`, `field__lookup=value`, and related filters chained with
//! `__` (`build__project__slug=linux`), each turned into SQL.
//!
//! Parameters that name no filter are ignored, as SQUAD ignores them
//! (squad-client sends stray ones). A filter SQUAD has and squadron does not
//! yet answers 400 naming it, never a silently unfiltered list.

use squadron_core::submission::parse_datetime;
use squadron_store::sql::{Sql, Value};

use crate::error::ApiError;

/// How a field's values are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Int,
    Text,
    Bool,
    Float,
    Time,
}

/// A lookup, the part after the last `__`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    Exact,
    In,
    StartsWith,
    Contains,
    IContains,
    Gt,
    Gte,
    Lt,
    Lte,
    IsNull,
}

impl Lookup {
    fn parse(s: &str) -> Option<Lookup> {
        Some(match s {
            "exact" => Lookup::Exact,
            "in" => Lookup::In,
            "startswith" => Lookup::StartsWith,
            "contains" => Lookup::Contains,
            "icontains" => Lookup::IContains,
            "gt" => Lookup::Gt,
            "gte" => Lookup::Gte,
            "lt" => Lookup::Lt,
            "lte" => Lookup::Lte,
            "isnull" => Lookup::IsNull,
            _ => return None,
        })
    }
}

/// Lookups of text fields in SQUAD's filter sets.
pub(crate) const TEXT: &[Lookup] =
    &[Lookup::Exact, Lookup::In, Lookup::StartsWith, Lookup::Contains, Lookup::IContains];
/// `exact` and `in`.
pub(crate) const EXACT_IN: &[Lookup] = &[Lookup::Exact, Lookup::In];
/// `exact` only.
pub(crate) const EXACT: &[Lookup] = &[Lookup::Exact];
/// Comparisons.
pub(crate) const ORDERED: &[Lookup] = &[Lookup::Exact, Lookup::Lt, Lookup::Lte, Lookup::Gt, Lookup::Gte];
/// `gt` and `lt`.
pub(crate) const GT_LT: &[Lookup] = &[Lookup::Gt, Lookup::Lt];

/// A filterable field. `column` is an SQL expression in which `{p}` stands
/// for the table's alias prefix.
pub(crate) struct Field {
    pub name: &'static str,
    pub column: &'static str,
    pub kind: Kind,
    pub lookups: &'static [Lookup],
    /// The lookup of the bare parameter (`exact`, or e.g. `icontains` for
    /// SQUAD's `name` filters).
    pub default: Lookup,
}

/// A field with the usual defaults.
pub(crate) const fn field(name: &'static str, column: &'static str, kind: Kind, lookups: &'static [Lookup]) -> Field {
    Field { name, column, kind, lookups, default: Lookup::Exact }
}

/// A related filter: `name=<id>` on the foreign key `column`, or
/// `name__<filter of the related set>`.
pub(crate) struct Relation {
    pub name: &'static str,
    pub column: &'static str,
    /// The related table (its primary key is `id`).
    pub table: &'static str,
    pub set: &'static FilterSet,
    /// For a many-to-many relation, the query giving `column` values from
    /// the related ids, up to the related id column:
    /// `SELECT test_id FROM test_known_issues WHERE known_issue_id`.
    pub through: Option<&'static str>,
}

/// A foreign-key relation.
pub(crate) const fn relation(
    name: &'static str,
    column: &'static str,
    table: &'static str,
    set: &'static FilterSet,
) -> Relation {
    Relation { name, column, table, set, through: None }
}

/// The filters of one resource.
pub(crate) struct FilterSet {
    pub fields: &'static [Field],
    pub relations: &'static [Relation],
    /// Filters SQUAD offers here that squadron does not answer yet.
    pub unsupported: &'static [&'static str],
}

/// Query parameters that are never filters.
const RESERVED: &[&str] = &["limit", "offset", "cursor", "fields", "ordering", "search", "format", "page"];

/// A filter that went wrong, named.
fn invalid(param: &str, message: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("filter {param}: {message}"))
}

fn parse_value(param: &str, kind: Kind, raw: &str) -> Result<Value, ApiError> {
    let raw = raw.trim();
    Ok(match kind {
        Kind::Int => Value::Int(raw.parse().map_err(|_| invalid(param, format!("{raw:?} is not a whole number")))?),
        Kind::Float => Value::Float(raw.parse().map_err(|_| invalid(param, format!("{raw:?} is not a number")))?),
        Kind::Text => Value::Text(raw.to_string()),
        Kind::Bool => {
            Value::Bool(parse_bool(raw).ok_or_else(|| invalid(param, format!("{raw:?} is not true or false")))?)
        }
        Kind::Time => Value::Time(
            parse_datetime(raw).ok_or_else(|| invalid(param, format!("{raw:?} is not a date and time (ISO 8601)")))?,
        ),
    })
}

/// A boolean as Django's filters read it (`true`/`True`/`1`, `false`/…).
pub(crate) fn parse_bool(raw: &str) -> Option<bool> {
    match raw {
        "true" | "True" | "1" => Some(true),
        "false" | "False" | "0" => Some(false),
        _ => None,
    }
}

/// `%`, `_` and `\` escaped for LIKE … ESCAPE '\'.
fn like_escaped(s: &str) -> String {
    s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

/// Builds the SQL conditions of filter parameters.
pub(crate) struct Filters<'a> {
    /// `sqlite` or `postgres`: SQL for substring tests differs.
    pub engine: &'a str,
}

impl Filters<'_> {
    /// Appends ` AND <condition>` to `sql` for each parameter that names a
    /// filter of `set`; `prefix` qualifies the set's columns (`t.`).
    pub(crate) fn apply(
        &self,
        set: &FilterSet,
        prefix: &str,
        params: &[(String, String)],
        sql: &mut Sql,
    ) -> Result<(), ApiError> {
        for (param, value) in params {
            if RESERVED.contains(&param.as_str()) {
                continue;
            }
            let mut condition = Sql::default();
            if self.condition(set, prefix, param, param, value, &mut condition)? {
                sql.push(" AND ").append(&condition);
            }
        }
        Ok(())
    }

    /// Writes the condition for `path` (the rest of `param`) into `out`;
    /// `false` when `path` names no filter.
    fn condition(
        &self,
        set: &FilterSet,
        prefix: &str,
        param: &str,
        path: &str,
        value: &str,
        out: &mut Sql,
    ) -> Result<bool, ApiError> {
        let (head, rest) = match path.split_once("__") {
            Some((head, rest)) => (head, Some(rest)),
            None => (path, None),
        };
        if set.unsupported.contains(&head) {
            return Err(invalid(param, "this filter is not supported yet"));
        }
        if let Some(relation) = set.relations.iter().find(|r| r.name == head) {
            let column = relation.column.replace("{p}", prefix);
            // The related ids the condition keeps, as SQL.
            let mut related = Sql::default();
            match rest {
                None | Some("exact") => {
                    related.bind(parse_value(param, Kind::Int, value)?);
                }
                Some("in") => {
                    let ids = value
                        .split(',')
                        .filter(|v| !v.trim().is_empty())
                        .map(|v| parse_value(param, Kind::Int, v))
                        .collect::<Result<Vec<_>, _>>()?;
                    if ids.is_empty() {
                        out.push("1 = 0");
                        return Ok(true);
                    }
                    related.push("SELECT id FROM ").push(relation.table).push(" WHERE id IN ").bind_list(ids);
                }
                Some("isnull") if relation.through.is_none() => {
                    self.lookup(param, Kind::Int, &column, Lookup::IsNull, value, out)?;
                    return Ok(true);
                }
                Some(rest) => {
                    let mut inner = Sql::default();
                    if !self.condition(relation.set, "", param, rest, value, &mut inner)? {
                        return Ok(false);
                    }
                    related.push("SELECT id FROM ").push(relation.table).push(" WHERE ").append(&inner);
                }
            }
            let single = matches!(rest, None | Some("exact"));
            match (relation.through, single) {
                (None, true) => {
                    out.push(&format!("{column} = ")).append(&related);
                }
                (None, false) => {
                    out.push(&format!("{column} IN (")).append(&related).push(")");
                }
                (Some(through), true) => {
                    out.push(&format!("{column} IN ({through} = ")).append(&related).push(")");
                }
                (Some(through), false) => {
                    out.push(&format!("{column} IN ({through} IN (")).append(&related).push("))");
                }
            }
            return Ok(true);
        }
        let Some(field) = set.fields.iter().find(|f| f.name == head) else {
            return Ok(false);
        };
        let lookup = match rest {
            None => field.default,
            Some(l) => match Lookup::parse(l).filter(|l| field.lookups.contains(l)) {
                Some(l) => l,
                None => return Ok(false),
            },
        };
        let column = field.column.replace("{p}", prefix);
        self.lookup(param, field.kind, &column, lookup, value, out)?;
        Ok(true)
    }

    fn lookup(
        &self,
        param: &str,
        kind: Kind,
        column: &str,
        lookup: Lookup,
        value: &str,
        out: &mut Sql,
    ) -> Result<(), ApiError> {
        let position = if self.engine == "sqlite" { "instr" } else { "strpos" };
        match lookup {
            Lookup::Exact => {
                out.push(&format!("{column} = ")).bind(parse_value(param, kind, value)?);
            }
            Lookup::Gt | Lookup::Gte | Lookup::Lt | Lookup::Lte => {
                let op = match lookup {
                    Lookup::Gt => ">",
                    Lookup::Gte => ">=",
                    Lookup::Lt => "<",
                    _ => "<=",
                };
                out.push(&format!("{column} {op} ")).bind(parse_value(param, kind, value)?);
            }
            Lookup::In => {
                let values = value
                    .split(',')
                    .filter(|v| !v.trim().is_empty())
                    .map(|v| parse_value(param, kind, v))
                    .collect::<Result<Vec<_>, _>>()?;
                if values.is_empty() {
                    out.push("1 = 0");
                } else {
                    out.push(&format!("{column} IN ")).bind_list(values);
                }
            }
            Lookup::IsNull => {
                let null = parse_bool(value.trim())
                    .ok_or_else(|| invalid(param, format!("{value:?} is not true or false")))?;
                out.push(&format!("{column} IS {}NULL", if null { "" } else { "NOT " }));
            }
            Lookup::StartsWith => {
                out.push(&format!("{position}({column}, ")).bind(value.to_string()).push(") = 1");
            }
            Lookup::Contains => {
                out.push(&format!("{position}({column}, ")).bind(value.to_string()).push(") > 0");
            }
            Lookup::IContains => {
                out.push(&format!("LOWER({column}) LIKE LOWER("))
                    .bind(format!("%{}%", like_escaped(value)))
                    .push(") ESCAPE '\\'");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static GROUPS: FilterSet = FilterSet {
        fields: &[field("slug", "{p}slug", Kind::Text, TEXT), field("id", "{p}id", Kind::Int, EXACT_IN)],
        relations: &[],
        unsupported: &[],
    };
    static PROJECTS: FilterSet = FilterSet {
        fields: &[
            field("slug", "{p}slug", Kind::Text, TEXT),
            Field {
                name: "full_name",
                column: "{p}full",
                kind: Kind::Text,
                lookups: &[Lookup::StartsWith],
                default: Lookup::StartsWith,
            },
        ],
        relations: &[relation("group", "{p}group_id", "groups", &GROUPS)],
        unsupported: &["status"],
    };

    fn build(params: &[(&str, &str)]) -> Result<Sql, ApiError> {
        let params: Vec<(String, String)> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut sql = Sql::new("WHERE TRUE");
        Filters { engine: "postgres" }.apply(&PROJECTS, "p.", &params, &mut sql)?;
        Ok(sql)
    }

    #[test]
    fn fields_lookups_and_relations() {
        let sql = build(&[
            ("slug", "linux"),
            ("group", "3"),
            ("group__slug__startswith", "lk"),
            ("full_name", "lkft/li"),
            ("group__isnull", "false"),
        ])
        .unwrap();
        let mut expected = Sql::new("WHERE TRUE");
        expected.push(" AND p.slug = ").bind("linux");
        expected.push(" AND p.group_id = ").bind(3);
        expected.push(" AND p.group_id IN (SELECT id FROM groups WHERE strpos(slug, ").bind("lk").push(") = 1)");
        expected.push(" AND strpos(p.full, ").bind("lkft/li").push(") = 1");
        expected.push(" AND p.group_id IS NOT NULL");
        assert_eq!(sql, expected);
    }

    #[test]
    fn unknown_parameters_are_ignored_and_bad_values_named() {
        assert_eq!(
            build(&[("limit", "5"), ("nope", "1"), ("slug__gt", "a"), ("group__nope", "x")]).unwrap(),
            Sql::new("WHERE TRUE")
        );
        let err = build(&[("group", "abc")]).unwrap_err();
        assert!(err.detail.contains("group") && err.detail.contains("abc"), "{}", err.detail);
        let err = build(&[("group__id__in", "1,x")]).unwrap_err();
        assert!(err.detail.contains("group__id__in"), "{}", err.detail);
        let err = build(&[("status__finished", "true")]).unwrap_err();
        assert!(err.detail.contains("status__finished") && err.detail.contains("not supported"), "{}", err.detail);
    }

    #[test]
    fn like_patterns_are_escaped() {
        assert_eq!(like_escaped(r"50%_a\b"), r"50\%\_a\\b");
    }
}
