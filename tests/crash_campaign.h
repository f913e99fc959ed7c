// The kill-and-resume campaign of tests/test_crash_resume*.cpp.
//
// 1. An uninterrupted run (in this process) writes a checkpoint after every step and at every
//    epoch's end; each one is hashed: W1..Wn, in order.
// 2. Chains of trainer processes in a fresh folder: each is killed with SIGKILL, either by us
//    after a seeded random delay (anywhere: start-up, loading, a step, a checkpoint write,
//    evaluation) or by itself at a point of its k-th checkpoint write (ENGINE_TEST_KILL_AT,
//    engine/safetensors.cpp: half the data written / all written, not synced / synced, not
//    renamed / renamed, folder not synced), and the next one continues with --resume.
//    After every kill the checkpoint on disk must
//      - be byte-identical to one of W1..Wn, never older than before the kill (a completed
//        checkpoint is never lost), and for a kill inside a write exactly the one expected:
//        W(i+k-1) before the rename, W(i+k) after it, for a run started from Wi;
//      - load (load_checkpoint) into a model and optimiser (checked the first time each Wj
//        turns up: the others are the same bytes).
//    The run that is not killed finishes: its final checkpoint must be byte-identical to the
//    uninterrupted run's (so are the weights), metrics.jsonl must list each epoch once, and
//    no temporary file may be left.
// The schedule is seeded and printed; which moment a delay lands on depends on the machine.
#pragma once
#include <gtest/gtest.h>

#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/optim.h"
#include "models/checkpoint.h"
#include "models/resnet.h"
#include "models/train.h"
#include "test_util.h"
#include "trainer_process.h"

namespace crash_campaign {

struct Campaign {
  std::string model = "resnet50_bnn";
  std::string optimizer = "sgd";  // sgd keeps checkpoints at 2x the parameters (adam: 3x)
  int epochs = 2;
  int images = 8;  // batch 4: two steps per epoch
  int kills = 20;
  uint64_t schedule_seed = 1;
  double max_delay_s = 4;  // random kills land in [0, max_delay_s) after the start
};

inline models::TrainOptions train_options(const Campaign& c, const std::string& out) {
  models::TrainOptions o;
  o.model = c.model;
  o.optimizer = c.optimizer;
  o.epochs = c.epochs;
  o.batch_size = 4;
  o.image_size = 32;
  o.synthetic_size = 32;
  o.synthetic_train = c.images;
  o.mc_samples = 2;
  o.checkpoint_every = 1;
  o.threads = 1;  // the same summation order in every process
  o.workers = 1;
  o.seed = 11;
  o.out = out;
  return o;
}

inline std::vector<std::string> trainer_args(const Campaign& c, const std::string& out, bool resume) {
  models::TrainOptions o = train_options(c, out);
  std::vector<std::string> args = {"--model", o.model, "--optimizer", o.optimizer, "--epochs", std::to_string(o.epochs),
                                   "--batch-size", "4", "--image-size", "32", "--synthetic-size", "32",
                                   "--synthetic-images", std::to_string(o.synthetic_train), "--mc-samples", "2",
                                   "--checkpoint-every", "1", "--threads", "1", "--workers", "1",
                                   "--seed", std::to_string(o.seed), "--out", out};
  if (resume) args.push_back("--resume");
  return args;
}

struct Written {
  int64_t step, epoch;
  size_t hash;
};

inline std::unique_ptr<engine::Optimizer> optimizer_for(const Campaign& c, const models::Detector& model) {
  if (c.optimizer == "sgd") {
    engine::SgdOptions s;
    s.momentum = 0.9;
    return std::make_unique<engine::SGD>(model.named_parameters(), s);
  }
  return std::make_unique<engine::Adam>(model.named_parameters(), engine::AdamOptions{});
}

inline void run(const Campaign& c) {
  namespace tp = trainer_process;
  tp::ScratchDir dir("crash_campaign");
  // ---- the uninterrupted run ----
  std::vector<Written> reference;
  {
    testing_util::ThreadCountGuard threads;
    models::TrainOptions o = train_options(c, dir.sub("uninterrupted"));
    o.hooks.after_checkpoint = [&](const models::TrainingProgress& state, const std::string& path) {
      reference.push_back({state.step, state.epoch, tp::file_hash(path)});
    };
    ASSERT_EQ(models::run_training(o), 0);
  }
  const int64_t steps_per_epoch = c.images / 4;
  ASSERT_EQ(reference.size(), static_cast<size_t>(c.epochs * (steps_per_epoch + 1)));
  std::filesystem::remove_all(dir.sub("uninterrupted"));

  auto model = models::make_detector(c.model);
  auto optimizer = optimizer_for(c, *model);
  std::vector<bool> loaded(reference.size(), false);
  const char* points[] = {"half", "written", "synced", "renamed"};
  std::mt19937_64 rng(c.schedule_seed);
  int kills = 0, chains = 0, finished_runs = 0;
  while (kills < c.kills) {
    const std::string run_dir = dir.sub("chain" + std::to_string(++chains));
    const std::string checkpoint = run_dir + "/checkpoint.safetensors";
    size_t latest = 0;  // Wlatest is on disk (0: none yet)
    for (int run = 1;; ++run) {
      // Alternate: a random delay, then each point of a write, in turn; once the kills are
      // done, the chain's last run goes to the end.
      const int kind = kills >= c.kills ? -1 : kills % 5;
      const int write = 1 + static_cast<int>(rng() % 2);
      const double delay = std::uniform_real_distribution<double>(0, c.max_delay_s)(rng);
      std::string plan = kind < 0    ? "no kill"
                         : kind == 0 ? "SIGKILL after " + std::to_string(delay).substr(0, 4) + " s"
                                     : std::string(points[kind - 1]) + ":" + std::to_string(write);
      tp::Options opts;
      opts.log = run_dir + ".log";
      if (kind > 0) opts.env.push_back("ENGINE_TEST_KILL_AT=" + plan);
      std::filesystem::create_directories(run_dir);
      pid_t pid = tp::start(trainer_args(c, run_dir, latest > 0), opts);
      ASSERT_GT(pid, 0);
      tp::Outcome outcome = tp::wait(pid, kind == 0 ? delay : -1);
      if (!outcome.killed || kind < 0) {  // it finished (first)
        ASSERT_EQ(outcome.code, 0) << "chain " << chains << " run " << run << " (" << plan << ")\n"
                                   << tp::read_text(opts.log);
        break;
      }
      ++kills;
      // The latest complete checkpoint: which of the uninterrupted run's is it?
      size_t found = 0;
      if (std::filesystem::exists(checkpoint)) {
        size_t hash = tp::file_hash(checkpoint);
        for (size_t j = 0; j < reference.size() && !found; ++j)
          if (reference[j].hash == hash) found = j + 1;
        ASSERT_NE(found, 0u) << "kill " << kills << " (" << plan << "): " << checkpoint
                             << " differs from every checkpoint of the uninterrupted run";
      }
      EXPECT_GE(found, latest) << "kill " << kills << " (" << plan << "): a completed checkpoint was lost";
      if (kind > 0) {
        size_t expected = latest + write - (std::string(points[kind - 1]) == "renamed" ? 0 : 1);
        EXPECT_EQ(found, expected) << "kill " << kills << " (" << plan << ") of a run started from W" << latest;
      }
      if (found > 0 && !loaded[found - 1]) {  // a byte-identical file loads alike: once per Wj
        loaded[found - 1] = true;
        models::TrainingProgress p;
        EXPECT_NO_THROW(p = models::load_checkpoint(checkpoint, *model, *optimizer)) << "kill " << kills;
        EXPECT_EQ(p.step, reference[found - 1].step);
        EXPECT_EQ(p.epoch, reference[found - 1].epoch);
      }
      std::printf("kill %2d: chain %d run %d, %-18s -> on disk: %s\n", kills, chains, run, plan.c_str(),
                  found ? ("W" + std::to_string(found) + " (step " + std::to_string(reference[found - 1].step) +
                           ", epoch " + std::to_string(reference[found - 1].epoch) + ")").c_str()
                        : "none");
      std::fflush(stdout);
      if (testing::Test::HasFailure()) return;
      latest = found;
    }
    ++finished_runs;
    // The resumed run ended exactly where the uninterrupted one did.
    EXPECT_EQ(tp::file_hash(checkpoint), reference.back().hash)
        << "chain " << chains << ": the final checkpoint differs from the uninterrupted run's";
    EXPECT_TRUE(tp::temporaries(run_dir).empty()) << "chain " << chains << " left " << tp::temporaries(run_dir)[0];
    std::ifstream metrics(run_dir + "/metrics.jsonl");
    std::string line;
    int64_t epoch = 0;
    while (std::getline(metrics, line)) EXPECT_EQ(nlohmann::json::parse(line)["epoch"].get<int64_t>(), ++epoch) << line;
    EXPECT_EQ(epoch, c.epochs) << "chain " << chains << ": metrics.jsonl lists " << epoch << " epochs";
    std::filesystem::remove_all(run_dir);
  }
  std::printf("%d kills in %d chains; every chain finished with the uninterrupted run's checkpoint\n", kills, chains);
  EXPECT_EQ(finished_runs, chains);
}

}  // namespace crash_campaign
