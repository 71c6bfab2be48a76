"""Where data comes from and goes to, per `DAGSTER_ENVIRONMENT` (SPEC §8).

Precedence for every setting: explicit argument (CLI flag), then environment variable / dlt
config (`.dlt/config.toml`), then the environment's default.
"""

import os
import tempfile
import tomllib
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
    """A setting as dlt resolves `dlt.config.get(key)`: the environment variable (upper case,
    sections joined by `__`), then the project's `.dlt/secrets.toml`, then its
    `.dlt/config.toml` (the project: DLT_PROJECT_DIR, else the working directory).

    Read here with tomllib rather than through dlt, whose import and configuration take ~2 s
    of a run with nothing new. Only when neither has the key and dlt's global folder holds a
    settings file is dlt asked, so that its rules for that folder (root, XDG_DATA_HOME...)
    stay dlt's own."""
    value = os.environ.get("__".join(key.split(".")).upper())
    if value is not None:
        return value or None
    settings_dir = Path(os.environ.get("DLT_PROJECT_DIR") or ".") / ".dlt"
    for name in ("secrets.toml", "config.toml"):
        found = _toml_value(settings_dir / name, key)
        if found is not None:
            return str(found) if found else None
    if not any((folder / name).is_file() for folder in _global_dirs() for name in TOML_FILES):
        return None
    import dlt

    value = dlt.config.get(key)
    return str(value) if value else None


TOML_FILES = ("secrets.toml", "config.toml")


def _global_dirs() -> list[Path]:
    """Every folder dlt may take as its global settings folder (dlt's global_dir())."""
    home = Path(os.path.expanduser("~"))
    folders = [Path("/var/dlt"), home / ".dlt", Path(tempfile.gettempdir()) / "dlt"]
    if "XDG_DATA_HOME" in os.environ:
        folders.append(Path(os.environ["XDG_DATA_HOME"]) / "dlt")
    return folders


def _toml_value(path: Path, key: str):
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigurationError(f"{path} cannot be read: {error}") from None
    value = document
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


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
