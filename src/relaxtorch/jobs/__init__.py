"""The ``relaxtorch`` commands, one folder per job, on one shared layer.

``formats``, ``tradeoff``, ``hogwild`` and ``distributed`` (the ``dist`` command) are
built on the library (which never imports a job) and on the shared layer:
``_cli`` (error policy, exit codes), ``_config`` (TOML checks), ``_report`` (machine
description, tables, JSON, figures).  Seeds are derived with :func:`relaxtorch._seeding.derive`,
which the library uses too.
"""
