// Domain events below the engine: the CloudEvent JSON (escaping, time format, extensions), the
// type checks, and the readers' merge by sequence. Events produced by the real operations and
// read back on both deployments: tests/python/test_events.py.
#include <gtest/gtest.h>

#include "couponcore/error.hpp"
#include "events/event.hpp"
#include "test_util.hpp"

using namespace couponcore;

namespace {

using testutil::code_of;

TEST(Events, CloudEventJsonHasEveryAttributeAndEscapes) {
  events::Row r;
  r.seq = 42;
  r.id = "coupon.issued:7:1";
  r.type = "coupon.issued";
  r.subject = "coupon/30064771073";
  r.partner_id = 3;
  r.time_us = 1'796'543'916'000'007;  // 2026-12-06T07:58:36.000007Z
  r.data = R"({"user_id":"a\"b"})";
  const std::string j = events::cloudevent_json(r);
  EXPECT_EQ(j,
            R"({"specversion":"1.0","id":"coupon.issued:7:1","source":"couponcore/partner/3","type":"coupon.issued",)"
            R"("subject":"coupon/30064771073","time":"2026-12-06T07:58:36.000007Z","datacontenttype":"application/json",)"
            R"("dataschema":"urn:couponcore:event:coupon.issued:v1","sequence":"42","partnerid":"3",)"
            R"("data":{"user_id":"a\"b"}})");
  r.traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
  r.subject = "wallet/3/line\nbreak\x01";
  const std::string t = events::cloudevent_json(r);
  EXPECT_NE(t.find(R"("traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")"), std::string::npos);
  EXPECT_NE(t.find(R"("subject":"wallet/3/line\nbreak\u0001")"), std::string::npos);
}

TEST(Events, TimesAreRfc3339WithMicroseconds) {
  EXPECT_EQ(events::rfc3339_us(0), "1970-01-01T00:00:00.000000Z");
  EXPECT_EQ(events::rfc3339_us(-1), "1969-12-31T23:59:59.999999Z");
}

TEST(Events, TypesAndNamesAreChecked) {
  EXPECT_EQ(events::check_types({}).size(), 10u);
  EXPECT_EQ(events::check_types({"points.used", "coupon.issued", "points.used"}),
            (std::vector<std::string>{"coupon.issued", "points.used"}));
  EXPECT_EQ(code_of([] { events::check_types({"coupon.issue"}); }), ErrorCode::kInvalidArgument);
  EXPECT_EQ(code_of([] { events::check_name("group", ""); }), ErrorCode::kInvalidArgument);
  EXPECT_EQ(code_of([] { events::check_name("group", "a b"); }), ErrorCode::kInvalidArgument);
  EXPECT_EQ(code_of([] { events::check_name("group", std::string(65, 'a')); }), ErrorCode::kInvalidArgument);
  events::check_name("group", "crm.v2:blue-1");
  EXPECT_EQ(events::stream_key("cc:", "coupon.used"), "cc:events:{coupon.used}");
  EXPECT_EQ(events::dead_letter_key("cc:", "crm"), "cc:events:dl:{crm}");
}

EventMessage msg(const char* type, int64_t seq) {
  EventMessage m;
  m.type = type;
  m.sequence = seq;
  return m;
}

std::vector<int64_t> seqs(const std::vector<EventMessage>& v) {
  std::vector<int64_t> out;
  for (const EventMessage& m : v) out.push_back(m.sequence);
  return out;
}

TEST(Events, ReadsAreReleasedInSequenceOrderUpToTheLowestFullType) {
  std::vector<EventMessage> held;
  // coupon.used read a full batch ending at 5: a cancel at 9 may follow a use at 6..8 not read yet.
  auto out = events::release_in_order({msg("coupon.used", 4), msg("coupon.used", 5), msg("coupon.use_cancelled", 3),
                                       msg("coupon.use_cancelled", 9)},
                                      {5}, held);
  EXPECT_EQ(seqs(out), (std::vector<int64_t>{3, 4, 5}));
  EXPECT_EQ(seqs(held), (std::vector<int64_t>{9}));
  // The next read brings the use at 7 (not full): both come out, in order.
  out = events::release_in_order({msg("coupon.used", 7)}, {}, held);
  EXPECT_EQ(seqs(out), (std::vector<int64_t>{7, 9}));
  EXPECT_TRUE(held.empty());
}

}  // namespace
