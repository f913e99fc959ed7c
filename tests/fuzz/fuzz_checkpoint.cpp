// libFuzzer harness for fuzz::checkpoint (tests/fuzz/targets.h). Build and run: tests/fuzz/README.md
#include "fuzz/targets.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::checkpoint_target();  // the ResNet50, before the first input's timeout starts
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::checkpoint(data, size);
  return 0;
}
