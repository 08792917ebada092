//! Dynamic labels: label queries are definitions (validated, stored, and
//! announced as a new config generation so every hostd reloads them); the
//! host actors ask them and keep membership from the answers.

use gatehouse_core::config::validate_label_query;
use gatehouse_core::model::LabelQuery;
use gatehouse_core::time::now_ms;

use super::Admin;
use crate::ApiError;

impl Admin {
    pub(super) async fn op_put_label_query(
        &self,
        mut q: LabelQuery,
    ) -> Result<LabelQuery, ApiError> {
        validate_label_query(&q)?;
        q.platforms.sort();
        q.platforms.dedup();
        q.updated_at = now_ms();
        let stored = q.clone();
        self.change_definitions(
            |d| {
                d.label_queries.insert(q.label.clone(), q.clone());
                Ok(())
            },
            || async { Ok(self.store.put_label_query(&stored).await?) },
        )
        .await?;
        Ok(q)
    }

    pub(super) async fn op_list_label_queries(&self) -> Result<Vec<LabelQuery>, ApiError> {
        Ok(self.store.list_label_queries().await?)
    }

    pub(super) async fn op_delete_label_query(&self, label: &str) -> Result<(), ApiError> {
        self.delete_definition(
            format!("label query {label}"),
            |d| d.label_queries.remove(label).is_some(),
            || self.store.delete_label_query(label),
        )
        .await
    }
}
