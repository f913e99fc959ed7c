// Errors: every failure the engine reports is an engine::Error whose message names the op,
// tensor, file or key at fault. ENGINE_CHECK builds the message only when the check fails.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace engine {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

namespace detail {
template <typename... Args>
[[noreturn]] void fail(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  throw Error(os.str());
}
}  // namespace detail

}  // namespace engine

// ENGINE_CHECK(cond, "op: ", a, " vs ", b): throws engine::Error with the concatenated message.
#define ENGINE_CHECK(cond, ...)                \
  do {                                         \
    if (!(cond)) ::engine::detail::fail(__VA_ARGS__); \
  } while (0)
