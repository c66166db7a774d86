-- eventrabbit-postgres: the event store. Idempotent: run by `migrate` at every start.

-- Every event of every stream (an aggregate's id), in global order by `position`.
CREATE TABLE IF NOT EXISTS {schema}.eventrabbit_events (
    position        BIGSERIAL PRIMARY KEY,
    stream_id       TEXT NOT NULL,
    -- Its place in the stream, from 1, without gaps.
    version         BIGINT NOT NULL,
    action          TEXT NOT NULL,
    -- The version of the shape of `data` (upcasters upgrade older ones when read).
    revision        INTEGER NOT NULL DEFAULT 1,
    data            JSONB NOT NULL,
    -- The AMQP message_id it is published with.
    message_id      TEXT NOT NULL UNIQUE,
    causation_id    TEXT,
    correlation_id  TEXT,
    traceparent     TEXT,
    recorded_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (stream_id, version)
);

-- Every stream and its version: appends lock its row, so appends to one stream take
-- turns until they commit, and read its version in the same statement.
CREATE TABLE IF NOT EXISTS {schema}.eventrabbit_streams (
    stream_id   TEXT PRIMARY KEY,
    version     BIGINT NOT NULL
);

-- The latest snapshot of a stream's aggregate.
CREATE TABLE IF NOT EXISTS {schema}.eventrabbit_snapshots (
    stream_id   TEXT PRIMARY KEY,
    version     BIGINT NOT NULL,
    revision    INTEGER NOT NULL,
    state       JSONB NOT NULL,
    taken_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Per projection and stream, the version applied to the read model (committed with it).
CREATE TABLE IF NOT EXISTS {schema}.eventrabbit_projections (
    projection  TEXT NOT NULL,
    stream_id   TEXT NOT NULL,
    version     BIGINT NOT NULL,
    PRIMARY KEY (projection, stream_id)
);
