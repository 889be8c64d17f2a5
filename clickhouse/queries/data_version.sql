-- A number that changes whenever spans are written: the rows in the table's active parts.
-- Read from part metadata, not the data, so the dashboard's live feed can ask every second.
-- Merges leave it unchanged (MergeTree keeps every row).
SELECT toUInt64(sum(rows)) AS version
FROM system.parts
WHERE database = {database_name:String} AND table = {table_name:String} AND active
