// The Redis gate's I/O thread, coalescing and sold-out fast path: see redis_gate.hpp.
#include "gate/redis_gate.hpp"

#include <cstdio>
#include <algorithm>
#include <map>
#include <random>
#include <unordered_map>

#include "couponcore/error.hpp"
#include "couponcore/limits.hpp"
#include "couponcore/metrics.hpp"
#include "engine/pipeline.hpp"
#include "gate/shards.hpp"
#include "redis/cluster.hpp"
#include "util/assert.hpp"
#include "util/traceparent.hpp"
#include "util/validate.hpp"

namespace couponcore::gate {

namespace {

constexpr std::size_t kFastPathHoldersMax = 2'000'000;  // larger campaigns always ask Redis
constexpr int kSendRoundsMax = 3;                       // NOSCRIPT / NOCAMPAIGN re-sends within one cycle
constexpr int64_t kFastPathRecheckMs = 1'000;           // the sold-out fast path's life between checks
constexpr int kDryRoundsMax = 64;                       // stock moves and re-asks for DRY answers per cycle
constexpr long long kStatusDry = 6;                     // gate_shard.lua: the shard has no free seq

// One code of a gate reply (seq * 8 + status; RATE_LIMITED: retry_after_ms * 8 + 5) into res.
void decode_code(long long code, int64_t campaign_id, IssueResult* res) {
  res->status = static_cast<IssueStatus>(code & 7);
  if (res->status == IssueStatus::kIssued) {
    res->seq = static_cast<uint32_t>(code >> 3);
    res->coupon_id = make_coupon_id(campaign_id, res->seq);
  } else if (res->status == IssueStatus::kRateLimited) {
    res->retry_after_ms = code >> 3;
  }
}

std::exception_ptr unavailable(const std::string& m) { return std::make_exception_ptr(Error(ErrorCode::kUnavailable, m)); }

ErrorCode error_code_of(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const Error& err) {
    return err.code();
  } catch (...) {
    return ErrorCode::kInternal;
  }
}

pg::ConnOptions repair_conn_options() {
  pg::ConnOptions o;
  o.connect_now = false;
  o.application_name = "couponcore-gate";
  return o;
}

}  // namespace

struct RedisGate::Pending {
  std::shared_ptr<GateCampaign> campaign;
  std::vector<IssueRequest> requests;
  IssueCallback cb;
  std::vector<IssueResult> results;
  std::exception_ptr error;
  bool all_have_request_ids = false;
  bool lost = false;  // a call carrying part of it lost its reply
  bool unreplicated = false;  // ... or was not acknowledged by enough replicas (WAIT)
  int attempts = 0;
  std::chrono::steady_clock::time_point submitted_at;
};

struct RedisGate::Segment {
  Pending* pending;
  std::size_t begin, end;
};

struct RedisGate::Call {
  GateCampaign* campaign;
  std::vector<Segment> segments;
  std::size_t requests = 0;
  int shard = 0;  // a sharded campaign's shard
};

RedisGate::RedisGate(RedisGateOptions options, const redis::RedisUrl& url, const redis::RedisConnOptions& conn_options,
                     detail::Pipeline& owner)
    : options_(std::move(options)),
      owner_(owner),
      queue_("issue", options_.queued_requests_max, options_.queue_full_wait_ms),
      redis_(url, conn_options),
      script_(lua::kGate),
      shard_script_(lua::kGateShard),
      repair_pg_(options_.postgres_url, repair_conn_options()) {
  std::random_device rd;
  char buf[24];
  std::snprintf(buf, sizeof buf, "%08x%08x", rd(), rd());
  move_id_base_ = buf;  // stock move ids: unique per gate (shards.hpp)
  io_thread_ = std::thread([this] { io_loop(); });
}

RedisGate::~RedisGate() { close(); }

void RedisGate::close() {
  if (stopping_.exchange(true)) return;
  queue_.close();
  if (io_thread_.joinable()) io_thread_.join();
  repair_pg_.disconnect();
}

GateCounters RedisGate::counters() const {
  std::lock_guard lock(counters_mu_);
  GateCounters k = counters_;
  k.answers.queued_requests = queue_.depth();
  k.answers.queue_refused = queue_.refused();
  k.replica_waits += move_waits_.waits.load();
  k.replica_shortfalls += move_waits_.shortfalls.load();
  return k;
}

void RedisGate::count(const std::vector<IssueResult>& results, bool fast) {
  std::lock_guard lock(counters_mu_);
  count_results(counters_.answers, results, fast);
}

void RedisGate::submit(std::shared_ptr<GateCampaign> entry, std::vector<IssueRequest> requests, IssueCallback cb) {
  if (entry->fast_path_live()) {
    std::vector<IssueResult> results;
    if (answer_locally(*entry, requests, &results)) {
      count(results, /*fast=*/true);
      owner_.histograms().issue_latency_seconds.observe(0, results.size());
      owner_.record_answers(entry->campaign.id, results, 0);
      cb(std::move(results), nullptr);
      owner_.run_batch_end_hook();
      return;
    }
  }
  auto p = std::make_unique<Pending>();
  p->campaign = std::move(entry);
  p->all_have_request_ids =
      std::all_of(requests.begin(), requests.end(), [](const IssueRequest& r) { return !r.request_id.empty(); });
  p->requests = std::move(requests);
  p->cb = std::move(cb);
  p->submitted_at = std::chrono::steady_clock::now();
  const std::size_t n = p->requests.size();
  queue_.push(std::move(p), n);
}

// The sold-out fast path; false if some request needs Redis (a holder's request id).
bool RedisGate::answer_locally(GateCampaign& e, const std::vector<IssueRequest>& requests,
                               std::vector<IssueResult>* out) {
  const Campaign& c = e.campaign;
  const int64_t now = now_us();
  std::lock_guard lock(e.fast_mu);
  out->reserve(requests.size());
  for (const IssueRequest& r : requests) {
    auto it = e.holders.find(r.user_id);
    const uint32_t held = it == e.holders.end() ? 0 : it->second;
    if (held > 0 && !r.request_id.empty()) return false;
    IssueResult res;
    if (c.state == CampaignState::kPaused) {
      res.status = IssueStatus::kNotOpen;
    } else if (c.state == CampaignState::kClosed) {
      res.status = IssueStatus::kEnded;
    } else if (outside_window(c.spec, now, &res.status)) {
    } else if (held >= static_cast<uint32_t>(c.spec.per_user_limit)) {
      res.status = IssueStatus::kAlreadyIssued;
    } else {
      res.status = IssueStatus::kSoldOut;
    }
    out->push_back(res);
  }
  return true;
}

// ---- the I/O thread ----------------------------------------------------------------------------

void RedisGate::io_loop() {
  std::vector<std::pair<Queued, std::size_t>> batch;
  while (queue_.pop(&batch, options_.cycle_requests_max)) {
    process(batch);
    batch.clear();
  }
}

std::vector<RedisGate::Call> RedisGate::build_calls(std::vector<std::pair<Queued, std::size_t>>& batch) {
  std::vector<Call> calls;
  std::unordered_map<GateCampaign*, std::size_t> open;  // campaign -> call being filled
  std::map<std::pair<GateCampaign*, int>, std::size_t> open_shard;  // sharded: (campaign, shard) -> call
  for (auto& [up, weight] : batch) {
    Pending* p = up.get();
    p->results.assign(p->requests.size(), IssueResult{});
    p->lost = false;
    p->unreplicated = false;
    if (p->campaign->sharded()) {
      GateCampaign* c = p->campaign.get();
      const int k = static_cast<int>(c->shard_keys.size());
      for (std::size_t i = 0; i < p->requests.size(); ++i) {
        const int shard = redis::shard_of_user(p->requests[i].user_id, k);
        auto it = open_shard.find({c, shard});
        if (it == open_shard.end() || calls[it->second].requests >= options_.batch_requests_max) {
          calls.push_back(Call{c, {}, 0, shard});
          it = open_shard.insert_or_assign({c, shard}, calls.size() - 1).first;
        }
        Call& call = calls[it->second];
        if (!call.segments.empty() && call.segments.back().pending == p && call.segments.back().end == i) {
          call.segments.back().end = i + 1;
        } else {
          call.segments.push_back(Segment{p, i, i + 1});
        }
        call.requests++;
      }
      continue;
    }
    std::size_t off = 0;
    while (off < p->requests.size()) {
      GateCampaign* c = p->campaign.get();
      auto it = open.find(c);
      if (it == open.end() || calls[it->second].requests >= options_.batch_requests_max) {
        calls.push_back(Call{c, {}, 0});
        open[c] = calls.size() - 1;
        it = open.find(c);
      }
      Call& call = calls[it->second];
      const std::size_t take = std::min(p->requests.size() - off, options_.batch_requests_max - call.requests);
      call.segments.push_back(Segment{p, off, off + take});
      call.requests += take;
      off += take;
    }
  }
  return calls;
}

redis::Args RedisGate::call_args(const Call& call, int64_t generation) const {
  const redis::CampaignKeys& k = call.campaign->shard_keys[call.shard];
  redis::Args a = call.campaign->sharded()
                      ? shard_script_.evalsha_args(
                            {k.meta, k.holders, k.grants, k.answers(generation), k.answers(generation - 1), k.rate})
                      : script_.evalsha_args({k.meta, k.holders, k.grants, k.answers(generation), k.answers(generation - 1),
                                              k.free_seqs, k.rate});
  a.add(call.campaign->campaign.id).add(options_.answer_ttl_s * 2 + 60);
  // Trace context (gate/lua/trace_args.lua): one more argument, only if a request carries one:
  // the requests' binary forms, 25 bytes each (zeros: none).
  std::string traceparents;
  std::size_t n = 0;
  for (const Segment& s : call.segments) {
    for (std::size_t i = s.begin; i < s.end; ++i, ++n) {
      const IssueRequest& r = s.pending->requests[i];
      a.add(r.user_id).add(r.request_id);
      if (r.traceparent.empty()) continue;
      if (traceparents.empty()) traceparents.reserve(call.requests * trace::kTraceparentBinaryBytes);
      traceparents.resize(n * trace::kTraceparentBinaryBytes, '\0');
      trace::append_binary(r.traceparent, &traceparents);
    }
  }
  if (!traceparents.empty()) {
    traceparents.resize(n * trace::kTraceparentBinaryBytes, '\0');
    a.add(traceparents);
  }
  return a;
}

// Tracing: the call's record (one gate batch), when a trace sink is registered.
void RedisGate::note_call(TraceBuffer& tracer, const Call& call, int64_t sent_us) const {
  TraceRecord rec;
  rec.kind = TraceKind::kGateBatch;
  rec.start_us = sent_us;
  rec.end_us = now_us();
  rec.campaign_ids.push_back(call.campaign->campaign.id);
  rec.items = static_cast<int64_t>(call.requests);
  for (const Segment& s : call.segments) {
    for (std::size_t i = s.begin; i < s.end; ++i) add_trace_link(rec, s.pending->requests[i].traceparent);
  }
  tracer.put(std::move(rec));
}

void RedisGate::fail_call(const Call& call, std::exception_ptr error) {
  for (const Segment& s : call.segments) {
    if (!s.pending->error) s.pending->error = error;
  }
}

// Decodes one reply into the results of the call's segments. A reply of another shape is
// Redis's word against ours (another script under our sha, a proxy in between): kUnavailable.
bool RedisGate::decode(const Call& call, const redis::Reply& r) {
  if (!r.is_array() || r.size() != 3 + call.requests) {
    fail_call(call, unavailable("redis: unexpected gate reply"));
    return false;
  }
  long long issued = 0, quantity = 0, server_now_us = 0;
  redis::reply_int(r.at(0), &issued);
  redis::reply_int(r.at(1), &quantity);
  if (redis::reply_int(r.at(2), &server_now_us) && server_now_us > 0) owner_.note_gate_clock(server_now_us);
  if (call.campaign->sharded()) {
    decode_shard(call, r);
    return true;
  }
  std::size_t k = 3;
  std::size_t granted = 0;
  for (const Segment& s : call.segments) {
    for (std::size_t i = s.begin; i < s.end; ++i, ++k) {
      long long code = 0;
      if (!redis::reply_int(r.at(k), &code) || code < 0 || (code & 7) > static_cast<long long>(IssueStatus::kRateLimited)) {
        fail_call(call, unavailable("redis: bad code in gate reply"));
        return false;
      }
      IssueResult& res = s.pending->results[i];
      decode_code(code, call.campaign->campaign.id, &res);
      if (res.status == IssueStatus::kIssued) {
        ++granted;
        // The gate's side of the batch: a seq is in 1..quantity (a free seq given back by a
        // dead-letter drop, or the counter's next), and so is the count issued.
        CC_ASSERT(res.seq >= 1 && static_cast<long long>(res.seq) <= quantity && issued >= 1,
                  "the gate answered seq " + std::to_string(res.seq) + " with issued " + std::to_string(issued) +
                      " of " + std::to_string(quantity));
      }
    }
  }
  CC_ASSERT(issued <= quantity || granted == 0, "the gate issued past the quantity in this batch");
  {
    std::lock_guard lock(counters_mu_);
    counters_.answers.batches++;
    counters_.answers.commits++;
  }
  owner_.histograms().batch_requests.observe(static_cast<double>(call.requests));
  if (issued >= quantity && !call.campaign->publish_queued) {
    call.campaign->publish_queued = true;
    sold_out_now_.push_back(call.campaign);
  }
  return true;
}

void RedisGate::mark_lost(const Call& call, const std::string& reason) {
  for (const Segment& s : call.segments) s.pending->lost = true;
  lost_reason_ = reason;
  lost_after_send_ = true;
}

redis::Args RedisGate::wait_args() const {
  return redis::Args{"WAIT"}.add(static_cast<int64_t>(options_.replicas_acked)).add(options_.replica_wait_ms);
}

// Reads the WAIT replies appended after a pipeline (one per entry of waited) and holds back
// the decided calls whose master acknowledged fewer than replicas_acked replicas: they are
// marked lost and unreplicated (see "Replicas" in redis_gate.hpp). A decided call that ran on
// a master without a WAIT in this pipeline (it was redirected) gets one now.
void RedisGate::check_replicas(const std::vector<std::pair<Call*, std::string>>& decided,
                               const std::vector<std::string>& waited) {
  std::vector<std::pair<std::string, long long>> acks;  // node -> replicas acknowledged (-1: no answer)
  std::string why;
  for (const std::string& addr : waited) {
    long long n = -1;
    try {
      redis::Reply r = redis_.read_reply();
      if (r.is_error()) {
        why = std::string(r.str());
      } else if (!redis::reply_int(r.raw(), &n)) {
        n = -1;
      }
    } catch (const Error& e) {
      why = e.what();
      if (!redis_.is_cluster()) {
        // The one connection is gone: every call of the pipeline has an unknown fate.
        for (const auto& [call, node] : decided) mark_lost(*call, e.what());
        throw;
      }
    }
    acks.emplace_back(addr, n);
  }
  for (const auto& [call, node] : decided) {
    auto it = std::find_if(acks.begin(), acks.end(), [&](const auto& a) { return a.first == node; });
    if (it == acks.end()) {
      long long n = -1;
      try {
        redis::Reply r = redis_.cluster()->command_on(node, wait_args());
        if (!redis::reply_int(r.raw(), &n)) n = -1;
        std::lock_guard lock(counters_mu_);
        counters_.replica_waits++;
      } catch (const Error& e) {
        why = e.what();
      }
      acks.emplace_back(node, n);
      it = acks.end() - 1;
    }
    if (it->second >= options_.replicas_acked) continue;
    std::string reason = "WAIT " + std::to_string(options_.replicas_acked) + " " + std::to_string(options_.replica_wait_ms) +
                         (node.empty() ? "" : " on " + node) + " answered " +
                         (it->second < 0 ? "no count" + (why.empty() ? "" : " (" + why + ")") : std::to_string(it->second));
    mark_lost(*call, reason);
    for (const Segment& s : call->segments) s.pending->unreplicated = true;
    {
      std::lock_guard lock(counters_mu_);
      counters_.replica_shortfalls++;
    }
    log(LogLevel::kWarning, "gate", "a batch is not acknowledged by enough replicas: " + reason);
  }
}

// A shard's reply: {issued by the shard, free seqs left, now, codes}; DRY requests wait for
// resolve_dry.
void RedisGate::decode_shard(const Call& call, const redis::Reply& r) {
  // A raise reaches Redis before this process's view of the quantity: the bound is the limit.
  const long long quantity = limits::kQuantityMax;
  std::size_t k = 3;
  for (const Segment& s : call.segments) {
    for (std::size_t i = s.begin; i < s.end; ++i, ++k) {
      long long code = 0;
      if (!redis::reply_int(r.at(k), &code) || code < 0 || (code & 7) > kStatusDry) {
        fail_call(call, unavailable("redis: bad code in gate reply"));
        return;
      }
      if ((code & 7) == kStatusDry) {
        dry_.push_back(Dry{s.pending, i, call.campaign, call.shard});
        continue;
      }
      IssueResult& res = s.pending->results[i];
      decode_code(code, call.campaign->campaign.id, &res);
      if (res.status == IssueStatus::kIssued) {
        CC_ASSERT(res.seq >= 1 && static_cast<long long>(res.seq) <= quantity,
                  "a shard answered seq " + std::to_string(res.seq) + " of " + std::to_string(quantity));
      }
    }
  }
  {
    std::lock_guard lock(counters_mu_);
    counters_.answers.batches++;
    counters_.answers.commits++;
  }
  owner_.histograms().batch_requests.observe(static_cast<double>(call.requests));
}

// The DRY answers of sharded campaigns: move stock into each dry shard from the others and ask
// again; SOLD_OUT only when every shard is dry with no move in flight (shards.hpp). A request
// still dry after kDryRoundsMax rounds (others keep taking what moves) is kUnavailable, never
// a false SOLD_OUT.
void RedisGate::resolve_dry() {
  const redis::ReplicaWait move_ack{options_.replicas_acked, options_.replica_wait_ms, &move_waits_};
  for (int round = 0; !dry_.empty() && round < kDryRoundsMax; ++round) {
    std::map<std::pair<GateCampaign*, int>, std::vector<Dry>> groups;
    for (const Dry& d : dry_) {
      if (!d.pending->lost && !d.pending->error) groups[{d.campaign, d.shard}].push_back(d);
    }
    dry_.clear();
    std::vector<Call> again;
    for (auto& [key, reqs] : groups) {
      GateCampaign& c = *key.first;
      bool sold_out = false;
      try {
        redis_.ensure_connected();
        if (c.all_dry_until_ms > redis::steady_ms()) {
          sold_out = true;
        } else if (move_into(redis_, mirror_scripts_, c, key.second, move_id_base_, &moves_, move_ack) == 0) {
          settle_moves(redis_, mirror_scripts_, c, move_ack);
          if (all_dry(redis_, c)) {
            sold_out = true;
            c.all_dry_until_ms = redis::steady_ms() + kFastPathRecheckMs;
          }
        }
      } catch (const Error& e) {
        for (const Dry& d : reqs) {
          if (!d.pending->error) d.pending->error = unavailable(std::string("moving stock between shards: ") + e.what());
        }
        continue;
      }
      if (sold_out) {
        for (const Dry& d : reqs) d.pending->results[d.index] = IssueResult{IssueStatus::kSoldOut, 0, 0, 0};
        if (!c.publish_queued && !c.fast_path_live()) {  // every shard dry: arm the fast path
          c.publish_queued = true;
          sold_out_now_.push_back(&c);
        }
        continue;
      }
      Call call{&c, {}, 0, key.second};
      for (const Dry& d : reqs) {
        if (call.requests >= options_.batch_requests_max) {
          again.push_back(std::move(call));
          call = Call{&c, {}, 0, key.second};
        }
        call.segments.push_back(Segment{d.pending, d.index, d.index + 1});
        call.requests++;
      }
      again.push_back(std::move(call));
    }
    if (!again.empty()) send(again);
  }
  for (const Dry& d : dry_) {
    if (!d.pending->error) d.pending->error = unavailable("stock kept moving between the campaign's shards; retry");
  }
  dry_.clear();
}

// Sends the calls, pipelined, and decodes the replies. Calls whose replies are lost mark
// their submissions lost; error replies fail their submissions.
void RedisGate::send(std::vector<Call>& calls) {
  std::vector<Call*> todo;
  for (Call& c : calls) todo.push_back(&c);
  std::unordered_map<GateCampaign*, bool> restored;
  const bool acked = options_.replicas_acked > 0;
  for (int round = 0; round < kSendRoundsMax && !todo.empty(); ++round) {
    std::vector<Call*> again;
    bool reload = false;
    std::size_t next = 0;  // first call of todo not yet answered
    bool appended = false;
    try {
      const uint64_t before = redis_.connects();
      redis_.ensure_connected();
      if (redis_.connects() != before) {
        std::lock_guard lock(counters_mu_);
        counters_.connects++;
      }
      if (script_.sha().empty()) script_.load(redis_);
      if (shard_script_.sha().empty()) shard_script_.load(redis_);
      const int64_t generation = now_us() / 1'000'000 / options_.answer_ttl_s;
      TraceBuffer* const tracer = owner_.trace_slot().get();  // null: tracing off
      while (next < todo.size()) {
        const std::size_t end = std::min(todo.size(), next + options_.pipeline_calls_max);
        const int64_t sent_us = tracer ? now_us() : 0;
        for (std::size_t i = next; i < end; ++i) {
          appended = true;
          redis_.append(call_args(*todo[i], generation));
        }
        // Replica acknowledgement: WAIT after the calls, on the same connections.
        std::vector<std::string> waited;  // cluster: the masters that got a WAIT, in append order
        if (acked) {
          if (redis_.is_cluster()) {
            for (std::size_t i = next; i < end; ++i) {
              const int slot = redis::key_slot(todo[i]->campaign->shard_keys[todo[i]->shard].meta);
              const std::string addr = redis_.cluster()->master_of(slot);
              if (std::find(waited.begin(), waited.end(), addr) != waited.end()) continue;
              waited.push_back(addr);
              redis_.cluster()->append_at(wait_args(), slot);
            }
          } else {
            redis_.append(wait_args());
            waited.emplace_back();
          }
          std::lock_guard lock(counters_mu_);
          counters_.replica_waits += waited.size();
        }
        std::vector<std::pair<Call*, std::string>> decided;  // decoded calls and the node that ran them
        for (; next < end; ++next) {
          Call& call = *todo[next];
          redis::Reply r;
          if (redis_.is_cluster()) {
            // One master lost: its calls' outcomes are unknown, the other masters' replies stand.
            try {
              r = redis_.read_reply();
            } catch (const Error& e) {
              for (const Segment& s : call.segments) s.pending->lost = true;
              lost_reason_ = e.what();
              lost_after_send_ = true;
              log(LogLevel::kWarning, "gate", std::string("a master was lost with calls in flight: ") + e.what());
              continue;
            }
          } else {
            r = redis_.read_reply();
          }
          if (redis::is_noscript(r)) {
            reload = true;
            again.push_back(&call);
          } else if (r.is_error() && r.str().substr(0, 10) == "NOCAMPAIGN") {
            if (!restored[call.campaign]) {
              restored[call.campaign] = true;
              restore_queue_.push_back(call.campaign);
            }
            again.push_back(&call);
          } else if (r.is_error()) {
            try {
              redis::throw_reply_error(r.str(), "gate");
            } catch (...) {
              fail_call(call, std::current_exception());
            }
          } else if (decode(call, r)) {
            if (tracer) note_call(*tracer, call, sent_us);
            if (acked) decided.emplace_back(&call, redis_.is_cluster() ? redis_.cluster()->last_node() : std::string());
          }
        }
        if (acked) check_replicas(decided, waited);
      }
      if (reload) {
        script_.load(redis_);
        shard_script_.load(redis_);
      }
      for (GateCampaign* c : restore_queue_) {
        log(LogLevel::kWarning, "gate", "campaign " + std::to_string(c->campaign.id) +
                                            " is not mirrored in Redis; rebuilding the mirror from PostgreSQL");
        try {
          restore_mirror(redis_, mirror_scripts_, repair_pg_, options_.key_prefix, *c);
        } catch (const pg::PgError& e) {
          // The store is unreachable: the campaign's calls fail now (kUnavailable), the others go on.
          for (Call* call : again) {
            if (call->campaign == c) fail_call(*call, unavailable(std::string("the campaign's mirror cannot be rebuilt: ") + e.what()));
          }
        }
      }
      restore_queue_.clear();
    } catch (const Error& e) {
      // The connection failed: everything not answered has an unknown outcome.
      for (std::size_t i = next; i < todo.size(); ++i) {
        for (const Segment& s : todo[i]->segments) s.pending->lost = true;
      }
      for (Call* c : again) {
        for (const Segment& s : c->segments) s.pending->lost = true;
      }
      lost_reason_ = e.what();
      lost_after_send_ = appended || round > 0;
      log(LogLevel::kWarning, "gate", std::string(lost_after_send_ ? "connection lost with calls in flight: " : "") + e.what());
      restore_queue_.clear();
      return;
    }
    todo = std::move(again);
  }
  for (Call* c : todo) fail_call(*c, unavailable("redis: the gate call could not be made (the script or mirror kept vanishing)"));
}

void RedisGate::process(std::vector<std::pair<Queued, std::size_t>>& batch) {
  std::vector<Call> calls = build_calls(batch);
  send(calls);
  resolve_dry();
  std::vector<std::pair<Queued, std::size_t>> retry;
  const auto answered_at = std::chrono::steady_clock::now();
  for (auto& [up, weight] : batch) {
    Pending& p = *up;
    if (p.lost && !p.error) {
      if (p.all_have_request_ids && p.attempts < options_.retries_max && !stopping_) {
        p.attempts++;
        retry.emplace_back(std::move(up), weight);
        continue;
      }
      if (p.unreplicated) {
        p.error = unavailable("not yet replicated: the batch is on the master but " + lost_reason_ +
                              " within replica_wait_ms; its grants may or may not survive a failover: retry with the "
                              "same request_id");
      } else {
        p.error = unavailable(lost_after_send_ ? "redis connection lost before the answer arrived (" + lost_reason_ +
                                                     "); the outcome is unknown: retry with the same request_id"
                                               : lost_reason_);
      }
    }
    if (p.error) {
      std::lock_guard lock(counters_mu_);
      if (error_code_of(p.error) == ErrorCode::kUnavailable) counters_.answers.unavailable += p.requests.size();
    } else {
      CC_ASSERT(p.results.size() == p.requests.size(), "a submission answered with the wrong number of results");
      count(p.results, /*fast=*/false);
      owner_.record_answers(p.campaign->campaign.id, p.results,
                            std::chrono::duration_cast<std::chrono::microseconds>(answered_at - p.submitted_at).count());
    }
    owner_.histograms().issue_latency_seconds.observe(std::chrono::duration<double>(answered_at - p.submitted_at).count(),
                                                      p.requests.size());
    try {
      if (p.error) {
        p.cb({}, p.error);
      } else {
        p.cb(std::move(p.results), nullptr);
      }
    } catch (...) {
      // A callback must not take the I/O thread down.
    }
  }
  owner_.run_batch_end_hook();
  if (!retry.empty()) queue_.push_front(std::move(retry));
  publish_sold_out();
}

// Arms (or re-arms) the fast path of campaigns whose replies showed them sold out.
void RedisGate::publish_sold_out() {
  for (GateCampaign* c : sold_out_now_) {
    c->publish_queued = false;
    try {
      arm_fast_path(*c);
    } catch (const Error&) {
      // Redis hiccup: the next reply that shows the campaign sold out tries again.
    }
  }
  sold_out_now_.clear();
}

// Reads the mirror (Redis's rules are the gate's truth), the holders if issued or quantity
// moved since they were read, and arms the fast path for kFastPathRecheckMs.
void RedisGate::arm_fast_path(GateCampaign& c) {
  const int64_t now = redis::steady_ms();
  if (c.fast_until_ms.load(std::memory_order_acquire) - now > kFastPathRecheckMs / 2) return;  // fresh
  const uint64_t version = c.rules_version.load(std::memory_order_acquire);
  // Every shard's meta (one when not sharded) and its free seqs: a sorted set, or a shard's
  // free count r and its moves in flight. A sharded campaign's n and d are the shards' sums.
  for (const redis::CampaignKeys& k : c.shard_keys) {
    redis_.append(redis::Args{"HMGET"}.add(k.meta).add("q").add("st").add("n").add("d").add("r"));
    redis_.append(c.sharded() ? redis::Args{"HLEN"}.add(k.transfers) : redis::Args{"ZCARD"}.add(k.free_seqs));
  }
  long long q = 0, st = 0, n = 0, d = 0, free = 0;
  bool mirrored = true;
  for (std::size_t i = 0; i < c.shard_keys.size(); ++i) {
    redis::Reply m = redis_.read_reply();
    redis::Reply f = redis_.read_reply();
    redis::check_reply(m, "HMGET");
    redis::check_reply(f, c.sharded() ? "HLEN" : "ZCARD");
    long long sq = 0, sst = 0, sn = 0, sd = 0, sr = 0;
    if (m.size() != 5 || !redis::reply_int(m.at(0), &sq) || !redis::reply_int(m.at(2), &sn)) mirrored = false;
    if (!redis::reply_int(m.at(1), &sst) || sst < 0 || sst > 2) sst = 0;
    redis::reply_int(m.at(3), &sd);  // absent: no drop yet
    redis::reply_int(m.at(4), &sr);  // a shard's free seqs left
    if (i == 0) q = sq, st = sst;    // the rules are every shard's
    n += sn;
    d += sd;
    free += c.sharded() ? sr + f.integer() : f.integer();
  }
  if (!mirrored) return;
  // Issued: the counter less the free seqs (dead-letter drops give seqs back); a sharded
  // campaign is sold out when no shard has a free seq and no move is in flight.
  const bool sold_out = (c.sharded() ? free == 0 : n - free >= q) && static_cast<std::size_t>(q) <= kFastPathHoldersMax;
  bool rescan = false;
  {
    std::lock_guard lock(c.fast_mu);
    rescan = sold_out && (c.armed_issued != n || c.armed_quantity != q || c.armed_drops != d);
  }
  StringMap<int64_t> h;
  for (const redis::CampaignKeys& k : c.shard_keys) {
    if (!rescan) break;
    for (auto& [user, held] : scan_holders(redis_, k)) h[user] += held;  // a user is in one shard
  }
  std::lock_guard lock(c.fast_mu);
  if (c.rules_version.load(std::memory_order_acquire) != version) return;  // a local rule change won
  c.campaign.spec.quantity = q;
  c.campaign.state = static_cast<CampaignState>(st);
  if (!sold_out) return;
  if (rescan) {
    c.holders.clear();
    for (auto& [user, held] : h) c.holders.emplace(user, static_cast<uint32_t>(held));
    c.armed_issued = n;
    c.armed_quantity = q;
    c.armed_drops = d;
  }
  c.fast_until_ms.store(now + kFastPathRecheckMs, std::memory_order_release);
}

}  // namespace couponcore::gate
