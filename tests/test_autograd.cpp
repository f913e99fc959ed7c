// labels: cpu
// The autograd engine: accumulation, no-grad mode, release of saved tensors, errors.
#include <gtest/gtest.h>

#include "engine/autograd.h"
#include "engine/ops.h"

using namespace engine;

namespace {
Tensor leaf(std::vector<double> v) {
  Tensor t = Tensor::from_vector(v, {static_cast<int64_t>(v.size())}, DType::F64);
  t.set_requires_grad(true);
  return t;
}
}  // namespace

TEST(Autograd, ChainAndFanOut) {
  Tensor a = leaf({1, -2, 3});
  Tensor b = leaf({4, 5, -6});
  // L = sum(a*b + relu(a) * a) ; dL/da = b + (a>0 ? 2a : 0), dL/db = a
  Tensor loss = sum(add(mul(a, b), mul(relu(a), a)));
  EXPECT_DOUBLE_EQ(loss.item(), (4 - 10 - 18) + (1 + 0 + 9));
  loss.backward();
  EXPECT_EQ(a.grad().to_vector(), (std::vector<double>{4 + 2, 5, -6 + 6}));
  EXPECT_EQ(b.grad().to_vector(), (std::vector<double>{1, -2, 3}));
}

TEST(Autograd, GradientsAccumulateAcrossBackwards) {
  Tensor a = leaf({1, 2});
  sum(scale(a, 3)).backward();
  sum(scale(a, 3)).backward();
  EXPECT_EQ(a.grad().to_vector(), (std::vector<double>{6, 6}));
  a.zero_grad();
  EXPECT_FALSE(a.grad().defined());
}

TEST(Autograd, NoGradRecordsNothing) {
  Tensor a = leaf({1, 2});
  {
    NoGradGuard guard;
    Tensor y = mul(a, a);
    EXPECT_FALSE(y.requires_grad());
    EXPECT_FALSE(y.grad_fn());
    EXPECT_THROW(sum(y).backward(), Error);
  }
  EXPECT_TRUE(grad_enabled());
  EXPECT_TRUE(mul(a, a).requires_grad());
}

TEST(Autograd, SecondBackwardThroughReleasedGraphNamesTheOp) {
  Tensor a = leaf({1, 2});
  Tensor loss = sum(sigmoid(a));
  loss.backward();
  try {
    loss.backward();
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("already released"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("sum"), std::string::npos) << e.what();
  }
}

TEST(Autograd, RetainGraphAllowsSecondBackward) {
  Tensor a = leaf({1, 2});
  Tensor loss = sum(mul(a, a));
  loss.backward(true);
  loss.backward();
  EXPECT_EQ(a.grad().to_vector(), (std::vector<double>{4, 8}));
}

TEST(Autograd, SavedTensorsReleasedAfterBackward) {
  Tensor a = leaf({1, 2, 3});
  Tensor x = mul(a, a);  // saves a (shares its storage) in the mul node
  long before = a.impl().storage.use_count();
  Tensor loss = sum(x);
  loss.backward();
  EXPECT_LT(a.impl().storage.use_count(), before);
}

TEST(Autograd, OnlyInputsThatNeedGradientsGetThem) {
  Tensor a = leaf({1, 2});
  Tensor c = Tensor::from_vector({3, 4}, {2}, DType::F64);
  sum(mul(a, c)).backward();
  EXPECT_TRUE(a.grad().defined());
  EXPECT_FALSE(c.grad().defined());
}

TEST(Autograd, BackwardNeedsScalar) {
  Tensor a = leaf({1, 2});
  EXPECT_THROW(mul(a, a).backward(), Error);
}

TEST(Autograd, ObserverSeesEachRecordedOpAndEachBackward) {
  struct Log : OpObserver {
    std::vector<std::string> events;
    void on_forward(const char* op, const Tensor& out) override {
      events.push_back(std::string("fwd ") + op + " " + std::to_string(out.numel()));
    }
    void on_backward_begin(const std::string& op) override { events.push_back("begin " + op); }
    void on_backward_end(const std::string& op, const std::vector<Tensor>& grads) override {
      events.push_back("end " + op + " " + std::to_string(grads.size()));
    }
  } log, inner;
  Tensor a = leaf({1, -2, 3});
  Tensor c = Tensor::from_vector(std::vector<double>{1, 1, 1}, {3}, DType::F64);  // no grad
  Tensor loss;
  {
    ScopedOpObserver watch(&log);
    Tensor m = mul(a, a);
    {
      ScopedOpObserver nested(&inner);  // replaces, then restores, the outer observer
      scale(c, 2.0);                    // records nothing: no input requires a gradient
    }
    loss = sum(m);
    loss.backward();
  }
  sum(a).backward();  // after the guard: not observed
  EXPECT_EQ(log.events, (std::vector<std::string>{"fwd mul 3", "fwd sum 1", "begin sum", "end sum 1",
                                                  "begin mul", "end mul 2"}));
  EXPECT_TRUE(inner.events.empty());
}
