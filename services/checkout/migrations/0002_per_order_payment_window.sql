-- A payment window of the order's own (the payment-expiry demo's few seconds); NULL is the
-- configured one.
ALTER TABLE sagas ADD COLUMN payment_window_ms bigint CHECK (payment_window_ms > 0);
