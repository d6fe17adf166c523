"""Everything Postgres: pool, migrations, the LWW fold, snapshot refresh and due selection.

Trio code calls only the bridged names exported here; each is one whole unit of asyncio
work (acquire, transaction, queries) wrapped once with `aio_as_trio` (stack-notes §2.3).
"""
