-- bench/pg: what the writers' count of written grants (campaign_written, docs/events.md) costs
-- two writers of one campaign: a batch of 1,000 rows per transaction, without / with the upsert
-- of the campaign's count as the transaction's last statement (held until COMMIT).
SET client_min_messages = warning;
DROP TABLE IF EXISTS bw_rows, bw_written;
CREATE TABLE bw_rows (id bigserial PRIMARY KEY, campaign_id bigint NOT NULL, seq int NOT NULL, user_id text NOT NULL);
CREATE TABLE bw_written (campaign_id bigint PRIMARY KEY, written bigint NOT NULL);
