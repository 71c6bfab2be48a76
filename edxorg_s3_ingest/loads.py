"""The CLI as a module (`python -m edxorg_s3_ingest.loads`, SPEC §8), and `source`: what the
Dagster component reads from defs.yaml (`edxorg_s3_ingest.loads.source`).

Each table's own pipeline and source are built by loading/pipeline.py for each load.
"""


def __getattr__(name: str):
    """`source`: the dlt source of every table, whose resources the Dagster component makes its
    assets (defs.yaml). Each asset's step runs its resource through the table's own pipeline
    (`table_source` / `table_pipeline`, via table_load.load_table). Built on first use, so that
    importing this module (the CLI) resolves nothing; building it writes nothing."""
    if name != "source":
        raise AttributeError(name)
    from edxorg_s3_ingest.loading.resources import edxorg_s3_source

    return edxorg_s3_source()


if __name__ == "__main__":
    from edxorg_s3_ingest.cli import main

    raise SystemExit(main())
