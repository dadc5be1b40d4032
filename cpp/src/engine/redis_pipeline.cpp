// The production pipeline: the Redis gate (gate/redis_gate: one Lua call decides a batch of one
// campaign), a Redis Stream per campaign as the grant log (log/), the writers (writer/) and
// PostgreSQL as the store (store/postgres). Same semantics as the embedded pipeline.
//
// Threads and connections:
//   callers     the facade checked the arguments; the campaign is looked up here (cached;
//               PostgreSQL on a miss), then handed to the gate
//   gate        its I/O thread and connections (gate/redis_gate.hpp)
//   writers     writer_threads GrantWriters (writer/), each with its own connections
//   control     a small pool of PostgreSQL connections and one Redis connection (behind a
//               mutex) for campaigns, stats, rules and drain
//   reconcile   its OWN Redis and PostgreSQL connections, opened per call: a reconcile of a
//               million log entries holds no lock that issuance, drain or a rule change waits on
//
// Campaign rules (pause / resume / close / set_quantity / rate limits): one PostgreSQL transaction locks the
// campaign row (FOR UPDATE: rule changes of a campaign queue across processes), writes the new
// rules, applies them to the Redis mirror in one Lua call that refuses a quantity below the
// gate's counter (which includes grants still in the log), then commits. If the commit's
// outcome is lost after Redis applied the change, the caller gets kUnavailable and a retry (the
// same call) brings both to the same rules.
//
// open_production() wires the deployment: this pipeline, and the coupon lifecycle and partners
// on PostgreSQL (store/postgres/pg_lifecycle.hpp) with authentication through the in-process
// cache, then a Redis cache shared by every engine of the deployment (redis/auth_cache.hpp). A
// coupon whose grant is still in the log (seq <= the mirror's counter, no row yet) is
// kUnavailable ("not yet usable, retry"), never kNotFound.
#include <hiredis/hiredis.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "couponcore/engine.hpp"
#include "couponcore/error.hpp"
#include "couponcore/limits.hpp"
#include "couponcore/metrics.hpp"
#include "engine/pipeline.hpp"
#include "engine/production_options.hpp"
#include "engine/redis_reconcile.hpp"
#include "events/redis_hub.hpp"
#include "gate/mirror.hpp"
#include "gate/redis_gate.hpp"
#include "gate/shards.hpp"
#include "log/dead_letters.hpp"
#include "log/grant_log.hpp"
#include "redis/address_limit.hpp"
#include "redis/auth_cache.hpp"
#include "redis/keys.hpp"
#include "redis/redis.hpp"
#include "redis/replica_wait.hpp"
#include "store/postgres/conn_pool.hpp"
#include "store/postgres/coupon_store.hpp"
#include "store/postgres/migrations.hpp"
#include "store/postgres/pg.hpp"
#include "store/postgres/pg_events.hpp"
#include "store/postgres/pg_lifecycle.hpp"
#include "util/assert.hpp"
#include "windows/sources.hpp"
#include "writer/grant_writer.hpp"

namespace couponcore {

namespace {

constexpr std::size_t kControlConnsMax = 2;  // opened as needed; before the rooms: one connection behind a mutex

using detail::check_options;
using detail::control_conn_options;
using detail::reconcile_production;
using detail::gate_options;
using detail::redis_options;
using gate::GateCampaign;
using pg::read_once_more;

class RedisPipeline final : public detail::Pipeline {
 public:
  explicit RedisPipeline(const ProductionOptions& o)
      : options_(o),
        redis_url_(redis::RedisUrl::parse(o.redis_url)),
        ctl_pool_(o.postgres_url, kControlConnsMax, control_conn_options()),
        ctl_redis_(redis_url_, redis_options(o, "-ctl")),
        writer_shared_(o.key_prefix, redis_url_, redis_options(o, "-writer"), o.postgres_url, o.writer, writers_stop_) {
    writer_shared_.commit_grants = &histograms_.commit_grants;
    writer_shared_.trace = &trace_slot_;
    writer_shared_.replicas_acked = o.replicas_acked;
    writer_shared_.replica_wait_ms = o.replica_wait_ms;
    writer_shared_.events = o.events.enabled;
    if (o.migrate_on_open) {
      auto c = ctl_pool_.acquire();
      pg::migrate_all(*c);
    }
    ctl_redis_.ensure_connected();  // fail fast on a wrong URL or password
    gate_ = std::make_unique<gate::RedisGate>(gate_options(o), redis_url_, redis_options(o, "-gate"), *this);
    const std::string base = writer::default_consumer_base();
    std::vector<std::string> consumers;
    for (int i = 0; i < o.writer_threads; ++i) consumers.push_back(base + "-" + std::to_string(i));
    if (!consumers.empty()) {  // beating before the first read (writer/liveness.hpp)
      heartbeat_ = std::make_unique<writer::Heartbeat>(o.key_prefix, redis_url_, redis_options(o, "-writer"),
                                                       o.writer.heartbeat_interval_ms, consumers);
      writer_shared_.heartbeat = heartbeat_.get();
    }
    for (const std::string& c : consumers) writers_.push_back(std::make_unique<writer::GrantWriter>(writer_shared_, c));
    for (auto& w : writers_) writer_threads_.emplace_back([&w] { w->run(); });
  }

  ~RedisPipeline() override { close(); }

  const char* kind() const noexcept override { return "production"; }

  // ---- campaigns -------------------------------------------------------------------------------

  Campaign create_campaign(const CampaignSpec& spec) override {
    Campaign c;
    {
      auto conn = ctl_pool_.acquire();
      conn->exec("SELECT 1");  // an INSERT is not repeated blindly: find a dead connection first
      c = pgstore::insert_campaign(*conn, spec, now_us());
    }
    auto entry = std::make_shared<GateCampaign>(c, options_.key_prefix);
    // The mirror is created now; if Redis is down, the first issue creates it (NOCAMPAIGN).
    try {
      std::lock_guard lock(ctl_redis_mu_);
      gate::write_mirror(ctl_redis_, ctl_scripts_, options_.key_prefix, *entry, 0);
    } catch (const Error&) {
    }
    std::lock_guard lock(campaigns_mu_);
    campaigns_.emplace(c.id, entry);
    return c;
  }

  // The record, from PostgreSQL: another process may have changed the rules. PostgreSQL
  // unreachable: this process's view.
  Campaign get_campaign(int64_t campaign_id) override {
    std::shared_ptr<GateCampaign> entry = entry_for(campaign_id);
    try {
      if (std::optional<Campaign> c = ctl_read([&](pg::Conn& conn) { return pgstore::find_campaign(conn, campaign_id); })) {
        return *c;
      }
    } catch (const Error& e) {
      if (e.code() != ErrorCode::kUnavailable) throw;
    }
    return entry->snapshot();
  }

  std::vector<Campaign> list_campaigns(int64_t partner_id) override {
    return ctl_read([&](pg::Conn& conn) { return pgstore::list_campaigns(conn, partner_id); });
  }

  int64_t campaign_partner(int64_t campaign_id) override {
    return entry_for(campaign_id)->campaign.spec.partner_id;  // immutable: no lock needed
  }

  // The campaign rules: see the file top. Closed is final; anything else may be repeated.
  Campaign change_rules(int64_t partner_id, int64_t campaign_id, const detail::RuleChange& change) override {
    std::shared_ptr<GateCampaign> entry = entry_for(campaign_id);
    const std::string not_found = "campaign " + std::to_string(campaign_id) + " not found";
    if (entry->campaign.spec.partner_id != partner_id) throw_not_found(not_found);
    auto conn = ctl_pool_.acquire();
    pg::Tx tx(*conn);
    std::optional<PgCouponStore::CampaignRules> current = PgCouponStore::lock_campaign_rules(*conn, partner_id, campaign_id);
    if (!current) throw_not_found(not_found);
    PgCouponStore::CampaignRules next = *current;
    if (change.state) next.state = *change.state;
    if (change.quantity) next.quantity = *change.quantity;
    if (change.rate) {
      next.rate_limit_per_user = change.rate->per_user;
      next.rate_limit_per_partner = change.rate->per_partner;
      next.rate_window_ms = change.rate->window_ms;
    }
    if (entry->sharded() && next.quantity < current->quantity) {
      throw_invalid("campaign " + std::to_string(campaign_id) + " is sharded (" +
                    std::to_string(entry->shard_keys.size()) + " shards): its quantity can only be raised");
    }
    const bool same = next == *current;
    if (current->state == CampaignState::kClosed && !same) {
      throw_conflict("campaign " + std::to_string(campaign_id) + " is closed; closing is final");
    }
    PgCouponStore::write_campaign_rules(*conn, campaign_id, next);
    {
      // Even when `same`: it repairs a mirror a lost commit left ahead.
      std::lock_guard lock(ctl_redis_mu_);
      gate::apply_rules(ctl_redis_, ctl_scripts_, *conn, options_.key_prefix, *entry, next);
    }
    tx.commit();
    entry->rules_changed(next);
    entry->all_dry_until_ms.store(0, std::memory_order_release);  // a raise brings stock
    return entry->snapshot();
  }

  // ---- issuance ----------------------------------------------------------------------------------

  void submit(int64_t campaign_id, std::vector<IssueRequest> requests, IssueCallback cb) override {
    gate_->submit(entry_for(campaign_id), std::move(requests), std::move(cb));
  }

  CampaignStats campaign_stats(int64_t campaign_id) override {
    entry_for(campaign_id);
    return ctl_read([&](pg::Conn& conn) { return pgstore::stats(conn, campaign_id); });
  }

  int64_t gate_issued(int64_t campaign_id) override {
    if (std::shared_ptr<GateCampaign> entry = entry_for(campaign_id); entry->sharded()) {
      int64_t issued = 0;
      std::lock_guard lock(ctl_redis_mu_);
      gate::unissued(ctl_redis_, *entry, &issued);
      return issued;
    }
    redis::CampaignKeys k(options_.key_prefix, campaign_id);
    std::lock_guard lock(ctl_redis_mu_);
    ctl_redis_.append(redis::Args{"HGET"}.add(k.meta).add("n"));
    ctl_redis_.append(redis::Args{"ZCARD"}.add(k.free_seqs));
    redis::Reply n = ctl_redis_.read_reply();
    redis::Reply free = ctl_redis_.read_reply();
    redis::check_reply(n, "HGET");
    redis::check_reply(free, "ZCARD");
    long long issued = 0, freed = 0;
    if (!redis::reply_int(n.raw(), &issued)) return -1;
    redis::reply_int(free.raw(), &freed);
    return issued - freed;
  }

  bool drain(double timeout_s) override {
    return drain_until(redis::steady_ms() + static_cast<int64_t>(std::max(0.0, timeout_s) * 1000.0));
  }

  // 1. Re-drive: whatever is still in the grant log goes into the table (idempotently, through
  //    the writers' own commit path), and leaves the log once it is there. Page by page (an
  //    entry holds up to 2,048 grants), each page in chunks of about read_count_max grants.
  // 2. The gate's view, 3. the store's, and the differences.
  ReconcileReport reconcile(int64_t campaign_id) override {
    return reconcile_production(options_, redis_url_, *entry_for(campaign_id), replica_waits_);
  }

  EngineCounters counters() const override {
    gate::GateCounters g = gate_->counters();
    EngineCounters k = g.answers;
    k.redis_reconnects = g.connects;
    WorkerStats w = writer_shared_.stats();
    k.grants_written = w.grants_written;
    k.dead_lettered = w.dead_lettered;
    k.writer_failures = w.failures;
    k.writer_claimed = w.claimed;
    k.replica_waits = g.replica_waits + w.replica_waits + replica_waits_.waits.load();
    k.replica_wait_shortfalls = g.replica_shortfalls + w.replica_wait_shortfalls + replica_waits_.shortfalls.load();
    return k;
  }

  std::vector<LogBacklog> log_backlog() override {
    std::lock_guard lock(ctl_redis_mu_);
    grantlog::GrantLog glog(ctl_redis_);
    std::vector<LogBacklog> b = glog.backlog(options_.key_prefix, kLogBacklogCampaignsMax);
    writer::add_unread_ages(ctl_redis_, options_.key_prefix, b);
    return b;
  }

  std::vector<WriterInfo> writers(bool with_pending) override {
    std::lock_guard lock(ctl_redis_mu_);
    grantlog::GrantLog glog(ctl_redis_);
    std::vector<int64_t> ids;
    if (with_pending) ids = glog.campaigns(options_.key_prefix);
    std::sort(ids.begin(), ids.end(), std::greater<>());
    if (ids.size() > kLogBacklogCampaignsMax) ids.resize(kLogBacklogCampaignsMax);
    std::vector<std::string> streams;
    for (int64_t id : ids) streams.push_back(redis::keys_of_stream(options_.key_prefix, id).grants);
    return writer::list_writers(ctl_redis_, options_.key_prefix, streams, options_.writer.dead_after_ms);
  }

  // ---- dead letters (docs/dead-letters.md) --------------------------------------------------

  std::vector<DeadLetter> list_dead_letters(int64_t campaign_id, const std::string& after, std::size_t limit) override {
    if (campaign_id > 0) {
      std::shared_ptr<GateCampaign> entry = entry_for(campaign_id);
      std::lock_guard lock(ctl_redis_mu_);
      if (!entry->sharded()) return grantlog::read_dead_letters(ctl_redis_, entry->keys, after, limit);
      return read_sharded_dead_letters(entry->shard_keys, after, limit);
    }
    // Every campaign listed for the writers, by id (a sharded campaign's shards together); the
    // cursor is "<campaign>:<record id>".
    int64_t from_campaign = 0;
    std::string from_id;
    if (!after.empty()) {
      const std::size_t colon = after.find(':');
      from_campaign = std::stoll(after.substr(0, colon));
      from_id = after.substr(colon + 1);
    }
    std::lock_guard lock(ctl_redis_mu_);
    std::vector<redis::CampaignKeys> streams;
    for (int64_t sid : grantlog::GrantLog(ctl_redis_).campaigns(options_.key_prefix)) {
      redis::CampaignKeys k = redis::keys_of_stream(options_.key_prefix, sid);
      if (k.campaign_id >= from_campaign) streams.push_back(std::move(k));
    }
    std::sort(streams.begin(), streams.end(), [](const redis::CampaignKeys& x, const redis::CampaignKeys& y) {
      return std::make_pair(x.campaign_id, x.shard) < std::make_pair(y.campaign_id, y.shard);
    });
    std::vector<DeadLetter> out;
    constexpr std::size_t kChunk = 1000;  // XLEN pipelined per round trip: empty streams are skipped
    std::vector<long long> lens(streams.size(), 0);
    for (std::size_t from = 0; from < streams.size(); from += kChunk) {
      const std::size_t to = std::min(streams.size(), from + kChunk);
      for (std::size_t i = from; i < to; ++i) ctl_redis_.append(redis::Args{"XLEN"}.add(streams[i].dead_letters));
      for (std::size_t i = from; i < to; ++i) {
        redis::Reply r = ctl_redis_.read_reply();
        if (r.is_integer()) lens[i] = r.integer();
      }
    }
    for (std::size_t i = 0; i < streams.size() && out.size() < limit;) {
      std::size_t j = i;  // [i, j): one campaign's streams
      long long any = 0;
      for (; j < streams.size() && streams[j].campaign_id == streams[i].campaign_id; ++j) any += lens[j];
      const std::string after_id = streams[i].campaign_id == from_campaign ? from_id : std::string();
      if (any > 0) {
        std::vector<DeadLetter> page =
            j - i == 1 && streams[i].shard == 0
                ? grantlog::read_dead_letters(ctl_redis_, streams[i], after_id, limit - out.size())
                : read_sharded_dead_letters(std::vector<redis::CampaignKeys>(streams.begin() + i, streams.begin() + j),
                                            after_id, limit - out.size());
        for (DeadLetter& d : page) out.push_back(std::move(d));
      }
      i = j;
    }
    return out;
  }

  DeadLetter get_dead_letter(int64_t campaign_id, const std::string& id) override {
    std::shared_ptr<GateCampaign> entry = entry_for(campaign_id);
    std::lock_guard lock(ctl_redis_mu_);
    std::optional<DeadLetter> d;
    find_dead_letter_shard(*entry, id, &d);
    if (!d) throw_not_found(dead_letter_not_found(campaign_id, id));
    d->id = id;  // a sharded campaign's record: the id it was listed under
    return *d;
  }

  DeadLetter redrive_dead_letter(int64_t campaign_id, const std::string& id) override {
    std::shared_ptr<GateCampaign> entry = entry_for(campaign_id);
    std::lock_guard lock(ctl_redis_mu_);
    std::optional<DeadLetter> d;
    const redis::CampaignKeys& k = find_dead_letter_shard(*entry, id, &d);
    if (!d) throw_not_found(dead_letter_not_found(campaign_id, id));
    std::string entry_id;
    move_dead_letter(*entry, campaign_id, id, [&] {
      grantlog::GrantLog(ctl_redis_).register_campaign(options_.key_prefix, k);  // the group reads it
      return grantlog::redrive(ctl_redis_, k, *d, &entry_id);
    });
    log(LogLevel::kInfo, "log", "dead letter " + id + " of campaign " + std::to_string(campaign_id) +
                                    " re-driven as grant-log entry " + entry_id);
    d->id = id;
    return *d;
  }

  DeadLetter drop_dead_letter(int64_t campaign_id, const std::string& id) override {
    std::shared_ptr<GateCampaign> entry = entry_for(campaign_id);
    std::optional<DeadLetter> d;
    int shard = 0;  // a sharded campaign: the shard whose dead letters hold the record
    {
      std::lock_guard lock(ctl_redis_mu_);
      const redis::CampaignKeys& k = find_dead_letter_shard(*entry, id, &d);
      shard = static_cast<int>(&k - entry->shard_keys.data());
    }
    if (!d) throw_not_found(dead_letter_not_found(campaign_id, id));
    // What the store shows free. The record is still there, so its grant is neither in the log
    // nor (unless written before it was refused: `identical`) in the store, and no one else can
    // take its seq or its user's ordinal until the drop gives them back.
    grantlog::DropCorrection c;
    if (d->seq && d->user_id && d->user_ordinal) {
      pgstore::GrantPlaces p = ctl_read(
          [&](pg::Conn& conn) { return pgstore::grant_places(conn, campaign_id, *d->seq, *d->user_id, *d->user_ordinal); });
      c.free_seq = !p.seq_taken;
      // The shard that granted it holds the user's count (a user's requests go to their shard).
      const int k = static_cast<int>(entry->shard_keys.size());
      c.lower_holder = !p.ordinal_taken && (k == 1 || redis::shard_of_user(*d->user_id, k) == shard);
    }
    std::lock_guard lock(ctl_redis_mu_);
    move_dead_letter(*entry, campaign_id, id, [&] {
      return grantlog::drop(ctl_redis_, entry->shard_keys[shard], *d, &c, entry->sharded());
    });
    entry->fast_until_ms.store(0, std::memory_order_release);  // stock may be back: ask Redis
    entry->all_dry_until_ms.store(0, std::memory_order_release);
    d->id = id;  // a sharded campaign's record: the id it was listed under
    log(LogLevel::kWarning, "log",
        "dead letter " + id + " of campaign " + std::to_string(campaign_id) + " dropped" +
            (c.seq_freed ? "; seq " + std::to_string(*d->seq) + " is free again" : "") +
            (c.holder_lowered ? "; the holder's count was lowered" : ""));
    return *d;
  }

  void close() override {
    if (closing_.exchange(true)) return;
    gate_->close();
    // A script that issues and closes should find its grants in PostgreSQL: give the in-process
    // writers a bounded time to finish the log (whatever is left waits for the next writer).
    if (!writers_.empty() && options_.close_drain_timeout_ms > 0) {
      try {
        drain_until(redis::steady_ms() + options_.close_drain_timeout_ms);
      } catch (const Error&) {
      }
    }
    writers_stop_ = true;
    for (auto& t : writer_threads_) t.join();
    writer_threads_.clear();
    heartbeat_.reset();  // after the writers: one finishing its last batch still beats
    writers_.clear();  // their connections go with them
    ctl_pool_.disconnect_idle();
  }

  // For a coupon without a row: did the gate grant it? (Its grant is then still in the log, or
  // dead-lettered and not dropped.) A free seq (a dropped dead letter's, not issued again) was
  // not. No mirror (Redis lost it): it cannot be ruled out, so the answer is "retry". Sharded:
  // the seq is in no shard's free seqs and in no move in flight.
  bool gate_granted(int64_t campaign_id, uint32_t seq) {
    std::shared_ptr<GateCampaign> entry;
    try {
      entry = entry_for(campaign_id);
    } catch (const Error& e) {
      if (e.code() != ErrorCode::kNotFound) throw;
    }
    if (entry && entry->sharded()) {
      int64_t issued = 0;
      std::lock_guard lock(ctl_redis_mu_);
      for (const auto& [lo, hi] : gate::unissued(ctl_redis_, *entry, &issued)) {
        if (seq >= lo && seq <= hi) return false;
      }
      return true;
    }
    redis::CampaignKeys k(options_.key_prefix, campaign_id);
    std::lock_guard lock(ctl_redis_mu_);
    ctl_redis_.append(redis::Args{"HGET"}.add(k.meta).add("n"));
    ctl_redis_.append(redis::Args{"ZSCORE"}.add(k.free_seqs).add(int64_t{seq}));
    redis::Reply r = ctl_redis_.read_reply();
    redis::Reply free = ctl_redis_.read_reply();
    redis::check_reply(r, "HGET");
    redis::check_reply(free, "ZSCORE");
    long long n = 0;
    if (!redis::reply_int(r.raw(), &n)) return true;
    return static_cast<long long>(seq) <= n && free.is_nil();
  }

  const redis::RedisUrl& redis_url() const { return redis_url_; }

 private:
  // A sharded campaign's dead-letter records carry ids "<ms>-<n * 16 + shard>" (still stream
  // ids, unique across shards whose streams may give the same id): see docs/production.md.
  static std::string shard_record_id(const std::string& id, int shard) {
    redis::StreamId sid;
    if (!redis::parse_stream_id(id, &sid)) return id;
    return std::to_string(sid.first) + "-" + std::to_string(sid.second * limits::kShardsMax + shard);
  }

  // The shard and its own record id of a sharded campaign's record id; false if none.
  static bool split_record_id(const std::string& id, std::size_t shards, int* shard, std::string* raw) {
    redis::StreamId sid;
    if (!redis::parse_stream_id(id, &sid) || sid.second % limits::kShardsMax >= shards) return false;
    *shard = static_cast<int>(sid.second % limits::kShardsMax);
    *raw = std::to_string(sid.first) + "-" + std::to_string(sid.second / limits::kShardsMax);
    return true;
  }

  // Every shard's records after `after` (a shard-tagged id), merged in id order (with
  // ctl_redis_mu_).
  std::vector<DeadLetter> read_sharded_dead_letters(const std::vector<redis::CampaignKeys>& shards, const std::string& after,
                                                    std::size_t limit) {
    redis::StreamId a{0, 0};
    const bool have_after = !after.empty() && redis::parse_stream_id(after, &a);
    std::vector<std::pair<redis::StreamId, DeadLetter>> all;
    for (const redis::CampaignKeys& sk : shards) {
      // Records (ms, n) of shard s come after (a.ms, a.n / 16, a.shard) when (ms, n) > (a.ms,
      // a.n / 16), or equal with s > a.shard: read from just before (a.ms, a.n / 16) and filter.
      std::string from;
      if (have_after) {
        const uint64_t an = a.second / limits::kShardsMax;
        from = an > 0 ? std::to_string(a.first) + "-" + std::to_string(an - 1)
               : a.first > 0 ? std::to_string(a.first - 1) + "-18446744073709551615"
                             : std::string();
      }
      for (DeadLetter& d : grantlog::read_dead_letters(ctl_redis_, sk, from, limit + 1)) {
        d.id = shard_record_id(d.id, sk.shard);
        redis::StreamId id;
        if (!redis::parse_stream_id(d.id, &id) || (have_after && !(a < id))) continue;
        all.emplace_back(id, std::move(d));
      }
    }
    std::sort(all.begin(), all.end(), [](const auto& x, const auto& y) { return x.first < y.first; });
    std::vector<DeadLetter> out;
    for (std::size_t i = 0; i < all.size() && out.size() < limit; ++i) out.push_back(std::move(all[i].second));
    return out;
  }

  // The shard whose dead letters hold record `id` (with ctl_redis_mu_); *d empty if none does.
  // The record's id stays the shard's own (as the log operations need it).
  const redis::CampaignKeys& find_dead_letter_shard(const GateCampaign& e, const std::string& id,
                                                    std::optional<DeadLetter>* d) {
    d->reset();
    if (!e.sharded()) {
      *d = grantlog::find_dead_letter(ctl_redis_, e.keys, id);
      return e.shard_keys.front();  // the same keys
    }
    int shard = 0;
    std::string raw;
    if (!split_record_id(id, e.shard_keys.size(), &shard, &raw)) return e.shard_keys.front();
    *d = grantlog::find_dead_letter(ctl_redis_, e.shard_keys[shard], raw);
    return e.shard_keys[shard];
  }

  // A read on a control connection, repeated once on a fresh connection if it had died idle.
  template <typename Fn>
  auto ctl_read(Fn&& fn) -> decltype(fn(std::declval<pg::Conn&>())) {
    auto conn = ctl_pool_.acquire();
    return read_once_more([&] { return fn(*conn); });
  }

  // Runs a dead-letter move (re-drive, drop: one script each) until it is done; a missing
  // mirror is rebuilt once (ctl_redis_mu_ held), a record gone meanwhile is kNotFound.
  template <typename Move>
  void move_dead_letter(GateCampaign& entry, int64_t campaign_id, const std::string& id, Move&& move) {
    for (int attempt = 0;; ++attempt) {
      switch (move()) {
        case grantlog::MoveOutcome::kDone:
          return;
        case grantlog::MoveOutcome::kGone:
          throw_not_found(dead_letter_not_found(campaign_id, id));
        case grantlog::MoveOutcome::kNoMirror:
          if (attempt > 0) throw_unavailable("campaign " + std::to_string(campaign_id) + ": the mirror keeps vanishing");
          restore_mirror_locked(entry);
          break;
      }
    }
  }

  static std::string dead_letter_not_found(int64_t campaign_id, const std::string& id) {
    return "dead letter " + id + " of campaign " + std::to_string(campaign_id) + " not found";
  }

  // The mirror is missing (NOCAMPAIGN): rebuild it on the control connections (ctl_redis_mu_ held).
  void restore_mirror_locked(GateCampaign& entry) {
    log(LogLevel::kWarning, "gate", "campaign " + std::to_string(entry.campaign.id) +
                                        " is not mirrored in Redis; rebuilding the mirror from PostgreSQL");
    auto conn = ctl_pool_.acquire();
    gate::restore_mirror(ctl_redis_, ctl_scripts_, *conn, options_.key_prefix, entry);
  }

  std::shared_ptr<GateCampaign> entry_for(int64_t campaign_id) {
    const std::string not_found = "campaign " + std::to_string(campaign_id) + " not found";
    if (campaign_id <= 0 || campaign_id > limits::kCampaignIdMax) throw_not_found(not_found);
    {
      std::lock_guard lock(campaigns_mu_);
      if (auto it = campaigns_.find(campaign_id); it != campaigns_.end()) return it->second;
    }
    std::optional<Campaign> c = ctl_read([&](pg::Conn& conn) { return pgstore::find_campaign(conn, campaign_id); });
    if (!c) throw_not_found(not_found);
    auto entry = std::make_shared<GateCampaign>(std::move(*c), options_.key_prefix);
    std::lock_guard lock(campaigns_mu_);
    return campaigns_.emplace(campaign_id, entry).first->second;
  }

  // Waits until every grant in the logs at the time of the call is in PostgreSQL: for each
  // campaign stream, the group has delivered past its last entry and nothing at or before it
  // is pending.
  bool drain_until(int64_t deadline_ms) {
    std::vector<std::pair<redis::CampaignKeys, redis::StreamId>> targets;
    bool listed = false;
    for (;;) {
      try {
        std::lock_guard lock(ctl_redis_mu_);
        grantlog::GrantLog glog(ctl_redis_);
        if (!listed) {
          for (int64_t id : glog.campaigns(options_.key_prefix)) {
            redis::CampaignKeys k;
            redis::CampaignKeys::from_stream_id(options_.key_prefix, id, &k);
            redis::StreamId last;
            if (glog.last_id(k, &last)) targets.emplace_back(std::move(k), last);
          }
          listed = true;
        }
        std::vector<std::pair<redis::CampaignKeys, redis::StreamId>> left;
        for (auto& t : targets) {
          if (!glog.settled_through(t.first, t.second)) left.push_back(std::move(t));
        }
        targets = std::move(left);
        if (targets.empty()) return true;
      } catch (const Error& e) {
        if (e.code() != ErrorCode::kUnavailable) throw;
      }
      if (redis::steady_ms() >= deadline_ms) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }

  const ProductionOptions options_;
  const redis::RedisUrl redis_url_;

  pg::ConnPool ctl_pool_;
  redis::ReplicaWaitCounts replica_waits_;  // reconcile's WAITs
  std::mutex ctl_redis_mu_;
  redis::RedisConn ctl_redis_;
  gate::MirrorScripts ctl_scripts_;  // with ctl_redis_mu_

  std::mutex campaigns_mu_;
  std::unordered_map<int64_t, std::shared_ptr<GateCampaign>> campaigns_;

  std::atomic<bool> closing_{false};
  std::atomic<bool> writers_stop_{false};
  writer::WriterShared writer_shared_;
  std::unique_ptr<gate::RedisGate> gate_;
  std::unique_ptr<writer::Heartbeat> heartbeat_;
  std::vector<std::unique_ptr<writer::GrantWriter>> writers_;
  std::vector<std::thread> writer_threads_;
};

// The production deployment's parts: the pipeline first (the lifecycle asks its gate whether a
// coupon without a row was granted), then the shared authentication cache and the lifecycle.
struct ProductionDeployment final : detail::Deployment {
  explicit ProductionDeployment(const ProductionOptions& o)
      : recorder(o.windows ? std::make_unique<windows::AnswerRecorder>(
                                 std::make_unique<windows::RedisAnswerSink>(redis::RedisUrl::parse(o.redis_url),
                                                                            redis_options(o, "-windows"), o.key_prefix,
                                                                            o.windows_stream_maxlen),
                                 windows::RecorderOptions{o.windows_flush_ms})
                           : nullptr),
        redis(o),
        auth_cache(redis.redis_url(), redis_options(o, "-auth"), o.key_prefix),
        address_limit(redis.redis_url(), redis_options(o, "-addr"), o.key_prefix),
        life(o.postgres_url, lifecycle_options(o)) {
    redis.set_answer_recorder(recorder.get());
    pipeline = &redis;
    coupons = &life.coupons;
    partners = &life.partners;
    addresses = &address_limit;
    events = event_parts.start(o, redis.redis_url(), redis_options(o, "-relay"), redis_options(o, "-events"), life.pool);
    close_drain_ms = o.close_drain_timeout_ms;
  }
  ~ProductionDeployment() override {
    redis.close();  // the lifecycle's hook uses the pipeline
    event_parts.stop();
  }

  // A closed engine holds no PostgreSQL connection (the server's slots are few).
  void close() override {
    redis.close();
    if (recorder) recorder->stop();  // the last records, after the last answers
    // After the writers: the events of their last batches are in the outbox; a bounded drain.
    event_parts.stop(close_drain_ms);
    life.pool.disconnect_idle();
  }

  PgLifecycleOptions lifecycle_options(const ProductionOptions& o) {
    PgLifecycleOptions lo;
    lo.conns_max = o.lifecycle_conns_max;
    lo.coupons.grant_pending = [this](int64_t campaign_id, uint32_t seq) { return redis.gate_granted(campaign_id, seq); };
    lo.coupons.events = o.events.enabled;
    lo.auth = o.auth;
    lo.shared_key_cache = o.auth.cache_ttl_ms > 0 ? &auth_cache : nullptr;
    return lo;
  }

  std::unique_ptr<windows::AnswerRecorder> recorder;  // outlives the pipeline that feeds it
  RedisPipeline redis;
  redis::RedisKeyCache auth_cache;
  redis::RedisAddressLimit address_limit;
  PgLifecycle life;
  events::ProductionEvents event_parts;
  int64_t close_drain_ms = 0;
};

}  // namespace

std::unique_ptr<Engine> open_production(const ProductionOptions& options) {
  check_options(options);
  // Every PostgreSQL session of the engine carries its key prefix: the outbox rows it writes
  // are its own (pg_events.hpp).
  ProductionOptions o = options;
  o.postgres_url = pgevents::conninfo_for_prefix(options.postgres_url, options.key_prefix);
  return std::make_unique<Engine>(std::make_unique<ProductionDeployment>(o));
}

}  // namespace couponcore
