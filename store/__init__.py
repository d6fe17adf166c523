"""Everything Postgres: pool, migrations, the LWW fold, snapshot refresh, due selection, the run
ledger, the write-back, the token ledger, the NOTIFY listener, retention and the inspection reads.

Trio code calls the bridged functions of these modules; each is one whole unit of asyncio work
(acquire, transaction, queries) wrapped once with `aio_as_trio`. Every SQL statement is in
`store/queries.sql`, by name. The fold, the row bounds, the record views and the instants are pure.
"""
