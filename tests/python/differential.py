"""One scenario with the official google-cloud-bigtable client, printed as canonical JSON.

Run against any Bigtable emulator through BIGTABLE_EMULATOR_HOST; run_differential.py runs it
against Google's emulator and ours and diffs the two outputs.
"""

import datetime
import json
import os
import sys

from google.cloud import bigtable
from google.cloud.bigtable import column_family, row_filters as rf
from google.cloud.bigtable.row_set import RowRange, RowSet

PROJECT = "differential"
INSTANCE = "i"
SERVER_TIME_CUTOFF = 10**12  # scenario timestamps are tiny; larger ones are server-assigned

out = []


def record(step, value):
    out.append({"step": step, "result": value})


def ts(ms):
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc)


def canon_row(row):
    if row is None:
        return None
    fams = {}
    for fam in sorted(row.cells):
        cols = {}
        for qual in sorted(row.cells[fam]):
            cells = []
            for c in row.cells[fam][qual]:
                t = c.timestamp_micros
                cells.append([t if t < SERVER_TIME_CUTOFF else "server", c.value.hex(), list(c.labels)])
            cols[qual.hex()] = cells
        fams[fam] = cols
    return {"key": row.row_key.hex(), "families": fams}


def read(table, step, **kw):
    try:
        rows = [canon_row(r) for r in table.read_rows(**kw)]
        record(step, rows)
    except Exception as e:  # both servers must fail alike; codes differ, so only "error" counts
        record(step, "error")


def attempt(step, fn):
    try:
        value = fn()
    except Exception:
        record(step, "error")
        return
    if value is None:
        value = "ok"
    elif hasattr(value, "code"):  # DirectRow.commit returns a google.rpc.Status
        value = "ok" if value.code == 0 else "error"
    record(step, value)


def scenario():
    client = bigtable.Client(project=PROJECT, admin=True)
    instance = client.instance(INSTANCE)
    table = instance.table("diff")
    table.create(
        column_families={
            "cf1": None,
            "cf2": column_family.MaxVersionsGCRule(100),
            "aged": column_family.MaxAgeGCRule(datetime.timedelta(days=3650 * 100)),
            "both": column_family.GCRuleUnion(
                [column_family.MaxVersionsGCRule(50), column_family.MaxAgeGCRule(datetime.timedelta(days=365 * 100))]
            ),
            "either": column_family.GCRuleIntersection(
                [column_family.MaxVersionsGCRule(50), column_family.MaxAgeGCRule(datetime.timedelta(days=365 * 100))]
            ),
        }
    )
    record("list tables", sorted(t.table_id for t in instance.list_tables()))
    record("column families", sorted(table.list_column_families()))

    for i, key in enumerate([b"a", b"b", b"c", b"d", b"e"]):
        row = table.direct_row(key)
        row.set_cell("cf1", b"x", f"v{i}".encode(), timestamp=ts(1))
        row.set_cell("cf1", b"y", b"yy", timestamp=ts(2))
        row.set_cell("cf2", b"z", b"zz", timestamp=ts(3))
        row.set_cell("both", b"w", b"ww", timestamp=ts(4))
        attempt(f"direct row {key!r}", row.commit)
    row = table.direct_row(b"a")
    row.set_cell("cf1", b"x", b"newest", timestamp=ts(9))
    row.set_cell("cf1", b"x", b"middle", timestamp=ts(5))
    row.commit()
    row = table.direct_row(b"server-time")
    row.set_cell("cf1", b"now", b"t")
    row.commit()

    batch = []
    for i in range(40):
        r = table.direct_row(f"batch{i:03d}".encode())
        r.set_cell("cf1", b"n", str(i).encode(), timestamp=ts(1))
        batch.append(r)
    statuses = table.mutate_rows(batch)
    record("mutate_rows statuses", [s.code for s in statuses])

    bad = table.direct_row(b"bad")
    bad.set_cell("no-such-family", b"q", b"v", timestamp=ts(1))
    attempt("unknown family fails", bad.commit)

    read(table, "full scan")
    record("read_row a", canon_row(table.read_row(b"a")))
    record("read_row missing", canon_row(table.read_row(b"missing")))
    rs = RowSet()
    rs.add_row_key(b"c")
    rs.add_row_key(b"a")
    rs.add_row_range(RowRange(start_key=b"batch010", end_key=b"batch013"))
    rs.add_row_range(RowRange(start_key=b"batch012", end_key=b"batch015", end_inclusive=True))
    read(table, "row set", row_set=rs)
    rs = RowSet()
    rs.add_row_range_with_prefix("batch02")
    read(table, "prefix", row_set=rs)
    read(table, "limit", limit=3)
    read(table, "start and end keys", start_key=b"b", end_key=b"d")

    filters = {
        "latest only": rf.CellsColumnLimitFilter(1),
        "family regex": rf.FamilyNameRegexFilter("cf[12]"),
        "qualifier regex": rf.ColumnQualifierRegexFilter(b"x"),
        "value regex": rf.ValueRegexFilter(b"v[13]"),
        "row key regex": rf.RowKeyRegexFilter(b"batch00[0-4]"),
        "column range": rf.ColumnRangeFilter("cf1", start_column=b"x", end_column=b"y", inclusive_end=False),
        "timestamp range": rf.TimestampRangeFilter(rf.TimestampRange(start=ts(2), end=ts(6))),
        "value range": rf.ValueRangeFilter(start_value=b"v1", end_value=b"v3"),
        "strip value": rf.StripValueTransformerFilter(True),
        "cells per row limit in a family": rf.RowFilterChain(
            [rf.FamilyNameRegexFilter("cf1"), rf.CellsRowLimitFilter(2)]
        ),
        "cells per row offset in a family": rf.RowFilterChain(
            [rf.FamilyNameRegexFilter("cf1"), rf.CellsRowOffsetFilter(1)]
        ),
        "chain": rf.RowFilterChain([rf.FamilyNameRegexFilter("cf1"), rf.CellsColumnLimitFilter(1)]),
        "union with labels": rf.RowFilterUnion(
            [
                rf.RowFilterChain([rf.ColumnQualifierRegexFilter(b"y"), rf.ApplyLabelFilter("why")]),
                rf.RowFilterChain([rf.FamilyNameRegexFilter("cf2"), rf.ApplyLabelFilter("two")]),
            ]
        ),
        "union keeps duplicates": rf.RowFilterUnion([rf.ColumnQualifierRegexFilter(b"x"), rf.FamilyNameRegexFilter("cf1")]),
        "condition true": rf.ConditionalRowFilter(
            rf.ValueRegexFilter(b"newest"), true_filter=rf.FamilyNameRegexFilter("cf2"), false_filter=rf.BlockAllFilter(True)
        ),
        "condition false": rf.ConditionalRowFilter(
            rf.ValueRegexFilter(b"nothing"), true_filter=rf.BlockAllFilter(True), false_filter=rf.ColumnQualifierRegexFilter(b"y")
        ),
        "block all": rf.BlockAllFilter(True),
        "pass all": rf.PassAllFilter(True),
    }
    for name, f in filters.items():
        read(table, f"filter {name}", filter_=f)

    # Deletes.
    row = table.direct_row(b"a")
    row.delete_cell("cf1", b"x", time_range=rf.TimestampRange(start=ts(5), end=ts(10)))
    row.commit()
    row = table.direct_row(b"b")
    row.delete_cells("cf1", [b"y"])
    row.commit()
    row = table.direct_row(b"c")
    row.delete_cells("cf2", row.ALL_COLUMNS)
    row.commit()
    row = table.direct_row(b"d")
    row.delete()
    row.commit()
    read(table, "after deletes", filter_=rf.FamilyNameRegexFilter("cf."))

    # Check-and-mutate.
    for name, key, f in [
        ("predicate matches", b"a", rf.ValueRegexFilter(b"v0")),
        ("predicate misses", b"a", rf.ValueRegexFilter(b"zzz")),
        ("no predicate on existing row", b"b", None),
        ("no predicate on missing row", b"nothere", None),
    ]:
        row = table.conditional_row(key, filter_=f)
        row.set_cell("cf1", b"cam", b"true", timestamp=ts(1), state=True)
        row.set_cell("cf1", b"cam", b"false", timestamp=ts(1), state=False)
        attempt(f"conditional row, {name}", row.commit)
    read(table, "after conditional rows", filter_=rf.ColumnQualifierRegexFilter(b"cam"))

    # Read-modify-write; server timestamps are not compared.
    def rmw(key, ops):
        row = table.append_row(key)
        for kind, qual, arg in ops:
            if kind == "inc":
                row.increment_cell_value("cf1", qual, arg)
            else:
                row.append_cell_value("cf1", qual, arg)
        result = row.commit()
        return {
            fam: {q.hex(): [v.hex() for v, _ in cells] for q, cells in sorted(cols.items())}
            for fam, cols in sorted(result.items())
        }

    attempt("increment missing", lambda: rmw(b"ctr", [("inc", b"n", 5)]))
    attempt("increment twice", lambda: rmw(b"ctr", [("inc", b"n", -2), ("inc", b"n", 10)]))
    attempt("append", lambda: rmw(b"ctr", [("app", b"s", b"ab"), ("app", b"s", b"cd")]))
    attempt("increment a non-counter fails", lambda: rmw(b"a", [("inc", b"y", 1)]))
    read(table, "counter row", row_set=_keys([b"ctr"]), filter_=rf.CellsColumnLimitFilter(1))

    samples = list(table.sample_row_keys())
    record("sample_row_keys answered", len(samples) > 0)

    table.drop_by_prefix(b"batch")
    read(table, "after drop by prefix", filter_=rf.CellsColumnLimitFilter(1))
    table.truncate()
    read(table, "after truncate")
    table.delete()
    record("tables after delete", sorted(t.table_id for t in instance.list_tables()))


def _keys(keys):
    rs = RowSet()
    for k in keys:
        rs.add_row_key(k)
    return rs


if __name__ == "__main__":
    if not os.environ.get("BIGTABLE_EMULATOR_HOST"):
        sys.exit("set BIGTABLE_EMULATOR_HOST to the emulator's host:port")
    scenario()
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    print()
