-- A pause with an end: the demo's pauses lift themselves at resume_at, whatever happens to the
-- caller. NULL with paused = true is the operator's pause, which only a resume lifts.
ALTER TABLE lab_relay_control ADD COLUMN resume_at TIMESTAMPTZ;
