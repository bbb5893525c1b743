"""The differential scenario: one fixed sequence of calls with the official Python client.

Usage: BIGTABLE_EMULATOR_HOST=127.0.0.1:PORT python differential.py [--verbose]

It drives whatever Bigtable emulator BIGTABLE_EMULATOR_HOST names through
`google-cloud-bigtable` (the classic `Client`/`Table` API, its newer data client and, for
reverse scans, its generated GAPIC layer) and prints one canonical JSON document on stdout.
run_differential.py runs it against Google's emulator and ours and diffs the two documents.

What makes the output comparable between servers:
- column families within a row are sorted by name (Google's emulator returns them in random
  order); qualifiers and cells keep the server's order, except that cells of one column with
  the same timestamp (an interleave's copies) are sorted, since their order is unspecified;
- every explicit timestamp is millisecond-aligned and lies in 2021; a timestamp the server
  chose (a write at -1, a read-modify-write) prints as "server";
- bytes print as text when they are printable ASCII and as "hex:..." otherwise; values over
  256 bytes print as their length and SHA-256;
- a failed call prints as {"error": true}: Google's emulator answers many errors with UNKNOWN
  or INTERNAL where Cloud Bigtable answers INVALID_ARGUMENT or NOT_FOUND, so codes are not
  compared (--verbose prints them on stderr).

Left out on purpose, because Google's emulator is known to differ from Cloud Bigtable there:
reads that depend on garbage collection (it never collects on write or read; a
ModifyColumnFamilies starts a collection in the background, seconds later), the contents of a row after a mutation that failed part-way (it applies the
mutations before the bad one), the number and offsets of sample_row_keys, and the versions
a read-modify-write leaves behind (it overwrites a cell written in the same millisecond).
"""

import base64
import datetime
import hashlib
import json
import os
import sys
import time
import traceback

from google.api_core import exceptions as gexc
from google.cloud import bigtable
from google.cloud.bigtable import column_family as cf
from google.cloud.bigtable import row_filters as rf
from google.cloud.bigtable.data.exceptions import FailedMutationEntryError
from google.cloud.bigtable.row_set import RowRange, RowSet

PROJECT = "differential"
INSTANCE = "scenario"
MAIN = "diff-main"
ADMIN = "diff-admin"
SPLIT = "diff-split"
MODERN = "diff-modern"
ALL_TABLES = (MAIN, ADMIN, SPLIT, MODERN)

UTC = datetime.timezone.utc
BASE = datetime.datetime(2021, 1, 1, tzinfo=UTC)
BASE_MICROS = 1609459200 * 1_000_000
# Anything at or past this came from the server's clock, not from the scenario.
SERVER_TIME_FROM = 1672531200 * 1_000_000  # 2023-01-01

VERBOSE = "--verbose" in sys.argv


def ts(ms):
    """An explicit, millisecond-aligned timestamp: BASE + ms."""
    return BASE + datetime.timedelta(milliseconds=ms)


def micros(ms):
    return BASE_MICROS + ms * 1000


# ---------------------------------------------------------------------------------------------
# Canonical forms


def enc(b):
    """Bytes as JSON: printable ASCII as itself, anything else (or a 'hex:' lookalike) as hex."""
    if isinstance(b, str):
        b = b.encode()
    b = bytes(b)
    if len(b) > 256:
        return {"len": len(b), "sha256": hashlib.sha256(b).hexdigest()}
    if all(0x20 <= c < 0x7F for c in b) and not b.startswith(b"hex:"):
        return b.decode("ascii")
    return "hex:" + b.hex()


def canon_ts(t):
    return "server" if t >= SERVER_TIME_FROM else t


def canon_cells(cells):
    """cells: [(timestamp_micros, value, labels)] in server order."""
    out, i = [], 0
    while i < len(cells):
        j = i
        while j < len(cells) and cells[j][0] == cells[i][0]:
            j += 1
        group = [[canon_ts(t), enc(v), sorted(labels)] for t, v, labels in cells[i:j]]
        out.extend(sorted(group, key=lambda c: json.dumps(c, sort_keys=True)))
        i = j
    return out


def canon_flat(key, cells):
    """key plus [(family, qualifier, timestamp_micros, value, labels)] in server order."""
    fams = {}
    for fam, qual, t, value, labels in cells:
        cols = fams.setdefault(fam, {})
        cols.setdefault(bytes(qual), []).append((t, bytes(value), list(labels)))
    # "key" sorts before "values", so a row's key leads its JSON line.
    return {
        "key": enc(key),
        "values": [
            [fam, [[enc(q), canon_cells(cs)] for q, cs in fams[fam].items()]] for fam in sorted(fams)
        ],
    }


def canon_row(row):
    """A classic-client PartialRowData (or None)."""
    if row is None:
        return None
    flat = []
    for fam, cols in row.cells.items():
        for qual, cells in cols.items():
            for c in cells:
                flat.append((fam, qual, c.timestamp_micros, c.value, c.labels))
    return canon_flat(row.row_key, flat)


def canon_data_row(row):
    """A data-client Row (or None)."""
    if row is None:
        return None
    flat = [(c.family, c.qualifier, c.timestamp_micros, c.value, c.labels) for c in row.cells]
    return canon_flat(row.row_key, flat)


def canon_gc(rule):
    if rule is None:
        return None
    if isinstance(rule, cf.MaxVersionsGCRule):
        return {"max_versions": rule.max_num_versions}
    if isinstance(rule, cf.MaxAgeGCRule):
        return {"max_age_s": rule.max_age.total_seconds()}
    if isinstance(rule, cf.GCRuleUnion):
        return {"union": [canon_gc(r) for r in rule.rules]}
    if isinstance(rule, cf.GCRuleIntersection):
        return {"intersection": [canon_gc(r) for r in rule.rules]}
    return {"unknown": repr(rule)}


def canon_families(table):
    return {name: canon_gc(fam.gc_rule) for name, fam in table.list_column_families().items()}


def canon_rmw(result):
    """append_row().commit(): {family: {qualifier: [(value, timestamp)]}}; timestamps are the server's."""
    return {
        fam: [[enc(q), [enc(v) for v, _ in cells]] for q, cells in sorted(cols.items())]
        for fam, cols in result.items()
    }


# ---------------------------------------------------------------------------------------------
# Recording


class Recorder:
    def __init__(self):
        self.steps = []
        self.names = set()

    def step(self, name, fn):
        """Runs fn and records its canonical result, or {"error": true} if it raised."""
        if name in self.names:
            raise AssertionError(f"duplicate step name {name!r}")
        self.names.add(name)
        started = time.monotonic()
        try:
            result = fn()
        except (gexc.GoogleAPICallError, gexc.RetryError, ValueError, ExceptionGroup, FailedMutationEntryError) as e:
            if VERBOSE:
                print(f"[{name}] {type(e).__name__}: {e}", file=sys.stderr)
            result = {"error": True}
        if VERBOSE:
            print(f"[{name}] {time.monotonic() - started:.2f} s", file=sys.stderr)
        self.steps.append({"step": name, "result": result})
        return result

    def dump(self):
        # One step per block, one row per line: diffs stay short and readable.
        def compact(v):
            return json.dumps(v, sort_keys=True, separators=(",", ":"))

        lines = ["["]
        for i, s in enumerate(self.steps):
            r = s["result"]
            if isinstance(r, list) and r:
                body = "[\n" + ",\n".join("  " + compact(x) for x in r) + "\n ]"
            else:
                body = compact(r)
            comma = "," if i + 1 < len(self.steps) else ""
            lines.append(f'{{"step":{json.dumps(s["step"])},\n "result":{body}}}{comma}')
        lines.append("]")
        return "\n".join(lines)


def status_ok(status):
    """DirectRow.commit() / mutate_rows() return google.rpc.Status messages."""
    return "ok" if status.code == 0 else {"error": True}


def status_counts(statuses):
    counts = {}
    for st in statuses:
        k = "ok" if st.code == 0 else "error"
        counts[k] = counts.get(k, 0) + 1
    return counts


def commit(row):
    return status_ok(row.commit())


def read(table, **kw):
    return [canon_row(r) for r in table.read_rows(**kw)]


def keys_of(table, **kw):
    return [enc(r.row_key) for r in table.read_rows(**kw)]


def row_set(keys=(), ranges=(), prefixes=()):
    rs = RowSet()
    for k in keys:
        rs.add_row_key(k)
    for r in ranges:
        rs.add_row_range(r)
    for p in prefixes:
        rs.add_row_range_with_prefix(p.decode())  # the client wants str here
    return rs


# ---------------------------------------------------------------------------------------------
# The scenario


def scenario(rec):
    client = bigtable.Client(project=PROJECT, admin=True)
    instance = client.instance(INSTANCE)
    # Leftovers from an earlier run against the same server would change list_tables.
    for t in instance.list_tables():
        if t.table_id in ALL_TABLES:
            t.delete()

    main = instance.table(MAIN)
    admin_steps(rec, instance, main)
    write_steps(rec, main)
    read_steps(rec, instance, main)
    filter_steps(rec, main)
    reverse_steps(rec, client, main)
    delete_steps(rec, main)
    conditional_steps(rec, main)
    read_modify_write_steps(rec, main)
    modern_client_steps(rec, instance)
    end_steps(rec, instance, main)


def admin_steps(rec, instance, main):
    century = datetime.timedelta(days=36500)
    rec.step(
        "create table with GC rules",
        lambda: main.create(
            column_families={
                "cf1": None,
                "cf2": cf.MaxVersionsGCRule(5),
                "aged": cf.MaxAgeGCRule(century),
                "union": cf.GCRuleUnion([cf.MaxVersionsGCRule(4), cf.MaxAgeGCRule(century)]),
                "inter": cf.GCRuleIntersection(
                    [cf.MaxVersionsGCRule(2), cf.MaxAgeGCRule(datetime.timedelta(hours=36))]
                ),
                "nested": cf.GCRuleUnion(
                    [
                        cf.GCRuleIntersection(
                            [cf.MaxVersionsGCRule(3), cf.MaxAgeGCRule(datetime.timedelta(seconds=90))]
                        ),
                        cf.MaxVersionsGCRule(6),
                    ]
                ),
            }
        ),
    )
    rec.step("column families of the new table", lambda: canon_families(main))
    rec.step("create an existing table fails", lambda: main.create())
    rec.step("exists", lambda: [main.exists(), instance.table("diff-nope").exists()])

    # Family changes happen on a table with no data: Google's emulator runs GC on
    # ModifyColumnFamilies, which would make later reads of GC'd families incomparable.
    admin = instance.table(ADMIN)
    rec.step("create table without families", lambda: admin.create())
    rec.step("no families yet", lambda: canon_families(admin))
    rec.step("add family with max versions", lambda: admin.column_family("f1", cf.MaxVersionsGCRule(2)).create())
    rec.step("add family without rule", lambda: admin.column_family("f2").create())
    rec.step(
        "add family with intersection",
        lambda: admin.column_family(
            "f3", cf.GCRuleIntersection([cf.MaxVersionsGCRule(1), cf.MaxAgeGCRule(datetime.timedelta(minutes=5))])
        ).create(),
    )
    rec.step(
        "update family rule",
        lambda: admin.column_family("f1", cf.MaxAgeGCRule(datetime.timedelta(seconds=60))).update(),
    )
    rec.step("add an existing family fails", lambda: admin.column_family("f2").create())
    rec.step("families after changes", lambda: canon_families(admin))
    rec.step("drop family", lambda: admin.column_family("f2").delete())
    rec.step("families after drop", lambda: canon_families(admin))

    split = instance.table(SPLIT)
    rec.step(
        "create table with split keys",
        lambda: split.create(initial_split_keys=[b"g", b"p"], column_families={"f": None}),
    )
    rec.step("list tables", lambda: sorted(t.table_id for t in instance.list_tables()))
    rec.step("delete table", lambda: split.delete())
    rec.step("list tables after delete", lambda: sorted(t.table_id for t in instance.list_tables()))
    rec.step("read a deleted table fails", lambda: read(split))


def write_steps(rec, main):
    # user#1..user#5: the rows the read and filter steps look at.
    for i in range(1, 6):
        row = main.direct_row(f"user#{i}".encode())
        row.set_cell("cf1", b"name", f"name-{i}".encode(), timestamp=ts(10))
        row.set_cell("cf1", b"city", ["oslo", "lima", "rome", "kyiv", "lima"][i - 1], timestamp=ts(10))
        row.set_cell("cf2", b"score", i * 7, timestamp=ts(20))  # an int becomes 8 bytes big-endian
        row.set_cell("aged", b"seen", b"yes" if i % 2 else b"no", timestamp=ts(30))
        if i % 2 == 1:
            row.set_cell("union", b"\x00bin\xff", bytes(range(i * 3)), timestamp=ts(40))
        if i in (2, 3):
            row.set_cell("inter", b"", b"empty qualifier", timestamp=ts(50))
        rec.step(f"write user#{i}", lambda row=row: commit(row))

    # Versions: cf1 has no GC rule; cf2 keeps 5, so write at most 5.
    row = main.direct_row(b"user#1")
    for v in range(1, 7):
        row.set_cell("cf1", b"hist", f"h{v}".encode(), timestamp=ts(100 * v))
    for v in range(1, 5):
        row.set_cell("cf2", b"hist", f"s{v}".encode(), timestamp=ts(100 * v))
    row.set_cell("cf1", b"name", b"renamed", timestamp=ts(11))
    row.set_cell("cf1", b"name", b"overwritten", timestamp=ts(10))  # same timestamp: replaces
    rec.step("write versions", lambda: commit(row))

    row = main.direct_row(b"user#2")
    row.set_cell("cf1", b"epoch", b"at zero", timestamp=datetime.datetime(1970, 1, 1, tzinfo=UTC))
    row.set_cell("cf1", b"text", "unicode \u00e9\u4e16")  # server time
    row.set_cell("cf1", b"empty", b"", timestamp=ts(1))
    rec.step("write server time, epoch, empty value", lambda: commit(row))

    big = main.direct_row(b"user#4")
    big.set_cell("cf1", b"blob", bytes(i % 251 for i in range(3 * 1024 * 1024)), timestamp=ts(60))
    rec.step("write a 3 MiB value", lambda: commit(big))

    bad = main.direct_row(b"zzz-bad")
    bad.set_cell("no-such-family", b"q", b"v", timestamp=ts(1))
    rec.step("write to an unknown family fails", lambda: commit(bad))

    batch = []
    for i in range(300):
        r = main.direct_row(f"batch#{i:04d}".encode())
        r.set_cell("cf1", b"n", str(i).encode(), timestamp=ts(1))
        if i % 3 == 0:
            r.set_cell("cf2", b"tri", i, timestamp=ts(2))
        batch.append(r)
    rec.step("mutate_rows 300 rows", lambda: status_counts(main.mutate_rows(batch)))

    mixed = []
    for key, fam in [(b"mixed#1", "cf1"), (b"mixed#2", "nope"), (b"mixed#3", "cf2")]:
        r = main.direct_row(key)
        r.set_cell(fam, b"q", b"v", timestamp=ts(1))
        mixed.append(r)
    # retry=None: Google's emulator answers the bad entry with INTERNAL, which the client's
    # default policy retries for two minutes.
    rec.step("mutate_rows with one bad entry", lambda: [status_ok(s) for s in main.mutate_rows(mixed, retry=None)])

    bulk = []
    for i in range(2000):
        r = main.direct_row(f"bulk#{i:05d}".encode())
        r.set_cell("cf1", b"v", f"{i * i}".encode(), timestamp=ts(i))
        bulk.append(r)
    rec.step("mutate_rows 2000 rows", lambda: status_counts(main.mutate_rows(bulk)))


def read_steps(rec, instance, main):
    users = row_set(prefixes=[b"user#"])
    rec.step("read_row user#1", lambda: canon_row(main.read_row(b"user#1")))
    rec.step("read_row user#4 (3 MiB value)", lambda: canon_row(main.read_row(b"user#4")))
    rec.step("read_row missing", lambda: canon_row(main.read_row(b"user#9")))
    rec.step(
        "read_row with filter",
        lambda: canon_row(main.read_row(b"user#1", filter_=rf.CellsColumnLimitFilter(2))),
    )
    rec.step(
        "read_row with filter that matches nothing",
        lambda: canon_row(main.read_row(b"user#1", filter_=rf.ValueRegexFilter(b"nothing"))),
    )
    rec.step("read all user rows", lambda: read(main, row_set=users))
    rec.step("keys of a full scan", lambda: keys_of(main, filter_=rf.StripValueTransformerFilter(True)))
    rec.step("full scan of bulk rows", lambda: read(main, row_set=row_set(prefixes=[b"bulk#"])))
    rec.step("start and end key", lambda: keys_of(main, start_key=b"batch#0290", end_key=b"bulk#00005"))
    rec.step(
        "end key inclusive",
        lambda: keys_of(main, start_key=b"batch#0298", end_key=b"bulk#00001", end_inclusive=True),
    )
    rec.step("start key only", lambda: keys_of(main, start_key=b"user#3"))
    rec.step("end key only", lambda: keys_of(main, end_key=b"batch#0003"))
    rec.step("limit 3", lambda: keys_of(main, limit=3))
    rec.step("limit 1 with start key", lambda: keys_of(main, start_key=b"m", limit=1))
    rec.step("limit larger than table", lambda: len(keys_of(main, limit=100000)))
    rec.step(
        "row set of keys, unsorted, duplicate and missing",
        lambda: keys_of(main, row_set=row_set(keys=[b"user#3", b"batch#0007", b"user#3", b"absent", b"user#1"])),
    )
    rec.step(
        "row set of overlapping ranges and keys",
        lambda: keys_of(
            main,
            row_set=row_set(
                keys=[b"batch#0100", b"batch#0012"],
                ranges=[
                    RowRange(start_key=b"batch#0010", end_key=b"batch#0013"),
                    RowRange(start_key=b"batch#0012", end_key=b"batch#0015", end_inclusive=True),
                    RowRange(start_key=b"user#2", end_key=b"user#4", start_inclusive=False),
                ],
            ),
        ),
    )
    rec.step(
        "row range with open end",
        lambda: keys_of(main, row_set=row_set(ranges=[RowRange(start_key=b"user#4")])),
    )
    rec.step(
        "row range with open start",
        lambda: keys_of(main, row_set=row_set(ranges=[RowRange(end_key=b"batch#0002", end_inclusive=True)])),
    )
    rec.step(
        "empty row range",
        lambda: keys_of(main, row_set=row_set(ranges=[RowRange(start_key=b"user#2", end_key=b"user#2")])),
    )
    rec.step("prefixes", lambda: keys_of(main, row_set=row_set(prefixes=[b"batch#029", b"bulk#0199"])))
    rec.step("prefix with no rows", lambda: keys_of(main, row_set=row_set(prefixes=[b"nothing#"])))
    rec.step(
        "row set with limit",
        lambda: keys_of(main, row_set=row_set(prefixes=[b"batch#01", b"user#"]), limit=4),
    )
    rec.step(
        "limit counts only rows left after the filter",
        lambda: read(main, row_set=users, filter_=rf.ValueRegexFilter(b"lima"), limit=1),
    )
    rec.step("read from a missing table fails", lambda: read(instance.table("diff-nope")))


def filter_steps(rec, main):
    users = row_set(prefixes=[b"user#"])
    F = rf
    filters = [
        ("pass all", F.PassAllFilter(True)),
        ("block all", F.BlockAllFilter(True)),
        ("latest version per column", F.CellsColumnLimitFilter(1)),
        ("two versions per column", F.CellsColumnLimitFilter(2)),
        ("family regex", F.FamilyNameRegexFilter("cf[12]")),
        ("family regex alternation", F.FamilyNameRegexFilter("aged|inter")),
        ("family regex is anchored", F.FamilyNameRegexFilter("cf")),
        ("qualifier regex", F.ColumnQualifierRegexFilter(b"n.*")),
        ("qualifier regex with byte escapes", F.ColumnQualifierRegexFilter(b"\\x00bin.")),
        ("empty qualifier regex", F.ColumnQualifierRegexFilter(b"")),
        ("value regex", F.ValueRegexFilter(b"name-[13]|lima")),
        ("value regex is anchored", F.ValueRegexFilter(b"ima")),
        ("value regex on binary", F.ValueRegexFilter(b"\\x00\\x01.*")),
        ("value regex high byte escape", F.ValueRegexFilter(b"(?s)\\x00\\x01\\x02.*\\x0e")),
        ("exact value", F.ExactValueFilter(b"rome")),
        ("exact int value", F.ExactValueFilter(21)),
        ("row key regex", F.RowKeyRegexFilter(b"user#[24]")),
        ("row key regex is anchored", F.RowKeyRegexFilter(b"user")),
        ("column range closed", F.ColumnRangeFilter("cf1", start_column=b"city", end_column=b"hist")),
        (
            "column range open both ends",
            F.ColumnRangeFilter("cf1", start_column=b"city", end_column=b"name", inclusive_start=False, inclusive_end=False),
        ),
        ("column range from", F.ColumnRangeFilter("cf1", start_column=b"hist")),
        ("column range until", F.ColumnRangeFilter("cf1", end_column=b"empty", inclusive_end=False)),
        ("column range whole family", F.ColumnRangeFilter("cf2")),
        ("timestamp range", F.TimestampRangeFilter(F.TimestampRange(start=ts(20), end=ts(300)))),
        ("timestamp range start only", F.TimestampRangeFilter(F.TimestampRange(start=ts(400)))),
        ("timestamp range end only", F.TimestampRangeFilter(F.TimestampRange(end=ts(11)))),
        ("value range", F.ValueRangeFilter(start_value=b"kyiv", end_value=b"oslo")),
        (
            "value range exclusive",
            F.ValueRangeFilter(start_value=b"kyiv", end_value=b"oslo", inclusive_start=False, inclusive_end=False),
        ),
        ("value range from", F.ValueRangeFilter(start_value=b"s")),
        ("strip value", F.StripValueTransformerFilter(True)),
        ("cells per row limit in one family", F.RowFilterChain([F.FamilyNameRegexFilter("cf1"), F.CellsRowLimitFilter(3)])),
        ("cells per row offset in one family", F.RowFilterChain([F.FamilyNameRegexFilter("cf1"), F.CellsRowOffsetFilter(2)])),
        (
            "offset then limit",
            F.RowFilterChain([F.FamilyNameRegexFilter("cf1"), F.CellsRowOffsetFilter(1), F.CellsRowLimitFilter(2)]),
        ),
        (
            "chain: family, latest, strip",
            F.RowFilterChain([F.FamilyNameRegexFilter("cf1"), F.CellsColumnLimitFilter(1), F.StripValueTransformerFilter(True)]),
        ),
        ("chain with block all", F.RowFilterChain([F.PassAllFilter(True), F.BlockAllFilter(True)])),
        (
            "interleave with labels",
            F.RowFilterUnion(
                [
                    F.RowFilterChain([F.FamilyNameRegexFilter("cf2"), F.ApplyLabelFilter("two")]),
                    F.RowFilterChain([F.ColumnQualifierRegexFilter(b"name|city"), F.ApplyLabelFilter("who")]),
                ]
            ),
        ),
        (
            "interleave keeps duplicates",
            F.RowFilterUnion(
                [
                    F.RowFilterChain([F.ColumnQualifierRegexFilter(b"name"), F.ApplyLabelFilter("a")]),
                    F.RowFilterChain([F.FamilyNameRegexFilter("cf1"), F.ApplyLabelFilter("b")]),
                    F.ColumnQualifierRegexFilter(b"name"),
                ]
            ),
        ),
        (
            "interleave of chains with limits",
            F.RowFilterUnion(
                [
                    F.RowFilterChain([F.FamilyNameRegexFilter("cf1"), F.ColumnQualifierRegexFilter(b"hist"), F.CellsColumnLimitFilter(2)]),
                    F.RowFilterChain([F.FamilyNameRegexFilter("cf2"), F.ColumnQualifierRegexFilter(b"hist"), F.CellsColumnLimitFilter(1)]),
                ]
            ),
        ),
        ("interleave with sink", F.RowFilterUnion([F.RowFilterChain([F.FamilyNameRegexFilter("aged"), F.SinkFilter(True)]), F.BlockAllFilter(True)])),
        (
            "condition true branch",
            F.ConditionalRowFilter(
                F.ValueRegexFilter(b"lima"),
                true_filter=F.FamilyNameRegexFilter("cf2"),
                false_filter=F.FamilyNameRegexFilter("aged"),
            ),
        ),
        (
            "condition without false branch",
            F.ConditionalRowFilter(F.ColumnQualifierRegexFilter(b"hist"), true_filter=F.CellsColumnLimitFilter(1)),
        ),
        (
            "condition without true branch",
            F.ConditionalRowFilter(F.ColumnQualifierRegexFilter(b"hist"), false_filter=F.StripValueTransformerFilter(True)),
        ),
        (
            "condition on a chain",
            F.ConditionalRowFilter(
                F.RowFilterChain([F.FamilyNameRegexFilter("aged"), F.ValueRegexFilter(b"yes")]),
                true_filter=F.RowFilterChain([F.FamilyNameRegexFilter("cf1"), F.ApplyLabelFilter("seen")]),
                false_filter=F.RowFilterChain([F.FamilyNameRegexFilter("aged"), F.ApplyLabelFilter("unseen")]),
            ),
        ),
        (
            "condition inside interleave",
            F.RowFilterUnion(
                [
                    F.ConditionalRowFilter(F.ValueRegexFilter(b"rome"), true_filter=F.ApplyLabelFilter("roman")),
                    F.RowFilterChain([F.FamilyNameRegexFilter("inter"), F.ApplyLabelFilter("inter")]),
                ]
            ),
        ),
    ]
    for name, f in filters:
        rec.step(f"filter: {name}", lambda f=f: read(main, row_set=users, filter_=f))
    rec.step(
        "filter on bulk rows: value regex",
        lambda: keys_of(main, row_set=row_set(prefixes=[b"bulk#"]), filter_=rf.ValueRegexFilter(b"1[0-9]*1")),
    )
    rec.step(
        "filter on bulk rows: timestamp range and limit",
        lambda: read(
            main,
            row_set=row_set(prefixes=[b"bulk#"]),
            filter_=rf.TimestampRangeFilter(rf.TimestampRange(start=ts(1500), end=ts(1510))),
            limit=5,
        ),
    )
    rec.step("invalid regex fails", lambda: read(main, filter_=rf.RowKeyRegexFilter(b"user#(")))


def gapic_reverse(client, main, **request):
    """A reverse scan through the generated client: the classic and data clients in this
    version have no `reversed` option. Servers refuse reverse scans unless the client says
    it supports them, in the bigtable-features header (FeatureFlags, base64url)."""
    from google.cloud.bigtable_v2.types import FeatureFlags

    flags = base64.urlsafe_b64encode(FeatureFlags.serialize(FeatureFlags(reverse_scans=True))).decode()
    stream = client.table_data_client.read_rows(
        request=dict(request, table_name=main.name, reversed=True),
        metadata=[("bigtable-features", flags)],
    )
    rows, cells = [], []
    key = fam = qual = None
    t, labels, value, partial = 0, [], b"", False
    for resp in stream:
        for ch in resp.chunks:
            if ch.reset_row:
                cells, partial = [], False
                continue
            if partial:
                value += ch.value
            else:
                if ch.row_key:
                    key = ch.row_key
                if "family_name" in ch:
                    fam = ch.family_name
                if "qualifier" in ch:
                    qual = ch.qualifier
                t, labels, value = ch.timestamp_micros, list(ch.labels), ch.value
            partial = ch.value_size > 0
            if not partial:
                cells.append((fam, qual, t, value, labels))
            if ch.commit_row:
                rows.append(canon_flat(key, cells))
                cells = []
    return rows


def reverse_steps(rec, client, main):
    rec.step(
        "reverse scan of a range",
        lambda: gapic_reverse(
            client,
            main,
            rows={"row_ranges": [{"start_key_closed": b"batch#0295", "end_key_open": b"bulk#00003"}]},
            filter={"cells_per_column_limit_filter": 1},
        ),
    )
    rec.step(
        "reverse scan with limit",
        lambda: gapic_reverse(client, main, rows_limit=4, filter={"strip_value_transformer": True}),
    )
    rec.step(
        "reverse scan of keys and ranges",
        lambda: gapic_reverse(
            client,
            main,
            rows={
                "row_keys": [b"user#2", b"batch#0001", b"user#5"],
                "row_ranges": [{"start_key_open": b"user#3", "end_key_closed": b"user#4"}],
            },
            filter={"family_name_regex_filter": "cf1|aged"},
        ),
    )


def delete_steps(rec, main):
    def mutate(key, build):
        row = main.direct_row(key)
        build(row)
        return commit(row)

    rec.step("delete one column", lambda: mutate(b"user#1", lambda r: r.delete_cell("cf1", b"city")))
    rec.step(
        "delete versions in a time range",
        lambda: mutate(b"user#1", lambda r: r.delete_cell("cf1", b"hist", time_range=rf.TimestampRange(start=ts(200), end=ts(500)))),
    )
    rec.step(
        "delete versions from a time on",
        lambda: mutate(b"user#1", lambda r: r.delete_cell("cf2", b"hist", time_range=rf.TimestampRange(start=ts(300)))),
    )
    rec.step(
        "delete versions before a time",
        lambda: mutate(b"user#1", lambda r: r.delete_cell("cf1", b"name", time_range=rf.TimestampRange(end=ts(11)))),
    )
    rec.step("delete listed columns", lambda: mutate(b"user#2", lambda r: r.delete_cells("cf1", [b"name", b"epoch", b"missing"])))
    rec.step("delete a whole family", lambda: mutate(b"user#3", lambda r: r.delete_cells("cf1", r.ALL_COLUMNS)))
    rec.step("delete a whole row", lambda: mutate(b"user#5", lambda r: r.delete()))
    rec.step("delete a missing row", lambda: mutate(b"user#77", lambda r: r.delete()))

    def delete_then_set(r):
        r.delete()
        r.set_cell("cf1", b"reborn", b"yes", timestamp=ts(5))

    rec.step("delete row then set, one mutation", lambda: mutate(b"user#4", delete_then_set))

    def set_then_delete_family(r):
        r.set_cell("cf2", b"gone", b"soon", timestamp=ts(5))
        r.delete_cells("cf2", r.ALL_COLUMNS)
        r.set_cell("cf2", b"kept", b"after", timestamp=ts(6))

    rec.step("set, delete family, set, one mutation", lambda: mutate(b"user#2", set_then_delete_family))
    rec.step("user rows after deletes", lambda: read(main, row_set=row_set(prefixes=[b"user#"])))
    rec.step("read_row of a deleted row", lambda: canon_row(main.read_row(b"user#5")))


def conditional_steps(rec, main):
    def cam(key, filt, true_ops=(), false_ops=()):
        row = main.conditional_row(key, filter_=filt)
        for state, ops in ((True, true_ops), (False, false_ops)):
            for op in ops:
                if op[0] == "set":
                    row.set_cell("cf1", op[1], op[2], timestamp=ts(7), state=state)
                elif op[0] == "del":
                    row.delete_cell("cf1", op[1], state=state)
                elif op[0] == "delrow":
                    row.delete(state=state)
        return row.commit()

    both = ([("set", b"branch", b"true")], [("set", b"branch", b"false")])
    rec.step("check-and-mutate, predicate matches", lambda: cam(b"user#2", rf.ValueRegexFilter(b"lima"), *both))
    rec.step("check-and-mutate, predicate misses", lambda: cam(b"user#3", rf.ValueRegexFilter(b"lima"), *both))
    rec.step("check-and-mutate, no predicate, row exists", lambda: cam(b"user#1", None, *both))
    rec.step("check-and-mutate, no predicate, row missing", lambda: cam(b"cam#new", None, *both))
    rec.step(
        "check-and-mutate, only true mutations, predicate misses",
        lambda: cam(b"user#1", rf.ValueRegexFilter(b"no such value"), [("set", b"never", b"x")]),
    )
    rec.step(
        "check-and-mutate, only false mutations, predicate misses",
        lambda: cam(b"cam#other", rf.PassAllFilter(True), (), [("set", b"created", b"by false branch")]),
    )
    rec.step(
        "check-and-mutate, chain predicate, delete on match",
        lambda: cam(
            b"user#1",
            rf.RowFilterChain([rf.FamilyNameRegexFilter("cf1"), rf.ColumnQualifierRegexFilter(b"hist")]),
            [("del", b"hist"), ("set", b"hist", b"replaced")],
            [("delrow",)],
        ),
    )
    rec.step(
        "check-and-mutate, delete row on miss",
        lambda: cam(b"cam#other", rf.ValueRegexFilter(b"nope"), [("set", b"x", b"y")], [("delrow",)]),
    )
    rec.step(
        "rows after check-and-mutate",
        lambda: read(main, row_set=row_set(prefixes=[b"user#", b"cam#"]), filter_=rf.FamilyNameRegexFilter("cf1")),
    )


def read_modify_write_steps(rec, main):
    def rmw(key, ops):
        row = main.append_row(key)
        for op, fam, qual, arg in ops:
            if op == "inc":
                row.increment_cell_value(fam, qual, arg)
            else:
                row.append_cell_value(fam, qual, arg)
        return canon_rmw(row.commit())

    seed = main.direct_row(b"counter#1")
    seed.set_cell("cf1", b"n", 40, timestamp=ts(1))
    seed.set_cell("cf1", b"s", b"abc", timestamp=ts(1))
    seed.set_cell("cf1", b"short", b"\x01\x02", timestamp=ts(1))
    rec.step("seed counter row", lambda: commit(seed))
    rec.step("increment an existing counter", lambda: rmw(b"counter#1", [("inc", "cf1", b"n", 2)]))
    rec.step("increment by a negative amount", lambda: rmw(b"counter#1", [("inc", "cf1", b"n", -50)]))
    rec.step("append to an existing value", lambda: rmw(b"counter#1", [("app", "cf1", b"s", b"def")]))
    rec.step(
        "several rules in one request",
        lambda: rmw(
            b"counter#1",
            [("inc", "cf1", b"n", 1), ("inc", "cf1", b"n", 10), ("app", "cf1", b"s", b"-"), ("app", "cf2", b"new", b"x")],
        ),
    )
    rec.step("increment a missing row", lambda: rmw(b"counter#2", [("inc", "cf1", b"n", 5)]))
    rec.step("append to a missing row", lambda: rmw(b"counter#3", [("app", "cf1", b"s", b"first")]))
    rec.step("increment past 2^63 wraps", lambda: rmw(b"counter#2", [("inc", "cf1", b"n", 2**63 - 1)]))
    rec.step("increment a value that is not 8 bytes fails", lambda: rmw(b"counter#1", [("inc", "cf1", b"short", 1)]))
    rec.step("append to an unknown family fails", lambda: rmw(b"counter#1", [("app", "nope", b"s", b"x")]))
    rec.step(
        "counter rows, latest versions",
        lambda: read(main, row_set=row_set(prefixes=[b"counter#"]), filter_=rf.CellsColumnLimitFilter(1)),
    )


def modern_client_steps(rec, instance):
    """The newer data client (google.cloud.bigtable.data), as new code is told to use."""
    from google.cloud.bigtable.data import (
        BigtableDataClient,
        DeleteAllFromFamily,
        DeleteAllFromRow,
        DeleteRangeFromColumn,
        ReadRowsQuery,
        RowMutationEntry,
        SetCell,
    )
    from google.cloud.bigtable.data import RowRange as DataRowRange
    from google.cloud.bigtable.data import row_filters as drf
    from google.cloud.bigtable.data.read_modify_write_rules import AppendValueRule, IncrementRule

    rec.step("data client: create table", lambda: instance.table(MODERN).create(column_families={"d": None, "e": None}))
    dc = BigtableDataClient(project=PROJECT)
    try:
        table = dc.get_table(INSTANCE, MODERN)

        def entries():
            out = []
            for i in range(50):
                ops = [SetCell("d", b"q", f"v{i}".encode(), timestamp_micros=micros(i))]
                if i % 5 == 0:
                    ops.append(SetCell("e", b"five", i, timestamp_micros=micros(1)))
                out.append(RowMutationEntry(f"m#{i:03d}".encode(), ops))
            return out

        rec.step("data client: bulk_mutate_rows", lambda: table.bulk_mutate_rows(entries()) or "ok")

        def batcher():
            with table.mutations_batcher(flush_limit_mutation_count=7) as b:
                for i in range(30):
                    b.append(RowMutationEntry(f"n#{i:03d}".encode(), [SetCell("d", b"b", b"batched", timestamp_micros=micros(2))]))
            return "ok"

        rec.step("data client: mutations_batcher", batcher)
        rec.step(
            "data client: mutate_row with several mutations",
            lambda: table.mutate_row(
                b"m#001",
                [
                    SetCell("d", b"r", b"1", timestamp_micros=micros(3)),
                    SetCell("d", b"r", b"2", timestamp_micros=micros(4)),
                    DeleteRangeFromColumn("d", b"r", start_timestamp_micros=micros(4), end_timestamp_micros=micros(5)),
                    DeleteAllFromFamily("e"),
                ],
            )
            or "ok",
        )
        rec.step("data client: mutate_row delete all", lambda: table.mutate_row(b"m#002", DeleteAllFromRow()) or "ok")

        def query(**kw):
            return [canon_data_row(r) for r in table.read_rows(ReadRowsQuery(**kw))]

        rec.step(
            "data client: read_rows query: keys, ranges, filter, limit",
            lambda: query(
                row_keys=[b"m#040", b"m#001", b"m#002"],
                row_ranges=[DataRowRange(b"m#010", b"m#013"), DataRowRange(b"n#028", None)],
                row_filter=drf.CellsColumnLimitFilter(1),
                limit=6,
            ),
        )
        rec.step("data client: read_rows query: all", lambda: query())
        rec.step("data client: read_row", lambda: canon_data_row(table.read_row(b"m#001")))
        rec.step("data client: read_row missing", lambda: canon_data_row(table.read_row(b"m#002")))
        rec.step("data client: row_exists", lambda: [table.row_exists(b"m#003"), table.row_exists(b"m#002"), table.row_exists(b"x")])
        rec.step(
            "data client: check_and_mutate_row true",
            lambda: table.check_and_mutate_row(
                b"m#005",
                drf.ValueRegexFilter(b"v5"),
                true_case_mutations=[SetCell("d", b"cam", b"T", timestamp_micros=micros(9))],
                false_case_mutations=[SetCell("d", b"cam", b"F", timestamp_micros=micros(9))],
            ),
        )
        rec.step(
            "data client: check_and_mutate_row false",
            lambda: table.check_and_mutate_row(
                b"m#006",
                drf.ValueRegexFilter(b"v5"),
                true_case_mutations=[SetCell("d", b"cam", b"T", timestamp_micros=micros(9))],
                false_case_mutations=[SetCell("d", b"cam", b"F", timestamp_micros=micros(9))],
            ),
        )
        rec.step(
            "data client: read_modify_write_row",
            lambda: canon_data_row(
                table.read_modify_write_row(b"m#007", [IncrementRule("e", b"ctr", 9), AppendValueRule("d", b"q", b"+")])
            ),
        )
        rec.step(
            "data client: rows after writes",
            lambda: query(row_keys=[b"m#005", b"m#006", b"m#007"], row_filter=drf.CellsColumnLimitFilter(1)),
        )

        def samples():
            s = table.sample_row_keys()
            return isinstance(s, list) and all(isinstance(k, bytes) and isinstance(o, int) for k, o in s)

        rec.step("data client: sample_row_keys answers", samples)
    finally:
        dc.close()


def end_steps(rec, instance, main):
    def samples():
        s = list(main.sample_row_keys())
        offsets = [x.offset_bytes for x in s]
        return {
            "answered": True,
            "well_formed": all(isinstance(x.row_key, bytes) for x in s) and offsets == sorted(offsets),
        }

    rec.step("sample_row_keys answers", samples)
    rec.step("drop rows by prefix", lambda: main.drop_by_prefix(b"bulk#"))
    rec.step("drop a prefix with no rows", lambda: main.drop_by_prefix(b"nothing#"))
    rec.step("keys after drop by prefix", lambda: keys_of(main, row_set=row_set(ranges=[RowRange(start_key=b"batch#0297", end_key=b"cam")])))
    rec.step("row count after drop by prefix", lambda: len(keys_of(main)))
    rec.step("truncate", lambda: main.truncate())
    rec.step("read after truncate", lambda: read(main))
    rec.step("families survive truncate", lambda: sorted(canon_families(main)))
    after = main.direct_row(b"after")
    after.set_cell("cf1", b"q", b"v", timestamp=ts(1))
    rec.step("write after truncate", lambda: commit(after))
    rec.step("read after write after truncate", lambda: read(main))
    rec.step("delete main table", lambda: main.delete())
    rec.step("tables at the end", lambda: sorted(t.table_id for t in instance.list_tables()))


def main():
    if not os.environ.get("BIGTABLE_EMULATOR_HOST"):
        sys.exit("set BIGTABLE_EMULATOR_HOST=host:port of the emulator to test")
    rec = Recorder()
    try:
        scenario(rec)
    except Exception:
        # A crash (not a recorded API error) is a failure of its own; show where.
        traceback.print_exc()
        print(f"scenario stopped after {len(rec.steps)} steps", file=sys.stderr)
        sys.exit(2)
    sys.stdout.write(rec.dump() + "\n")


if __name__ == "__main__":
    main()
