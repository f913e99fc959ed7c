// Small helpers shared by the test files.
#pragma once
#include <gtest/gtest.h>

#include <string>

#include "engine/error.h"
#include "kernels/cpu/parallel.h"

namespace testing_util {

// fn() must throw an engine::Error whose message contains `needle`.
template <typename Fn>
void expect_error(Fn fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "expected an error containing '" << needle << "'";
  } catch (const engine::Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

// Restores OpenMP's thread count at the end of a test that changes it.
class ThreadCountGuard {
 public:
  ThreadCountGuard() : saved_(kernels::cpu::num_threads()) {}
  ~ThreadCountGuard() { kernels::cpu::set_num_threads(saved_); }
  ThreadCountGuard(const ThreadCountGuard&) = delete;
  ThreadCountGuard& operator=(const ThreadCountGuard&) = delete;

 private:
  int saved_;
};

}  // namespace testing_util
