//! Retry and resume behaviour against a scripted fake Bigtable server, reached
//! through `Target::Channel`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use cg_bigtable::proto::v2::read_rows_response::{cell_chunk::RowStatus, CellChunk};
use cg_bigtable::proto::v2::{
    mutate_rows_response, row_range, CheckAndMutateRowRequest, CheckAndMutateRowResponse,
    FeatureFlags, MutateRowRequest, MutateRowResponse, MutateRowsRequest, MutateRowsResponse,
    ReadRowsRequest, ReadRowsResponse,
};
use cg_bigtable::{filter, mutation, Client, Code, Config, Error, ReadRows, RetryPolicy, Target};
use futures::StreamExt as _;
use prost::Message as _;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::server::{Grpc, NamedService};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

type Call<T> = Vec<Result<T, Status>>;

#[derive(Default)]
struct State {
    reads: VecDeque<Call<ReadRowsResponse>>,
    read_requests: Vec<ReadRowsRequest>,
    mutates: VecDeque<Call<MutateRowsResponse>>,
    mutate_requests: Vec<MutateRowsRequest>,
    unary: VecDeque<Result<(), Status>>,
    unary_calls: usize,
    /// (method, x-goog-request-params, bigtable-features)
    headers: Vec<(String, Option<String>, Option<String>)>,
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<State>>);

impl Fake {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn next_call<T>(queue: &mut VecDeque<Call<T>>) -> Call<T> {
        queue
            .pop_front()
            .unwrap_or_else(|| vec![Err(Status::internal("fake: script exhausted"))])
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

impl tower::Service<http::Request<Body>> for Fake {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> BoxFuture {
        let method = req
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let h = (
            method.clone(),
            header("x-goog-request-params"),
            header("bigtable-features"),
        );
        self.state().headers.push(h);
        let fake = self.clone();
        Box::pin(async move {
            let resp = match method.as_str() {
                "ReadRows" => {
                    let svc = tower::service_fn(move |r: Request<ReadRowsRequest>| {
                        let mut st = fake.state();
                        st.read_requests.push(r.into_inner());
                        let mut items = Fake::next_call(&mut st.reads);
                        // A trailing "hang" status stands for a server that goes silent.
                        let hang = matches!(items.last(), Some(Err(s)) if s.message() == "hang");
                        if hang {
                            items.pop();
                        }
                        let stream = futures::stream::iter(items);
                        let stream = if hang {
                            stream.chain(futures::stream::pending()).boxed()
                        } else {
                            stream.boxed()
                        };
                        async move { Ok::<_, Status>(Response::new(stream)) }
                    });
                    Grpc::new(ProstCodec::<ReadRowsResponse, ReadRowsRequest>::default())
                        .server_streaming(svc, req)
                        .await
                }
                "MutateRows" => {
                    let svc = tower::service_fn(move |r: Request<MutateRowsRequest>| {
                        let mut st = fake.state();
                        st.mutate_requests.push(r.into_inner());
                        let items = Fake::next_call(&mut st.mutates);
                        async move { Ok::<_, Status>(Response::new(futures::stream::iter(items))) }
                    });
                    Grpc::new(ProstCodec::<MutateRowsResponse, MutateRowsRequest>::default())
                        .server_streaming(svc, req)
                        .await
                }
                "MutateRow" => {
                    let svc = tower::service_fn(move |_: Request<MutateRowRequest>| {
                        let r = fake.unary_result();
                        async move { r.map(|()| Response::new(MutateRowResponse {})) }
                    });
                    Grpc::new(ProstCodec::<MutateRowResponse, MutateRowRequest>::default())
                        .unary(svc, req)
                        .await
                }
                "CheckAndMutateRow" => {
                    let svc = tower::service_fn(move |_: Request<CheckAndMutateRowRequest>| {
                        let r = fake.unary_result();
                        async move {
                            r.map(|()| {
                                Response::new(CheckAndMutateRowResponse {
                                    predicate_matched: true,
                                })
                            })
                        }
                    });
                    Grpc::new(ProstCodec::<
                        CheckAndMutateRowResponse,
                        CheckAndMutateRowRequest,
                    >::default())
                    .unary(svc, req)
                    .await
                }
                other => Status::unimplemented(other.to_owned()).into_http(),
            };
            Ok(resp)
        })
    }
}

impl Fake {
    fn unary_result(&self) -> Result<(), Status> {
        let mut st = self.state();
        st.unary_calls += 1;
        st.unary
            .pop_front()
            .unwrap_or_else(|| Err(Status::internal("fake: script exhausted")))
    }
}

impl NamedService for Fake {
    const NAME: &'static str = "google.bigtable.v2.Bigtable";
}

async fn start(fake: Fake, retry: RetryPolicy) -> Client {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(fake)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    Config::new(Target::Channel(channel, "p".into(), "i".into()))
        .retry(retry)
        .connect()
        .await
        .unwrap()
}

fn quick_retry() -> RetryPolicy {
    RetryPolicy {
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(20),
        multiplier: 2.0,
        total_timeout: Duration::from_secs(5),
    }
}

fn cell(key: &str, val: &str, commit: bool) -> CellChunk {
    CellChunk {
        row_key: key.as_bytes().to_vec(),
        family_name: Some("f".into()),
        qualifier: Some(b"q".to_vec()),
        timestamp_micros: 1000,
        value: val.as_bytes().to_vec(),
        row_status: commit.then_some(RowStatus::CommitRow(true)),
        ..Default::default()
    }
}

fn resp(chunks: Vec<CellChunk>) -> Result<ReadRowsResponse, Status> {
    Ok(ReadRowsResponse {
        chunks,
        ..Default::default()
    })
}

fn keys(rows: &[cg_bigtable::Row]) -> Vec<String> {
    rows.iter()
        .map(|r| String::from_utf8_lossy(&r.key).into_owned())
        .collect()
}

#[tokio::test]
async fn read_rows_resumes_after_last_committed_row() {
    let fake = Fake::default();
    {
        let mut st = fake.state();
        st.reads.push_back(vec![
            resp(vec![cell("r1", "a", true), cell("r2", "b", true)]),
            resp(vec![cell("r3", "stale", false)]),
            Err(Status::unavailable("node restarting")),
        ]);
        st.reads.push_back(vec![
            resp(vec![cell("r3", "c", true)]),
            resp(vec![cell("r4", "d", true)]),
        ]);
    }
    let client = start(fake.clone(), quick_retry()).await;
    let rows = client
        .read_rows_vec(
            "t",
            ReadRows::new()
                .range(b"r".to_vec()..)
                .limit(10)
                .filter(filter::pass_all()),
        )
        .await
        .unwrap();
    assert_eq!(keys(&rows), ["r1", "r2", "r3", "r4"]);
    assert_eq!(
        rows[2].cell("f", b"q").map(|c| c.value.as_slice()),
        Some(&b"c"[..])
    );

    let st = fake.state();
    assert_eq!(st.read_requests.len(), 2);
    let retry = &st.read_requests[1];
    assert_eq!(retry.rows_limit, 8);
    assert!(retry.filter.is_some());
    let rows = retry.rows.as_ref().unwrap();
    assert!(rows.row_keys.is_empty());
    assert_eq!(
        rows.row_ranges[0].start_key,
        Some(row_range::StartKey::StartKeyOpen(b"r2".to_vec()))
    );
    assert_eq!(rows.row_ranges[0].end_key, None);

    let (method, params, features) = &st.headers[0];
    assert_eq!(method, "ReadRows");
    assert_eq!(
        params.as_deref(),
        Some("table_name=projects%2Fp%2Finstances%2Fi%2Ftables%2Ft&app_profile_id=")
    );
    let raw = base64::engine::general_purpose::URL_SAFE
        .decode(features.as_deref().unwrap_or_default())
        .unwrap();
    assert!(FeatureFlags::decode(raw.as_slice()).unwrap().reverse_scans);
}

#[tokio::test]
async fn read_rows_resume_of_reversed_keys_scan() {
    let fake = Fake::default();
    {
        let mut st = fake.state();
        st.reads.push_back(vec![
            resp(vec![cell("c", "x", true)]),
            Err(Status::unavailable("blip")),
        ]);
        st.reads.push_back(vec![resp(vec![cell("a", "x", true)])]);
    }
    let client = start(fake.clone(), quick_retry()).await;
    let rows = client
        .read_rows_vec("t", ReadRows::new().keys(["a", "b", "c"]).reversed(true))
        .await
        .unwrap();
    assert_eq!(keys(&rows), ["c", "a"]);
    let st = fake.state();
    let retry = &st.read_requests[1];
    assert!(retry.reversed);
    assert_eq!(
        retry.rows.as_ref().unwrap().row_keys,
        vec![b"a".to_vec(), b"b".to_vec()]
    );
}

#[tokio::test]
async fn read_rows_resumes_when_server_goes_silent() {
    let fake = Fake::default();
    {
        let mut st = fake.state();
        st.reads.push_back(vec![
            resp(vec![cell("a", "x", true)]),
            Err(Status::unknown("hang")),
        ]);
        st.reads.push_back(vec![resp(vec![cell("b", "x", true)])]);
    }
    let client = start(
        fake.clone(),
        RetryPolicy {
            total_timeout: Duration::from_millis(300),
            ..quick_retry()
        },
    )
    .await;
    let rows = client.read_rows_vec("t", ReadRows::new()).await.unwrap();
    assert_eq!(keys(&rows), ["a", "b"]);
    let st = fake.state();
    let retry = st.read_requests[1].rows.as_ref().unwrap();
    assert_eq!(
        retry.row_ranges[0].start_key,
        Some(row_range::StartKey::StartKeyOpen(b"a".to_vec()))
    );
}

#[tokio::test]
async fn read_rows_stops_at_limit_and_when_nothing_is_left() {
    let fake = Fake::default();
    fake.state().reads.push_back(vec![resp(vec![
        cell("a", "x", true),
        cell("b", "x", true),
        cell("c", "x", true),
    ])]);
    let client = start(fake.clone(), quick_retry()).await;
    let rows = client
        .read_rows_vec("t", ReadRows::new().limit(2))
        .await
        .unwrap();
    assert_eq!(keys(&rows), ["a", "b"]);

    // Every requested key was delivered before the break: no second request.
    fake.state().reads.push_back(vec![
        resp(vec![cell("a", "x", true), cell("b", "x", true)]),
        Err(Status::unavailable("blip")),
    ]);
    let rows = client
        .read_rows_vec("t", ReadRows::new().keys(["a", "b"]))
        .await
        .unwrap();
    assert_eq!(keys(&rows), ["a", "b"]);
    assert_eq!(fake.state().read_requests.len(), 2);
}

#[tokio::test]
async fn read_rows_non_retryable_and_protocol_errors_end_the_stream() {
    let fake = Fake::default();
    {
        let mut st = fake.state();
        st.reads.push_back(vec![
            resp(vec![cell("a", "x", true)]),
            Err(Status::invalid_argument("bad filter")),
        ]);
        st.reads
            .push_back(vec![resp(vec![cell("b", "x", true), cell("a", "x", true)])]);
        st.reads.push_back(vec![resp(vec![cell("a", "x", false)])]);
    }
    let client = start(fake.clone(), quick_retry()).await;
    let mut s = client.read_rows("t", ReadRows::new());
    assert!(s.next().await.unwrap().is_ok());
    let err = s.next().await.unwrap().unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(s.next().await.is_none());

    let err = client
        .read_rows_vec("t", ReadRows::new())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Protocol(ref m) if m.contains("out of order")),
        "{err:?}"
    );
    let err = client
        .read_rows_vec("t", ReadRows::new())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Protocol(ref m) if m.contains("without commit_row")),
        "{err:?}"
    );
    assert_eq!(fake.state().read_requests.len(), 3);
}

fn entry_status(index: i64, code: Code) -> mutate_rows_response::Entry {
    mutate_rows_response::Entry {
        index,
        status: Some(cg_bigtable::proto::rpc::Status {
            code: code as i32,
            message: format!("{code:?}"),
            details: vec![],
        }),
    }
}

#[tokio::test]
async fn mutate_rows_retries_only_retryable_idempotent_entries() {
    let fake = Fake::default();
    {
        let mut st = fake.state();
        // e5 gets no status at all in the first answer.
        st.mutates.push_back(vec![Ok(MutateRowsResponse {
            entries: vec![
                entry_status(0, Code::Ok),
                entry_status(1, Code::Unavailable),
                entry_status(2, Code::InvalidArgument),
                entry_status(3, Code::DeadlineExceeded),
                entry_status(4, Code::Unavailable),
            ],
            rate_limit_info: None,
        })]);
        st.mutates.push_back(vec![Ok(MutateRowsResponse {
            entries: vec![
                entry_status(0, Code::Ok),
                entry_status(1, Code::Aborted),
                entry_status(2, Code::Ok),
            ],
            rate_limit_info: None,
        })]);
        st.mutates.push_back(vec![Ok(MutateRowsResponse {
            entries: vec![entry_status(0, Code::Ok)],
            rate_limit_info: None,
        })]);
    }
    let client = start(fake.clone(), quick_retry()).await;
    let set = |ts| vec![mutation::set_cell("f", "q", ts, "v")];
    let entries = vec![
        ("e0", set(1000)),
        ("e1", set(1000)),
        ("e2", set(1000)),
        ("e3", set(1000)),
        ("e4", set(mutation::SERVER_TIME)),
        ("e5", set(1000)),
    ];
    let err = client.mutate_rows("t", entries).await.unwrap_err();
    let Error::MutateRows { total, failed } = &err else {
        panic!("unexpected {err:?}");
    };
    assert_eq!(*total, 6);
    let summary: Vec<_> = failed.iter().map(|f| (f.index, f.code)).collect();
    assert_eq!(
        summary,
        [(2, Code::InvalidArgument), (4, Code::Unavailable)]
    );
    assert!(!err.is_retryable());

    let st = fake.state();
    let sent: Vec<Vec<String>> = st
        .mutate_requests
        .iter()
        .map(|r| {
            r.entries
                .iter()
                .map(|e| String::from_utf8_lossy(&e.row_key).into_owned())
                .collect()
        })
        .collect();
    assert_eq!(
        sent,
        [
            vec!["e0", "e1", "e2", "e3", "e4", "e5"],
            vec!["e1", "e3", "e5"],
            vec!["e3"],
        ]
    );
}

#[tokio::test]
async fn mutate_rows_gives_up_at_deadline() {
    let fake = Fake::default();
    for _ in 0..1000 {
        fake.state()
            .mutates
            .push_back(vec![Err(Status::unavailable("overloaded"))]);
    }
    let client = start(
        fake.clone(),
        RetryPolicy {
            total_timeout: Duration::from_millis(300),
            ..quick_retry()
        },
    )
    .await;
    let started = std::time::Instant::now();
    let err = client
        .mutate_rows(
            "t",
            [
                ("a", vec![mutation::delete_from_row()]),
                ("b", vec![mutation::delete_from_row()]),
            ],
        )
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3));
    let Error::MutateRows { failed, .. } = &err else {
        panic!("unexpected {err:?}");
    };
    assert_eq!(failed.len(), 2);
    assert!(failed.iter().all(|f| f.code == Code::Unavailable));
    assert!(err.is_retryable());
    assert!(fake.state().mutate_requests.len() > 2);
}

#[tokio::test]
async fn unary_retries_only_when_idempotent() {
    let fake = Fake::default();
    fake.state()
        .unary
        .extend([Err(Status::unavailable("blip")), Ok(())]);
    let client = start(fake.clone(), quick_retry()).await;
    client
        .mutate_row("t", "k", vec![mutation::set_cell("f", "q", 2000, "v")])
        .await
        .unwrap();
    assert_eq!(fake.state().unary_calls, 2);

    fake.state()
        .unary
        .push_back(Err(Status::unavailable("blip")));
    let err = client
        .mutate_row(
            "t",
            "k",
            vec![mutation::set_cell("f", "q", mutation::SERVER_TIME, "v")],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(fake.state().unary_calls, 3);

    fake.state()
        .unary
        .push_back(Err(Status::unavailable("blip")));
    let err = client
        .check_and_mutate_row("t", "k", None, vec![mutation::delete_from_row()], vec![])
        .await
        .unwrap_err();
    assert!(err.is_retryable());
    assert_eq!(fake.state().unary_calls, 4);

    fake.state().unary.push_back(Ok(()));
    let matched = client
        .check_and_mutate_row(
            "t",
            "k",
            Some(filter::pass_all()),
            vec![],
            vec![mutation::delete_from_row()],
        )
        .await
        .unwrap();
    assert!(matched);

    // Rejected locally: never sent.
    let err = client
        .mutate_row("t", "k", vec![mutation::set_cell("f", "q", 1234, "v")])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(fake.state().unary_calls, 5);
}
