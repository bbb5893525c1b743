//! Connecting, request metadata, and the data API.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use futures::stream::BoxStream;
use futures::StreamExt as _;
use prost::Message as _;
use tonic::codec::Streaming;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::Code;
use tracing::{debug, warn};

use crate::admin::TableAdmin;
use crate::error::{code_is_retryable, Error, FailedMutation, Result};
use crate::merger::RowMerger;
use crate::mutation::{is_idempotent, validate};
use crate::proto::admin::bigtable_table_admin_client::BigtableTableAdminClient;
use crate::proto::v2::bigtable_client::BigtableClient;
use crate::proto::v2::{
    mutate_rows_request, CheckAndMutateRowRequest, FeatureFlags, MutateRowRequest,
    MutateRowsRequest, Mutation, ReadModifyWriteRowRequest, ReadModifyWriteRule, ReadRowsRequest,
    ReadRowsResponse, RowFilter, SampleRowKeysRequest,
};
use crate::read::{remaining, ReadRows};
use crate::retry::{Backoff, RetryPolicy};
use crate::row::Row;
use crate::transport::{Auth, Transport, ADMIN_SCOPES, DATA_SCOPES};

/// Bigtable caps a row at 256 MiB; a response carrying one must fit.
const MAX_MESSAGE_BYTES: usize = 256 << 20;
const DATA_HOST: &str = "bigtable.googleapis.com";
const ADMIN_HOST: &str = "bigtableadmin.googleapis.com";

/// Where to connect.
#[derive(Debug, Clone)]
pub enum Target {
    /// A Bigtable emulator at `host:port`, plaintext, no credentials.
    Emulator(String),
    /// Cloud Bigtable over TLS with application-default credentials.
    Cloud { project: String, instance: String },
    /// A ready channel (e.g. an in-process emulator), with its project and instance.
    Channel(Channel, String, String),
}

impl Target {
    /// `BIGTABLE_EMULATOR_HOST` if set; otherwise Cloud Bigtable named by
    /// `BIGTABLE_PROJECT` (or `GOOGLE_CLOUD_PROJECT`) and `BIGTABLE_INSTANCE`.
    pub fn from_env() -> Result<Target> {
        if let Some(host) = env("BIGTABLE_EMULATOR_HOST") {
            return Ok(Target::Emulator(host));
        }
        match (project_from_env(), env("BIGTABLE_INSTANCE")) {
            (Some(project), Some(instance)) => Ok(Target::Cloud { project, instance }),
            _ => Err(Error::Config(
                "set BIGTABLE_EMULATOR_HOST, or BIGTABLE_PROJECT and BIGTABLE_INSTANCE".into(),
            )),
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn project_from_env() -> Option<String> {
    env("BIGTABLE_PROJECT").or_else(|| env("GOOGLE_CLOUD_PROJECT"))
}

/// Everything needed to build a [`Client`].
#[derive(Debug, Clone)]
pub struct Config {
    pub target: Target,
    /// Project and instance names used with [`Target::Emulator`].
    pub emulator_project: String,
    pub emulator_instance: String,
    /// Sent with every data request; empty selects the instance's default profile.
    pub app_profile_id: String,
    pub retry: RetryPolicy,
    pub connect_timeout: Duration,
}

impl Config {
    pub fn new(target: Target) -> Self {
        Config {
            target,
            emulator_project: "chunkedgraph".into(),
            emulator_instance: "local".into(),
            app_profile_id: String::new(),
            retry: RetryPolicy::default(),
            connect_timeout: Duration::from_secs(10),
        }
    }

    /// [`Target::from_env`]; for an emulator, `BIGTABLE_PROJECT` and
    /// `BIGTABLE_INSTANCE` override the default names when set.
    pub fn from_env() -> Result<Self> {
        let mut config = Config::new(Target::from_env()?);
        if let Some(p) = project_from_env() {
            config.emulator_project = p;
        }
        if let Some(i) = env("BIGTABLE_INSTANCE") {
            config.emulator_instance = i;
        }
        Ok(config)
    }

    pub fn emulator_names(
        mut self,
        project: impl Into<String>,
        instance: impl Into<String>,
    ) -> Self {
        self.emulator_project = project.into();
        self.emulator_instance = instance.into();
        self
    }

    pub fn app_profile(mut self, id: impl Into<String>) -> Self {
        self.app_profile_id = id.into();
        self
    }

    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub async fn connect(self) -> Result<Client> {
        Client::connect(self).await
    }
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) project: String,
    pub(crate) instance: String,
    pub(crate) app_profile_id: String,
    pub(crate) retry: RetryPolicy,
    features: MetadataValue<Ascii>,
}

impl Shared {
    pub(crate) fn instance_name(&self) -> String {
        format!("projects/{}/instances/{}", self.project, self.instance)
    }

    pub(crate) fn table_name(&self, table: &str) -> String {
        format!("{}/tables/{}", self.instance_name(), table)
    }
}

/// Data and admin access to one Bigtable instance. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    data: BigtableClient<Transport>,
    admin: BigtableTableAdminClient<Transport>,
    shared: Arc<Shared>,
}

/// Rows of a scan, in key order (descending when reversed).
pub type RowStream = BoxStream<'static, Result<Row>>;

/// One boundary from SampleRowKeys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleRowKey {
    pub row_key: Vec<u8>,
    /// Approximate bytes stored before `row_key`.
    pub offset_bytes: i64,
}

fn endpoint(uri: String, timeout: Duration) -> Result<Endpoint> {
    Endpoint::from_shared(uri.clone())
        .map(|e| e.connect_timeout(timeout))
        .map_err(|e| Error::Config(format!("invalid endpoint {uri}: {e}")))
}

fn cloud_channel(host: &str, timeout: Duration) -> Result<Channel> {
    let tls = ClientTlsConfig::new().with_native_roots().domain_name(host);
    Ok(endpoint(format!("https://{host}:443"), timeout)?
        .tls_config(tls)
        .map_err(|e| Error::Config(format!("TLS for {host}: {e}")))?
        // Idle connections through Google front ends are dropped silently; pings notice.
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true)
        .connect_lazy())
}

/// `url.QueryEscape`-style encoding for the routing header.
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Attaches Google's routing header (lets the front end route by resource without
/// parsing the body) and, where relevant, a timeout.
pub(crate) fn with_routing<T>(
    msg: T,
    params: &str,
    timeout: Option<Duration>,
) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Ok(v) = MetadataValue::try_from(params) {
        req.metadata_mut().insert("x-goog-request-params", v);
    }
    if let Some(t) = timeout {
        req.set_timeout(t);
    }
    req
}

pub(crate) fn routing_param(key: &str, value: &str) -> String {
    format!("{key}={}", query_escape(value))
}

fn features_header() -> MetadataValue<Ascii> {
    // Without this the server refuses reversed scans, and never sends last_scanned_row_key.
    let flags = FeatureFlags {
        reverse_scans: true,
        last_scanned_row_responses: true,
        ..Default::default()
    };
    let encoded = base64::engine::general_purpose::URL_SAFE.encode(flags.encode_to_vec());
    MetadataValue::try_from(encoded).unwrap_or_else(|_| MetadataValue::from_static(""))
}

impl Client {
    pub async fn connect(config: Config) -> Result<Client> {
        let Config {
            target,
            emulator_project,
            emulator_instance,
            app_profile_id,
            retry,
            connect_timeout,
        } = config;
        let (data, admin, project, instance) = match target {
            Target::Emulator(host) => {
                let host = host.trim();
                let uri = if host.contains("://") {
                    host.to_owned()
                } else {
                    format!("http://{host}")
                };
                let channel = endpoint(uri, connect_timeout)?.connect_lazy();
                debug!(%host, "bigtable: emulator");
                let t = Transport::new(channel, None);
                (t.clone(), t, emulator_project, emulator_instance)
            }
            Target::Cloud { project, instance } => {
                let provider = gcp_auth::provider()
                    .await
                    .map_err(|e| Error::Auth(e.to_string()))?;
                let data = Transport::new(
                    cloud_channel(DATA_HOST, connect_timeout)?,
                    Some(Auth {
                        provider: provider.clone(),
                        scopes: DATA_SCOPES,
                    }),
                );
                let admin = Transport::new(
                    cloud_channel(ADMIN_HOST, connect_timeout)?,
                    Some(Auth {
                        provider,
                        scopes: ADMIN_SCOPES,
                    }),
                );
                debug!(%project, %instance, "bigtable: cloud");
                (data, admin, project, instance)
            }
            Target::Channel(channel, project, instance) => {
                let t = Transport::new(channel, None);
                (t.clone(), t, project, instance)
            }
        };
        if project.is_empty() || instance.is_empty() {
            return Err(Error::Config(
                "project and instance must be non-empty".into(),
            ));
        }
        Ok(Client {
            data: BigtableClient::new(data)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            admin: BigtableTableAdminClient::new(admin)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            shared: Arc::new(Shared {
                project,
                instance,
                app_profile_id,
                retry,
                features: features_header(),
            }),
        })
    }

    /// `Config::from_env()?.connect()`.
    pub async fn from_env() -> Result<Client> {
        Config::from_env()?.connect().await
    }

    pub fn project(&self) -> &str {
        &self.shared.project
    }

    pub fn instance(&self) -> &str {
        &self.shared.instance
    }

    /// `projects/{project}/instances/{instance}/tables/{table}`.
    pub fn table_name(&self, table: &str) -> String {
        self.shared.table_name(table)
    }

    pub fn admin(&self) -> TableAdmin {
        TableAdmin::new(self.admin.clone(), self.shared.clone())
    }

    fn data_request<T>(
        &self,
        msg: T,
        table_name: &str,
        timeout: Option<Duration>,
    ) -> tonic::Request<T> {
        let params = format!(
            "{}&{}",
            routing_param("table_name", table_name),
            routing_param("app_profile_id", &self.shared.app_profile_id)
        );
        let mut req = with_routing(msg, &params, timeout);
        req.metadata_mut()
            .insert("bigtable-features", self.shared.features.clone());
        req
    }

    /// Runs `attempt` until it succeeds, fails for good, or the retry budget is spent.
    /// Each attempt gets the remaining budget as its deadline.
    async fn with_retries<T, F, Fut>(
        &self,
        what: &'static str,
        retry: bool,
        mut attempt: F,
    ) -> Result<T>
    where
        F: FnMut(Duration) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut backoff = Backoff::new(&self.shared.retry);
        loop {
            let Some(left) = backoff.remaining() else {
                return Err(Error::deadline(what));
            };
            let err = match tokio::time::timeout(left, attempt(left)).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => e,
                Err(_) => Error::deadline(what),
            };
            if !(retry && err.is_retryable() && backoff.wait().await) {
                if backoff.attempts > 1 {
                    warn!(what, attempts = backoff.attempts, error = %err, "bigtable: giving up");
                }
                return Err(err);
            }
            debug!(what, attempt = backoff.attempts, error = %err, "bigtable: retrying");
        }
    }

    /// Streams the rows of a scan, resuming after the last row received if the
    /// stream breaks with a retryable error.
    pub fn read_rows(&self, table: &str, read: ReadRows) -> RowStream {
        let state = ReadState {
            merger: RowMerger::new(read.reversed),
            client: self.clone(),
            table_name: self.table_name(table),
            read,
            stream: None,
            pending: VecDeque::new(),
            emitted: 0,
            backoff: None,
            done: false,
        };
        futures::stream::unfold(state, ReadState::next).boxed()
    }

    /// [`read_rows`](Self::read_rows), collected.
    pub async fn read_rows_vec(&self, table: &str, read: ReadRows) -> Result<Vec<Row>> {
        let mut stream = self.read_rows(table, read);
        let mut rows = Vec::new();
        while let Some(row) = stream.next().await {
            rows.push(row?);
        }
        Ok(rows)
    }

    /// One row, or `None` if it has no cells (after `filter`).
    pub async fn read_row(
        &self,
        table: &str,
        key: impl Into<Vec<u8>>,
        filter: Option<RowFilter>,
    ) -> Result<Option<Row>> {
        let mut read = ReadRows::new().key(key).limit(1);
        if let Some(f) = filter {
            read = read.filter(f);
        }
        Ok(self.read_rows_vec(table, read).await?.pop())
    }

    /// Applies mutations to one row atomically. Retried only when every mutation is
    /// idempotent (no [`SERVER_TIME`](crate::mutation::SERVER_TIME) writes).
    pub async fn mutate_row(
        &self,
        table: &str,
        key: impl Into<Vec<u8>>,
        mutations: Vec<Mutation>,
    ) -> Result<()> {
        validate(&mutations)?;
        let table_name = self.table_name(table);
        let idempotent = mutations.iter().all(is_idempotent);
        let msg = MutateRowRequest {
            table_name: table_name.clone(),
            app_profile_id: self.shared.app_profile_id.clone(),
            row_key: key.into(),
            mutations,
            ..Default::default()
        };
        self.with_retries("MutateRow", idempotent, |left| {
            let mut data = self.data.clone();
            let req = self.data_request(msg.clone(), &table_name, Some(left));
            async move {
                data.mutate_row(req).await?;
                Ok(())
            }
        })
        .await
    }

    /// Applies many rows' mutations (each row atomic, rows independent). Entries
    /// that fail with a retryable code are re-sent with backoff; whatever still
    /// fails is reported in [`Error::MutateRows`] with its input index.
    pub async fn mutate_rows<K: Into<Vec<u8>>>(
        &self,
        table: &str,
        entries: impl IntoIterator<Item = (K, Vec<Mutation>)>,
    ) -> Result<()> {
        let entries: Vec<mutate_rows_request::Entry> = entries
            .into_iter()
            .map(|(k, mutations)| mutate_rows_request::Entry {
                row_key: k.into(),
                mutations,
                idempotency: None,
            })
            .collect();
        if entries.is_empty() {
            return Ok(());
        }
        for e in &entries {
            validate(&e.mutations)?;
        }
        let table_name = self.table_name(table);
        let total = entries.len();
        // Every entry counts as failed until the server acknowledges it.
        let mut failures: Vec<Option<FailedMutation>> = (0..total)
            .map(|index| {
                Some(FailedMutation {
                    index,
                    code: Code::DeadlineExceeded,
                    message: "not sent before the MutateRows deadline".into(),
                })
            })
            .collect();
        let mut backoff = Backoff::new(&self.shared.retry);
        for batch in batches(&entries) {
            self.mutate_batch(&table_name, &entries, batch, &mut failures, &mut backoff)
                .await;
            backoff.restart_delays();
        }
        let failed: Vec<FailedMutation> = failures.into_iter().flatten().collect();
        if failed.is_empty() {
            Ok(())
        } else {
            warn!(
                failed = failed.len(),
                total, "bigtable: MutateRows entries failed"
            );
            Err(Error::MutateRows { total, failed })
        }
    }

    /// Sends one batch, re-sending its retryable failures until they succeed or the
    /// deadline passes; records the final state of each entry in `failures`.
    async fn mutate_batch(
        &self,
        table_name: &str,
        entries: &[mutate_rows_request::Entry],
        mut pending: Vec<usize>,
        failures: &mut [Option<FailedMutation>],
        backoff: &mut Backoff,
    ) {
        while let Some(left) = backoff.remaining() {
            let msg = MutateRowsRequest {
                table_name: table_name.to_owned(),
                app_profile_id: self.shared.app_profile_id.clone(),
                entries: pending.iter().map(|&i| entries[i].clone()).collect(),
                ..Default::default()
            };
            let req = self.data_request(msg, table_name, Some(left));
            let mut answered = vec![false; pending.len()];
            let attempt =
                mutate_rows_attempt(self.data.clone(), req, &pending, &mut answered, failures);
            let outcome = tokio::time::timeout(left, attempt)
                .await
                .unwrap_or_else(|_| Err(Error::deadline("MutateRows")));
            let mut retry_next = Vec::new();
            for (pos, &i) in pending.iter().enumerate() {
                let retryable = if answered[pos] {
                    failures[i]
                        .as_ref()
                        .is_some_and(|f| code_is_retryable(f.code))
                } else {
                    let (code, message, retryable) = match &outcome {
                        Err(e) => (e.code(), e.to_string(), e.is_retryable()),
                        // The stream ended cleanly yet said nothing about this entry.
                        Ok(()) => (
                            Code::Internal,
                            "MutateRows returned no status for this entry".to_owned(),
                            true,
                        ),
                    };
                    failures[i] = Some(FailedMutation {
                        index: i,
                        code,
                        message,
                    });
                    retryable
                };
                // Server-stamped writes would be applied twice.
                let idempotent = entries[i].mutations.iter().all(is_idempotent);
                if retryable && idempotent {
                    retry_next.push(i);
                }
            }
            if retry_next.is_empty() {
                return;
            }
            debug!(
                retrying = retry_next.len(),
                of = pending.len(),
                "bigtable: MutateRows partial failure"
            );
            pending = retry_next;
            if !backoff.wait().await {
                return;
            }
        }
    }

    /// Applies `true_mutations` if `predicate` matches any cell of the row (any cell
    /// at all when `predicate` is `None`), else `false_mutations`. Returns whether it
    /// matched. Not retried: it is not idempotent.
    pub async fn check_and_mutate_row(
        &self,
        table: &str,
        key: impl Into<Vec<u8>>,
        predicate: Option<RowFilter>,
        true_mutations: Vec<Mutation>,
        false_mutations: Vec<Mutation>,
    ) -> Result<bool> {
        if true_mutations.is_empty() && false_mutations.is_empty() {
            return Err(Error::InvalidArgument(
                "check_and_mutate_row needs true or false mutations".into(),
            ));
        }
        for m in [&true_mutations, &false_mutations] {
            if !m.is_empty() {
                validate(m)?;
            }
        }
        let table_name = self.table_name(table);
        let msg = CheckAndMutateRowRequest {
            table_name: table_name.clone(),
            app_profile_id: self.shared.app_profile_id.clone(),
            row_key: key.into(),
            predicate_filter: predicate,
            true_mutations,
            false_mutations,
            ..Default::default()
        };
        self.with_retries("CheckAndMutateRow", false, |left| {
            let mut data = self.data.clone();
            let req = self.data_request(msg.clone(), &table_name, Some(left));
            async move {
                Ok(data
                    .check_and_mutate_row(req)
                    .await?
                    .into_inner()
                    .predicate_matched)
            }
        })
        .await
    }

    /// Applies append/increment rules atomically and returns the new contents of the
    /// touched cells. Not retried: it is not idempotent.
    pub async fn read_modify_write_row(
        &self,
        table: &str,
        key: impl Into<Vec<u8>>,
        rules: Vec<ReadModifyWriteRule>,
    ) -> Result<Row> {
        if rules.is_empty() {
            return Err(Error::InvalidArgument(
                "no read-modify-write rules given".into(),
            ));
        }
        let table_name = self.table_name(table);
        let msg = ReadModifyWriteRowRequest {
            table_name: table_name.clone(),
            app_profile_id: self.shared.app_profile_id.clone(),
            row_key: key.into(),
            rules,
            ..Default::default()
        };
        self.with_retries("ReadModifyWriteRow", false, |left| {
            let mut data = self.data.clone();
            let req = self.data_request(msg.clone(), &table_name, Some(left));
            async move {
                let row = data.read_modify_write_row(req).await?.into_inner().row;
                row.map(Row::from)
                    .ok_or_else(|| Error::Protocol("ReadModifyWriteRow returned no row".into()))
            }
        })
        .await
    }

    /// Approximate split points of the table, in key order.
    pub async fn sample_row_keys(&self, table: &str) -> Result<Vec<SampleRowKey>> {
        let table_name = self.table_name(table);
        let msg = SampleRowKeysRequest {
            table_name: table_name.clone(),
            app_profile_id: self.shared.app_profile_id.clone(),
            ..Default::default()
        };
        self.with_retries("SampleRowKeys", true, |left| {
            let mut data = self.data.clone();
            let req = self.data_request(msg.clone(), &table_name, Some(left));
            async move {
                let mut stream = data.sample_row_keys(req).await?.into_inner();
                let mut out = Vec::new();
                while let Some(s) = stream.message().await? {
                    out.push(SampleRowKey {
                        row_key: s.row_key,
                        offset_bytes: s.offset_bytes,
                    });
                }
                Ok(out)
            }
        })
        .await
    }
}

/// Bigtable rejects a MutateRows request with more than 100,000 mutations.
const MAX_BATCH_MUTATIONS: usize = 100_000;
/// Well under the 256 MiB request limit.
const MAX_BATCH_BYTES: usize = 128 << 20;

/// Splits entries (by index) into requests the server will accept.
fn batches(entries: &[mutate_rows_request::Entry]) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    let mut batch = Vec::new();
    let (mut mutations, mut bytes) = (0, 0);
    for (i, e) in entries.iter().enumerate() {
        let (m, b) = (e.mutations.len(), e.encoded_len());
        if !batch.is_empty() && (mutations + m > MAX_BATCH_MUTATIONS || bytes + b > MAX_BATCH_BYTES)
        {
            out.push(std::mem::take(&mut batch));
            (mutations, bytes) = (0, 0);
        }
        batch.push(i);
        mutations += m;
        bytes += b;
    }
    if !batch.is_empty() {
        out.push(batch);
    }
    out
}

/// One MutateRows call: records per-entry outcomes into `failures` (clearing them
/// on success) and marks which positions of `pending` the server answered.
async fn mutate_rows_attempt(
    mut data: BigtableClient<Transport>,
    req: tonic::Request<MutateRowsRequest>,
    pending: &[usize],
    answered: &mut [bool],
    failures: &mut [Option<FailedMutation>],
) -> Result<()> {
    let mut stream = data.mutate_rows(req).await?.into_inner();
    while let Some(resp) = stream.message().await? {
        for entry in resp.entries {
            let pos = usize::try_from(entry.index)
                .ok()
                .filter(|&p| p < pending.len());
            let Some(pos) = pos else {
                warn!(
                    index = entry.index,
                    "bigtable: MutateRows answered an unknown entry"
                );
                continue;
            };
            let i = pending[pos];
            answered[pos] = true;
            let (code, message) = entry
                .status
                .map_or((0, String::new()), |s| (s.code, s.message));
            failures[i] = (code != 0).then(|| FailedMutation {
                index: i,
                code: Code::from_i32(code),
                message,
            });
        }
    }
    Ok(())
}

struct ReadState {
    client: Client,
    table_name: String,
    read: ReadRows,
    merger: RowMerger,
    stream: Option<Streaming<ReadRowsResponse>>,
    pending: VecDeque<Row>,
    emitted: i64,
    /// Retry budget since the last row arrived; `None` until something fails.
    backoff: Option<Backoff>,
    done: bool,
}

impl ReadState {
    async fn next(mut self) -> Option<(Result<Row>, Self)> {
        loop {
            if let Some(row) = self.pending.pop_front() {
                self.emitted += 1;
                if self.read.limit > 0 && self.emitted >= self.read.limit {
                    // A server that overshoots the limit is not followed.
                    self.pending.clear();
                    self.finish();
                }
                return Some((Ok(row), self));
            }
            if self.done {
                return None;
            }
            // A silent server is treated like a broken one; last_scanned_row_key
            // heartbeats keep long filtered scans from tripping this.
            let idle = self.client.shared.retry.total_timeout;
            let Some(stream) = self.stream.as_mut() else {
                let Some(msg) = self.request() else {
                    self.finish();
                    continue;
                };
                let req = self.client.data_request(msg, &self.table_name, None);
                let mut data = self.client.data.clone();
                let err = match tokio::time::timeout(idle, data.read_rows(req)).await {
                    Ok(Ok(resp)) => {
                        self.stream = Some(resp.into_inner());
                        continue;
                    }
                    Ok(Err(status)) => status.into(),
                    Err(_) => Error::deadline("ReadRows"),
                };
                if let Some(e) = self.retry_or_fail(err).await {
                    return Some((Err(e), self));
                }
                continue;
            };
            let err = match tokio::time::timeout(idle, stream.message()).await {
                Ok(Ok(Some(resp))) => {
                    let had = self.pending.len();
                    if let Err(e) = self.merger.push(resp, &mut self.pending) {
                        self.finish();
                        return Some((Err(e), self));
                    }
                    if self.pending.len() > had {
                        self.backoff = None;
                    }
                    continue;
                }
                Ok(Ok(None)) => {
                    let end = self.merger.finish();
                    self.finish();
                    match end {
                        Ok(()) => continue,
                        Err(e) => return Some((Err(e), self)),
                    }
                }
                Ok(Err(status)) => status.into(),
                Err(_) => Error::deadline("ReadRows"),
            };
            self.stream = None;
            self.merger.abandon_row();
            if let Some(e) = self.retry_or_fail(err).await {
                return Some((Err(e), self));
            }
        }
    }

    fn finish(&mut self) {
        self.done = true;
        self.stream = None;
    }

    /// The request for the next attempt, or `None` if nothing is left to read.
    fn request(&self) -> Option<ReadRowsRequest> {
        let rows = match self.merger.last_key() {
            Some(last) => Some(remaining(&self.read.rows, last, self.read.reversed)?),
            None if self.read.rows.row_keys.is_empty() && self.read.rows.row_ranges.is_empty() => {
                None
            }
            None => Some(self.read.rows.clone()),
        };
        let rows_limit = if self.read.limit > 0 {
            let left = self.read.limit - self.emitted;
            if left <= 0 {
                return None;
            }
            left
        } else {
            0
        };
        Some(ReadRowsRequest {
            table_name: self.table_name.clone(),
            app_profile_id: self.client.shared.app_profile_id.clone(),
            rows,
            filter: self.read.filter.clone(),
            rows_limit,
            reversed: self.read.reversed,
            ..Default::default()
        })
    }

    /// Sleeps and returns `None` if the scan should be resumed, else the error to yield.
    async fn retry_or_fail(&mut self, err: Error) -> Option<Error> {
        if err.is_retryable() {
            let policy = &self.client.shared.retry;
            let backoff = self.backoff.get_or_insert_with(|| Backoff::new(policy));
            if backoff.wait().await {
                debug!(error = %err, attempt = backoff.attempts, "bigtable: resuming ReadRows");
                return None;
            }
        }
        self.finish();
        Some(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_header_is_query_escaped() {
        assert_eq!(
            routing_param("table_name", "projects/p/instances/i/tables/t-1"),
            "table_name=projects%2Fp%2Finstances%2Fi%2Ftables%2Ft-1"
        );
        assert_eq!(query_escape("a b~"), "a%20b~");
    }

    #[test]
    fn batches_respect_mutation_limit() {
        let entry = |n: usize| mutate_rows_request::Entry {
            row_key: b"k".to_vec(),
            mutations: vec![crate::mutation::delete_from_row(); n],
            idempotency: None,
        };
        let entries = vec![
            entry(60_000),
            entry(40_000),
            entry(1),
            entry(150_000),
            entry(5),
        ];
        assert_eq!(
            batches(&entries),
            vec![vec![0, 1], vec![2], vec![3], vec![4]]
        );
        assert!(batches(&[]).is_empty());
    }

    #[test]
    fn features_header_round_trips() {
        let v = features_header();
        let raw = base64::engine::general_purpose::URL_SAFE
            .decode(v.to_str().unwrap_or_default())
            .unwrap();
        let flags = FeatureFlags::decode(raw.as_slice()).unwrap();
        assert!(flags.reverse_scans);
        assert!(flags.last_scanned_row_responses);
    }

    #[tokio::test]
    async fn emulator_config_defaults() {
        let c = Config::new(Target::Emulator("127.0.0.1:1".into()))
            .connect()
            .await
            .unwrap();
        assert_eq!(c.project(), "chunkedgraph");
        assert_eq!(c.instance(), "local");
        assert_eq!(
            c.table_name("t"),
            "projects/chunkedgraph/instances/local/tables/t"
        );
        let c = Config::new(Target::Emulator("127.0.0.1:1".into()))
            .emulator_names("p", "i")
            .connect()
            .await
            .unwrap();
        assert_eq!(c.table_name("t"), "projects/p/instances/i/tables/t");
        let err = Config::new(Target::Emulator("not a uri\n".into()))
            .connect()
            .await;
        assert!(matches!(err, Err(Error::Config(_))));
    }

    #[tokio::test]
    async fn unreachable_server_fails_after_retry_budget() {
        // Port 1 on loopback refuses connections: a transport error, retried until the budget ends.
        let c = Config::new(Target::Emulator("127.0.0.1:1".into()))
            .retry(RetryPolicy {
                total_timeout: Duration::from_millis(200),
                ..RetryPolicy::default()
            })
            .connect()
            .await
            .unwrap();
        let err = c.sample_row_keys("t").await.unwrap_err();
        assert!(err.is_retryable(), "{err:?}");
    }
}
