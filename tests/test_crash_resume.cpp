// labels: cpu
// Crash safety: the trainer is killed (SIGKILL) 20 times, at random moments and inside
// checkpoint writes; every time the latest complete checkpoint loads, and the resumed runs end
// byte-identical to an uninterrupted run (tests/crash_campaign.h says exactly what is checked).
// Sanitised builds kill 10 times (two of each kind): there the trainer runs 2-5x slower.
// A longer campaign: tests/test_crash_resume_slow.cpp (label slow).
#include "crash_campaign.h"

TEST(CrashResume, KilledManyTimesTheResumedRunsEndLikeTheUninterruptedRun) {
  crash_campaign::Campaign c;
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  c.kills = 10;
#else
  c.kills = 20;
#endif
  c.schedule_seed = 20241203;
  crash_campaign::run(c);
}
