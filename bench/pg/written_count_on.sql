BEGIN;
INSERT INTO bw_rows (campaign_id, seq, user_id) SELECT 1, g, 'user-' || g FROM generate_series(1, 1000) g;
INSERT INTO bw_written AS p (campaign_id, written) VALUES (1, 1000)
  ON CONFLICT (campaign_id) DO UPDATE SET written = p.written + excluded.written;
COMMIT;
