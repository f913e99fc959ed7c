// libFuzzer harness for fuzz::image (tests/fuzz/targets.h). Build and run: tests/fuzz/README.md
#include "fuzz/targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::image(data, size);
  return 0;
}
