// Sharded campaigns: see shards.hpp.
#include "gate/shards.hpp"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <charconv>

#include "couponcore/error.hpp"
#include "couponcore/metrics.hpp"
#include "log/grant_log.hpp"
#include "store/postgres/coupon_store.hpp"

namespace couponcore::gate {

namespace {

bool parse_i64(std::string_view s, int64_t* v) {
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *v);
  return ec == std::errc() && end == s.data() + s.size();
}

// [lo, hi] intervals sorted and merged.
SeqRanges merged(SeqRanges r) {
  std::sort(r.begin(), r.end());
  SeqRanges out;
  for (const auto& iv : r) {
    if (!out.empty() && iv.first <= out.back().second + 1) {
      out.back().second = std::max(out.back().second, iv.second);
    } else {
      out.push_back(iv);
    }
  }
  return out;
}

}  // namespace

SeqRanges parse_ranges(std::string_view s) {
  SeqRanges out;
  bool more = !s.empty();
  while (more) {
    const std::size_t comma = s.find(',');
    std::string_view part = s.substr(0, comma);
    more = comma != std::string_view::npos;
    s = more ? s.substr(comma + 1) : std::string_view();
    const std::size_t dash = part.find('-');
    int64_t lo = 0, hi = 0;
    if (dash == std::string_view::npos || !parse_i64(part.substr(0, dash), &lo) || !parse_i64(part.substr(dash + 1), &hi) ||
        lo < 1 || hi < lo) {
      throw Error(ErrorCode::kUnavailable, "redis: a shard's free seqs are malformed: '" + std::string(part) + "'");
    }
    out.emplace_back(lo, hi);
  }
  return out;
}

std::string format_ranges(const SeqRanges& r) {
  std::string out;
  for (const auto& [lo, hi] : r) {
    if (!out.empty()) out += ',';
    out += std::to_string(lo) + "-" + std::to_string(hi);
  }
  return out;
}

int64_t count_ranges(const SeqRanges& r) {
  int64_t n = 0;
  for (const auto& [lo, hi] : r) n += hi - lo + 1;
  return n;
}

std::pair<int64_t, int64_t> initial_range(int64_t quantity, int shards, int shard) {
  const int64_t base = quantity / shards, extra = quantity % shards;
  const int64_t lo = 1 + shard * base + std::min<int64_t>(shard, extra);
  return {lo, lo + base + (shard < extra ? 1 : 0) - 1};
}

void write_shard_mirrors(redis::RedisConn& conn, MirrorScripts& scripts, std::string_view prefix, const GateCampaign& e,
                         const std::vector<SeqRanges>& free_if_new, const std::vector<int64_t>& issued_if_new) {
  const Campaign c = e.snapshot();
  const CampaignSpec& s = c.spec;
  grantlog::GrantLog glog(conn);
  for (std::size_t i = 0; i < e.shard_keys.size(); ++i) {
    redis::Args a;
    a.add(s.quantity).add(int64_t{s.per_user_limit});
    a.add(s.starts_at_us ? std::to_string(*s.starts_at_us) : std::string());
    a.add(s.ends_at_us ? std::to_string(*s.ends_at_us) : std::string());
    a.add(static_cast<int64_t>(c.state)).add(int64_t{s.shards}).add(static_cast<int64_t>(i));
    a.add(issued_if_new[i]).add(format_ranges(free_if_new[i]));
    add_rate_args(a, s.rate_limit_per_user, s.rate_limit_per_partner, s.rate_window_ms, s.shards);
    redis::check_reply(redis::eval(conn, scripts.shard_mirror, {e.shard_keys[i].meta}, a), "mirror campaign shard");
    glog.register_campaign(prefix, e.shard_keys[i]);
  }
}

void restore_shard_mirrors(redis::RedisConn& conn, MirrorScripts& scripts, pg::Conn& pg, std::string_view prefix,
                           GateCampaign& e) {
  using couponcore::pg::read_once_more;
  if (std::optional<Campaign> fresh = read_once_more([&] { return pgstore::find_campaign(pg, e.campaign.id); })) {
    std::lock_guard lock(e.fast_mu);
    e.campaign.state = fresh->state;
    // The store's quantity (another process may have raised it): a rebuilt shard 0 takes it as
    // its watermark, so a raise's seqs, possibly moved elsewhere meanwhile, are never added twice.
    e.campaign.spec.quantity = fresh->spec.quantity;
    e.campaign.spec.rate_limit_per_user = fresh->spec.rate_limit_per_user;
    e.campaign.spec.rate_limit_per_partner = fresh->spec.rate_limit_per_partner;
    e.campaign.spec.rate_window_ms = fresh->spec.rate_window_ms;
  }
  const int k = static_cast<int>(e.shard_keys.size());
  std::vector<bool> present(k);
  for (int i = 0; i < k; ++i) {
    present[i] = conn.command_checked(redis::Args{"EXISTS"}.add(e.shard_keys[i].meta), "EXISTS").integer() == 1;
  }
  pgstore::Holdings h = read_once_more([&] { return pgstore::holdings(pg, e.campaign.id); });
  const bool fresh = h.holders.empty() && std::none_of(present.begin(), present.end(), [](bool b) { return b; });
  std::vector<SeqRanges> free(k);
  std::vector<int64_t> issued(k, 0);
  std::vector<std::vector<std::pair<std::string, int64_t>>> holders(k);
  for (auto& [user, rows] : h.holders) {
    const int s = redis::shard_of_user(user, k);
    issued[s] += rows;
    holders[s].emplace_back(user, rows);
  }
  if (fresh) {
    for (int i = 0; i < k; ++i) {
      auto [lo, hi] = initial_range(e.campaign.spec.quantity, k, i);
      free[i].emplace_back(lo, hi);
    }
  } else {
    for (int i = 0; i < k; ++i) {
      if (present[i]) continue;
      log(LogLevel::kWarning, "gate", "campaign " + std::to_string(e.campaign.id) + " shard " + std::to_string(i) +
                                          " is rebuilt from the store without free seqs (its unsold stock is not"
                                          " re-issued: it cannot be told apart from grants lost with the shard)");
      for (std::size_t off = 0; off < holders[i].size(); off += 1000) {
        redis::Args a;
        for (std::size_t j = off; j < std::min(holders[i].size(), off + 1000); ++j) {
          a.add(holders[i][j].first).add(holders[i][j].second);
        }
        redis::check_reply(redis::eval(conn, scripts.holders, {e.shard_keys[i].holders}, a), "restore holders");
      }
    }
  }
  write_shard_mirrors(conn, scripts, prefix, e, free, issued);
}

int64_t move_into(redis::RedisConn& conn, MirrorScripts& scripts, const GateCampaign& c, int shard,
                  const std::string& move_id_base, uint64_t* move_counter, const redis::ReplicaWait& ack) {
  const int k = static_cast<int>(c.shard_keys.size());
  const redis::CampaignKeys& to = c.shard_keys[shard];
  int64_t moved = 0;
  for (int step = 1; step < k; ++step) {
    const redis::CampaignKeys& from = c.shard_keys[(shard + step) % k];
    const std::string id = move_id_base + "-" + std::to_string(++*move_counter);
    redis::Reply taken = redis::eval(conn, scripts.shard_take, {from.meta, from.transfers}, redis::Args{}.add(id).add(int64_t{shard}));
    redis::check_reply(taken, "stock move: take");
    const std::string ranges(taken.str());
    if (ranges.empty()) continue;
    // Replicas (shards.hpp, "durable moves"): the record before the give, the give before the
    // record goes. A shortfall throws and leaves the record: settle_moves finishes the move.
    ack.require(conn, from.meta, "stock move: take");
    redis::Reply given = redis::eval(conn, scripts.shard_give, {to.meta, to.received}, redis::Args{}.add(id).add(ranges));
    redis::check_reply(given, "stock move: give");  // on an error the record stays: settle_moves
    ack.require(conn, to.meta, "stock move: give");
    conn.command_checked(redis::Args{"HDEL"}.add(from.transfers).add(id), "HDEL");
    moved += count_ranges(parse_ranges(ranges));
  }
  return moved;
}

int64_t settle_moves(redis::RedisConn& conn, MirrorScripts& scripts, const GateCampaign& c, const redis::ReplicaWait& ack) {
  const int k = static_cast<int>(c.shard_keys.size());
  int64_t settled = 0;
  for (int d = 0; d < k; ++d) {
    const redis::CampaignKeys& from = c.shard_keys[d];
    redis::Reply all = conn.command_checked(redis::Args{"HGETALL"}.add(from.transfers), "HGETALL");
    if (all.size() > 0) ack.require(conn, from.meta, "stock move: settle (the records read)");
    for (std::size_t i = 0; i + 1 < all.size(); i += 2) {
      const std::string id(redis::reply_str(all.at(i)));
      const std::string_view v = redis::reply_str(all.at(i + 1));
      const std::size_t sp = v.find(' ');
      int64_t to = -1;
      if (sp == std::string_view::npos || !parse_i64(v.substr(0, sp), &to) || to < 0 || to >= k) {
        throw Error(ErrorCode::kUnavailable, "redis: a stock move record is malformed: " + id);
      }
      const std::string ranges(v.substr(sp + 1));
      const redis::CampaignKeys& rk = c.shard_keys[to];
      redis::Reply given = redis::eval(conn, scripts.shard_give, {rk.meta, rk.received}, redis::Args{}.add(id).add(ranges));
      redis::check_reply(given, "stock move: settle");
      ack.require(conn, rk.meta, "stock move: settle (the give)");
      conn.command_checked(redis::Args{"HDEL"}.add(from.transfers).add(id), "HDEL");
      ++settled;
      log(LogLevel::kInfo, "gate", "campaign " + std::to_string(c.campaign.id) + ": stock move " + id + " settled (" +
                                       (given.integer() == 1 ? "given now" : "had been given") + ")");
    }
  }
  return settled;
}

bool all_dry(redis::RedisConn& conn, const GateCampaign& c) {
  long long received[2] = {0, 0};
  for (int pass = 0; pass < 2; ++pass) {
    for (const redis::CampaignKeys& k : c.shard_keys) {
      conn.append(redis::Args{"HGET"}.add(k.meta).add("r"));
      conn.append(redis::Args{"HLEN"}.add(k.transfers));
      conn.append(redis::Args{"SCARD"}.add(k.received));
    }
    bool dry = true;
    for (std::size_t i = 0; i < c.shard_keys.size(); ++i) {
      redis::Reply r = conn.read_reply();
      redis::Reply x = conn.read_reply();
      redis::Reply rx = conn.read_reply();
      long long left = 0;
      if (r.is_error() || x.is_error() || rx.is_error()) {
        throw Error(ErrorCode::kUnavailable, "redis: a shard could not be read: " +
                                                 std::string(r.is_error() ? r.str() : x.is_error() ? x.str() : rx.str()));
      }
      redis::reply_int(r.raw(), &left);
      if (left > 0 || x.integer() > 0) dry = false;
      received[pass] += rx.integer();
    }
    if (!dry) return false;
  }
  return received[0] == received[1];
}

SeqRanges unissued(redis::RedisConn& conn, const GateCampaign& c, int64_t* issued_sum) {
  SeqRanges all;
  *issued_sum = 0;
  for (const redis::CampaignKeys& k : c.shard_keys) {
    redis::Reply m = conn.command_checked(redis::Args{"HMGET"}.add(k.meta).add("f").add("n"), "HMGET");
    if (m.size() == 2) {
      for (const auto& iv : parse_ranges(redis::reply_str(m.at(0)))) all.push_back(iv);
      long long n = 0;
      if (redis::reply_int(m.at(1), &n)) *issued_sum += n;
    }
    redis::Reply x = conn.command_checked(redis::Args{"HVALS"}.add(k.transfers), "HVALS");
    for (std::size_t i = 0; i < x.size(); ++i) {
      const std::string_view v = redis::reply_str(x.at(i));
      const std::size_t sp = v.find(' ');
      if (sp != std::string_view::npos) {
        for (const auto& iv : parse_ranges(v.substr(sp + 1))) all.push_back(iv);
      }
    }
  }
  return merged(std::move(all));
}

}  // namespace couponcore::gate
