//! Table administration: create, inspect, alter, truncate, delete.

use std::sync::Arc;
use std::time::Duration;

use crate::client::{routing_param, with_routing, Shared};
use crate::error::{Error, Result};
use crate::proto::admin::bigtable_table_admin_client::BigtableTableAdminClient;
use crate::proto::admin::{
    drop_row_range_request, gc_rule, modify_column_families_request, table, ColumnFamily,
    CreateTableRequest, DeleteTableRequest, DropRowRangeRequest, GcRule, GetTableRequest,
    ListTablesRequest, ModifyColumnFamiliesRequest, Table,
};
use crate::transport::Transport;

/// Garbage-collection rules for column families.
pub mod gc {
    use super::*;

    /// Keep cells forever (only explicit deletes remove them).
    pub fn keep_all() -> GcRule {
        GcRule { rule: None }
    }

    pub fn max_versions(n: i32) -> GcRule {
        GcRule {
            rule: Some(gc_rule::Rule::MaxNumVersions(n)),
        }
    }

    pub fn max_age(age: Duration) -> GcRule {
        GcRule {
            rule: Some(gc_rule::Rule::MaxAge(prost_types::Duration {
                seconds: i64::try_from(age.as_secs()).unwrap_or(i64::MAX),
                nanos: i32::try_from(age.subsec_nanos()).unwrap_or(0),
            })),
        }
    }

    /// Delete cells matching any of the rules.
    pub fn union(rules: impl IntoIterator<Item = GcRule>) -> GcRule {
        GcRule {
            rule: Some(gc_rule::Rule::Union(gc_rule::Union {
                rules: rules.into_iter().collect(),
            })),
        }
    }

    /// Delete cells matching all of the rules.
    pub fn intersection(rules: impl IntoIterator<Item = GcRule>) -> GcRule {
        GcRule {
            rule: Some(gc_rule::Rule::Intersection(gc_rule::Intersection {
                rules: rules.into_iter().collect(),
            })),
        }
    }
}

/// One change for [`TableAdmin::modify_column_families`].
#[derive(Debug, Clone)]
pub enum FamilyChange {
    Create(String, GcRule),
    Update(String, GcRule),
    Drop(String),
}

impl FamilyChange {
    fn into_proto(self) -> modify_column_families_request::Modification {
        use modify_column_families_request::modification::Mod;
        let (id, m) = match self {
            FamilyChange::Create(id, rule) => (id, Mod::Create(family(rule))),
            FamilyChange::Update(id, rule) => (id, Mod::Update(family(rule))),
            FamilyChange::Drop(id) => (id, Mod::Drop(true)),
        };
        modify_column_families_request::Modification {
            id,
            update_mask: None,
            r#mod: Some(m),
        }
    }
}

fn family(rule: GcRule) -> ColumnFamily {
    ColumnFamily {
        gc_rule: Some(rule),
        value_type: None,
    }
}

/// Admin operations on the tables of the client's instance. Cheap to clone.
#[derive(Debug, Clone)]
pub struct TableAdmin {
    client: BigtableTableAdminClient<Transport>,
    shared: Arc<Shared>,
}

impl TableAdmin {
    pub(crate) fn new(client: BigtableTableAdminClient<Transport>, shared: Arc<Shared>) -> Self {
        TableAdmin { client, shared }
    }

    fn request<T>(&self, msg: T, key: &str, resource: &str) -> tonic::Request<T> {
        with_routing(
            msg,
            &routing_param(key, resource),
            Some(self.shared.retry.total_timeout),
        )
    }

    /// Creates `table` with the given column families and their GC rules.
    pub async fn create_table(&self, table: &str, families: &[(&str, GcRule)]) -> Result<Table> {
        let parent = self.shared.instance_name();
        let msg = CreateTableRequest {
            parent: parent.clone(),
            table_id: table.to_owned(),
            table: Some(Table {
                column_families: families
                    .iter()
                    .map(|(name, rule)| ((*name).to_owned(), family(rule.clone())))
                    .collect(),
                ..Default::default()
            }),
            initial_splits: vec![],
        };
        let req = self.request(msg, "parent", &parent);
        Ok(self.client.clone().create_table(req).await?.into_inner())
    }

    /// The table's schema (column families and GC rules).
    pub async fn get_table(&self, table: &str) -> Result<Table> {
        let name = self.shared.table_name(table);
        let msg = GetTableRequest {
            name: name.clone(),
            view: table::View::SchemaView as i32,
        };
        let req = self.request(msg, "name", &name);
        Ok(self.client.clone().get_table(req).await?.into_inner())
    }

    /// IDs of all tables in the instance.
    pub async fn list_tables(&self) -> Result<Vec<String>> {
        let parent = self.shared.instance_name();
        let prefix = format!("{parent}/tables/");
        let mut ids = Vec::new();
        let mut page_token = String::new();
        loop {
            let msg = ListTablesRequest {
                parent: parent.clone(),
                view: table::View::NameOnly as i32,
                page_size: 0,
                page_token: std::mem::take(&mut page_token),
            };
            let req = self.request(msg, "parent", &parent);
            let resp = self.client.clone().list_tables(req).await?.into_inner();
            ids.extend(resp.tables.into_iter().map(|t| {
                t.name
                    .strip_prefix(&prefix)
                    .map_or_else(|| t.name.clone(), str::to_owned)
            }));
            if resp.next_page_token.is_empty() {
                return Ok(ids);
            }
            page_token = resp.next_page_token;
        }
    }

    pub async fn modify_column_families(
        &self,
        table: &str,
        changes: Vec<FamilyChange>,
    ) -> Result<Table> {
        if changes.is_empty() {
            return Err(Error::InvalidArgument(
                "no column family changes given".into(),
            ));
        }
        let name = self.shared.table_name(table);
        let msg = ModifyColumnFamiliesRequest {
            name: name.clone(),
            modifications: changes.into_iter().map(FamilyChange::into_proto).collect(),
            ignore_warnings: false,
        };
        let req = self.request(msg, "name", &name);
        Ok(self
            .client
            .clone()
            .modify_column_families(req)
            .await?
            .into_inner())
    }

    pub async fn delete_table(&self, table: &str) -> Result<()> {
        let name = self.shared.table_name(table);
        let req = self.request(DeleteTableRequest { name: name.clone() }, "name", &name);
        self.client.clone().delete_table(req).await?;
        Ok(())
    }

    /// Deletes every row whose key starts with `prefix` (which must be non-empty;
    /// use [`drop_all_rows`](Self::drop_all_rows) to truncate).
    pub async fn drop_row_range(&self, table: &str, prefix: impl Into<Vec<u8>>) -> Result<()> {
        let prefix = prefix.into();
        if prefix.is_empty() {
            return Err(Error::InvalidArgument(
                "empty prefix; use drop_all_rows to delete everything".into(),
            ));
        }
        self.drop(table, drop_row_range_request::Target::RowKeyPrefix(prefix))
            .await
    }

    /// Deletes all rows, keeping the table and its schema.
    pub async fn drop_all_rows(&self, table: &str) -> Result<()> {
        self.drop(
            table,
            drop_row_range_request::Target::DeleteAllDataFromTable(true),
        )
        .await
    }

    async fn drop(&self, table: &str, target: drop_row_range_request::Target) -> Result<()> {
        let name = self.shared.table_name(table);
        let msg = DropRowRangeRequest {
            name: name.clone(),
            target: Some(target),
        };
        let req = self.request(msg, "name", &name);
        self.client.clone().drop_row_range(req).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gc_rules() {
        assert_eq!(
            gc::max_versions(1).rule,
            Some(gc_rule::Rule::MaxNumVersions(1))
        );
        assert_eq!(
            gc::max_age(Duration::from_millis(1500)).rule,
            Some(gc_rule::Rule::MaxAge(prost_types::Duration {
                seconds: 1,
                nanos: 500_000_000
            }))
        );
        let u = gc::union([gc::max_versions(2), gc::max_age(Duration::from_secs(60))]);
        assert!(matches!(u.rule, Some(gc_rule::Rule::Union(ref x)) if x.rules.len() == 2));
        let i = gc::intersection([gc::max_versions(2), u]);
        let Some(gc_rule::Rule::Intersection(x)) = i.rule else {
            panic!("not an intersection");
        };
        assert!(matches!(x.rules[1].rule, Some(gc_rule::Rule::Union(_))));
        assert_eq!(gc::keep_all().rule, None);
    }

    #[test]
    fn family_changes() {
        use modify_column_families_request::modification::Mod;
        let m = FamilyChange::Create("f".into(), gc::max_versions(1)).into_proto();
        assert_eq!(m.id, "f");
        assert!(
            matches!(m.r#mod, Some(Mod::Create(ref c)) if c.gc_rule == Some(gc::max_versions(1)))
        );
        let m = FamilyChange::Update("g".into(), gc::keep_all()).into_proto();
        assert!(matches!(m.r#mod, Some(Mod::Update(_))));
        let m = FamilyChange::Drop("h".into()).into_proto();
        assert_eq!(m.r#mod, Some(Mod::Drop(true)));
    }
}
