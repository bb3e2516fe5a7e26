-- v4 (audit indexes): the audit table keeps one index, the unique (seq, at) that orders the
-- chain and refuses a second writer's duplicate. Every statement through the broker writes a
-- record, and each index costs the primary CPU on every one: the (username, at) index of v1
-- served no query (`tidegate audit logs` filters with optional parameters, which it cannot
-- use), and the default time index TimescaleDB adds to a hypertable is redundant with chunk
-- exclusion on `at`. audit::store::ensure() makes the same table.

DROP INDEX IF EXISTS "tidegate_audit"."events_user_at";
DROP INDEX IF EXISTS "tidegate_audit"."events_at_idx";
