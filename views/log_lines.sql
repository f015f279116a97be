CREATE VIEW buildmaster_v1.log_lines (log_id, line_number, stream, content, chunk_first_line, chunk_last_line) AS
SELECT c.log_id::bigint,
       (c.first_line + t.ord - 1)::integer,
       (CASE WHEN l.type = 's' THEN
            CASE left(t.line, 1) WHEN 'o' THEN 'stdout' WHEN 'e' THEN 'stderr' WHEN 'h' THEN 'header' END
        END)::text,
       (CASE WHEN l.type = 's' THEN substr(t.line, 2) ELSE t.line END)::text,
       c.first_line::integer,
       c.last_line::integer
  FROM buildmaster_private.log_chunks c
  JOIN buildmaster_private.logs l ON l.id = c.log_id
  CROSS JOIN LATERAL unnest(string_to_array(c.content, E'\n')) WITH ORDINALITY AS t(line, ord);

COMMENT ON VIEW buildmaster_v1.log_lines IS 'Log text, one row per line. Key: (log_id, line_number). To read lines A..B of log L quickly, filter on log_id = L AND chunk_last_line >= A AND chunk_first_line <= B AND line_number BETWEEN A AND B, and order by line_number.';
COMMENT ON COLUMN buildmaster_v1.log_lines.log_id IS 'The log (buildmaster_v1.logs.log_id). Key, with line_number.';
COMMENT ON COLUMN buildmaster_v1.log_lines.line_number IS 'Line number within the log, from 0. Key, with log_id.';
COMMENT ON COLUMN buildmaster_v1.log_lines.stream IS 'For stdio logs: stdout, stderr or header (lines written by the master); NULL for other log types.';
COMMENT ON COLUMN buildmaster_v1.log_lines.content IS 'The text of the line, without its newline.';
COMMENT ON COLUMN buildmaster_v1.log_lines.chunk_first_line IS 'First line of the stored chunk holding this line: filter on it (with chunk_last_line) so that a line range reads only the chunks it needs.';
COMMENT ON COLUMN buildmaster_v1.log_lines.chunk_last_line IS 'Last line of the stored chunk holding this line.';
