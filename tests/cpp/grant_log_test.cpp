// The grant log's entry formats (grantlog::parse_grants): version 3 (v 3 c t g b: binary
// traceparents), version 2 (v 2 c t g p: text traceparents), version 1 (v 1 c t g, what the gate
// writes without trace context), the same batch shape without a version, the older one-grant
// entry (c s u o r t), a re-driven dead letter's, and every way an entry can be malformed. No
// servers.
#include <gtest/gtest.h>

#include "log/dead_letters.hpp"
#include "log/grant_entry.hpp"
#include "util/traceparent.hpp"

using namespace couponcore;
using grantlog::LogEntry;
using grantlog::parse_grants;

namespace {

LogEntry entry(std::vector<std::pair<std::string, std::string>> fields) {
  LogEntry e;
  e.id = "1-0";
  e.fields = std::move(fields);
  return e;
}

TEST(GrantLogTest, ABatchEntryHoldsItsGrantsInOrder) {
  std::vector<Grant> out;
  out.push_back(Grant{7, 99, "earlier", 1, "", 1});  // appended to, never cleared
  ASSERT_EQ(parse_grants(entry({{"c", "7"}, {"t", "1700000000000000"}, {"g", "3 1 ann r-1\n4 2 bob \n5 1 c:d@e.f/g+h=i "}}),
                         7, &out),
            "");
  ASSERT_EQ(out.size(), 4u);
  EXPECT_EQ(out[1].seq, 3u);
  EXPECT_EQ(out[1].user_ordinal, 1u);
  EXPECT_EQ(out[1].user_id, "ann");
  EXPECT_EQ(out[1].request_id, "r-1");
  EXPECT_EQ(out[2].user_id, "bob");
  EXPECT_EQ(out[2].user_ordinal, 2u);
  EXPECT_EQ(out[2].request_id, "");
  EXPECT_EQ(out[3].user_id, "c:d@e.f/g+h=i");
  for (std::size_t i = 1; i < out.size(); ++i) {
    EXPECT_EQ(out[i].campaign_id, 7);
    EXPECT_EQ(out[i].issued_at_us, 1'700'000'000'000'000);
  }
}

TEST(GrantLogTest, AOneGrantEntryStillParses) {
  std::vector<Grant> out;
  ASSERT_EQ(parse_grants(entry({{"c", "7"}, {"s", "12"}, {"u", "ann"}, {"o", "1"}, {"r", ""}, {"t", "5"}}), 7, &out), "");
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].seq, 12u);
  EXPECT_EQ(out[0].user_id, "ann");
  EXPECT_EQ(out[0].issued_at_us, 5);
}

TEST(GrantLogTest, MalformedEntriesAreRefusedWholeAndAppendNothing) {
  const std::vector<std::vector<std::pair<std::string, std::string>>> bad = {
      {{"c", "8"}, {"t", "1"}, {"g", "1 1 ann "}},                   // another campaign's id
      {{"t", "1"}, {"g", "1 1 ann "}},                               // no campaign
      {{"c", "7"}, {"g", "1 1 ann "}},                               // no time
      {{"c", "7"}, {"t", "-1"}, {"g", "1 1 ann "}},                  // negative time
      {{"c", "7"}, {"t", "1"}, {"g", ""}},                           // no grant
      {{"c", "7"}, {"t", "1"}, {"g", "1 1 ann"}},                    // three fields
      {{"c", "7"}, {"t", "1"}, {"g", "1 1 ann r x"}},                // five fields
      {{"c", "7"}, {"t", "1"}, {"g", "1 1 ann \n"}},                 // an empty line
      {{"c", "7"}, {"t", "1"}, {"g", "1 1 ann \n0 1 bob "}},         // seq 0, after a good line
      {{"c", "7"}, {"t", "1"}, {"g", "x 1 ann "}},                   // seq not a number
      {{"c", "7"}, {"t", "1"}, {"g", "1 0 ann "}},                   // ordinal 0
      {{"c", "7"}, {"t", "1"}, {"g", "1 1 a}b "}},                   // user id outside the alphabet
      {{"c", "7"}, {"t", "1"}, {"g", "1 1 ann r}1"}},                // request id outside the alphabet
      {{"c", "7"}, {"s", "oops"}},                                   // the poison of the chaos test
      {{"c", "7"}, {"s", "1"}, {"u", "ann"}, {"t", "1"}},            // one-grant entry without o
      {{"c", "7"}, {"s", "1"}, {"u", "ann"}, {"o", "1"}, {"t", "x"}},
  };
  for (const auto& fields : bad) {
    std::vector<Grant> out;
    const std::string why = parse_grants(entry(fields), 7, &out);
    EXPECT_EQ(why.rfind("malformed:", 0), 0u) << why;
    EXPECT_TRUE(out.empty()) << fields.back().second;
  }
  LogEntry deleted = entry({});
  deleted.deleted = true;
  std::vector<Grant> out;
  EXPECT_NE(parse_grants(deleted, 7, &out), "");
}

TEST(GrantLogTest, VersionOneIsReadAndUnknownVersionsAreRefusedWhole) {
  std::vector<Grant> out;
  ASSERT_EQ(parse_grants(entry({{"v", "1"}, {"c", "7"}, {"t", "5"}, {"g", "1 1 ann \n2 1 bob r"}}), 7, &out), "");
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[1].user_id, "bob");
  EXPECT_EQ(out[1].request_id, "r");
  // A version this reader does not know, or a version 1 entry in another shape: refused whole,
  // with a reason that says what to do.
  for (const char* v : {"4", "0", "x", ""}) {
    std::vector<Grant> none;
    const std::string why = parse_grants(entry({{"v", v}, {"c", "7"}, {"t", "5"}, {"g", "1 1 ann "}}), 7, &none);
    EXPECT_EQ(why.rfind("malformed:", 0), 0u) << v;
    EXPECT_TRUE(none.empty()) << v;
  }
  std::vector<Grant> none;
  EXPECT_NE(parse_grants(entry({{"v", "4"}, {"c", "7"}, {"t", "5"}, {"g", "1 1 ann "}}), 7, &none).find("upgrade the writer"),
            std::string::npos);
  EXPECT_NE(parse_grants(entry({{"v", "1"}, {"c", "7"}, {"s", "1"}, {"u", "ann"}, {"o", "1"}, {"t", "5"}}), 7, &none), "");
  EXPECT_TRUE(none.empty());
}

constexpr const char* kTp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

TEST(GrantLogTest, VersionTwoCarriesEachGrantsTraceparent) {
  std::vector<Grant> out;
  const std::string none(trace::kTraceparentBytes, ' ');
  ASSERT_EQ(parse_grants(entry({{"v", "2"}, {"c", "7"}, {"t", "5"}, {"g", "1 1 ann r-1\n2 1 bob \n3 1 cy "},
                                {"p", std::string(kTp) + none + kTp}}),
                         7, &out),
            "");
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0].request_id, "r-1");
  EXPECT_EQ(out[0].traceparent, kTp);
  EXPECT_EQ(out[1].traceparent, "");  // spaces: its call had none
  EXPECT_EQ(out[2].request_id, "");
  EXPECT_EQ(out[2].traceparent, kTp);
  // A malformed traceparent, or a p too short for the lines, is dropped; the grants stay.
  std::vector<Grant> kept;
  const std::string bad = std::string(kTp).replace(3, 1, "Z");
  ASSERT_EQ(parse_grants(entry({{"v", "2"}, {"c", "7"}, {"t", "5"}, {"g", "1 1 ann r\n2 1 bob "}, {"p", bad}}), 7, &kept),
            "");
  ASSERT_EQ(kept.size(), 2u);
  EXPECT_EQ(kept[0].traceparent, "");
  EXPECT_EQ(kept[1].traceparent, "");
  // p in a version 1 entry is not read (an older gate never writes it).
  std::vector<Grant> v1;
  ASSERT_EQ(parse_grants(entry({{"v", "1"}, {"c", "7"}, {"t", "5"}, {"g", "1 1 ann r"}, {"p", kTp}}), 7, &v1), "");
  EXPECT_EQ(v1.at(0).traceparent, "");
  // A fifth token on a line stays malformed in every version.
  std::vector<Grant> none_out;
  EXPECT_NE(parse_grants(entry({{"v", "2"}, {"c", "7"}, {"t", "5"}, {"g", std::string("1 1 ann r ") + kTp}}), 7, &none_out),
            "");
  EXPECT_TRUE(none_out.empty());
}

// kTp's binary form: trace-id, parent-id, flags.
std::string tp_binary() {
  std::string b;
  trace::append_binary(kTp, &b);
  return b;
}

TEST(GrantLogTest, VersionThreeCarriesEachGrantsTraceparentInBinary) {
  const std::string none(trace::kTraceparentBinaryBytes, '\0');
  const std::string tp = tp_binary();
  ASSERT_EQ(tp.size(), trace::kTraceparentBinaryBytes);
  EXPECT_EQ(tp.substr(0, 4), std::string("\x4b\xf9\x2f\x35"));
  EXPECT_EQ(tp.back(), '\x01');
  std::vector<Grant> out;
  ASSERT_EQ(parse_grants(entry({{"v", "3"}, {"c", "7"}, {"t", "5"}, {"g", "1 1 ann r-1\n2 1 bob \n3 1 cy "}, {"b", tp + none + tp}}),
                         7, &out),
            "");
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0].traceparent, kTp);
  EXPECT_EQ(out[1].traceparent, "");  // zeros: its call had none
  EXPECT_EQ(out[2].traceparent, kTp);
  // A b too short for the lines, or an all-zero parent-id, is dropped; the grants stay.
  const uint64_t before = trace::malformed_traceparents();
  std::string zero_parent = tp;
  zero_parent.replace(16, 8, 8, '\0');
  std::vector<Grant> kept;
  ASSERT_EQ(parse_grants(entry({{"v", "3"}, {"c", "7"}, {"t", "5"}, {"g", "1 1 ann r\n2 1 bob \n3 1 cy "},
                                {"b", zero_parent + tp.substr(0, 20)}}),
                         7, &kept),
            "");
  ASSERT_EQ(kept.size(), 3u);
  EXPECT_EQ(kept[0].traceparent, "");
  EXPECT_EQ(kept[1].traceparent, "");
  EXPECT_EQ(kept[2].traceparent, "");
  EXPECT_EQ(trace::malformed_traceparents() - before, 1u);
  // Version 2 (text) stays readable beside it, and b is not read in a version 2 entry.
  std::vector<Grant> v2;
  ASSERT_EQ(parse_grants(entry({{"v", "2"}, {"c", "7"}, {"t", "5"}, {"g", "1 1 ann r"}, {"p", kTp}, {"b", tp}}), 7, &v2), "");
  EXPECT_EQ(v2.at(0).traceparent, kTp);
  std::vector<Grant> v2b;
  ASSERT_EQ(parse_grants(entry({{"v", "2"}, {"c", "7"}, {"t", "5"}, {"g", "1 1 ann r"}, {"b", tp}}), 7, &v2b), "");
  EXPECT_EQ(v2b.at(0).traceparent, "");
}

TEST(GrantLogTest, ADeadLettersOneGrantRecordKeepsItsTraceparent) {
  std::vector<Grant> out;
  ASSERT_EQ(parse_grants(entry({{"c", "7"}, {"s", "4"}, {"u", "ann"}, {"o", "1"}, {"r", "r-1"}, {"t", "5"}, {"p", kTp}}), 7,
                         &out),
            "");
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].traceparent, kTp);
}

TEST(GrantLogTest, AReDrivenGrantKeepsItsTraceparent) {
  DeadLetter d;
  d.campaign_id = 7;
  d.seq = 4, d.user_ordinal = 1, d.user_id = "ann", d.request_id = "r-1";
  d.fields = {{"c", "7"}, {"s", "4"}, {"u", "ann"}, {"o", "1"}, {"r", "r-1"}, {"t", "5"}, {"p", kTp}};
  std::vector<Grant> out;
  ASSERT_EQ(parse_grants(entry(grantlog::redrive_entry_fields(d)), 7, &out), "");
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].traceparent, kTp);
  EXPECT_EQ(out[0].seq, 4u);
  EXPECT_EQ(out[0].request_id, "r-1");
  // Without p: a version 1 entry, no trace context.
  d.fields.pop_back();
  const auto plain = grantlog::redrive_entry_fields(d);
  EXPECT_EQ(plain.at(0), (std::pair<std::string, std::string>{"v", "1"}));
  std::vector<Grant> none;
  ASSERT_EQ(parse_grants(entry(plain), 7, &none), "");
  EXPECT_EQ(none.at(0).traceparent, "");
}

TEST(TraceparentTest, TheBinaryFormRoundTrips) {
  EXPECT_EQ(trace::from_binary(tp_binary()), kTp);
  std::string none;
  trace::append_binary("", &none);
  EXPECT_EQ(none, std::string(trace::kTraceparentBinaryBytes, '\0'));
  const uint64_t before = trace::malformed_traceparents();
  EXPECT_EQ(trace::from_binary(none), "");  // none: not malformed
  EXPECT_EQ(trace::malformed_traceparents(), before);
  EXPECT_EQ(trace::from_binary(tp_binary().substr(1)), "");  // a wrong size
  std::string zero_trace = tp_binary();
  zero_trace.replace(0, 16, 16, '\0');
  EXPECT_EQ(trace::from_binary(zero_trace), "");
  EXPECT_EQ(trace::malformed_traceparents() - before, 2u);
  const std::string other = "00-0123456789abcdeffedcba9876543210-ffffffffffffffff-00";
  std::string b;
  trace::append_binary(other, &b);
  EXPECT_EQ(trace::from_binary(b), other);
}

TEST(TraceparentTest, ValidValuesAreKeptInTheirVersionZeroForm) {
  using trace::normalize_traceparent;
  EXPECT_EQ(normalize_traceparent(kTp), kTp);
  EXPECT_EQ(normalize_traceparent(std::string(" ") + kTp + "\t"), kTp);  // optional whitespace
  EXPECT_EQ(normalize_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
  // A future version: parsed leniently, as its first 55 characters (then '-' or the end).
  EXPECT_EQ(normalize_traceparent("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), kTp);
  EXPECT_EQ(normalize_traceparent("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-ever"), kTp);
}

TEST(TraceparentTest, MalformedValuesBecomeEmptyAndAreCounted) {
  using trace::normalize_traceparent;
  const uint64_t before = trace::malformed_traceparents();
  const std::string good = kTp;
  const std::vector<std::string> bad = {
      "x",
      good.substr(0, 54),                                          // short
      good + "-",                                                  // version 00 with more
      good + "0",                                                  // version 00, 56 characters
      "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",   // uppercase
      "00-00000000000000000000000000000000-00f067aa0ba902b7-01",   // all-zero trace id
      "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",   // all-zero parent id
      "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",   // version ff
      "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",   // version not hex
      "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",   // separators
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",   // flags not hex
      "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",  // future version, no '-' after
      std::string(55, '-'),
      std::string("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0") + '\0',
  };
  for (const std::string& v : bad) EXPECT_EQ(normalize_traceparent(v), "") << v;
  EXPECT_EQ(normalize_traceparent(""), "");  // empty: no trace context, not malformed
  EXPECT_EQ(trace::malformed_traceparents() - before, bad.size());
}

}  // namespace
