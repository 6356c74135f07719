"""The plant data store as a Dagster resource: the plant database's queries (`plantdb`) plus where it is.

Configurable in the UI and in run config like every resource; the queries themselves are plain
Python in `plantdb.py`, so what a retrain reads is the same with or without Dagster.
"""

import dagster as dg
from pydantic import Field

from retraining_pipelines.plantdb import PlantQueries
from retraining_pipelines.settings import plant_database_url


class PlantDataStore(dg.ConfigurableResource, PlantQueries):
    """The plant app's database, as the pipeline reads it."""

    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL. Unset: $PLANT_DATABASE_URL, else SQLite file "
        "plant_data.sqlite under DAGSTER_HOME.",
    )

    @property
    def url(self) -> str:
        return self.database_url or plant_database_url()
