"""Per-day tallies of the prediction log, kept by the database itself.

The drift check asks, for one version, how many of its labelled predictions were right on each of
the last 60 days. Summing the log for that reads every row of the window: 0.37 s per million rows,
~3.7 s when one version has 10M predictions in its window, on every sensor tick. The plant app
writes the log directly (it inserts a prediction, later fills in `actual`), so the service cannot
count as it writes: triggers on `predictions` keep `prediction_days` (model type, version, UTC day
-> labelled, right) current in the same transaction as the app's own write - an insert, an outcome
filled in or corrected, a row deleted - and a check reads one row per day, whatever the log's size.

Whether a prediction was right depends on the catalog (a regressor's tolerance), so the trigger
text is generated from it. Its fingerprint is in the triggers' names: a database whose triggers
carry another fingerprint (the first start with this release, a release that changed a tolerance)
gets the new ones and a tally rebuilt from the log, in one transaction that holds the log's write
lock, so no write is counted twice or missed.

On PostgreSQL the triggers run once per statement over its transition tables, one upsert in key
order: two writers' statements take the tally's rows in the same order, so they queue instead of
deadlocking; a writer's transaction holds its days' rows until it commits, as it holds its own rows.
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa

from retraining_pipelines.catalog import CATALOG

TABLE = "prediction_days"
LOG = "predictions"
DAY = 86400
_PREFIX = f"{TABLE}_"


#: Text that is a plain decimal number (PostgreSQL): anything else (a class, `NaN`) is never a hit.
_NUMBER = r"'^\s*[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?\s*$'"
#: SQLite has no regular expressions: a number has a digit, and no character numbers never have.
_SQLITE_NUMBER = "{0} GLOB '*[0-9]*' AND NOT {0} GLOB '*[^0-9eE.+ -]*'"


def _hit(row: str, dialect: str, model_type: str | None = None) -> str:
    """SQL that is 1 where the prediction in `row` (`NEW.`, `OLD.`, `predictions.`, ``) was right,
    by the catalog's `accuracy`: the right class, or a number within a regressor's tolerance (only
    `model_type`'s rule when given). The cast sits in a CASE of its own: only CASE guarantees that
    the number test comes first."""
    pred, actual = f"{row}prediction", f"{row}actual"
    if dialect == "sqlite":
        numbers, cast = f"{_SQLITE_NUMBER.format(pred)} AND {_SQLITE_NUMBER.format(actual)}", "REAL"
    else:
        numbers, cast = f"{pred} ~ {_NUMBER} AND {actual} ~ {_NUMBER}", "double precision"
    cases = " ".join(
        f"WHEN {row}model_type = '{spec.model_type}' THEN CASE WHEN {numbers} THEN CASE WHEN "
        f"abs(CAST({pred} AS {cast}) - CAST({actual} AS {cast})) <= {spec.accuracy_tolerance!r} THEN 1 ELSE 0 END "
        f"ELSE 0 END"
        for spec in CATALOG.values()
        if spec.accuracy_tolerance is not None and model_type in (None, spec.model_type))
    return f"CASE {cases} WHEN {pred} = {actual} THEN 1 ELSE 0 END"


def hit_sql(dialect: str, model_type: str | None = None) -> str:
    """The hit rule over the `predictions` table's columns, for a query of the log itself (one model
    type's rule alone when it reads only that type's rows: a classifier's is one comparison)."""
    return _hit(f"{LOG}.", dialect, model_type)


def _day(row: str) -> str:
    return f"CAST({row}ts AS BIGINT) / {DAY} * {DAY}"


def _upsert(select: str) -> str:
    """Add rows of (model_type, model_version, day_ts, labelled, hits) to the tally, in key order:
    concurrent writers then take the tally's row locks in one order and never deadlock on them."""
    return (f"INSERT INTO {TABLE} (model_type, model_version, day_ts, labelled, hits) {select} "
            f"ON CONFLICT (model_type, model_version, day_ts) DO UPDATE SET "
            f"labelled = {TABLE}.labelled + excluded.labelled, hits = {TABLE}.hits + excluded.hits")


def _counts(rows: str, sign: str, dialect: str) -> str:
    """Per (model type, version, day), the labelled and right predictions of `rows`, signed."""
    return (f"SELECT model_type, model_version, {_day('')} AS day_ts, {sign}count(*) AS labelled, "
            f"{sign}sum({_hit('', dialect)}) AS hits FROM {rows} WHERE actual IS NOT NULL "
            f"GROUP BY model_type, model_version, {_day('')}")


def _rebuild(dialect: str) -> list[str]:
    # `WHERE true`: SQLite's parser needs it before an upsert's ON CONFLICT after a SELECT
    return [f"DELETE FROM {TABLE}", _upsert(f"SELECT * FROM ({_counts(LOG, '', dialect)}) AS c WHERE true")]


def _sqlite_ddl(name: str) -> list[str]:
    """Row triggers (SQLite has no others; its single writer cannot deadlock)."""
    def add(row: str, sign: str) -> str:
        values = (f"VALUES ({row}.model_type, {row}.model_version, {_day(row + '.')}, {sign}1, "
                  f"{sign}({_hit(row + '.', 'sqlite')}))")
        return f"BEGIN {_upsert(values)}; END"

    watched = "actual, prediction, model_type, model_version, ts"  # an update of these moves a tally
    return [
        f"CREATE TRIGGER {name}_insert AFTER INSERT ON {LOG} WHEN NEW.actual IS NOT NULL {add('NEW', '')}",
        f"CREATE TRIGGER {name}_update_old AFTER UPDATE OF {watched} ON {LOG} WHEN OLD.actual IS NOT NULL "
        f"{add('OLD', '-')}",
        f"CREATE TRIGGER {name}_update_new AFTER UPDATE OF {watched} ON {LOG} WHEN NEW.actual IS NOT NULL "
        f"{add('NEW', '')}",
        f"CREATE TRIGGER {name}_delete AFTER DELETE ON {LOG} WHEN OLD.actual IS NOT NULL {add('OLD', '-')}",
        *_rebuild("sqlite"),
    ]


def _postgres_ddl(name: str) -> list[str]:
    """Statement triggers over transition tables: one upsert per statement, not per row."""
    counted = {
        "insert": ("REFERENCING NEW TABLE AS new_rows", _counts("new_rows", "", "postgresql")),
        "delete": ("REFERENCING OLD TABLE AS old_rows", _counts("old_rows", "-", "postgresql")),
        "update": ("REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
                   f"{_counts('old_rows', '-', 'postgresql')} UNION ALL {_counts('new_rows', '', 'postgresql')}"),
    }
    statements = []
    for event, (referencing, select) in counted.items():
        merged = (f"SELECT model_type, model_version, day_ts, sum(labelled), sum(hits) FROM ({select}) AS c "
                  f"GROUP BY model_type, model_version, day_ts ORDER BY model_type, model_version, day_ts")
        statements += [
            f"CREATE OR REPLACE FUNCTION {TABLE}_{event}() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN {_upsert(merged)}; RETURN NULL; END $$",
            f"CREATE TRIGGER {name}_{event} AFTER {event.upper()} ON {LOG} {referencing} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {TABLE}_{event}()",
        ]
    return [*statements, *_rebuild("postgresql")]


def _ddl(dialect: str, name: str) -> list[str]:
    return _sqlite_ddl(name) if dialect == "sqlite" else _postgres_ddl(name)


def trigger_name(dialect: str) -> str:
    """The name the current catalog's triggers carry: a fingerprint of their text."""
    text = "\n".join(_ddl(dialect, _PREFIX))
    return f"{_PREFIX}{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def _installed(conn: sa.Connection) -> set[str]:
    if conn.dialect.name == "sqlite":
        query = f"SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = '{LOG}'"
    else:
        query = f"SELECT tgname FROM pg_trigger WHERE tgrelid = '{LOG}'::regclass AND NOT tgisinternal"
    return {name for (name,) in conn.exec_driver_sql(query) if name.startswith(_PREFIX)}


def install(engine: sa.Engine) -> None:
    """Make the tally current: the catalog's triggers on the log, the tally rebuilt if they were not.

    Cheap when they are (one catalog query). Otherwise one transaction holds the log's write lock
    from its first statement, drops other triggers, creates these and recounts the whole log.
    """
    dialect = engine.dialect.name
    name = trigger_name(dialect)
    with engine.connect() as conn:
        if any(t.startswith(name) for t in _installed(conn)):
            return
    with engine.connect() as conn:
        if dialect == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql(f"LOCK TABLE {LOG} IN SHARE ROW EXCLUSIVE MODE")
        installed = _installed(conn)
        if not any(t.startswith(name) for t in installed):  # another process may have just done it
            for old in installed:
                conn.exec_driver_sql(f"DROP TRIGGER {old}" + ("" if dialect == "sqlite" else f" ON {LOG}"))
            for statement in _ddl(dialect, name):
                conn.exec_driver_sql(statement)
        conn.commit()
