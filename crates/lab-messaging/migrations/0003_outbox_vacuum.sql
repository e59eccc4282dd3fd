-- Marking a row sent leaves a dead entry in `lab_outbox_pending` (the new row version no longer
-- matches its predicate), and the relay's claim walks every dead entry that a vacuum has not yet
-- removed. The table keeps a week of sent rows, so the default trigger (20 % of the table dead)
-- fires less and less often as it grows: vacuum it after a fixed number of changes instead.
ALTER TABLE lab_outbox SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000);
