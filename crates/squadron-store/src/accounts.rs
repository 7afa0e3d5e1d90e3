//! Users, API tokens, groups and group membership.

use chrono::Utc;
use squadron_core::access::Role;
use squadron_core::names::is_valid_group_slug;

use crate::{Store, StoreError};

/// A user account.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct User {
    /// Primary key.
    pub id: i64,
    /// Login name.
    pub username: String,
    /// E-mail address ('' when unknown).
    pub email: String,
    /// Whether the user may do anything.
    pub is_superuser: bool,
}

/// A group (SQUAD's "team"): owns projects and has members.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Group {
    /// Primary key.
    pub id: i64,
    /// Unique slug.
    pub slug: String,
    /// Display name.
    pub name: Option<String>,
    /// Free text.
    pub description: Option<String>,
    /// YAML settings text.
    pub settings: Option<String>,
}

const USER_COLUMNS: &str = "id, username, email, is_superuser";
const GROUP_COLUMNS: &str = "id, slug, name, description, settings";

/// A new random API token key: 40 hex characters, like SQUAD's.
fn new_token_key() -> String {
    let mut bytes = [0u8; 20];
    getrandom::fill(&mut bytes).expect("the operating system provides randomness");
    hex::encode(bytes)
}

impl Store {
    /// Creates a user.
    pub async fn create_user(&self, username: &str, email: &str, superuser: bool) -> Result<User, StoreError> {
        if username.trim().is_empty() {
            return Err(StoreError::Invalid("a user name cannot be empty".into()));
        }
        let mut tx = self.begin_write().await?;
        let sql = format!(
            "INSERT INTO users (username, email, is_superuser, date_joined) VALUES ($1, $2, $3, $4) RETURNING {USER_COLUMNS}"
        );
        let user: Result<User, sqlx::Error> = with_tx!(tx, c => sqlx::query_as(&sql)
            .bind(username).bind(email).bind(superuser).bind(Utc::now())
            .fetch_one(&mut *c).await);
        let user = user.map_err(StoreError::from).map_err(|e| {
            if e.is_unique_violation() {
                StoreError::AlreadyExists(format!("user {username:?}"))
            } else {
                e
            }
        })?;
        tx.commit().await?;
        Ok(user)
    }

    /// Finds a user by name.
    pub async fn user_by_name(&self, username: &str) -> Result<Option<User>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE username = $1");
        Ok(with_reader!(self, pool => sqlx::query_as(&sql).bind(username).fetch_optional(pool).await)?)
    }

    /// Finds the active user owning an API token.
    pub async fn user_by_token(&self, key: &str) -> Result<Option<User>, StoreError> {
        let sql = "SELECT u.id, u.username, u.email, u.is_superuser FROM tokens t \
                   JOIN users u ON u.id = t.user_id WHERE t.key = $1 AND u.is_active";
        Ok(with_reader!(self, pool => sqlx::query_as(sql).bind(key).fetch_optional(pool).await)?)
    }

    /// The user's API token: the existing one, or a new one when there is
    /// none or `rotate` asks to replace it.
    pub async fn token_for(&self, user_id: i64, rotate: bool) -> Result<String, StoreError> {
        let mut tx = self.begin_write().await?;
        let existing: Option<String> = with_tx!(tx, c => {
            if rotate {
                sqlx::query("DELETE FROM tokens WHERE user_id = $1").bind(user_id).execute(&mut *c).await?;
            }
            sqlx::query_scalar("SELECT key FROM tokens WHERE user_id = $1").bind(user_id).fetch_optional(&mut *c).await?
        });
        let key = match existing {
            Some(key) => key,
            None => {
                let key = new_token_key();
                with_tx!(tx, c => sqlx::query("INSERT INTO tokens (key, user_id, created) VALUES ($1, $2, $3)")
                    .bind(&key).bind(user_id).bind(Utc::now()).execute(&mut *c).await.map(|r| r.rows_affected()))?;
                key
            }
        };
        tx.commit().await?;
        Ok(key)
    }

    /// Creates a group.
    pub async fn create_group(&self, slug: &str, name: Option<&str>) -> Result<Group, StoreError> {
        if !is_valid_group_slug(slug) {
            return Err(StoreError::Invalid(format!(
                "invalid group slug {slug:?}: use letters, digits, '_', '.' and '-', starting with a letter or digit (or '~')"
            )));
        }
        let mut tx = self.begin_write().await?;
        let sql = format!("INSERT INTO groups (slug, name) VALUES ($1, $2) RETURNING {GROUP_COLUMNS}");
        let group: Result<Group, sqlx::Error> =
            with_tx!(tx, c => sqlx::query_as(&sql).bind(slug).bind(name).fetch_one(&mut *c).await);
        let group = group.map_err(StoreError::from).map_err(|e| {
            if e.is_unique_violation() {
                StoreError::AlreadyExists(format!("group {slug:?}"))
            } else {
                e
            }
        })?;
        tx.commit().await?;
        Ok(group)
    }

    /// Finds a group by slug.
    pub async fn group_by_slug(&self, slug: &str) -> Result<Option<Group>, StoreError> {
        let sql = format!("SELECT {GROUP_COLUMNS} FROM groups WHERE slug = $1");
        Ok(with_reader!(self, pool => sqlx::query_as(&sql).bind(slug).fetch_optional(pool).await)?)
    }

    /// Changes a group's name and description (`None` leaves one as it is).
    pub async fn update_group(&self, id: i64, name: Option<&str>, description: Option<&str>) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        with_tx!(tx, c => sqlx::query(
            "UPDATE groups SET name = COALESCE($2, name), description = COALESCE($3, description) WHERE id = $1",
        ).bind(id).bind(name).bind(description).execute(&mut *c).await.map(|r| r.rows_affected()))?;
        tx.commit().await?;
        Ok(())
    }

    /// Makes the user a member of the group with `role`, or changes the
    /// role of an existing member. Returns the previous role, if any.
    pub async fn set_member(&self, group_id: i64, user_id: i64, role: Role) -> Result<Option<Role>, StoreError> {
        let mut tx = self.begin_write().await?;
        let previous: Option<String> = with_tx!(tx, c => {
            let previous = sqlx::query_scalar("SELECT access FROM group_members WHERE group_id = $1 AND user_id = $2")
                .bind(group_id).bind(user_id).fetch_optional(&mut *c).await?;
            sqlx::query(
                "INSERT INTO group_members (group_id, user_id, access, member_since) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (group_id, user_id) DO UPDATE SET access = excluded.access",
            )
            .bind(group_id).bind(user_id).bind(role.as_str()).bind(Utc::now())
            .execute(&mut *c).await?;
            previous
        });
        tx.commit().await?;
        Ok(previous.and_then(|r| r.parse().ok()))
    }

    /// The user's role in the group, if a member.
    pub async fn role_in_group(&self, user_id: i64, group_id: i64) -> Result<Option<Role>, StoreError> {
        let access: Option<String> = with_reader!(self, pool => sqlx::query_scalar(
            "SELECT access FROM group_members WHERE group_id = $1 AND user_id = $2",
        ).bind(group_id).bind(user_id).fetch_optional(pool).await)?;
        Ok(access.and_then(|r| r.parse().ok()))
    }
}
