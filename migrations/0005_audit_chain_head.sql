-- v5 (audit chain head): the audit table loses its last index. The unique (seq, at) index
-- cost the primary CPU on every record — every statement through the broker writes one — to
-- refuse a second writer's record with a number already taken. A one-row head table now does
-- that once per batch: each batch moves the head from the record it was linked after to its
-- own newest, in the transaction that copies it in, or is not written. The head starts at the
-- newest record already in the table (seq 0 and the all-zero genesis hash when it is empty).
-- audit::store::ensure() makes the same tables.

CREATE TABLE IF NOT EXISTS "tidegate_audit"."events_head" (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    seq bigint NOT NULL,
    hash bytea NOT NULL
);

INSERT INTO "tidegate_audit"."events_head" (seq, hash)
SELECT seq, hash
FROM ((SELECT seq, hash FROM "tidegate_audit"."events" ORDER BY seq DESC LIMIT 1)
      UNION ALL SELECT 0, decode(repeat('00', 32), 'hex')) newest
WHERE NOT EXISTS (SELECT FROM "tidegate_audit"."events_head")
ORDER BY seq DESC LIMIT 1
ON CONFLICT DO NOTHING;

DROP INDEX IF EXISTS "tidegate_audit"."events_seq";
