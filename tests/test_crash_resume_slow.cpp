// labels: cpu slow
// The long crash campaign (tests/crash_campaign.h): 60 SIGKILLs over three epochs of the
// attention model with Adam (its checkpoints hold two optimiser buffers per parameter).
//   ctest --test-dir build -L slow -R CrashResume
#include "crash_campaign.h"

TEST(CrashResumeSlow, SixtyKillsAttentionModelAdam) {
  crash_campaign::Campaign c;
  c.model = "resnet50_attn_bnn";
  c.optimizer = "adam";
  c.epochs = 3;
  c.images = 12;  // three steps per epoch
  c.kills = 60;
  c.schedule_seed = 7;
  c.max_delay_s = 8;
  crash_campaign::run(c);
}
