//! Who receives a project's notifications: subscriptions (a user or an
//! address, with a strategy) and admin subscriptions (addresses).

use crate::sql::Sql;
use crate::{Store, StoreError};

impl Store {
    /// Subscribes `email` to a project's build notifications, as the user
    /// with that address if there is one (SQUAD's `subscribe`); a
    /// subscription that exists is left as it is. Returns whether one was
    /// created.
    pub async fn subscribe(&self, project_id: i64, email: &str) -> Result<bool, StoreError> {
        let mut user = Sql::new("SELECT id FROM users WHERE email = ");
        user.bind(email).push(" ORDER BY id LIMIT 1");
        let user: Option<(i64,)> = self.fetch_optional(&user).await?;
        let mut sql = Sql::new("INSERT INTO subscriptions (project_id, user_id, email) VALUES (");
        sql.bind(project_id).push(", ");
        match user {
            Some((id,)) => sql.bind(id).push(", NULL"),
            None => sql.push("NULL, ").bind(email),
        };
        sql.push(") ON CONFLICT DO NOTHING");
        let mut tx = self.begin_write().await?;
        let created = tx.execute(&sql).await? == 1;
        tx.commit().await?;
        Ok(created)
    }

    /// Removes every subscription of a project to `email`, by address or
    /// by the user with that address; returns how many.
    pub async fn unsubscribe(&self, project_id: i64, email: &str) -> Result<u64, StoreError> {
        let mut sql = Sql::new("DELETE FROM subscriptions WHERE project_id = ");
        sql.bind(project_id)
            .push(" AND (email = ")
            .bind(email)
            .push(" OR user_id IN (SELECT id FROM users WHERE email = ")
            .bind(email)
            .push("))");
        let mut tx = self.begin_write().await?;
        let removed = tx.execute(&sql).await?;
        tx.commit().await?;
        Ok(removed)
    }

    /// Sends a project's admin emails to `email` too.
    pub async fn admin_subscribe(&self, project_id: i64, email: &str) -> Result<(), StoreError> {
        let mut sql = Sql::new("INSERT INTO admin_subscriptions (project_id, email) VALUES (");
        sql.bind(project_id).push(", ").bind(email).push(") ON CONFLICT DO NOTHING");
        let mut tx = self.begin_write().await?;
        tx.execute(&sql).await?;
        tx.commit().await
    }

    /// Stops sending them to `email`; false if it was not subscribed.
    pub async fn admin_unsubscribe(&self, project_id: i64, email: &str) -> Result<bool, StoreError> {
        let mut sql = Sql::new("DELETE FROM admin_subscriptions WHERE project_id = ");
        sql.bind(project_id).push(" AND email = ").bind(email);
        let mut tx = self.begin_write().await?;
        let removed = tx.execute(&sql).await? > 0;
        tx.commit().await?;
        Ok(removed)
    }
}
