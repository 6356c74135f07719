"""The plant app's database: the tables it writes and the queries the pipeline makes.

Plain SQLAlchemy and pandas, no Dagster: the Dagster resource (`datastore.PlantDataStore`) only
adds its configuration, and a bare script (the benchmarks' baseline) runs the same queries
through `PlantDatabase` without importing Dagster.

SQLite under DAGSTER_HOME by default (no server on a Raspberry Pi), any SQLAlchemy URL
(PostgreSQL) for a bigger deployment. Times are integer UTC epoch seconds (`ts`), which keeps
hourly bucketing a portable integer expression and every time filter an index range scan.
Hourly aggregation happens in SQL so a year of 5-minute readings never has to fit in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from retraining_pipelines import prediction_days, sqlstore, validation
from retraining_pipelines.catalog import get_spec
from retraining_pipelines.crops import CROPS_BY_NAME
from retraining_pipelines.errors import InsufficientSamplesError, StorageError
from retraining_pipelines.settings import plant_database_url, with_installed_driver

HOUR = 3600
DAY = 86400
#: Longest trailing aggregate a feature uses (72 h), and the furthest back growth models look.
CLIMATE_LOOKBACK_S = 72 * HOUR
MAX_LOOKBACK_S = 365 * DAY
#: Readings outside these are sensor faults: excluded from averages, counted for data quality.
PHYSICAL_RANGES: dict[str, tuple[float, float]] = {
    "temperature": (-20.0, 60.0),
    "humidity": (0.0, 100.0),
    "soil_moisture": (0.0, 100.0),
    "co2": (150.0, 5000.0),
    "light": (0.0, 150000.0),
}
SENSORS = tuple(PHYSICAL_RANGES)
#: Epoch seconds from 2000-01-01 to 2100-01-01: outside, a `ts` is milliseconds, text or garbage.
PLAUSIBLE_TS = (946_684_800, 4_102_444_800)
#: Rows turned from tuples into columns at a time when reading: bounds a read's transient memory.
READ_CHUNK_ROWS = 20_000
#: Why a label row cannot be trained on; counted in the `training_samples` metadata.
REJECT_REASONS = ("unknown_unit", "unknown_crop", "unknown_class", "out_of_range", "bad_timestamp")

metadata = sa.MetaData()
_ts = sa.BigInteger  # epoch seconds

grow_units = sa.Table(
    "grow_units", metadata,
    sa.Column("unit_id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("crop", sa.String(100), nullable=False),
    sa.Column("environment", sa.String(20), nullable=False),  # indoor | greenhouse
)
plants = sa.Table(
    "plants", metadata,
    sa.Column("plant_id", sa.Integer, primary_key=True),
    sa.Column("unit_id", sa.Integer, sa.ForeignKey("grow_units.unit_id"), nullable=False, index=True),
    sa.Column("crop", sa.String(100), nullable=False),
    sa.Column("cultivar", sa.String(100), nullable=False),
    sa.Column("planted_at", _ts, nullable=False),
    sa.Column("stage", sa.String(30), nullable=False),
)
sensor_readings = sa.Table(
    "sensor_readings", metadata,
    sa.Column("unit_id", sa.Integer, nullable=False),
    sa.Column("ts", _ts, nullable=False),
    *(sa.Column(name, sa.Float) for name in SENSORS),
    sa.Index("ix_sensor_readings_unit_ts", "unit_id", "ts"),
    sa.Index("ix_sensor_readings_ts", "ts"),
)
climate_actions = sa.Table(
    "climate_actions", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("unit_id", sa.Integer, nullable=False),
    sa.Column("ts", _ts, nullable=False, index=True),
    sa.Column("action", sa.String(20), nullable=False),
)
disease_observations = sa.Table(
    "disease_observations", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("unit_id", sa.Integer, nullable=False),
    sa.Column("plant_id", sa.Integer, nullable=False),
    sa.Column("ts", _ts, nullable=False, index=True),
    sa.Column("growth_stage", sa.String(30), nullable=False),
    sa.Column("days_in_stage", sa.Integer, nullable=False),
    sa.Column("disease_type", sa.String(30), nullable=False),
)
irrigation_events = sa.Table(
    "irrigation_events", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("unit_id", sa.Integer, nullable=False),
    sa.Column("ts", _ts, nullable=False, index=True),  # when the need was detected
    sa.Column("started_at", _ts, nullable=False),
    sa.Column("threshold_used", sa.Float, nullable=False),
    sa.Column("target_moisture", sa.Float, nullable=False),
    sa.Column("duration_s", sa.Float, nullable=False),
    sa.Column("preferred_hour", sa.Integer, nullable=False),
    sa.Column("user_response", sa.String(20), nullable=False),  # accepted | delayed
    sa.Column("feedback", sa.String(20), nullable=False),  # ok | too_early | too_late
    sa.Column("optimal_threshold", sa.Float, nullable=False),
)
growth_observations = sa.Table(
    "growth_observations", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("unit_id", sa.Integer, nullable=False),
    sa.Column("plant_id", sa.Integer, nullable=False),
    sa.Column("ts", _ts, nullable=False, index=True),
    sa.Column("growth_stage", sa.String(30), nullable=False),
    sa.Column("days_since_planting", sa.Integer, nullable=False),
    sa.Column("days_in_stage", sa.Integer, nullable=False),
    sa.Column("growth_rate", sa.Float, nullable=False),  # cm/day
)
predictions = sa.Table(
    "predictions", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("model_type", sa.String(50), nullable=False),
    sa.Column("model_version", sa.String(20), nullable=False),
    sa.Column("ts", _ts, nullable=False),
    sa.Column("unit_id", sa.Integer),
    sa.Column("inputs_ref", sa.String(100)),  # e.g. "disease_observations:123"
    sa.Column("prediction", sa.String(50), nullable=False),
    sa.Column("actual", sa.String(50)),  # filled in when the outcome is known
    sa.Index("ix_predictions_model_ts", "model_type", "ts"),
    # covers the drift check's aggregation (one version's hits by day): read from the index alone
    sa.Index("ix_predictions_drift", "model_type", "model_version", "ts", "prediction", "actual"),
)
#: Kept by triggers on `predictions` (see `prediction_days`): what the drift check reads instead of the log.
prediction_tallies = sa.Table(
    prediction_days.TABLE, metadata,
    sa.Column("model_type", sa.String(50), primary_key=True),
    sa.Column("model_version", sa.String(20), primary_key=True),
    sa.Column("day_ts", _ts, primary_key=True),  # the UTC day's start
    sa.Column("labelled", sa.Integer, nullable=False),
    sa.Column("hits", sa.Integer, nullable=False),  # right, by the catalog's `accuracy`
)
LABEL_TABLES = {
    t.name: t for t in (climate_actions, disease_observations, irrigation_events, growth_observations)
}


@dataclass(frozen=True)
class Window:
    """A half-open time window `[start_ts, end_ts)` in epoch seconds."""

    start_ts: int
    end_ts: int
    time_range: str

    @classmethod
    def last(cls, time_range: str, end: datetime | None = None) -> Window:
        end_ts = int((end or datetime.now(UTC)).timestamp())
        return cls(end_ts - validation.time_range(time_range), end_ts, time_range)


def _in_range() -> dict[str, sa.ColumnElement]:
    """Per sensor: is a reading within its physical range (outside it is a sensor fault)."""
    r = sensor_readings.c
    return {name: r[name].between(lo, hi) for name, (lo, hi) in PHYSICAL_RANGES.items()}


def _in_range_means(valid: dict[str, sa.ColumnElement]) -> list[sa.Label]:
    """The mean of each sensor's in-range readings, faults left out."""
    r = sensor_readings.c
    return [sa.func.avg(sa.case((valid[n], r[n]))).label(n) for n in SENSORS]


#: How long a plant-database statement waits for another process's lock (the app writes while we read).
BUSY_SECONDS = 30


@lru_cache(maxsize=8)
def _engine(url: str) -> sa.Engine:
    """One engine per URL per process, with the schema in place before anyone queries it.

    SQLite gets WAL, so readers never block the writer, and its directory is created.
    """
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(with_installed_driver(url))
    if engine.dialect.name == "sqlite":

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record) -> None:
            dbapi_conn.execute(f"PRAGMA busy_timeout={BUSY_SECONDS * 1000}")
            sqlstore.switch_to_wal(dbapi_conn, timeout=BUSY_SECONDS)

    sqlstore.create_schema(engine, None, _create_tables)
    prediction_days.install(engine)
    return engine


def _create_tables(conn: sa.Connection) -> None:
    metadata.create_all(conn)
    for table in metadata.sorted_tables:  # a database from an earlier release gets the newer indexes
        for index in table.indexes:
            index.create(conn, checkfirst=True)


class PlantQueries:
    """The queries the pipeline makes; a subclass says which database (`url`)."""

    @property
    def url(self) -> str:
        raise NotImplementedError

    @property
    def engine(self) -> sa.Engine:
        try:
            return _engine(self.url)
        except (sa.exc.SQLAlchemyError, OSError) as err:
            where = sa.make_url(self.url).render_as_string(hide_password=True)
            raise StorageError("plant database", where, err) from err

    def is_empty(self) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sensor_readings.c.ts).limit(1)).first() is None

    def write_frames(self, frames: dict[str, pd.DataFrame]) -> None:
        """Append plant-app rows, all tables in one transaction: all land or none do."""
        with self.engine.begin() as conn:
            for name, frame in frames.items():
                table = metadata.tables[name]
                columns = frame[[c.name for c in table.columns if c.name in frame]]
                # a missing value is NULL: PostgreSQL would store pandas' NaN as a number (or the text 'NaN')
                records = columns.astype(object).where(columns.notna(), None).to_dict("records")
                for chunk in range(0, len(records), 50_000):
                    conn.execute(table.insert(), records[chunk : chunk + 50_000])

    def _read(self, query: sa.Select) -> pd.DataFrame:
        """Run a query into a frame with plain-`str` column names (sklearn insists).

        Rows arrive `READ_CHUNK_ROWS` at a time (a server-side cursor on PostgreSQL) and become
        columns chunk by chunk: a whole result as Python row tuples took ~200 MB at 100k labels.
        """
        with self.engine.connect() as conn:
            streamed = conn.execution_options(stream_results=True)
            chunks = list(pd.read_sql(query, streamed, chunksize=READ_CHUNK_ROWS))
        frame = chunks[0] if len(chunks) == 1 else pd.concat(chunks, ignore_index=True).infer_objects()
        frame.columns = [str(c) for c in frame.columns]
        return frame

    def fetch_samples(
        self,
        model_type: str,
        min_samples: int | None = None,
        time_range: str = "last_90d",
        end: datetime | None = None,
    ) -> pd.DataFrame:
        """Usable labelled examples for `model_type` in the window, with each unit's crop, in time order.

        Raises InsufficientSamplesError below `min_samples` usable rows (the catalog default when
        None), so a caller never trains on too little data by accident.
        """
        return self._usable_labels(model_type, min_samples, time_range, end)[0]

    def _usable_labels(
        self, model_type: str, min_samples: int | None, time_range: str, end: datetime | None
    ) -> tuple[pd.DataFrame, dict[str, int]]:
        """The window's labels that can be trained on, and how many rows could not be, by reason."""
        spec = get_spec(model_type)
        window = Window.last(time_range, end)
        required = spec.min_samples if min_samples is None else validation.min_samples(min_samples)
        table = LABEL_TABLES[spec.label_table]
        query = (
            sa.select(table, grow_units.c.crop)
            .select_from(table.outerjoin(grow_units, grow_units.c.unit_id == table.c.unit_id))
            .where(table.c.ts >= window.start_ts, table.c.ts < window.end_ts)
            .order_by(table.c.ts)
        )
        labels = self._read(query)
        reasons = {
            "unknown_unit": labels["crop"].isna(),
            "unknown_crop": labels["crop"].notna() & ~labels["crop"].isin(list(CROPS_BY_NAME)),
            "unknown_class" if spec.task == "classification" else "out_of_range": ~spec.usable_target(
                labels[spec.target]),
        }
        unusable = pd.Series(False, index=labels.index)
        rejected = {}
        for reason, rows in reasons.items():  # each row counted once, under its first reason
            rejected[reason] = int((rows & ~unusable).sum())
            unusable |= rows
        rejected["bad_timestamp"] = self._implausible_timestamps(table)
        usable = labels[~unusable].reset_index(drop=True)
        if len(usable) < required:
            raise InsufficientSamplesError(model_type, len(usable), required, time_range)
        return usable, rejected

    def _implausible_timestamps(self, table: sa.Table) -> int:
        """Rows whose `ts` is not epoch seconds of this century (milliseconds, text): they belong to no window.

        Counted over the whole table - such a row has no time to place it in a window by. Both
        bounds are index range scans; in SQLite text sorts after every number, so text is caught too.
        """
        query = sa.select(sa.func.count()).where(sa.or_(table.c.ts < PLAUSIBLE_TS[0], table.c.ts > PLAUSIBLE_TS[1]))
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def count_samples(self, model_type: str, time_range: str = "last_90d", end: datetime | None = None) -> int:
        """How many labelled examples a retrain would get (cheap: an index range count)."""
        table = LABEL_TABLES[get_spec(model_type).label_table]
        window = Window.last(time_range, end)
        query = sa.select(sa.func.count()).where(table.c.ts >= window.start_ts, table.c.ts < window.end_ts)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def fetch_hourly_climate(self, unit_ids: list[int], start_ts: int, end_ts: int) -> pd.DataFrame:
        """Hourly means per unit of in-range readings, plus reading and out-of-range counts."""
        r = sensor_readings.c
        hour = (r.ts // HOUR * HOUR).label("hour_ts")
        valid = _in_range()
        means = _in_range_means(valid)
        faulty = sa.or_(*(sa.and_(r[n].is_not(None), sa.not_(valid[n])) for n in SENSORS))
        query = (
            sa.select(r.unit_id, hour, *means, sa.func.count().label("n_readings"),
                      sa.func.sum(sa.case((faulty, 1), else_=0)).label("n_out_of_range"))
            .where(r.unit_id.in_(unit_ids), r.ts >= start_ts, r.ts < end_ts)
            .group_by(r.unit_id, hour)
            .order_by(r.unit_id, hour)
        )
        return self._read(query)

    def daily_sensor_means(self, start_ts: int, end_ts: int) -> pd.DataFrame:
        """Per day, the mean over units of each unit's daily mean of in-range readings (index: day start,
        epoch s). What the input-shift test reads: averaging units cuts their independent weather,
        a shift common to them (a heat wave, a recalibration) stays whole."""
        r = sensor_readings.c
        day = (r.ts // DAY * DAY).label("day_ts")
        query = (sa.select(day, r.unit_id, *_in_range_means(_in_range())).where(r.ts >= start_ts, r.ts < end_ts)
                 .group_by(day, r.unit_id))
        per_unit = self._read(query)
        if per_unit.empty:
            return pd.DataFrame(columns=list(SENSORS), dtype=float)
        return per_unit.drop(columns="unit_id").groupby("day_ts").mean().sort_index().astype(float)

    def logged_hits_by_age(self, model_type: str, model_version: str, window: Window) -> dict[int, tuple[int, int]]:
        """Right predictions and labelled predictions of a version per UTC day back from the window's
        end (0 = the day the window ends in, up to its end): the evidence of growing drift windows.

        Whole days come from the daily tally the database keeps (`prediction_days`), so the cost is
        a row per day whatever the log's size; only the day in progress is summed from the log.
        """
        get_spec(model_type)
        last_day = (window.end_ts - 1) // DAY * DAY
        first_day = last_day - (max(1, -(-(window.end_ts - window.start_ts) // DAY)) - 1) * DAY
        t = prediction_tallies.c
        whole_days = last_day + DAY if window.end_ts == last_day + DAY else last_day
        tallied = (sa.select(t.day_ts, t.hits, t.labelled)
                   .where(t.model_type == model_type, t.model_version == model_version, t.labelled > 0,
                          t.day_ts >= first_day, t.day_ts < whole_days))
        p = predictions.c
        hit = sa.literal_column(prediction_days.hit_sql(self.engine.dialect.name, model_type))
        today = (sa.select(sa.literal(last_day), sa.func.sum(hit), sa.func.count())
                 .where(p.model_type == model_type, p.model_version == model_version, p.actual.is_not(None),
                        p.ts >= whole_days, p.ts < window.end_ts))
        with self.engine.connect() as conn:
            rows = [*conn.execute(tallied), *conn.execute(today)]
        return {(last_day - int(day)) // DAY: (round(h or 0), int(n)) for day, h, n in rows if n}

    def recent_outcomes(self, model_type: str, time_range: str = "last_14d", model_version: str | None = None,
                        end: datetime | None = None) -> tuple[list[str], list[str]]:
        """Logged predictions whose outcome is known, and those outcomes, oldest first: the inputs of the
        spec's `check_drift(recent_predictions, recent_actuals)`. `model_version` None: every version."""
        get_spec(model_type)
        window = Window.last(time_range, end)
        p = predictions.c
        query = (sa.select(p.prediction, p.actual)
                 .where(p.model_type == model_type, p.actual.is_not(None), p.ts >= window.start_ts,
                        p.ts < window.end_ts)
                 .order_by(p.ts))
        if model_version is not None:
            query = query.where(p.model_version == model_version)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [r[0] for r in rows], [r[1] for r in rows]

    def fetch_plants(self, plant_ids: list[int] | None = None) -> pd.DataFrame:
        query = sa.select(plants)
        if plant_ids is not None:
            query = query.where(plants.c.plant_id.in_(plant_ids))
        return self._read(query)

    def training_samples(
        self,
        model_type: str,
        min_samples: int | None = None,
        time_range: str = "last_90d",
        end: datetime | None = None,
    ) -> TrainingSamples:
        """Labels plus the hourly climate and plants their features are computed from."""
        end = end or datetime.now(UTC)  # one "now" for labels and climate alike
        window = Window.last(time_range, end)
        labels, rejected = self._usable_labels(model_type, min_samples, time_range, end)
        plant_rows = self.fetch_plants(sorted(labels["plant_id"].unique().tolist()) if "plant_id" in labels else [])
        start = window.start_ts - CLIMATE_LOOKBACK_S
        if get_spec(model_type).label_table == "growth_observations" and len(plant_rows):
            # thermal time since planting needs the climate from the oldest planting on
            start = min(start, max(int(plant_rows["planted_at"].min()), window.start_ts - MAX_LOOKBACK_S))
        units = sorted(labels["unit_id"].unique().tolist())
        hourly = self.fetch_hourly_climate(units, start, window.end_ts)
        return TrainingSamples(model_type, window, labels, hourly, plant_rows, rejected)


@dataclass
class TrainingSamples:
    """What the `training_samples` asset hands to feature engineering."""

    model_type: str
    window: Window
    labels: pd.DataFrame
    hourly: pd.DataFrame
    plants: pd.DataFrame
    #: Rows of the label table that could not be used, by reason (see `REJECT_REASONS`).
    rejected: dict[str, int] = field(default_factory=dict)

    @property
    def rejected_share(self) -> float:
        """Unusable rows as a share of all rows the window offered (plus undatable ones)."""
        bad = sum(self.rejected.values())
        return bad / (bad + len(self.labels)) if bad else 0.0

    @property
    def out_of_range_share(self) -> float:
        total = int(self.hourly["n_readings"].sum()) if len(self.hourly) else 0
        return float(self.hourly["n_out_of_range"].sum()) / total if total else 0.0


class PlantDatabase(PlantQueries):
    """The plant database without Dagster (`url` None: $PLANT_DATABASE_URL, else SQLite under DAGSTER_HOME)."""

    def __init__(self, url: str | None = None) -> None:
        self._url = url

    @property
    def url(self) -> str:
        return self._url or plant_database_url()
