//! The HTTP API described once: every route with its methods, parameters, a short
//! description and who may call it. `/openapi.json` is built from this table, and the auth
//! layer reads each route's access rule from it, so a route's documentation and its
//! permission cannot drift apart. (A test checks that the router and this table list the
//! same paths.)

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::response::Response;
use serde_json::{json, Map, Value};

use super::auth::Permission;

/// Who may call a route when auth is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without a token (version questions, health, metrics, this description).
    Public,
    /// Any valid token.
    Token,
    /// A token with at least this permission on the `{table}` of the path.
    Table(Permission),
}

/// A query parameter.
pub struct Param {
    pub name: &'static str,
    /// JSON-schema type: `boolean`, `integer`, `number` or `string`.
    pub kind: &'static str,
    pub description: &'static str,
}

/// A request body.
pub enum Body {
    None,
    /// JSON (clients often send it without a JSON content type, and with GETs too).
    Json(&'static str),
    /// JSON, or raw little-endian u64 IDs with `is_binary=true`.
    JsonOrBinary(&'static str),
    /// Raw little-endian u64 IDs.
    Binary(&'static str),
}

pub struct RouteDoc {
    pub path: &'static str,
    pub methods: &'static [&'static str],
    pub access: Access,
    pub summary: &'static str,
    pub query: &'static [Param],
    pub body: Body,
    /// What a 200 answers, in a few words.
    pub answers: &'static str,
}

const fn q(name: &'static str, kind: &'static str, description: &'static str) -> Param {
    Param {
        name,
        kind,
        description,
    }
}

const INT64_AS_STR: Param = q(
    "int64_as_str",
    "boolean",
    "IDs as decimal strings (JavaScript loses bits of 64-bit numbers)",
);
const TIMESTAMP: Param = q(
    "timestamp",
    "number",
    "read the graph as it was at this UNIX time (seconds); default now",
);
const STOP_LAYER: Param = q(
    "stop_layer",
    "integer",
    "stop at this layer instead of the top",
);
const BOUNDS: Param = q(
    "bounds",
    "string",
    "only inside the box x0-x1_y0-y1_z0-z1 (voxels)",
);
const IS_BINARY: Param = q(
    "is_binary",
    "boolean",
    "the body is raw little-endian u64 IDs instead of JSON",
);
const FILTERED: Param = q(
    "filtered",
    "boolean",
    "only the operations that shaped the root",
);
const TIMESTAMP_PAST: Param = q("timestamp_past", "number", "start of the window (UNIX s)");
const TIMESTAMP_FUTURE: Param = q(
    "timestamp_future",
    "number",
    "end of the window (UNIX s); default now",
);
const DELIMITER: Param = q(
    "delimiter",
    "string",
    "date/time separator of the ISO time (default a space)",
);
const AS_ARRAY: Param = q(
    "as_array",
    "boolean",
    "answer raw little-endian u64s instead of JSON",
);
const USER_ID: Param = q(
    "user_id",
    "string",
    "open mode only: the user the edit is recorded under (else X-User-Id, else anonymous); \
     ignored when the server checks tokens",
);
const TOKEN: Param = q(
    "middle_auth_token",
    "string",
    "the bearer token, when neither the Authorization header nor the cookie can carry it",
);

const DIRECTION: Param = q(
    "direction",
    "string",
    "output (the root is presynaptic), input (postsynaptic) or both (default)",
);
const SYNAPSE_FORMAT: Param = q(
    "format",
    "string",
    "json (default) or csv (pandas.read_csv reads it directly)",
);
const OFFSET: Param = q("offset", "integer", "skip this many rows (paging)");
const LIMIT: Param = q("limit", "integer", "at most this many rows (default all)");

const VIEW: Access = Access::Table(Permission::View);
const EDIT: Access = Access::Table(Permission::Edit);

const NODE_IDS: &str = "{\"node_ids\": [id, ...]}";
const ROOT_IDS: &str = "{\"root_ids\": [id, ...]}";
const SPLIT_BODY: &str =
    "{\"sources\": [[sv, x, y, z], ...], \"sinks\": [[sv, x, y, z], ...]} (positions in nm)";
const OPERATION: &str = "{\"operation_id\": N}";

/// Every route of the router, in the router's order.
pub const ROUTES: &[RouteDoc] = &[
    RouteDoc {
        path: "/segmentation/api/versions",
        methods: &["GET"],
        access: Access::Public,
        summary: "The API versions this server speaks.",
        query: &[],
        body: Body::None,
        answers: "[1]",
    },
    RouteDoc {
        path: "/segmentation/api/version",
        methods: &["GET"],
        access: Access::Public,
        summary: "The server's version string.",
        query: &[],
        body: Body::None,
        answers: "\"x.y.z\"",
    },
    RouteDoc {
        path: "/segmentation/table/{table}/info",
        methods: &["GET"],
        access: VIEW,
        summary: "The graphene info file (geometry, layers, bit masks) Neuroglancer and cloud-volume read.",
        query: &[],
        body: Body::None,
        answers: "info JSON",
    },
    RouteDoc {
        path: "/segmentation/table/{table}/data/{*path}",
        methods: &["GET"],
        access: VIEW,
        summary: "A file of the table's local data directory (supervoxel volume, meshes), \
                  with range requests; `name.gz` is sent as `name` with Content-Encoding gzip.",
        query: &[],
        body: Body::None,
        answers: "the file's bytes (206 for a range)",
    },
    RouteDoc {
        path: "/segmentation/api/v1/table/{table}/node/{node}/root",
        methods: &["GET"],
        access: VIEW,
        summary: "The root (or the ancestor at stop_layer) of a node.",
        query: &[INT64_AS_STR, TIMESTAMP, STOP_LAYER],
        body: Body::None,
        answers: "{\"root_id\": id}",
    },
    RouteDoc {
        path: "/segmentation/api/v1/table/{table}/roots",
        methods: &["POST"],
        access: VIEW,
        summary: "Roots of many nodes, in input order; unknown IDs map to 0 with fail_to_zero.",
        query: &[
            INT64_AS_STR,
            TIMESTAMP,
            STOP_LAYER,
            q("fail_to_zero", "boolean", "unknown IDs give 0 instead of an error (default true)"),
            q("as_binary", "string", "root_ids: answer raw little-endian u64s"),
        ],
        body: Body::Json(NODE_IDS),
        answers: "{\"root_ids\": [id, ...]}",
    },
    RouteDoc {
        path: "/segmentation/api/v1/table/{table}/roots_binary",
        methods: &["POST"],
        access: VIEW,
        summary: "Roots of many nodes, raw u64s in and out.",
        query: &[
            TIMESTAMP,
            STOP_LAYER,
            q("fail_to_zero", "boolean", "unknown IDs give 0 instead of an error (default true)"),
        ],
        body: Body::Binary("node IDs"),
        answers: "root IDs as raw little-endian u64s",
    },
    RouteDoc {
        path: "/segmentation/api/v1/table/{table}/node/{node}/children",
        methods: &["GET"],
        access: VIEW,
        summary: "The children of a node.",
        query: &[INT64_AS_STR],
        body: Body::None,
        answers: "{\"children_ids\": [id, ...]}",
    },
    RouteDoc {
        path: "/segmentation/api/v1/table/{table}/node/{node}/leaves",
        methods: &["GET"],
        access: VIEW,
        summary: "The supervoxels (or nodes at stop_layer) under a node, optionally in a box.",
        query: &[INT64_AS_STR, STOP_LAYER, BOUNDS],
        body: Body::None,
        answers: "{\"leaf_ids\": [id, ...]}",
    },
    RouteDoc {
        path: "/segmentation/api/v1/table/{table}/node/leaves_many",
        methods: &["GET", "POST"],
        access: VIEW,
        summary: "Leaves of many nodes.",
        query: &[INT64_AS_STR, STOP_LAYER, BOUNDS],
        body: Body::Json(NODE_IDS),
        answers: "{\"<node>\": [leaf, ...], ...}",
    },
    RouteDoc {
        path: "/segmentation/api/v1/table/{table}/leaves_many",
        methods: &["GET", "POST"],
        access: VIEW,
        summary: "Leaves of many nodes (older path of node/leaves_many).",
        query: &[INT64_AS_STR, STOP_LAYER, BOUNDS],
        body: Body::Json(NODE_IDS),
        answers: "{\"<node>\": [leaf, ...], ...}",
    },
    RouteDoc {
        path: "/segmentation/api/v1/table/{table}/minimal_covering_nodes",
        methods: &["GET", "POST"],
        access: VIEW,
        summary: "The fewest nodes whose leaves are exactly the given nodes' leaves.",
        query: &[INT64_AS_STR, TIMESTAMP, IS_BINARY, AS_ARRAY],
        body: Body::JsonOrBinary(NODE_IDS),
        answers: "[id, ...]",
    },
    RouteDoc {
        path: "/segmentation/api/v1/table/{table}/is_latest_roots",
        methods: &["GET", "POST"],
        access: VIEW,
        summary: "Whether each root is still a root (not replaced by an edit).",
        query: &[TIMESTAMP, IS_BINARY],
        body: Body::JsonOrBinary(NODE_IDS),
        answers: "{\"is_latest\": [bool, ...]}",
    },
    RouteDoc {
        path: "/segmentation/api/v1/table/{table}/root_timestamps",
        methods: &["GET", "POST"],
        access: VIEW,
        summary: "When each root was made (or, with latest, until when it was current).",
        query: &[
            TIMESTAMP,
            IS_BINARY,
            q("latest", "boolean", "the time each root stopped being current instead"),
        ],
        body: Body::JsonOrBinary(NODE_IDS),
        answers: "{\"timestamp\": [seconds, ...]}",
    },
    RouteDoc {
        path: "/segmentation/api/v1/table/{table}/delta_roots",
        methods: &["GET"],
        access: VIEW,
        summary: "Roots replaced and created by edits in a time window.",
        query: &[INT64_AS_STR, TIMESTAMP_PAST, TIMESTAMP_FUTURE],
        body: Body::None,
        answers: "{\"old_roots\": [...], \"new_roots\": [...]}",
    },
    RouteDoc {
        path: "/segmentation/api/v1/table/{table}/valid_nodes",
        methods: &["GET", "POST"],
        access: VIEW,
        summary: "The given nodes that exist and were made within a time window.",
        query: &[
            INT64_AS_STR,
            IS_BINARY,
            q("start_timestamp", "number", "window start (UNIX s); default the beginning"),
            q("end_timestamp", "number", "window end (UNIX s); default now"),
        ],
        body: Body::JsonOrBinary(NODE_IDS),
        answers: "{\"valid_roots\": [id, ...]}",
    },
    RouteDoc {
        path: "/segmentation/api/v1/table/{table}/oldest_timestamp",
        methods: &["GET"],
        access: VIEW,
        summary: "The earliest time the graph can be read at.",
        query: &[DELIMITER],
        body: Body::None,
        answers: "{\"iso\": \"...\"}",
    },
    RouteDoc {
        path: "/segmentation/api/v1/table/{table}/l2_chunk_children/{chunk}",
        methods: &["GET"],
        access: VIEW,
        summary: "The layer-2 nodes of a layer-2 chunk with their supervoxels.",
        query: &[INT64_AS_STR, TIMESTAMP, AS_ARRAY],
        body: Body::None,
        answers: "{\"<l2>\": [sv, ...]} or, with as_array, flattened u64s",
    },
    RouteDoc {
        path: "/segmentation/api/v1/table/{table}/l2_chunk_children_binary/{chunk}",
        methods: &["GET"],
        access: VIEW,
        summary: "l2_chunk_children as raw u64s.",
        query: &[TIMESTAMP, AS_ARRAY],
        body: Body::None,
        answers: "raw little-endian u64s",
    },
    RouteDoc {
        path: "/segmentation/api/v1/table/{table}/node/{node}/subgraph",
        methods: &["GET"],
        access: VIEW,
        summary: "Every supervoxel edge under a node (in bounds), with affinities and areas.",
        query: &[INT64_AS_STR, TIMESTAMP, BOUNDS],
        body: Body::None,
        answers: "{\"nodes\": [[sv, sv], ...], \"affinities\": [...], \"areas\": [...]}",
    },
    RouteDoc {
        path: "/segmentation/api/v1/table/{table}/node/{node}/lvl2_graph",
        methods: &["GET"],
        access: VIEW,
        summary: "The layer-2 graph of a node (edges between its layer-2 nodes).",
        query: &[INT64_AS_STR, TIMESTAMP, BOUNDS],
        body: Body::None,
        answers: "{\"edge_graph\": [[l2, l2], ...]}",
    },
    RouteDoc {
        path: "/segmentation/api/v1/table/{table}/merge",
        methods: &["POST"],
        access: EDIT,
        summary: "Merge the objects under two points.",
        query: &[
            INT64_AS_STR,
            USER_ID,
            q("chebyshev_distance", "integer", "refuse points more than this many chunks apart (default 3)"),
        ],
        body: Body::Json("[[sv, x, y, z], [sv, x, y, z]] (positions in nm)"),
        answers: "{\"operation_id\": op, \"new_root_ids\": [id]}",
    },
    RouteDoc {
        path: "/segmentation/api/v1/table/{table}/split",
        methods: &["POST"],
        access: EDIT,
        summary: "Split sources from sinks (a multicut, or the given edges with mincut=false).",
        query: &[
            INT64_AS_STR,
            USER_ID,
            q("mincut", "boolean", "multicut (default); false removes sources[i]-sinks[i]"),
        ],
        body: Body::Json(SPLIT_BODY),
        answers: "{\"operation_id\": op, \"new_root_ids\": [id, ...]}",
    },
    RouteDoc {
        path: "/segmentation/api/v1/table/{table}/graph/split_preview",
        methods: &["POST"],
        access: VIEW,
        summary: "The two sides a split would make, without making it.",
        query: &[INT64_AS_STR],
        body: Body::Json(SPLIT_BODY),
        answers: "{\"supervoxel_connected_components\": [[...], [...]], \"illegal_split\": false}",
    },
    RouteDoc {
        path: "/segmentation/api/v1/table/{table}/undo",
        methods: &["POST"],
        access: EDIT,
        summary: "Undo an operation.",
        query: &[INT64_AS_STR, USER_ID],
        body: Body::Json(OPERATION),
        answers: "{\"operation_id\": op, \"new_root_ids\": [id, ...]}",
    },
    RouteDoc {
        path: "/segmentation/api/v1/table/{table}/redo",
        methods: &["POST"],
        access: EDIT,
        summary: "Redo an undone operation.",
        query: &[INT64_AS_STR, USER_ID],
        body: Body::Json(OPERATION),
        answers: "{\"operation_id\": op, \"new_root_ids\": [id, ...]}",
    },
    RouteDoc {
        path: "/meshing/api/v1/table/{table}/manifest/{node}",
        methods: &["GET", "POST"],
        access: VIEW,
        summary: "The mesh fragments of a node (path segment `{id}:0`): initial ones as \
                  ~{layer}/{shard}:{offset}:{size}, dynamic ones by file name, under the \
                  info's data_dir/mesh directory. Optional JSON body: start_layer, \
                  return_seg_ids, return_seg_id_layers.",
        query: &[
            q("verify", "boolean", "accepted; fragments are always checked against the files"),
            q("prepend_seg_ids", "boolean", "prefix each fragment with ~{seg_id}:"),
            q("return_seg_ids", "boolean", "also list the node of each fragment"),
            q("start_layer", "integer", "list descendants at or below this layer (default max_meshed_layer)"),
            BOUNDS,
        ],
        body: Body::Json("{\"start_layer\": 2, \"return_seg_ids\": true} (optional)"),
        answers: "{\"fragments\": [...], \"seg_ids\": [...]}",
    },
    RouteDoc {
        path: "/meshing/api/v1/table/{table}/remeshing",
        methods: &["POST"],
        access: EDIT,
        summary: "Queue layer-2 nodes for meshing (edits queue theirs by themselves); their \
                  new ancestors are stitched after them.",
        query: &[],
        body: Body::Json("{\"new_lvl2_ids\": [id, ...]}"),
        answers: "202 {\"queued\": n}",
    },
    RouteDoc {
        path: "/segmentation/api/v1/table/{table}/root/{root}/change_log",
        methods: &["GET"],
        access: VIEW,
        summary: "Counts of merges and splits per user and the past IDs of a root.",
        query: &[INT64_AS_STR, FILTERED, TIMESTAMP],
        body: Body::None,
        answers: "{\"n_splits\", \"n_mergers\", \"user_info\", \"operations_ids\", \"past_ids\"}",
    },
    RouteDoc {
        path: "/segmentation/api/v1/table/{table}/root/{root}/tabular_change_log",
        methods: &["GET"],
        access: VIEW,
        summary: "The operations behind a root, as a pandas DataFrame JSON.",
        query: &[FILTERED],
        body: Body::None,
        answers: "DataFrame JSON",
    },
    RouteDoc {
        path: "/segmentation/api/v1/table/{table}/tabular_change_log_many",
        methods: &["GET", "POST"],
        access: VIEW,
        summary: "tabular_change_log of many roots.",
        query: &[FILTERED],
        body: Body::Json(ROOT_IDS),
        answers: "{\"<root>\": \"<DataFrame JSON>\"}",
    },
    RouteDoc {
        path: "/segmentation/api/v1/table/{table}/root/{root}/merge_log",
        methods: &["GET"],
        access: VIEW,
        summary: "The edges each merge behind a root added, with their coordinates (voxels).",
        query: &[INT64_AS_STR],
        body: Body::None,
        answers: "{\"merge_edges\": [...], \"merge_edge_coords\": [...]}",
    },
    RouteDoc {
        path: "/segmentation/api/v1/table/{table}/root/{root}/lineage_graph",
        methods: &["GET"],
        access: VIEW,
        summary: "The lineage of a root (roots and the edits between them), networkx node-link form.",
        query: &[INT64_AS_STR, TIMESTAMP_PAST, TIMESTAMP_FUTURE],
        body: Body::None,
        answers: "{\"nodes\": [...], \"links\": [...]}",
    },
    RouteDoc {
        path: "/segmentation/api/v1/table/{table}/lineage_graph_multiple",
        methods: &["GET", "POST"],
        access: VIEW,
        summary: "The lineage of many roots.",
        query: &[INT64_AS_STR, TIMESTAMP_PAST, TIMESTAMP_FUTURE],
        body: Body::Json(ROOT_IDS),
        answers: "{\"nodes\": [...], \"links\": [...]}",
    },
    RouteDoc {
        path: "/segmentation/api/v1/table/{table}/past_id_mapping",
        methods: &["GET", "POST"],
        access: VIEW,
        summary: "For each root, the roots it came from since timestamp_past, and back.",
        query: &[INT64_AS_STR, TIMESTAMP_PAST],
        body: Body::Json(ROOT_IDS),
        answers: "{\"past_id_map\": {...}, \"future_id_map\": {...}}",
    },
    RouteDoc {
        path: "/segmentation/api/v1/table/{table}/operation_details",
        methods: &["GET"],
        access: VIEW,
        summary: "The op-log entries of operations.",
        query: &[
            INT64_AS_STR,
            q("operation_ids", "string", "a JSON list of operation IDs, e.g. [1,2]"),
        ],
        body: Body::None,
        answers: "{\"<op>\": {details}}",
    },
    RouteDoc {
        path: "/segmentation/api/v1/table/{table}/user_operations",
        methods: &["GET"],
        access: VIEW,
        summary: "Operations of a user (everyone's without user_id) in a time window.",
        query: &[
            q("user_id", "string", "whose operations; default everyone's"),
            q("start_time", "number", "window start (UNIX s)"),
            q("end_time", "number", "window end (UNIX s); default now"),
            q("include_undone", "boolean", "also undo/redo and undone operations"),
        ],
        body: Body::None,
        answers: "DataFrame JSON {\"operation_id\": {...}, \"timestamp\": {...}}",
    },
    RouteDoc {
        path: "/segmentation/api/v1/table/{table}/root/{root}/last_edit",
        methods: &["GET"],
        access: VIEW,
        summary: "When a root was made.",
        query: &[DELIMITER],
        body: Body::None,
        answers: "{\"iso\": \"...\"}",
    },
    RouteDoc {
        path: "/segmentation/api/v1/table/{table}/root/{root}/synapses",
        methods: &["GET"],
        access: VIEW,
        summary: "The root's synapses at a timestamp, both sides resolved to roots then (sorted by synapse ID; streamed, no row cap).",
        query: &[DIRECTION, TIMESTAMP, SYNAPSE_FORMAT, OFFSET, LIMIT, INT64_AS_STR],
        body: Body::None,
        answers: "JSON records {id, pre_pt_position, post_pt_position, pre_pt_supervoxel_id, post_pt_supervoxel_id, pre_pt_root_id, post_pt_root_id, size, score}, or CSV with the positions as _x/_y/_z columns; X-Total-Count header",
    },
    RouteDoc {
        path: "/segmentation/api/v1/table/{table}/root/{root}/synaptic_partners",
        methods: &["GET"],
        access: VIEW,
        summary: "The roots the root shares synapses with at a timestamp, most synapses first.",
        query: &[DIRECTION, TIMESTAMP, SYNAPSE_FORMAT, OFFSET, LIMIT, INT64_AS_STR],
        body: Body::None,
        answers: "JSON records or CSV: partner_root_id, n_synapses, n_outputs, n_inputs, sum_size",
    },
    RouteDoc {
        path: "/segmentation/api/v1/table/{table}/synapses/connectivity",
        methods: &["GET", "POST"],
        access: VIEW,
        summary: "Synapse counts among a set of roots at a timestamp (row: presynaptic root, column: postsynaptic root).",
        query: &[
            q("root_ids", "string", "the roots, comma-separated (instead of the body)"),
            TIMESTAMP,
            SYNAPSE_FORMAT,
            INT64_AS_STR,
        ],
        body: Body::Json(ROOT_IDS),
        answers: "{\"root_ids\", \"counts\": [[n]], \"sizes\": [[sum]]}, or CSV pre_pt_root_id,post_pt_root_id,n_synapses,sum_size for the non-zero pairs",
    },
    RouteDoc {
        path: "/auth/api/v1/user/cache",
        methods: &["GET"],
        access: Access::Token,
        summary: "Who the token belongs to and its permissions (middle_auth's user cache shape).",
        query: &[TOKEN],
        body: Body::None,
        answers: "{\"id\", \"name\", \"permissions_v2\": {\"<table>\": [\"view\", ...]}}",
    },
    RouteDoc {
        path: "/healthz",
        methods: &["GET"],
        access: Access::Public,
        summary: "Liveness; with storage=true also lists the storage's tables (503 if unreachable).",
        query: &[q("storage", "boolean", "also check that the storage answers")],
        body: Body::None,
        answers: "{\"status\": \"ok\"}",
    },
    RouteDoc {
        path: "/metrics",
        methods: &["GET"],
        access: Access::Public,
        summary: "Prometheus metrics: request latency histograms and counts per route, edits by kind and outcome.",
        query: &[],
        body: Body::None,
        answers: "Prometheus text exposition format 0.0.4",
    },
    RouteDoc {
        path: "/openapi.json",
        methods: &["GET"],
        access: Access::Public,
        summary: "This description of the HTTP API (OpenAPI 3).",
        query: &[],
        body: Body::None,
        answers: "OpenAPI 3.0 JSON",
    },
];

static ACCESS: LazyLock<HashMap<&'static str, Access>> =
    LazyLock::new(|| ROUTES.iter().map(|r| (r.path, r.access)).collect());

/// The access rule of a route template. A route missing from the table fails closed: it
/// needs `admin` on its table, or any token if it has no table.
pub fn access_of(route: &str) -> Access {
    match ACCESS.get(route) {
        Some(a) => *a,
        None if route.contains("{table}") => Access::Table(Permission::Admin),
        None => Access::Token,
    }
}

/// `{name}` segments of a path template (`{*name}`, axum's rest-of-path, as `name`).
fn path_params(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|s| s.trim_start_matches('*'))
        .collect()
}

/// A route template as OpenAPI writes paths: `{*name}` becomes `{name}` (OpenAPI has no
/// rest-of-path parameters; the description says it may hold slashes).
pub fn openapi_path(route: &str) -> String {
    route.replace("{*", "{")
}

fn path_param_doc(name: &str) -> &'static str {
    match name {
        "table" => "the graph's table name",
        "node" => "a node ID (any layer)",
        "root" => "a root ID",
        "chunk" => "a layer-2 chunk ID",
        "path" => "a path under the data directory (may contain '/')",
        _ => "path parameter",
    }
}

fn operation(r: &RouteDoc, method: &str) -> Value {
    let mut params: Vec<Value> = path_params(r.path)
        .into_iter()
        .map(|name| {
            json!({
                "name": name, "in": "path", "required": true,
                "description": path_param_doc(name),
                "schema": { "type": "string" },
            })
        })
        .collect();
    params.extend(r.query.iter().map(|p| {
        json!({
            "name": p.name, "in": "query", "required": false,
            "description": p.description,
            "schema": { "type": p.kind },
        })
    }));
    let mut op = Map::new();
    op.insert("summary".into(), json!(r.summary));
    op.insert(
        "operationId".into(),
        json!(format!(
            "{}{}",
            method.to_ascii_lowercase(),
            r.path.replace(['/', '{', '}', '.', '*'], "_")
        )),
    );
    op.insert("parameters".into(), Value::Array(params));
    let body = match &r.body {
        Body::None => None,
        Body::Json(d) => Some(json!({
            "description": d,
            "content": { "application/json": { "schema": {} } },
        })),
        Body::JsonOrBinary(d) => Some(json!({
            "description": format!("{d}; or raw little-endian u64 IDs with is_binary=true"),
            "content": {
                "application/json": { "schema": {} },
                "application/octet-stream": { "schema": { "type": "string", "format": "binary" } },
            },
        })),
        Body::Binary(d) => Some(json!({
            "description": format!("{d} as raw little-endian u64s"),
            "content": {
                "application/octet-stream": { "schema": { "type": "string", "format": "binary" } },
            },
        })),
    };
    if let Some(b) = body {
        op.insert("requestBody".into(), b);
    }
    let (security, permission) = match r.access {
        Access::Public => (json!([]), None),
        Access::Token => (
            json!([{ "bearer": [] }, { "cookie": [] }, { "query": [] }]),
            None,
        ),
        Access::Table(p) => (
            json!([{ "bearer": [] }, { "cookie": [] }, { "query": [] }]),
            Some(p.as_str()),
        ),
    };
    op.insert("security".into(), security);
    if let Some(p) = permission {
        op.insert("x-permission".into(), json!(p));
    }
    let error = json!({ "$ref": "#/components/responses/Error" });
    let mut responses = Map::new();
    responses.insert("200".into(), json!({ "description": r.answers }));
    responses.insert("400".into(), error.clone());
    if r.access != Access::Public {
        responses.insert("401".into(), error.clone());
    }
    if matches!(r.access, Access::Table(_)) {
        responses.insert("403".into(), error.clone());
        responses.insert("404".into(), error.clone());
    }
    if r.access == EDIT {
        responses.insert("503".into(), error.clone());
    }
    responses.insert("500".into(), error);
    op.insert("responses".into(), Value::Object(responses));
    Value::Object(op)
}

/// The OpenAPI 3 document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for r in ROUTES {
        let item = paths
            .entry(openapi_path(r.path))
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(m) = item {
            for method in r.methods {
                m.insert(method.to_ascii_lowercase(), operation(r, method));
            }
        }
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "chunkedgraph",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "PyChunkedGraph's HTTP API (the segmentation routes Neuroglancer, \
                caveclient and cloud-volume use) plus operations routes. Errors are JSON \
                {\"code\", \"message\"}. With --auth-config, routes with a security \
                requirement need a token with the x-permission on the path's table.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer" },
                "cookie": { "type": "apiKey", "in": "cookie", "name": "middle_auth_token" },
                "query": { "type": "apiKey", "in": "query", "name": "middle_auth_token" },
            },
            "responses": {
                "Error": {
                    "description": "an error",
                    "content": { "application/json": { "schema": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {
                            "code": { "type": "integer" },
                            "message": { "type": "string" },
                        },
                    } } },
                },
            },
        },
    })
}

static DOCUMENT: LazyLock<String> = LazyLock::new(|| format!("{}\n", document()));

/// `GET /openapi.json`.
pub async fn openapi_json() -> Response {
    super::body::json_text(DOCUMENT.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_described_once_with_its_path_parameters() {
        let doc = document();
        let mut seen = std::collections::HashSet::new();
        for r in ROUTES {
            assert!(seen.insert(r.path), "{} listed twice", r.path);
            for m in r.methods {
                let op = &doc["paths"][openapi_path(r.path)][m.to_ascii_lowercase()];
                assert!(op.is_object(), "{m} {} missing", r.path);
                let names: Vec<&str> = op["parameters"]
                    .as_array()
                    .expect("parameters")
                    .iter()
                    .filter(|p| p["in"] == "path")
                    .filter_map(|p| p["name"].as_str())
                    .collect();
                assert_eq!(names, path_params(r.path));
            }
        }
    }

    #[test]
    fn edits_need_edit_and_unknown_routes_fail_closed() {
        for edit in ["merge", "split", "undo", "redo"] {
            assert_eq!(
                access_of(&format!("/segmentation/api/v1/table/{{table}}/{edit}")),
                Access::Table(Permission::Edit)
            );
        }
        assert_eq!(
            access_of("/segmentation/api/v1/table/{table}/node/{node}/root"),
            Access::Table(Permission::View)
        );
        assert_eq!(access_of("/healthz"), Access::Public);
        assert_eq!(
            access_of("/segmentation/api/v1/table/{table}/new_thing"),
            Access::Table(Permission::Admin)
        );
        assert_eq!(access_of("/new_thing"), Access::Token);
    }
}
