CREATE VIEW buildmaster_v1.builders (builder_id, name, description, tags, configured) AS
SELECT b.id::bigint,
       b.name::text,
       b.description::text,
       to_jsonb(b.tags)::jsonb,
       b.configured::boolean
  FROM buildmaster_private.builders b;

COMMENT ON VIEW buildmaster_v1.builders IS 'Builders: named recipes of steps run on workers. Key: builder_id.';
COMMENT ON COLUMN buildmaster_v1.builders.builder_id IS 'Stable id of the builder. Key.';
COMMENT ON COLUMN buildmaster_v1.builders.name IS 'Configured name of the builder, unique (letters, digits, dot, dash, underscore).';
COMMENT ON COLUMN buildmaster_v1.builders.description IS 'Free-text description; NULL when none.';
COMMENT ON COLUMN buildmaster_v1.builders.tags IS 'Tags as a JSON array of strings.';
COMMENT ON COLUMN buildmaster_v1.builders.configured IS 'False once the builder was removed from the configuration; its builds stay readable.';
