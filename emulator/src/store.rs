//! Durable table storage: one fjall keyspace per table, one value per row, atomic row writes.
//!
//! A row is rewritten whole on every mutation. That makes row atomicity trivial (the new row
//! goes into one journal batch) and keeps reads to one lookup per row; Bigtable rows used by
//! the ChunkedGraph are small, so the rewrite is cheap.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use googleapis_tonic_google_bigtable_admin_v2::google::bigtable::admin::v2 as admin;
use googleapis_tonic_google_bigtable_v2::google::bigtable::v2 as pb;
use prost::Message;

use crate::filter::CompiledFilter;
use crate::gc;
use crate::row::{DecodeError, ReadCell, StoredRow};

/// Largest key fjall accepts; Bigtable's own limit (4 KiB) applies with `enforce_limits`.
const ENGINE_MAX_KEY: usize = 65_535;
const BIGTABLE_MAX_KEY: usize = 4 * 1024;
const BIGTABLE_MAX_MUTATIONS: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unimplemented(String),
    #[error("storage engine: {0}")]
    Engine(#[from] fjall::Error),
    #[error(transparent)]
    Corrupt(#[from] DecodeError),
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

fn invalid(msg: impl Into<String>) -> StoreError {
    StoreError::InvalidArgument(msg.into())
}

#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// fsync the journal before a write is acknowledged.
    pub sync: bool,
    /// Refuse what Cloud Bigtable refuses: keys over 4 KiB, over 100k mutations a request.
    pub enforce_limits: bool,
    /// Block cache size in bytes.
    pub cache_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            sync: true,
            enforce_limits: false,
            cache_bytes: 64 << 20,
        }
    }
}

/// Schema of one table, persisted in the meta keyspace.
#[derive(Clone, Debug, Default)]
struct Schema {
    families: BTreeMap<String, admin::ColumnFamily>,
    deletion_protection: bool,
}

impl Schema {
    fn gc_rules(&self) -> HashMap<String, admin::GcRule> {
        self.families
            .iter()
            .filter_map(|(name, cf)| cf.gc_rule.clone().map(|r| (name.clone(), r)))
            .collect()
    }

    fn family(&self, name: &str) -> Result<()> {
        if self.families.contains_key(name) {
            Ok(())
        } else {
            Err(StoreError::NotFound(format!(
                "column family {name:?} not found in table"
            )))
        }
    }
}

struct TableState {
    keyspace_id: u64,
    keyspace: Keyspace,
    schema: Schema,
    gc_rules: HashMap<String, admin::GcRule>,
}

struct Table {
    name: String,
    state: RwLock<TableState>,
}

impl Table {
    fn snapshot(&self) -> (Keyspace, Schema, HashMap<String, admin::GcRule>) {
        let s = self.state.read().unwrap_or_else(|e| e.into_inner());
        (s.keyspace.clone(), s.schema.clone(), s.gc_rules.clone())
    }
}

/// Group commit: one fsync covers every batch committed before it started.
struct SyncGate {
    committed: AtomicU64,
    synced: Mutex<u64>,
}

/// The storage engine behind the emulator. All methods block; call them off the async runtime.
pub struct Store {
    db: Database,
    meta: Keyspace,
    tables: RwLock<HashMap<String, Arc<Table>>>,
    /// Row writers share this; admin operations that touch every row take it alone.
    admin_gate: RwLock<()>,
    row_locks: RowLocks,
    gate: SyncGate,
    opts: StoreOptions,
}

fn now_micros() -> i64 {
    let us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0);
    us - us % 1000
}

#[derive(Default)]
struct FnvHasher(u64);

impl std::hash::Hasher for FnvHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let seed = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        let mut h = seed;
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

type BuildFnv = std::hash::BuildHasherDefault<FnvHasher>;

/// Per-key write locks. A writer takes all its keys at once or waits, so writers with
/// disjoint keys never wait for each other and no lock order can deadlock.
#[derive(Default)]
struct RowLocks {
    /// 64-bit hashes of (table, row key): a collision only makes two writers take turns.
    held: Mutex<std::collections::HashSet<u64, BuildFnv>>,
    freed: std::sync::Condvar,
}

struct RowGuard<'a> {
    locks: &'a RowLocks,
    keys: Vec<u64>,
    _shared: std::sync::RwLockReadGuard<'a, ()>,
}

impl Drop for RowGuard<'_> {
    fn drop(&mut self) {
        let mut held = self.locks.held.lock().unwrap_or_else(|e| e.into_inner());
        for k in &self.keys {
            held.remove(k);
        }
        drop(held);
        self.locks.freed.notify_all();
    }
}

/// The lock key of a row: FNV-1a over the table name, a separator and the row key.
fn lock_key(table: &str, key: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut h = FnvHasher::default();
    h.write(table.as_bytes());
    h.write(&[0]);
    h.write(key);
    h.finish()
}

const META_NEXT_ID: &[u8] = b"next-keyspace-id";
const META_TABLE_PREFIX: &[u8] = b"table/";

fn encode_meta(id: u64, name: &str, schema: &Schema) -> Vec<u8> {
    let proto = admin::Table {
        name: name.to_string(),
        column_families: schema
            .families
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        deletion_protection: schema.deletion_protection,
        ..Default::default()
    };
    let mut out = id.to_be_bytes().to_vec();
    out.extend(proto.encode_to_vec());
    out
}

fn decode_meta(buf: &[u8]) -> Result<(u64, admin::Table)> {
    if buf.len() < 8 {
        return Err(DecodeError::new("table metadata too short").into());
    }
    let (id, rest) = buf.split_at(8);
    let mut a = [0u8; 8];
    a.copy_from_slice(id);
    let table = admin::Table::decode(rest)
        .map_err(|_| StoreError::from(DecodeError::new("table metadata is not a Table")))?;
    Ok((u64::from_be_bytes(a), table))
}

fn keyspace_name(id: u64) -> String {
    format!("t{id}")
}

/// A half-open or closed key interval, as fjall takes it.
type KeyRange = (Bound<Vec<u8>>, Bound<Vec<u8>>);

fn start_bound(rr: &pb::RowRange) -> Bound<Vec<u8>> {
    use pb::row_range::StartKey;
    match &rr.start_key {
        Some(StartKey::StartKeyClosed(k)) if !k.is_empty() => Bound::Included(k.clone()),
        Some(StartKey::StartKeyOpen(k)) if !k.is_empty() => Bound::Excluded(k.clone()),
        _ => Bound::Unbounded,
    }
}

fn end_bound(rr: &pb::RowRange) -> Bound<Vec<u8>> {
    use pb::row_range::EndKey;
    match &rr.end_key {
        Some(EndKey::EndKeyClosed(k)) if !k.is_empty() => Bound::Included(k.clone()),
        Some(EndKey::EndKeyOpen(k)) if !k.is_empty() => Bound::Excluded(k.clone()),
        _ => Bound::Unbounded,
    }
}

fn bound_key(b: &Bound<Vec<u8>>) -> Option<&[u8]> {
    match b {
        Bound::Included(k) | Bound::Excluded(k) => Some(k),
        Bound::Unbounded => None,
    }
}

/// The key ranges a request reads; an empty row set means the whole table.
fn key_ranges(rows: Option<&pb::RowSet>) -> Result<Vec<KeyRange>> {
    let Some(set) = rows.filter(|s| !s.row_keys.is_empty() || !s.row_ranges.is_empty()) else {
        return Ok(vec![(Bound::Unbounded, Bound::Unbounded)]);
    };
    let mut out = Vec::with_capacity(set.row_keys.len() + set.row_ranges.len());
    for k in &set.row_keys {
        if k.is_empty() {
            return Err(invalid("row_keys: a row key must not be empty"));
        }
        out.push((Bound::Included(k.clone()), Bound::Included(k.clone())));
    }
    for rr in &set.row_ranges {
        let (s, e) = (start_bound(rr), end_bound(rr));
        if let (Some(a), Some(b)) = (bound_key(&s), bound_key(&e)) {
            if a > b {
                return Err(invalid(format!(
                    "row_ranges: start key {:?} is after end key {:?}",
                    String::from_utf8_lossy(a),
                    String::from_utf8_lossy(b)
                )));
            }
        }
        out.push((s, e));
    }
    Ok(out)
}

/// Orders start bounds by the first key they admit: `Included(k)` comes before `Excluded(k)`.
fn cmp_start(a: &Bound<Vec<u8>>, b: &Bound<Vec<u8>>) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    match (a, b) {
        (Bound::Unbounded, Bound::Unbounded) => Equal,
        (Bound::Unbounded, _) => Less,
        (_, Bound::Unbounded) => Greater,
        (x, y) => bound_key(x)
            .cmp(&bound_key(y))
            .then_with(|| matches!(x, Bound::Excluded(_)).cmp(&matches!(y, Bound::Excluded(_)))),
    }
}

/// Orders end bounds by the last key they admit: `Excluded(k)` comes before `Included(k)`.
fn cmp_end(a: &Bound<Vec<u8>>, b: &Bound<Vec<u8>>) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    match (a, b) {
        (Bound::Unbounded, Bound::Unbounded) => Equal,
        (Bound::Unbounded, _) => Greater,
        (_, Bound::Unbounded) => Less,
        (x, y) => bound_key(x)
            .cmp(&bound_key(y))
            .then_with(|| matches!(x, Bound::Included(_)).cmp(&matches!(y, Bound::Included(_)))),
    }
}

fn range_is_empty(r: &KeyRange) -> bool {
    match (bound_key(&r.0), bound_key(&r.1)) {
        (Some(a), Some(b)) => {
            a > b
                || (a == b
                    && !(matches!(r.0, Bound::Included(_)) && matches!(r.1, Bound::Included(_))))
        }
        _ => false,
    }
}

/// A cell written by ReadModifyWrite: timestamp and value.
type NewCell = (i64, Vec<u8>);

/// How one read should go.
pub struct ReadSpec<'a> {
    pub rows: Option<&'a pb::RowSet>,
    pub filter: Option<&'a CompiledFilter>,
    /// 0 means no limit.
    pub limit: u64,
    pub reversed: bool,
}

/// Outcome of one entry of a MutateRows request.
pub type EntryResult = Result<()>;

impl Store {
    pub fn open(dir: &Path, opts: StoreOptions) -> Result<Store> {
        let db = Database::builder(dir).cache_size(opts.cache_bytes).open()?;
        let meta = db.keyspace("meta", KeyspaceCreateOptions::default)?;
        let mut tables = HashMap::new();
        for item in meta.prefix(META_TABLE_PREFIX) {
            let (_, v) = item.into_inner()?;
            let (id, proto) = decode_meta(&v)?;
            let keyspace = db.keyspace(&keyspace_name(id), KeyspaceCreateOptions::default)?;
            let schema = Schema {
                families: proto.column_families.into_iter().collect(),
                deletion_protection: proto.deletion_protection,
            };
            let gc_rules = schema.gc_rules();
            tables.insert(
                proto.name.clone(),
                Arc::new(Table {
                    name: proto.name,
                    state: RwLock::new(TableState {
                        keyspace_id: id,
                        keyspace,
                        schema,
                        gc_rules,
                    }),
                }),
            );
        }
        Ok(Store {
            db,
            meta,
            tables: RwLock::new(tables),
            admin_gate: RwLock::new(()),
            row_locks: RowLocks::default(),
            gate: SyncGate {
                committed: AtomicU64::new(0),
                synced: Mutex::new(0),
            },
            opts,
        })
    }

    pub fn options(&self) -> &StoreOptions {
        &self.opts
    }

    fn table(&self, name: &str) -> Result<Arc<Table>> {
        self.tables
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| StoreError::NotFound(format!("table {name:?} not found")))
    }

    /// Blocks until everything committed so far is on disk (when `sync` is on).
    fn make_durable(&self) -> Result<()> {
        let mine = self.gate.committed.fetch_add(1, Ordering::SeqCst) + 1;
        if !self.opts.sync {
            return Ok(());
        }
        let mut synced = self.gate.synced.lock().unwrap_or_else(|e| e.into_inner());
        if *synced >= mine {
            return Ok(());
        }
        let target = self.gate.committed.load(Ordering::SeqCst);
        self.db.persist(PersistMode::SyncData)?;
        *synced = target;
        Ok(())
    }

    fn lock_keys(&self, table: &str, keys: &[&[u8]]) -> RowGuard<'_> {
        let shared = self.admin_gate.read().unwrap_or_else(|e| e.into_inner());
        let mut wanted: Vec<u64> = keys.iter().map(|k| lock_key(table, k)).collect();
        wanted.sort_unstable();
        wanted.dedup();
        let mut held = self
            .row_locks
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        while wanted.iter().any(|k| held.contains(k)) {
            held = self
                .row_locks
                .freed
                .wait(held)
                .unwrap_or_else(|e| e.into_inner());
        }
        held.extend(wanted.iter().copied());
        drop(held);
        RowGuard {
            locks: &self.row_locks,
            keys: wanted,
            _shared: shared,
        }
    }

    fn lock_all(&self) -> std::sync::RwLockWriteGuard<'_, ()> {
        self.admin_gate.write().unwrap_or_else(|e| e.into_inner())
    }

    fn check_key(&self, key: &[u8]) -> Result<()> {
        if key.is_empty() {
            return Err(invalid("row key must not be empty"));
        }
        let max = if self.opts.enforce_limits {
            BIGTABLE_MAX_KEY
        } else {
            ENGINE_MAX_KEY
        };
        if key.len() > max {
            return Err(invalid(format!(
                "row key is {} bytes, over the limit of {max}",
                key.len()
            )));
        }
        Ok(())
    }

    fn check_mutation_count(&self, n: usize) -> Result<()> {
        if self.opts.enforce_limits && n > BIGTABLE_MAX_MUTATIONS {
            return Err(invalid(format!(
                "{n} mutations in one request, over the limit of {BIGTABLE_MAX_MUTATIONS}"
            )));
        }
        Ok(())
    }

    fn load_row(ks: &Keyspace, key: &[u8]) -> Result<StoredRow> {
        Ok(match ks.get(key)? {
            Some(v) => StoredRow::decode(&v)?,
            None => StoredRow::default(),
        })
    }

    // ---- admin ----

    pub fn create_table(&self, name: &str, proto: Option<admin::Table>) -> Result<admin::Table> {
        let mut tables = self.tables.write().unwrap_or_else(|e| e.into_inner());
        if tables.contains_key(name) {
            return Err(StoreError::AlreadyExists(format!(
                "table {name:?} already exists"
            )));
        }
        let proto = proto.unwrap_or_default();
        for (fam, cf) in &proto.column_families {
            validate_family(fam, cf)?;
        }
        let schema = Schema {
            families: proto.column_families.into_iter().collect(),
            deletion_protection: proto.deletion_protection,
        };
        let id = self.next_keyspace_id()?;
        let keyspace = self
            .db
            .keyspace(&keyspace_name(id), KeyspaceCreateOptions::default)?;
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncAll));
        batch.insert(
            &self.meta,
            table_meta_key(name),
            encode_meta(id, name, &schema),
        );
        batch.commit()?;
        let gc_rules = schema.gc_rules();
        let table = Arc::new(Table {
            name: name.to_string(),
            state: RwLock::new(TableState {
                keyspace_id: id,
                keyspace,
                schema,
                gc_rules,
            }),
        });
        let out = table_proto(&table);
        tables.insert(name.to_string(), table);
        Ok(out)
    }

    fn next_keyspace_id(&self) -> Result<u64> {
        let cur = match self.meta.get(META_NEXT_ID)? {
            Some(v) if v.len() == 8 => {
                let mut a = [0u8; 8];
                a.copy_from_slice(&v);
                u64::from_be_bytes(a)
            }
            _ => 1,
        };
        self.meta.insert(META_NEXT_ID, (cur + 1).to_be_bytes())?;
        Ok(cur)
    }

    pub fn get_table(&self, name: &str) -> Result<admin::Table> {
        let table = self.table(name)?;
        Ok(table_proto(&table))
    }

    /// Tables whose full name starts with `parent/tables/`, sorted by name.
    pub fn list_tables(&self, parent: &str) -> Vec<admin::Table> {
        let prefix = format!("{parent}/tables/");
        let tables = self.tables.read().unwrap_or_else(|e| e.into_inner());
        let mut names: Vec<&String> = tables.keys().filter(|n| n.starts_with(&prefix)).collect();
        names.sort();
        names
            .into_iter()
            .map(|n| admin::Table {
                name: n.clone(),
                ..Default::default()
            })
            .collect()
    }

    pub fn delete_table(&self, name: &str) -> Result<()> {
        let _all = self.lock_all();
        let mut tables = self.tables.write().unwrap_or_else(|e| e.into_inner());
        let table = tables
            .get(name)
            .cloned()
            .ok_or_else(|| StoreError::NotFound(format!("table {name:?} not found")))?;
        let state = table.state.read().unwrap_or_else(|e| e.into_inner());
        if state.schema.deletion_protection {
            return Err(StoreError::FailedPrecondition(format!(
                "table {name:?} is protected from deletion"
            )));
        }
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncAll));
        batch.remove(&self.meta, table_meta_key(name));
        batch.commit()?;
        tables.remove(name);
        self.db.delete_keyspace(state.keyspace.clone())?;
        Ok(())
    }

    pub fn modify_column_families(
        &self,
        name: &str,
        mods: &[admin::modify_column_families_request::Modification],
    ) -> Result<admin::Table> {
        use admin::modify_column_families_request::modification::Mod;
        let table = self.table(name)?;
        let _all = self.lock_all();
        let mut state = table.state.write().unwrap_or_else(|e| e.into_inner());
        let mut schema = state.schema.clone();
        let mut dropped = Vec::new();
        for m in mods {
            match &m.r#mod {
                Some(Mod::Create(cf)) => {
                    if schema.families.contains_key(&m.id) {
                        return Err(StoreError::AlreadyExists(format!(
                            "column family {:?} already exists",
                            m.id
                        )));
                    }
                    validate_family(&m.id, cf)?;
                    schema.families.insert(m.id.clone(), cf.clone());
                }
                Some(Mod::Update(cf)) => {
                    schema.family(&m.id)?;
                    validate_family(&m.id, cf)?;
                    schema.families.insert(m.id.clone(), cf.clone());
                }
                Some(Mod::Drop(_)) => {
                    schema.family(&m.id)?;
                    schema.families.remove(&m.id);
                    dropped.push(m.id.clone());
                }
                None => return Err(invalid(format!("modification of {:?} has no mod", m.id))),
            }
        }
        if !dropped.is_empty() {
            // Purge the family's cells so a re-created family starts empty.
            let ks = state.keyspace.clone();
            let mut batch = self.db.batch();
            for item in ks.iter() {
                let (k, v) = item.into_inner()?;
                let mut row = StoredRow::decode(&v)?;
                if dropped.iter().any(|f| row.families.remove(f).is_some()) {
                    if row.is_empty() {
                        batch.remove(&ks, k);
                    } else {
                        batch.insert(&ks, k, row.encode());
                    }
                }
            }
            batch.commit()?;
        }
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncAll));
        batch.insert(
            &self.meta,
            table_meta_key(name),
            encode_meta(state.keyspace_id, name, &schema),
        );
        batch.commit()?;
        state.gc_rules = schema.gc_rules();
        state.schema = schema;
        drop(state);
        Ok(table_proto(&table))
    }

    pub fn drop_row_range(&self, name: &str, prefix: Option<&[u8]>) -> Result<()> {
        let table = self.table(name)?;
        let _all = self.lock_all();
        match prefix {
            None => {
                // Swap in a fresh keyspace: O(1) instead of deleting row by row.
                let mut state = table.state.write().unwrap_or_else(|e| e.into_inner());
                let id = self.next_keyspace_id()?;
                let keyspace = self
                    .db
                    .keyspace(&keyspace_name(id), KeyspaceCreateOptions::default)?;
                let mut batch = self.db.batch().durability(Some(PersistMode::SyncAll));
                batch.insert(
                    &self.meta,
                    table_meta_key(name),
                    encode_meta(id, name, &state.schema),
                );
                batch.commit()?;
                let old = std::mem::replace(&mut state.keyspace, keyspace);
                state.keyspace_id = id;
                self.db.delete_keyspace(old)?;
            }
            Some(prefix) => {
                if prefix.is_empty() {
                    return Err(invalid("row_key_prefix must not be empty"));
                }
                let (ks, _, _) = table.snapshot();
                let mut batch = self.db.batch();
                for item in ks.prefix(prefix) {
                    batch.remove(&ks, item.key()?);
                    if batch.len() >= 10_000 {
                        std::mem::replace(&mut batch, self.db.batch()).commit()?;
                    }
                }
                batch.commit()?;
                self.db.persist(PersistMode::SyncData)?;
            }
        }
        Ok(())
    }

    // ---- data ----

    /// Streams matching rows to `emit` in key order (or reverse); `emit` returns false to stop.
    pub fn read_rows(
        &self,
        table: &str,
        spec: &ReadSpec<'_>,
        mut emit: impl FnMut(&[u8], Vec<ReadCell>) -> bool,
    ) -> Result<()> {
        let table = self.table(table)?;
        let (ks, _, rules) = table.snapshot();
        let mut ranges = key_ranges(spec.rows)?;
        let now = now_micros();
        let mut sent = 0u64;
        // Ranges may overlap: walk them in order and clamp each past what was already seen.
        let mut last: Option<Vec<u8>> = None;
        if spec.reversed {
            ranges.sort_by(|a, b| cmp_end(&b.1, &a.1));
        } else {
            ranges.sort_by(|a, b| cmp_start(&a.0, &b.0));
        }
        for mut range in ranges {
            if let Some(l) = &last {
                if spec.reversed {
                    if cmp_end(&range.1, &Bound::Excluded(l.clone())).is_gt() {
                        range.1 = Bound::Excluded(l.clone());
                    }
                } else if cmp_start(&range.0, &Bound::Excluded(l.clone())).is_lt() {
                    range.0 = Bound::Excluded(l.clone());
                }
            }
            if range_is_empty(&range) {
                continue;
            }
            // One-key ranges (explicit row keys) take the point-read path: bloom filters
            // instead of a merge iterator over every level.
            let point = match &range {
                (Bound::Included(a), Bound::Included(b)) if a == b => Some(a.clone()),
                _ => None,
            };
            let iter: Box<dyn Iterator<Item = Result<(Vec<u8>, fjall::Slice)>>> =
                if let Some(k) = point {
                    Box::new(ks.get(&k)?.map(|v| Ok((k, v))).into_iter())
                } else {
                    let iter = ks.range::<Vec<u8>, _>(range);
                    let map = |item: fjall::Guard| -> Result<(Vec<u8>, fjall::Slice)> {
                        let (k, v) = item.into_inner()?;
                        Ok((k.to_vec(), v))
                    };
                    if spec.reversed {
                        Box::new(iter.rev().map(map))
                    } else {
                        Box::new(iter.map(map))
                    }
                };
            for item in iter {
                let (k, v) = item?;
                let mut row = StoredRow::decode(&v)?;
                last = Some(k.clone());
                if !rules.is_empty() {
                    gc::collect_row(&mut row, &rules, now);
                }
                let mut cells = row.into_read_cells();
                if let Some(f) = spec.filter {
                    cells = f.apply(&k, cells);
                }
                if cells.is_empty() {
                    continue;
                }
                if !emit(&k, cells) {
                    return Ok(());
                }
                sent += 1;
                if spec.limit > 0 && sent >= spec.limit {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    pub fn mutate_row(&self, table: &str, key: &[u8], mutations: &[pb::Mutation]) -> Result<()> {
        self.check_key(key)?;
        self.check_mutation_count(mutations.len())?;
        if mutations.is_empty() {
            return Err(invalid("no mutations provided"));
        }
        let table = self.table(table)?;
        let _guards = self.lock_keys(&table.name, &[key]);
        let (ks, schema, rules) = table.snapshot();
        let mut row = Self::load_row(&ks, key)?;
        let now = now_micros();
        apply_mutations(&mut row, mutations, &schema, now)?;
        let mut batch = self.db.batch();
        stage_row(&mut batch, &ks, key, row, &rules, now);
        batch.commit()?;
        drop(_guards);
        self.make_durable()
    }

    /// Applies each entry atomically; entries fail independently, as in Bigtable.
    pub fn mutate_rows(
        &self,
        table: &str,
        entries: &[pb::mutate_rows_request::Entry],
    ) -> Result<Vec<EntryResult>> {
        let total: usize = entries.iter().map(|e| e.mutations.len()).sum();
        self.check_mutation_count(total)?;
        if entries.is_empty() {
            return Err(invalid("no entries provided"));
        }
        let table = self.table(table)?;
        let keys: Vec<&[u8]> = entries.iter().map(|e| e.row_key.as_slice()).collect();
        let guards = self.lock_keys(&table.name, &keys);
        let (ks, schema, rules) = table.snapshot();
        let now = now_micros();
        let mut results = Vec::with_capacity(entries.len());
        // Working copies, so that two entries for one key apply in order.
        let mut slots: HashMap<&[u8], usize, BuildFnv> =
            HashMap::with_capacity_and_hasher(entries.len(), BuildFnv::default());
        let mut rows: Vec<(&[u8], StoredRow)> = Vec::with_capacity(entries.len());
        for e in entries {
            let key = e.row_key.as_slice();
            let res = (|| {
                self.check_key(key)?;
                if e.mutations.is_empty() {
                    return Err(invalid("entry has no mutations"));
                }
                validate_mutations(&e.mutations, &schema)?;
                let slot = match slots.get(key) {
                    Some(&i) => i,
                    None => {
                        rows.push((key, Self::load_row(&ks, key)?));
                        slots.insert(key, rows.len() - 1);
                        rows.len() - 1
                    }
                };
                apply_mutations(&mut rows[slot].1, &e.mutations, &schema, now)
            })();
            results.push(res);
        }
        let mut batch = self.db.batch();
        for (key, row) in rows {
            stage_row(&mut batch, &ks, key, row, &rules, now);
        }
        batch.commit()?;
        drop(guards);
        self.make_durable()?;
        Ok(results)
    }

    /// Returns whether the predicate matched. No predicate means "the row has any cell".
    pub fn check_and_mutate_row(
        &self,
        table: &str,
        key: &[u8],
        predicate: Option<&CompiledFilter>,
        true_mutations: &[pb::Mutation],
        false_mutations: &[pb::Mutation],
    ) -> Result<bool> {
        self.check_key(key)?;
        self.check_mutation_count(true_mutations.len() + false_mutations.len())?;
        let table = self.table(table)?;
        let _guards = self.lock_keys(&table.name, &[key]);
        let (ks, schema, rules) = table.snapshot();
        let now = now_micros();
        let mut row = Self::load_row(&ks, key)?;
        if !rules.is_empty() {
            gc::collect_row(&mut row, &rules, now);
        }
        let matched = match predicate {
            None => !row.is_empty(),
            Some(f) => !f.apply(key, row.read_cells()).is_empty(),
        };
        let muts = if matched {
            true_mutations
        } else {
            false_mutations
        };
        if !muts.is_empty() {
            apply_mutations(&mut row, muts, &schema, now)?;
            let mut batch = self.db.batch();
            stage_row(&mut batch, &ks, key, row, &rules, now);
            batch.commit()?;
            drop(_guards);
            self.make_durable()?;
        }
        Ok(matched)
    }

    /// Appends or increments the newest version of each named cell; returns the new cells.
    pub fn read_modify_write_row(
        &self,
        table: &str,
        key: &[u8],
        rules_in: &[pb::ReadModifyWriteRule],
    ) -> Result<pb::Row> {
        use pb::read_modify_write_rule::Rule;
        self.check_key(key)?;
        if rules_in.is_empty() {
            return Err(invalid("no rules provided"));
        }
        let table = self.table(table)?;
        let _guards = self.lock_keys(&table.name, &[key]);
        let (ks, schema, rules) = table.snapshot();
        let now = now_micros();
        let mut row = Self::load_row(&ks, key)?;
        let mut touched: BTreeMap<String, BTreeMap<Vec<u8>, NewCell>> = BTreeMap::new();
        for r in rules_in {
            schema.family(&r.family_name)?;
            let prev = row.latest(&r.family_name, &r.column_qualifier);
            // A cell written in the future must not be shadowed by an older "now".
            let ts = prev.map_or(now, |c| c.ts.max(now));
            let value = match &r.rule {
                Some(Rule::AppendValue(v)) => {
                    let mut out = prev.map(|c| c.value.clone()).unwrap_or_default();
                    out.extend_from_slice(v);
                    out
                }
                Some(Rule::IncrementAmount(n)) => {
                    let old = match prev {
                        None => 0i64,
                        Some(c) => {
                            let a: [u8; 8] = c.value.as_slice().try_into().map_err(|_| {
                                invalid(format!(
                                    "cannot increment {}:{}: its value is {} bytes, not a 64-bit big-endian integer",
                                    r.family_name,
                                    String::from_utf8_lossy(&r.column_qualifier),
                                    c.value.len()
                                ))
                            })?;
                            i64::from_be_bytes(a)
                        }
                    };
                    old.wrapping_add(*n).to_be_bytes().to_vec()
                }
                None => return Err(invalid("read-modify-write rule has no rule set")),
            };
            row.set_cell(&r.family_name, &r.column_qualifier, ts, value.clone());
            touched
                .entry(r.family_name.clone())
                .or_default()
                .insert(r.column_qualifier.clone(), (ts, value));
        }
        let mut batch = self.db.batch();
        stage_row(&mut batch, &ks, key, row, &rules, now);
        batch.commit()?;
        drop(_guards);
        self.make_durable()?;
        Ok(pb::Row {
            key: key.to_vec(),
            families: touched
                .into_iter()
                .map(|(name, cols)| pb::Family {
                    name,
                    columns: cols
                        .into_iter()
                        .map(|(qualifier, (ts, value))| pb::Column {
                            qualifier,
                            cells: vec![pb::Cell {
                                timestamp_micros: ts,
                                value,
                                labels: vec![],
                            }],
                        })
                        .collect(),
                })
                .collect(),
        })
    }

    /// Row keys splitting the table into pieces of about `step` bytes; the last key is empty
    /// and its offset is the table's size, as Bigtable reports it.
    pub fn sample_row_keys(&self, table: &str, step: u64) -> Result<Vec<(Vec<u8>, i64)>> {
        let table = self.table(table)?;
        let (ks, _, _) = table.snapshot();
        let mut out = Vec::new();
        let mut offset = 0u64;
        let mut next = step.max(1);
        for item in ks.iter() {
            let (k, v) = item.into_inner()?;
            offset += (k.len() + v.len()) as u64;
            if offset >= next {
                out.push((k.to_vec(), offset as i64));
                next = offset + step.max(1);
            }
        }
        out.push((Vec::new(), offset as i64));
        Ok(out)
    }

    /// Forces everything written so far to disk.
    pub fn flush(&self) -> Result<()> {
        self.db.persist(PersistMode::SyncAll)?;
        Ok(())
    }
}

fn table_meta_key(name: &str) -> Vec<u8> {
    let mut k = META_TABLE_PREFIX.to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

fn table_proto(t: &Table) -> admin::Table {
    let s = t.state.read().unwrap_or_else(|e| e.into_inner());
    admin::Table {
        name: t.name.clone(),
        column_families: s
            .schema
            .families
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        granularity: admin::table::TimestampGranularity::Millis as i32,
        deletion_protection: s.schema.deletion_protection,
        ..Default::default()
    }
}

fn validate_family(name: &str, cf: &admin::ColumnFamily) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
    if !ok {
        return Err(invalid(format!("invalid column family id {name:?}")));
    }
    if let Some(rule) = &cf.gc_rule {
        gc::validate(rule).map_err(|e| invalid(format!("column family {name:?}: {e}")))?;
    }
    Ok(())
}

fn check_ts(ts: i64, what: &str) -> Result<()> {
    if ts < 0 || ts % 1000 != 0 {
        return Err(invalid(format!(
            "{what} {ts} is not a non-negative multiple of 1000 (the table has millisecond granularity)"
        )));
    }
    Ok(())
}

/// Checks every mutation before any is applied, so a failing request changes nothing.
fn validate_mutations(muts: &[pb::Mutation], schema: &Schema) -> Result<()> {
    use pb::mutation::Mutation as M;
    for m in muts {
        match &m.mutation {
            Some(M::SetCell(s)) => {
                schema.family(&s.family_name)?;
                if s.timestamp_micros != -1 {
                    check_ts(s.timestamp_micros, "set_cell timestamp_micros")?;
                }
            }
            Some(M::DeleteFromColumn(d)) => {
                schema.family(&d.family_name)?;
                if let Some(r) = &d.time_range {
                    check_ts(r.start_timestamp_micros, "delete_from_column start")?;
                    check_ts(r.end_timestamp_micros, "delete_from_column end")?;
                    if r.end_timestamp_micros != 0
                        && r.start_timestamp_micros >= r.end_timestamp_micros
                    {
                        return Err(invalid(format!(
                            "delete_from_column time range [{}, {}) is empty or inverted",
                            r.start_timestamp_micros, r.end_timestamp_micros
                        )));
                    }
                }
            }
            Some(M::DeleteFromFamily(d)) => schema.family(&d.family_name)?,
            Some(M::DeleteFromRow(_)) => {}
            Some(M::AddToCell(_)) | Some(M::MergeToCell(_)) => {
                return Err(StoreError::Unimplemented(
                    "aggregate mutations (add_to_cell, merge_to_cell) are not supported".into(),
                ))
            }
            None => return Err(invalid("mutation has no operation set")),
        }
    }
    Ok(())
}

/// Applies mutations in order; on error the row is left untouched.
fn apply_mutations(
    row: &mut StoredRow,
    muts: &[pb::Mutation],
    schema: &Schema,
    now: i64,
) -> Result<()> {
    use pb::mutation::Mutation as M;
    validate_mutations(muts, schema)?;
    for m in muts {
        match &m.mutation {
            Some(M::SetCell(s)) => {
                let ts = if s.timestamp_micros == -1 {
                    now
                } else {
                    s.timestamp_micros
                };
                row.set_cell(&s.family_name, &s.column_qualifier, ts, s.value.clone());
            }
            Some(M::DeleteFromColumn(d)) => {
                let (start, end) = d.time_range.as_ref().map_or((0, 0), |r| {
                    (r.start_timestamp_micros, r.end_timestamp_micros)
                });
                row.delete_cells(&d.family_name, &d.column_qualifier, start, end);
            }
            Some(M::DeleteFromFamily(d)) => {
                row.families.remove(&d.family_name);
            }
            Some(M::DeleteFromRow(_)) => row.families.clear(),
            // Rejected by validate_mutations.
            Some(M::AddToCell(_)) | Some(M::MergeToCell(_)) | None => {}
        }
    }
    Ok(())
}

fn stage_row(
    batch: &mut fjall::OwnedWriteBatch,
    ks: &Keyspace,
    key: &[u8],
    mut row: StoredRow,
    rules: &HashMap<String, admin::GcRule>,
    now: i64,
) {
    if !rules.is_empty() {
        gc::collect_row(&mut row, rules, now);
    }
    row.prune();
    if row.is_empty() {
        batch.remove(ks, key.to_vec());
    } else {
        batch.insert(ks, key.to_vec(), row.encode());
    }
}
