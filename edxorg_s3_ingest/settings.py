"""Where data comes from and goes to, per `DAGSTER_ENVIRONMENT` (SPEC §8).

Precedence for every setting: explicit argument (CLI flag), then environment variable / dlt
config (`.dlt/config.toml`), then the environment's default.
"""

import os
from dataclasses import dataclass
from pathlib import Path

ENVIRONMENTS = ("dev", "qa", "production")
PRODUCTION_LANDING_ZONE = (
    "s3://ol-data-lake-landing-zone-production/edxorg-raw-data/edxorg/raw_data/"
)
SAMPLE_LANDING_ZONE = Path(__file__).parent / "sample_landing_zone"


class ConfigurationError(ValueError):
    """A setting is wrong; the message says which and how to fix it."""


def current_environment() -> str:
    value = os.environ.get("DAGSTER_ENVIRONMENT", "").strip() or "dev"
    if value not in ENVIRONMENTS:
        raise ConfigurationError(
            f"DAGSTER_ENVIRONMENT={value!r} is not one of {', '.join(ENVIRONMENTS)} "
            "(unset means dev)."
        )
    return value


def _configured(key: str) -> str | None:
    # Imported only when a setting is not given as an argument: dlt takes ~0.3 s to import.
    import dlt

    value = dlt.config.get(key)
    return str(value) if value else None


@dataclass(frozen=True)
class Settings:
    environment: str
    bucket_url: str
    data_dir: Path
    pipelines_dir: Path

    @property
    def lake_url(self) -> str:
        return f"s3://ol-data-lake-raw-{self.environment}/edxorg"

    @property
    def glue_database(self) -> str:
        return f"ol_warehouse_{self.environment}_raw"

    @classmethod
    def resolve(
        cls,
        bucket_url: str | None = None,
        data_dir: str | os.PathLike | None = None,
        pipelines_dir: str | os.PathLike | None = None,
    ) -> "Settings":
        environment = current_environment()
        default_source = (
            str(SAMPLE_LANDING_ZONE) if environment == "dev" else PRODUCTION_LANDING_ZONE
        )
        return cls(
            environment=environment,
            bucket_url=bucket_url or _configured("sources.edxorg_s3.bucket_url") or default_source,
            data_dir=Path(data_dir or _configured("edxorg_s3_ingest.data_dir") or ".dlt/data"),
            pipelines_dir=Path(
                pipelines_dir or _configured("edxorg_s3_ingest.pipelines_dir") or ".dlt/pipelines"
            ),
        )
