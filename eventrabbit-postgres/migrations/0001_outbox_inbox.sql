-- eventrabbit-postgres: the outbox and the inbox. Idempotent: run by `migrate` at every
-- start. `{schema}` is replaced by the schema the tables live in (`public` by default).

CREATE SCHEMA IF NOT EXISTS {schema};

-- Events written in the same transaction as the data they describe; the relay sends the
-- committed ones to RabbitMQ with publisher confirms and marks them sent.
CREATE TABLE IF NOT EXISTS {schema}.eventrabbit_outbox (
    id              BIGSERIAL PRIMARY KEY,
    -- The AMQP message_id: the same on every send of this event.
    message_id      TEXT NOT NULL UNIQUE,
    exchange        TEXT NOT NULL,
    routing_key     TEXT NOT NULL,
    action          TEXT NOT NULL,
    data            JSONB NOT NULL,
    -- Extra string headers (e.g. traceparent), as a JSON object.
    headers         JSONB,
    -- Events of one key (an aggregate's id) are sent in commit order, one after another.
    ordering_key    TEXT,
    -- Not sent before this time (scheduled events).
    publish_at      TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Failed sends so far, and when the next may be tried.
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ,
    last_error      TEXT,
    -- Set once RabbitMQ confirmed it; rows are deleted after the retention period.
    sent_at         TIMESTAMPTZ,
    -- Set when RabbitMQ refused it for good (the reason is in last_error).
    failed_at       TIMESTAMPTZ
);

CREATE INDEX IF NOT EXISTS eventrabbit_outbox_pending
    ON {schema}.eventrabbit_outbox (id) WHERE sent_at IS NULL;
CREATE INDEX IF NOT EXISTS eventrabbit_outbox_pending_key
    ON {schema}.eventrabbit_outbox (ordering_key, id) WHERE sent_at IS NULL;
CREATE INDEX IF NOT EXISTS eventrabbit_outbox_sent
    ON {schema}.eventrabbit_outbox (sent_at) WHERE sent_at IS NOT NULL;

-- Messages a consumer has handled, recorded in the transaction of the handler's own
-- writes: a redelivered or duplicated message is recognised and not handled again.
CREATE TABLE IF NOT EXISTS {schema}.eventrabbit_inbox (
    consumer    TEXT NOT NULL,
    message_id  TEXT NOT NULL,
    handled_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- What an RPC request was answered with, to answer a repeat alike.
    reply       JSONB,
    PRIMARY KEY (consumer, message_id)
);

CREATE INDEX IF NOT EXISTS eventrabbit_inbox_handled
    ON {schema}.eventrabbit_inbox (handled_at);
