// ONE field list per value type the core hands to Python (see records.hpp). A new field of a
// C++ value type is one line here; its Python definition (couponcore/_types.py, _wallet.py)
// names it, and the HTTP faces follow from that (docs/development.md, "Value types").
#include "records.hpp"

#include <algorithm>
#include <map>
#include <optional>
#include <string>

#include "convert.hpp"
#include "errors.hpp"

namespace couponcore::py_bindings {

namespace {

// 0 / "" in the core mean "none" for these fields.
std::optional<int64_t> nonzero(int64_t v) { return v != 0 ? std::optional<int64_t>(v) : std::nullopt; }
std::optional<std::string> nonempty(const std::string& v) {
  return v.empty() ? std::nullopt : std::optional<std::string>(v);
}

const char* discount_kind_name(DiscountKind k) {
  switch (k) {
    case DiscountKind::kFixed: return "fixed";
    case DiscountKind::kPercent: return "percent";
    default: return "none";
  }
}

const char* campaign_state_name(CampaignState s) {
  switch (s) {
    case CampaignState::kPaused: return "paused";
    case CampaignState::kClosed: return "closed";
    default: return "active";
  }
}

using C = Campaign;
const Record kCampaign{"Campaign",
    field<C>("id", &C::id),
    field<C>("partner_id", [](const C& c) { return c.spec.partner_id; }),
    field<C>("name", [](const C& c) { return c.spec.name; }),
    field<C>("quantity", [](const C& c) { return c.spec.quantity; }),
    field<C>("per_user_limit", [](const C& c) { return c.spec.per_user_limit; }),
    field<C>("starts_at_us", [](const C& c) { return c.spec.starts_at_us; }),
    field<C>("ends_at_us", [](const C& c) { return c.spec.ends_at_us; }),
    field<C>("state", [](const C& c) { return campaign_state_name(c.state); }),
    field<C>("discount_kind", [](const C& c) { return discount_kind_name(c.spec.discount_kind); }),
    field<C>("discount_value", [](const C& c) { return c.spec.discount_value; }),
    field<C>("discount_max", [](const C& c) { return c.spec.discount_max; }),
    field<C>("min_order_amount", [](const C& c) { return c.spec.min_order_amount; }),
    field<C>("valid_until_us", [](const C& c) { return c.spec.valid_until_us; }),
    field<C>("valid_days", [](const C& c) { return c.spec.valid_days; }),
    field<C>("shards", [](const C& c) { return c.spec.shards; }),
    field<C>("created_at_us", &C::created_at_us),
    field<C>("rate_limit_per_user", [](const C& c) { return c.spec.rate_limit_per_user; }),
    field<C>("rate_limit_per_partner", [](const C& c) { return c.spec.rate_limit_per_partner; }),
    field<C>("rate_window_ms", [](const C& c) { return c.spec.rate_window_ms; })};

using IR = IssueResult;
const Record kIssueResult{"IssueResult",
    field<IR>("status", [](const IR& r) { return status_object(r.status); }),
    field<IR>("seq", [](const IR& r) { return nonzero(r.seq); }),
    field<IR>("coupon_id", [](const IR& r) { return nonzero(r.coupon_id); }),
    field<IR>("retry_after_ms", [](const IR& r) { return nonzero(r.retry_after_ms); })};

const Record kCampaignStats{"CampaignStats",
    field<CampaignStats>("rows", &CampaignStats::rows),
    field<CampaignStats>("distinct_users", &CampaignStats::distinct_users),
    field<CampaignStats>("min_seq", &CampaignStats::min_seq),
    field<CampaignStats>("max_seq", &CampaignStats::max_seq)};

using LB = LogBacklog;
const Record kLogBacklog{"LogBacklog",
    field<LB>("campaign_id", &LB::campaign_id),
    field<LB>("entries", &LB::entries),
    field<LB>("pending", &LB::pending),
    field<LB>("oldest_pending_age_ms", &LB::oldest_pending_age_ms),
    field<LB>("dead_letters", &LB::dead_letters),
    field<LB>("oldest_unread_age_ms", &LB::oldest_unread_age_ms)};

using WI = WriterInfo;
const Record kWriterInfo{"WriterInfo",
    field<WI>("consumer", &WI::consumer),
    field<WI>("alive", &WI::alive),
    field<WI>("last_beat_age_ms",
              [](const WI& w) { return w.last_beat_age_ms >= 0 ? std::optional<int64_t>(w.last_beat_age_ms) : std::nullopt; }),
    field<WI>("pending", &WI::pending)};

using DL = DeadLetter;
const Record kDeadLetter{"DeadLetter",
    field<DL>("campaign_id", &DL::campaign_id),
    field<DL>("id", &DL::id),
    field<DL>("entry_id", &DL::entry_id),
    field<DL>("reason", &DL::reason),
    field<DL>("deliveries", &DL::deliveries),
    field<DL>("redrives", &DL::redrives),
    field<DL>("seq", &DL::seq),
    field<DL>("user_ordinal", &DL::user_ordinal),
    field<DL>("user_id", &DL::user_id),
    field<DL>("request_id", &DL::request_id),
    field<DL>("dead_lettered_at_us", &DL::dead_lettered_at_us),
    field<DL>("fields", [](const DL& d) {
      // Raw bytes (a version-3 entry's b is binary): not UTF-8 shows as \xNN escapes.
      const auto text = [](const std::string& s) {
        return py::reinterpret_steal<py::str>(
            PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "backslashreplace"));
      };
      py::dict f;
      for (const auto& [k, v] : d.fields) f[text(k)] = text(v);
      return f;
    })};

using RR = ReconcileReport;
const Record kReconcileReport{"ReconcileReport",
    field<RR>("campaign_id", &RR::campaign_id),
    field<RR>("gate_issued", &RR::gate_issued),
    field<RR>("gate_holders", &RR::gate_holders),
    field<RR>("log_pending", &RR::log_pending),
    field<RR>("redriven", &RR::redriven),
    field<RR>("store_rows", &RR::store_rows),
    field<RR>("store_distinct_users", &RR::store_distinct_users),
    field<RR>("store_max_seq", &RR::store_max_seq),
    field<RR>("missing_in_store", &RR::missing_in_store),
    field<RR>("unexpected_in_store", &RR::unexpected_in_store),
    field<RR>("holder_mismatches", &RR::holder_mismatches),
    field<RR>("dead_lettered", &RR::dead_lettered),
    field<RR>("missing_seqs_sample", &RR::missing_seqs_sample),
    field<RR>("consistent", &RR::consistent)};

const Record kCoupon{"Coupon",
    field<Coupon>("id", &Coupon::id),
    field<Coupon>("campaign_id", &Coupon::campaign_id),
    field<Coupon>("seq", &Coupon::seq),
    field<Coupon>("user_id", &Coupon::user_id),
    field<Coupon>("state", [](const Coupon& c) { return coupon_state_name(c.state); }),
    field<Coupon>("issued_at_us", &Coupon::issued_at_us),
    field<Coupon>("valid_until_us", &Coupon::valid_until_us),
    field<Coupon>("used_order_id", &Coupon::used_order_id),
    field<Coupon>("used_at_us", &Coupon::used_at_us),
    field<Coupon>("order_amount", &Coupon::order_amount),
    field<Coupon>("discount_amount", &Coupon::discount_amount)};

const Record kUseResult{"UseResult",
    field<UseResult>("coupon_id", &UseResult::coupon_id),
    field<UseResult>("campaign_id", &UseResult::campaign_id),
    field<UseResult>("user_id", &UseResult::user_id),
    field<UseResult>("order_id", &UseResult::order_id),
    field<UseResult>("order_amount", &UseResult::order_amount),
    field<UseResult>("discount_amount", &UseResult::discount_amount),
    field<UseResult>("payable_amount", &UseResult::payable_amount),
    field<UseResult>("used_at_us", &UseResult::used_at_us)};

const Record kCouponPage{"CouponPage",
    field<CouponPage>("items", [](const CouponPage& p) { return to_records(p.items); }),
    field<CouponPage>("next_cursor", &CouponPage::next_cursor)};

const Record kCouponCounts{"CouponCounts",
    field<CouponCounts>("issued", &CouponCounts::issued),
    field<CouponCounts>("used", &CouponCounts::used),
    field<CouponCounts>("expired", &CouponCounts::expired),
    field<CouponCounts>("total", &CouponCounts::total)};

const Record kExpireReport{"ExpireReport",
    field<ExpireReport>("expired", &ExpireReport::expired),
    field<ExpireReport>("chunks", &ExpireReport::chunks),
    field<ExpireReport>("more", &ExpireReport::more)};

const Record kPartner{"Partner",
    field<Partner>("id", &Partner::id),
    field<Partner>("name", &Partner::name),
    field<Partner>("created_at_us", &Partner::created_at_us),
    field<Partner>("active_keys", &Partner::active_keys)};

const Record kPartnerKey{"PartnerKey",
    field<PartnerKey>("partner", [](const PartnerKey& k) { return to_record(k.partner); }),
    field<PartnerKey>("api_key", &PartnerKey::api_key)};

const Record kAuthCounters{"AuthCounters",
    field<AuthCounters>("authentications", &AuthCounters::authentications),
    field<AuthCounters>("failures", &AuthCounters::failures),
    field<AuthCounters>("cache_hits", &AuthCounters::cache_hits),
    field<AuthCounters>("l2_hits", &AuthCounters::l2_hits),
    field<AuthCounters>("db_queries", &AuthCounters::db_queries)};
using ARC = AnswerRecorderCounters;
const Record kAnswerRecorderCounters{"AnswerRecorderCounters",
    field<ARC>("answers", &ARC::answers),
    field<ARC>("records", &ARC::records),
    field<ARC>("flush_failures", &ARC::flush_failures),
    field<ARC>("records_dropped", &ARC::records_dropped),
    field<ARC>("answers_dropped", &ARC::answers_dropped),
    field<ARC>("clock_offset_us", &ARC::clock_offset_us)};

// One result for every wallet operation; couponcore/_wallet.py reads three classes from it
// (WalletResult, CheckoutResult, CheckoutCancelResult).
using WR = WalletResult;
const Record kWalletResult{"WalletResult",
    field<WR>("entry_id", &WR::entry_id),
    field<WR>("amount", &WR::amount),
    field<WR>("balance_after", &WR::balance_after),
    field<WR>("expired_amount", &WR::expired_amount),
    field<WR>("peer_entry_id", [](const WR& r) { return nonzero(r.peer_entry_id); }),
    field<WR>("created_at_us", &WR::created_at_us),
    field<WR>("replayed", &WR::replayed),
    field<WR>("order_id", &WR::order_id),
    field<WR>("order_amount", &WR::order_amount),
    field<WR>("coupon_id", [](const WR& r) { return nonzero(r.coupon_id); }),
    field<WR>("discount_amount", &WR::discount_amount),
    field<WR>("points", &WR::points),
    field<WR>("payable_amount", &WR::payable_amount),
    field<WR>("coupon_state", [](const WR& r) -> std::optional<std::string> {
      if (r.coupon_state < 0) return std::nullopt;
      return coupon_state_name(static_cast<CouponState>(r.coupon_state));
    })};

const Record kWalletBalance{"WalletBalance",
    field<WalletBalance>("total", &WalletBalance::total),
    field<WalletBalance>("next_expiry_amount", &WalletBalance::next_expiry_amount),
    field<WalletBalance>("next_expiry_at_us", &WalletBalance::next_expiry_at_us)};

using WE = WalletEntry;
const Record kWalletEntry{"WalletEntry",
    field<WE>("id", &WE::id),
    field<WE>("kind", [](const WE& e) { return wallet_entry_kind_name(e.kind); }),
    field<WE>("amount", &WE::amount),
    field<WE>("balance_after", &WE::balance_after),
    field<WE>("idempotency_key", [](const WE& e) { return nonempty(e.idempotency_key); }),
    field<WE>("ref_entry_id", [](const WE& e) { return nonzero(e.ref_entry_id); }),
    field<WE>("order_id", [](const WE& e) { return nonempty(e.order_id); }),
    field<WE>("reason", [](const WE& e) { return nonempty(e.reason); }),
    field<WE>("created_at_us", &WE::created_at_us)};

const Record kWalletHistoryPage{"WalletHistoryPage",
    field<WalletHistoryPage>("entries", [](const WalletHistoryPage& p) { return to_records(p.entries); }),
    field<WalletHistoryPage>("next_cursor", [](const WalletHistoryPage& p) { return nonzero(p.next_cursor); })};

const Record kWalletExpireReport{"WalletExpireReport",
    field<WalletExpireReport>("wallets", &WalletExpireReport::wallets),
    field<WalletExpireReport>("points", &WalletExpireReport::points),
    field<WalletExpireReport>("chunks", &WalletExpireReport::chunks)};

const Record kWalletPurgeReport{"WalletPurgeReport",
    field<WalletPurgeReport>("deleted", &WalletPurgeReport::deleted),
    field<WalletPurgeReport>("chunks", &WalletPurgeReport::chunks),
    field<WalletPurgeReport>("done", &WalletPurgeReport::done)};

using WA = WalletAudit;
const Record kWalletAudit{"WalletAudit",
    field<WA>("wallets", &WA::wallets),
    field<WA>("balance_not_lot_sum", &WA::balance_not_lot_sum),
    field<WA>("negative", &WA::negative),
    field<WA>("balance_not_entry_sum", &WA::balance_not_entry_sum),
    field<WA>("running_balance_broken", &WA::running_balance_broken),
    field<WA>("draws_not_entry_amount", &WA::draws_not_entry_amount),
    field<WA>("lots_not_entry_amount", &WA::lots_not_entry_amount),
    field<WA>("lot_drawn_mismatch", &WA::lot_drawn_mismatch),
    field<WA>("orphans", &WA::orphans),
    field<WA>("ok", [](const WA& a) { return a.ok(); })};

using WC = WalletCounters;
const Record kWalletCounters{"WalletCounters",
    field<WC>("ops", &WC::ops),
    field<WC>("ops_failed", &WC::ops_failed),
    field<WC>("replays", &WC::replays),
    field<WC>("batches", &WC::batches),
    field<WC>("retries", &WC::retries),
    field<WC>("isolated", &WC::isolated),
    field<WC>("max_batch_ops", &WC::max_batch_ops),
    field<WC>("queued_ops", &WC::queued_ops),
    field<WC>("queue_refused", &WC::queue_refused)};

}  // namespace

py::tuple to_record(const Campaign& v) { return kCampaign.tuple(v); }
py::tuple to_record(const CampaignStats& v) { return kCampaignStats.tuple(v); }
py::tuple to_record(const LogBacklog& v) { return kLogBacklog.tuple(v); }
py::tuple to_record(const WriterInfo& v) { return kWriterInfo.tuple(v); }
py::tuple to_record(const DeadLetter& v) { return kDeadLetter.tuple(v); }
py::tuple to_record(const Coupon& v) { return kCoupon.tuple(v); }
py::tuple to_record(const UseResult& v) { return kUseResult.tuple(v); }
py::tuple to_record(const CouponPage& v) { return kCouponPage.tuple(v); }
py::tuple to_record(const CouponCounts& v) { return kCouponCounts.tuple(v); }
py::tuple to_record(const ExpireReport& v) { return kExpireReport.tuple(v); }
py::tuple to_record(const Partner& v) { return kPartner.tuple(v); }
py::tuple to_record(const PartnerKey& v) { return kPartnerKey.tuple(v); }
py::tuple to_record(const WalletResult& v) { return kWalletResult.tuple(v); }
py::tuple to_record(const WalletBalance& v) { return kWalletBalance.tuple(v); }
py::tuple to_record(const WalletEntry& v) { return kWalletEntry.tuple(v); }
py::tuple to_record(const WalletHistoryPage& v) { return kWalletHistoryPage.tuple(v); }
py::dict to_dict(const ReconcileReport& v) { return kReconcileReport.dict(v); }
py::dict to_dict(const AuthCounters& v) { return kAuthCounters.dict(v); }
py::dict to_dict(const AnswerRecorderCounters& v) { return kAnswerRecorderCounters.dict(v); }
py::dict to_dict(const WalletExpireReport& v) { return kWalletExpireReport.dict(v); }
py::dict to_dict(const WalletPurgeReport& v) { return kWalletPurgeReport.dict(v); }
py::dict to_dict(const WalletAudit& v) { return kWalletAudit.dict(v); }
py::dict to_dict(const WalletCounters& v) { return kWalletCounters.dict(v); }

py::dict to_dict(const TraceStats& s) {
  py::dict d;
  d["recorded"] = s.recorded;
  d["dropped"] = s.dropped;
  d["malformed_traceparents"] = s.malformed_traceparents;
  return d;
}

std::size_t trace_capacity(py::handle capacity) {
  const int64_t n = to_i64(capacity, "capacity");
  if (n <= 0) raise(ErrorCode::kInvalidArgument, "the trace buffer needs a capacity of at least 1 record");
  return static_cast<std::size_t>(n);
}

py::list take_trace_records(const std::function<std::vector<TraceRecord>(std::size_t, int64_t)>& take, py::handle max,
                            py::handle timeout_ms) {
  const int64_t m = to_i64(max, "max"), t = to_i64(timeout_ms, "timeout_ms");
  std::vector<TraceRecord> recs;
  {
    py::gil_scoped_release nogil;
    recs = take(static_cast<std::size_t>(std::max<int64_t>(m, 1)), t);
  }
  py::list out(recs.size());
  for (std::size_t i = 0; i < recs.size(); ++i) {
    const TraceRecord& r = recs[i];
    py::list tps(r.traceparents.size());
    for (std::size_t k = 0; k < r.traceparents.size(); ++k) tps[k] = py::str(r.traceparents[k]);
    py::list cids(r.campaign_ids.size());
    for (std::size_t k = 0; k < r.campaign_ids.size(); ++k) cids[k] = py::int_(r.campaign_ids[k]);
    out[i] = py::make_tuple(r.kind == TraceKind::kGateBatch ? "gate.batch" : "writer.commit", r.start_us, r.end_us, cids,
                            r.items, r.traced, tps);
  }
  return out;
}

void register_records(py::module_& m) {
  py::class_<IssueResult> cls(m, "IssueResult", "The answer to one issue request.");
  kIssueResult.def_properties(cls);
  cls.def_property_readonly("issued", [](const IssueResult& r) { return r.status == IssueStatus::kIssued; })
      .def("__eq__", [](const IssueResult& a, const IssueResult& b) {
        return a.status == b.status && a.seq == b.seq && a.coupon_id == b.coupon_id && a.retry_after_ms == b.retry_after_ms;
      })
      .def("__hash__", [](const IssueResult& r) { return py::hash(kIssueResult.tuple(r)); })
      .def("__repr__", [](const IssueResult& r) {
        std::string s = std::string("IssueResult(status=") + issue_status_name(r.status);
        if (r.seq) s += ", seq=" + std::to_string(r.seq) + ", coupon_id=" + std::to_string(r.coupon_id);
        if (r.retry_after_ms) s += ", retry_after_ms=" + std::to_string(r.retry_after_ms);
        return s + ")";
      });

  py::dict fields;
  auto publish = [&](const auto& record) {
    py::tuple names(record.kSize);
    std::size_t i = 0;
    for (const std::string& n : record.names()) PyTuple_SET_ITEM(names.ptr(), static_cast<Py_ssize_t>(i++), py::str(n).release().ptr());
    fields[record.name()] = names;
  };
  publish(kCampaign);
  publish(kIssueResult);
  publish(kCampaignStats);
  publish(kLogBacklog);
  publish(kWriterInfo);
  publish(kDeadLetter);
  publish(kReconcileReport);
  publish(kCoupon);
  publish(kUseResult);
  publish(kCouponPage);
  publish(kCouponCounts);
  publish(kExpireReport);
  publish(kPartner);
  publish(kPartnerKey);
  publish(kAuthCounters);
  publish(kAnswerRecorderCounters);
  publish(kWalletResult);
  publish(kWalletBalance);
  publish(kWalletEntry);
  publish(kWalletHistoryPage);
  publish(kWalletExpireReport);
  publish(kWalletPurgeReport);
  publish(kWalletAudit);
  publish(kWalletCounters);
  m.def("fields", [fields](const std::string& name) -> py::tuple {
    if (!fields.contains(name)) throw py::key_error("no record " + name);
    return fields[py::str(name)].cast<py::tuple>();
  }, py::arg("name"), "The field names of a core value type, in the order its record tuples hold them.");
  m.def("records", [fields]() { return py::tuple(fields.attr("keys")()); }, "The names of the core's value types.");
}

}  // namespace couponcore::py_bindings
