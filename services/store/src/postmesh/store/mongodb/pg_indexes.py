"""PostgreSQL indexes that let FerretDB 1.24 (PostgreSQL handler) serve the store's queries by an
index (ADR 0036).

FerretDB 1.24 pushes only top-level equalities on scalar fields down to PostgreSQL, as
``_jsonb -> 'field' @> 'value'``, while the indexes it creates for ``createIndexes`` are btree
indexes on ``(_jsonb -> 'field')``, which cannot answer ``@>``: every find, even by ``_id``, is a
sequential scan of the whole table (the explain plans in
tests/integration/test_store_explain_ferretdb.py show it). A GIN index on the same expression
does answer ``@>``; FerretDB neither knows nor minds it (its own metadata lists its indexes, and
PostgreSQL keeps the extra ones up to date and drops them with the table).

FerretDB offers no way to create such an index over the MongoDB protocol, so this module writes
the SQL for an operator to run against FerretDB's PostgreSQL database once the store has created
its collections (at its first start), and again after a new release adds a field here:

    python -m postmesh.store.mongodb.pg_indexes postmesh | psql "$FERRETDB_POSTGRESQL_URL"

It is idempotent (CREATE INDEX IF NOT EXISTS) and skips collections that do not exist yet. On
MongoDB proper none of this applies: the store's own indexes serve its queries there.
"""

from __future__ import annotations

import sys

# (collection, field): the equality conditions the store's queries lead with, per collection.
# ``_id`` for every document fetched by id; the rest for the queries scoped to a user or mailbox.
FIELDS: tuple[tuple[str, str], ...] = (
    ("store_users", "_id"),
    ("store_mailboxes", "_id"),
    ("store_mailboxes", "user"),
    ("store_subscriptions", "_id"),
    ("store_subscriptions", "user"),
    ("store_messages", "_id"),
    ("store_messages", "mailbox_id"),
    # With mailbox_id: one message by UID (snapshots.py), a BitmapAnd of two short lists
    # instead of re-checking every message of the mailbox.
    ("store_messages", "uid"),
    ("store_messages", "user"),
    ("store_deliveries", "_id"),
    ("store_delivered", "_id"),
    ("store_intents", "_id"),
    ("store_intents", "user"),
    ("store_quota_reservations", "_id"),
    ("store_quota_reservations", "user"),
    ("store_quota_leases", "_id"),
    ("store_blobs", "_id"),
    ("store_blob_chunks", "_id"),
    ("store_blob_chunks", "blob"),
    ("store_blob_refs", "_id"),
    ("store_blob_refs", "blob_id"),
    ("store_blob_index", "_id"),
    ("store_queue", "_id"),
    ("store_queue", "queue_id"),
    ("store_queue_transitions", "_id"),
    ("store_maildrop_locks", "_id"),
    ("store_maildrop_locks", "user"),
)
PREFIX = "postmesh_gin_"  # names of the indexes made here (FerretDB's own never start so)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def index_name(table: str, field: str) -> str:
    """At most 63 bytes (PostgreSQL's limit): FerretDB's table names are the collection's,
    cut, plus an 8-digit hash, so the table name is kept whole and the field cut."""
    return (PREFIX + table + "_" + field.lstrip("_"))[:63]


def sql(database: str) -> str:
    """One idempotent script for the FerretDB database ``database`` (a PostgreSQL schema)."""
    rows = ",\n    ".join(f"({_literal(c)}, {_literal(f)})" for c, f in FIELDS)
    return f"""-- GIN indexes for FerretDB 1.24 on PostgreSQL (postmesh.store.mongodb.pg_indexes).
DO $$
DECLARE
  item record;
  tbl text;
BEGIN
  FOR item IN SELECT * FROM (VALUES
    {rows}
  ) AS wanted(coll, field) LOOP
    SELECT _jsonb ->> 'table' INTO tbl FROM {_quote_ident(database)}._ferretdb_database_metadata
      WHERE _jsonb ->> '_id' = item.coll;
    IF tbl IS NOT NULL THEN
      EXECUTE format(
        'CREATE INDEX IF NOT EXISTS %I ON %I.%I USING gin ((_jsonb -> %L))',
        left({_literal(PREFIX)} || tbl || '_' || ltrim(item.field, '_'), 63),
        {_literal(database)}, tbl, item.field
      );
      -- Documents above ~2 KB (contents, search documents) are compressed when stored (TOAST):
      -- lz4 costs a fraction of the default pglz's CPU (ADR 0068). PostgreSQL 14 or later
      -- built with lz4; elsewhere the column keeps its compression and the script goes on.
      BEGIN
        EXECUTE format('ALTER TABLE %I.%I ALTER COLUMN _jsonb SET COMPRESSION lz4',
                       {_literal(database)}, tbl);
      EXCEPTION WHEN feature_not_supported OR syntax_error OR invalid_parameter_value THEN
        RAISE NOTICE 'lz4 compression not available for %: %', tbl, SQLERRM;
      END;
    END IF;
  END LOOP;
END
$$;
"""


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m postmesh.store.mongodb.pg_indexes DATABASE", file=sys.stderr)
        return 2
    sys.stdout.write(sql(argv[0]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
