// labels: cpu
// engine/profile.h: the per-op profiler sees each recorded op's forward and backward, the
// named phases, and accounts for the whole step (entries sum to the step time). No timing
// is asserted beyond non-negativity and the sum.
#include <gtest/gtest.h>


#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/profile.h"

using namespace engine;

namespace {
const OpProfiler::Entry* find(const std::vector<OpProfiler::Entry>& entries, OpProfiler::Kind kind,
                              const std::string& name) {
  for (const auto& e : entries)
    if (e.kind == kind && e.name == name) return &e;
  return nullptr;
}
}  // namespace

TEST(Profile, CountsOpsPhasesAndAccountsForTheStep) {
  Tensor a = Tensor::from_vector({1, -2, 3}, {3}, DType::F64);
  a.set_requires_grad(true);
  OpProfiler prof;
  for (int step = 0; step < 2; ++step) {
    auto scope = prof.step();
    Tensor loss = sum(mul(relu(a), a));  // relu, mul, sum: one forward and one backward each
    loss.backward();
    prof.phase("update", [&] { NoGradGuard g; a = scale(a, 1.0); a.set_requires_grad(true); });
  }
  EXPECT_EQ(prof.steps(), 2);
  auto entries = prof.entries();
  for (const char* op : {"relu", "mul", "sum"}) {
    const auto* f = find(entries, OpProfiler::Kind::Forward, op);
    const auto* b = find(entries, OpProfiler::Kind::Backward, op);
    ASSERT_TRUE(f && b) << op;
    EXPECT_EQ(f->count, 2) << op;
    EXPECT_EQ(b->count, 2) << op;
  }
  const auto* update = find(entries, OpProfiler::Kind::Phase, "update");
  ASSERT_TRUE(update);
  EXPECT_EQ(update->count, 2);
  double total = 0;
  for (const auto& e : entries) {
    EXPECT_GE(e.seconds, 0) << e.name;
    total += e.seconds;
  }
  EXPECT_NEAR(total, prof.step_seconds(), 1e-9 + 1e-9 * prof.step_seconds());
  for (size_t i = 1; i < entries.size(); ++i) EXPECT_GE(entries[i - 1].seconds, entries[i].seconds);
  const std::string table = prof.table();
  EXPECT_NE(table.find("relu"), std::string::npos);
  EXPECT_NE(table.find("update"), std::string::npos);
  EXPECT_NE(table.find("mean of 2"), std::string::npos);
}

TEST(Profile, SeesNothingOutsideAStepAndRestoresTheObserver) {
  Tensor a = Tensor::from_vector({1, 2}, {2}, DType::F64);
  a.set_requires_grad(true);
  OpProfiler outer, inner;
  {
    auto s1 = outer.step();
    { auto s2 = inner.step(); sum(a).backward(); }
    mul(a, a);  // after the inner step ends, the outer profiler watches again
  }
  sum(a).backward();  // no profiler installed
  auto in = inner.entries(), out = outer.entries();
  ASSERT_TRUE(find(in, OpProfiler::Kind::Forward, "sum"));
  EXPECT_FALSE(find(in, OpProfiler::Kind::Forward, "mul"));
  EXPECT_FALSE(find(out, OpProfiler::Kind::Forward, "sum"));
  ASSERT_TRUE(find(out, OpProfiler::Kind::Forward, "mul"));
  EXPECT_EQ(find(out, OpProfiler::Kind::Forward, "mul")->count, 1);
}

TEST(Profile, EmptyTable) { EXPECT_EQ(OpProfiler().table(), "(no profiled step)\n"); }
