-- Task outputs and classified failures (SQLite). Kept column-for-column
-- identical to ../postgres/0002_task_outputs.sql.
-- outputs_json: JSON object of output name to value, as the delegate reported
-- them (masked). error_type: a dray_shared::error_type name, '' when none.
-- Rows written before this migration get the defaults: no outputs, no type.
ALTER TABLE tasks ADD COLUMN outputs_json TEXT NOT NULL DEFAULT '{}';
ALTER TABLE tasks ADD COLUMN error_type TEXT NOT NULL DEFAULT '';
