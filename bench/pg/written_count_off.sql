BEGIN;
INSERT INTO bw_rows (campaign_id, seq, user_id) SELECT 1, g, 'user-' || g FROM generate_series(1, 1000) g;
COMMIT;
