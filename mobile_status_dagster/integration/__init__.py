"""The Dagster integration: thin glue over :mod:`mobile_status_dagster.core`.

==================  =================================================================
``resources``       ``MobileStatusResource``: the provider account as a Dagster resource;
                    ``PostgresStoreResource``: a PostgreSQL database as the store
``store_access``    which store (DuckDB or PostgreSQL) a run, a check, a sensor reads
``assets``          the factory: ``mobile_status``, its partitions, sensors, schedule
``names``           every name of an instance, derived from its key prefix
``derived``         the summary and charges assets
``checks``          the asset checks on ``mobile_status``
``sensors``         the sensor that registers new sets
``automation``      the automation sensor and the stale-refresh schedule
``metadata``        the ``mobile_status/…`` materialization metadata
``component``       ``MobileStatusComponent``, declared in YAML
``environment``     the default definitions' settings, read from the environment
``definitions``     the default code location (``dg dev`` from the repository root)
==================  =================================================================

The public names are re-exported by :mod:`mobile_status_dagster`.
"""
