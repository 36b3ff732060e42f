-- When an upload session last received data: idle sessions expire, busy ones never do.

ALTER TABLE upload_sessions ADD COLUMN touched_at BIGINT;
