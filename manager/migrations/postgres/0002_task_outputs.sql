-- Task outputs and classified failures (PostgreSQL). Kept column-for-column
-- identical to ../sqlite/0002_task_outputs.sql.
-- outputs_json: JSON object of output name to value, as the delegate reported
-- them (masked). error_type: a dray_shared::error_type name, '' when none.
-- Rows written before this migration get the defaults: no outputs, no type.
-- (A constant default makes ADD COLUMN a catalog-only change: no table rewrite.)
ALTER TABLE tasks ADD COLUMN outputs_json TEXT NOT NULL DEFAULT '{}';
ALTER TABLE tasks ADD COLUMN error_type TEXT NOT NULL DEFAULT '';
