// labels: cpu
// Faults: NaN and Inf found at the step and op where they appear (engine/anomaly.h and the
// trainer's --on-nonfinite stop|skip), a full disk and a read-only run folder (a clear error,
// the previous checkpoint intact).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include <nlohmann/json.hpp>

#include "engine/anomaly.h"
#include "engine/ops.h"
#include "engine/optim.h"
#include "engine/safetensors.h"
#include "models/checkpoint.h"
#include "models/resnet.h"
#include "models/train.h"
#include "test_util.h"
#include "trainer_process.h"

namespace fs = std::filesystem;
namespace tp = trainer_process;
using engine::NonFiniteError;
using engine::Tensor;

namespace {

const double kNaN = std::numeric_limits<double>::quiet_NaN();
const double kInf = std::numeric_limits<double>::infinity();

// fn() must throw NonFiniteError with this op and phase, its message holding `needle`.
template <typename Fn>
void expect_nonfinite(Fn fn, const std::string& op, const std::string& phase, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "expected a non-finite error in " << phase << " of '" << op << "'";
  } catch (const NonFiniteError& e) {
    EXPECT_EQ(e.op(), op) << e.what();
    EXPECT_EQ(e.phase(), phase) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

// loss * 1e30 in the forward pass (finite), but the backward of 'mul' returns 1e30 * 1e30 = Inf
// for its first input, and every parameter's gradient becomes non-finite.
Tensor overflow_in_backward(const Tensor& loss) {
  Tensor tiny = engine::scale(loss, 1e-30);
  return engine::scale(engine::mul(tiny, Tensor::full(tiny.shape(), 1e30)), 1e30);
}

// One pixel NaN: the first convolution's output holds NaN.
void poison_image(Tensor& images) { images.data<float>()[0] = std::numeric_limits<float>::quiet_NaN(); }

models::TrainOptions tiny(const std::string& out) {
  models::TrainOptions o;
  o.model = "resnet50";
  o.optimizer = "sgd";
  o.out = out;
  o.epochs = 1;
  o.batch_size = 4;
  o.image_size = 32;
  o.synthetic_size = 32;
  o.synthetic_train = 16;  // 4 steps per epoch
  o.mc_samples = 2;
  o.workers = 1;
  o.threads = 1;
  o.eval_each_epoch = false;
  o.checkpoint_every = 1;
  return o;
}

// Runs the training in this process; returns its exit code, stderr in `log`.
int train(const models::TrainOptions& o, std::string& log) {
  testing_util::ThreadCountGuard threads;
  testing::internal::CaptureStderr();
  int code = -1;
  try {
    code = models::run_training(o);
  } catch (...) {
    log = testing::internal::GetCapturedStderr();
    throw;
  }
  log = testing::internal::GetCapturedStderr();
  return code;
}

void expect_contains(const std::string& text, const std::string& needle) {
  EXPECT_NE(text.find(needle), std::string::npos) << "no '" << needle << "' in:\n" << text;
}

// The tensor bytes of a checkpoint (everything after the header), hashed, and its optimiser
// scalars: equal when the weights, the batch-norm statistics and the optimiser state are.
std::string checkpoint_state(const std::string& path) {
  auto reader = engine::SafeTensorsReader::open(path);
  uint64_t header = 0;
  std::ifstream(path, std::ios::binary).read(reinterpret_cast<char*>(&header), sizeof header);
  return std::to_string(tp::file_hash(path, 8 + header)) + " " + reader.metadata().at("optimizer_scalars");
}

int64_t checkpoint_step(const std::string& path) {
  return std::stoll(engine::SafeTensorsReader::open(path).metadata().at("step"));
}

}  // namespace

// ---- the detector ----

TEST(NonFinite, AllFiniteFindsEveryNaNAndInfinity) {
  const int64_t n = (int64_t{1} << 18) + 5;  // threaded chunks and a vector tail
  for (engine::DType dtype : {engine::DType::F32, engine::DType::F64}) {
    Tensor t = Tensor::randn({n}, 3, 0, dtype);
    EXPECT_TRUE(engine::all_finite(t));
    const double max = dtype == engine::DType::F32 ? std::numeric_limits<float>::max() : std::numeric_limits<double>::max();
    for (double extreme : {max, -max, 1e-40, -0.0}) {
      Tensor u = t.clone();
      std::vector<double> v = u.to_vector();
      v[n - 1] = extreme;
      EXPECT_TRUE(engine::all_finite(Tensor::from_vector(v, {n}, dtype))) << extreme;
    }
    for (double bad : {kNaN, kInf, -kInf})
      for (int64_t at : {int64_t{0}, n / 2 + 1, n - 1}) {
        std::vector<double> v = t.to_vector();
        v[at] = bad;
        Tensor u = Tensor::from_vector(v, {n}, dtype);
        EXPECT_FALSE(engine::all_finite(u)) << bad << " at " << at << " in " << u.desc();
        expect_contains(engine::describe_nonfinite(u), std::isnan(bad) ? "1 NaN and 0 infinite" : "0 NaN and 1 infinite");
      }
  }
}

TEST(NonFinite, ForwardFaultNamesTheOp) {
  engine::NonFiniteDetector detector;
  engine::ScopedOpObserver watch(&detector);
  Tensor x = Tensor::randn({2, 5, 5, 3}, 1);
  Tensor w = Tensor::randn({4, 3, 3, 3}, 2);
  EXPECT_NO_THROW(engine::relu(engine::conv2d(x, w.clone().set_requires_grad(true), Tensor(), 1, 1)));
  std::vector<double> v = w.to_vector();
  v[7] = kNaN;
  Tensor bad = Tensor::from_vector(v, w.shape());
  bad.set_requires_grad(true);
  expect_nonfinite([&] { engine::conv2d(x, bad, Tensor(), 1, 1); }, "conv2d", "forward", "forward pass");
  // Overflow: finite inputs, infinite products.
  Tensor big = Tensor::full({2, 8}, 1e20);
  Tensor weight = Tensor::full({3, 8}, 1e20);
  weight.set_requires_grad(true);
  expect_nonfinite([&] { engine::linear(big, weight, Tensor()); }, "linear", "forward", "0 NaN and 6 infinite of 6");
}

TEST(NonFinite, BackwardFaultNamesTheOpAndTheParameter) {
  Tensor p = Tensor::full({4}, 1.0);
  p.set_requires_grad(true);
  auto loss = [&] { return engine::sum(overflow_in_backward(p)); };
  {
    engine::NonFiniteDetector detector;  // Backward::Throw
    engine::ScopedOpObserver watch(&detector);
    Tensor l = loss();
    EXPECT_TRUE(std::isfinite(l.item()));
    expect_nonfinite([&] { l.backward(); }, "mul", "backward", "backward of op 'mul'");
  }
  p.zero_grad();
  {
    engine::NonFiniteDetector detector(engine::NonFiniteDetector::Backward::Defer);
    engine::ScopedOpObserver watch(&detector);
    Tensor l = loss();
    EXPECT_NO_THROW(l.backward());
    expect_nonfinite([&] { detector.check_gradients({{"p", p}}); }, "mul", "backward",
                     "parameters with non-finite gradients: p (0 NaN and 4 infinite");
    // A clean pass is clean; a gradient poisoned afterwards is still found, by parameter.
    p.zero_grad();
    Tensor ok = engine::sum(engine::scale(p, 2.0));
    ok.backward();
    EXPECT_NO_THROW(detector.check_gradients({{"p", p}}));
    p.set_grad(Tensor::from_vector({1, kNaN, 1, 1}, {4}));
    expect_nonfinite([&] { detector.check_gradients({{"p", p}}); }, "", "backward", "p (1 NaN and 0 infinite");
  }
}

// ---- the trainer: --on-nonfinite ----

TEST(NonFinite, StopKeepsTheLastGoodCheckpointAndNamesStepOpAndPhase) {
  tp::ScratchDir dir("faults_stop");
  models::TrainOptions o = tiny(dir.sub("run"));
  o.hooks.before_forward = [](int64_t step, Tensor& images) {
    if (step == 3) poison_image(images);
  };
  std::string log;
  ASSERT_EQ(train(o, log), 3) << log;
  expect_contains(log, "non-finite values at step 3 (epoch 1, batch 3)");
  expect_contains(log, "op 'conv2d' produced non-finite values in the forward pass");  // found by the replay
  expect_contains(log, "the last good checkpoint is kept: " + dir.sub("run") + "/checkpoint.safetensors (step 2)");
  EXPECT_EQ(checkpoint_step(dir.sub("run/checkpoint.safetensors")), 2);

  // A fault in the backward pass, with every op checked at every step: op and parameters named.
  o = tiny(dir.sub("run2"));
  o.check_every_op = true;
  o.hooks.before_backward = [](int64_t step, const Tensor& loss) { return step == 2 ? overflow_in_backward(loss) : loss; };
  ASSERT_EQ(train(o, log), 3) << log;
  expect_contains(log, "non-finite values at step 2 (epoch 1, batch 2): the backward of op 'mul' produced a non-finite "
                       "gradient for its input 1 of 2");
  expect_contains(log, "parameters with non-finite gradients: conv1.weight (");
  expect_contains(log, "(step 1)");
}

TEST(NonFinite, SkipDropsTheStepWithoutATraceAndCountsIt) {
  tp::ScratchDir dir("faults_skip");
  models::TrainOptions o = tiny(dir.sub("run"));
  o.on_nonfinite = "skip";
  o.hooks.before_forward = [](int64_t step, Tensor& images) {
    if (step == 2) poison_image(images);  // batch-norm statistics see NaN before the loss does
  };
  o.hooks.before_backward = [](int64_t step, const Tensor& loss) { return step == 3 ? overflow_in_backward(loss) : loss; };
  std::vector<std::string> states;  // after steps 1, 2, 3, 4 and the epoch's end
  o.hooks.after_checkpoint = [&](const models::TrainingProgress&, const std::string& path) {
    states.push_back(checkpoint_state(path));
  };
  std::string log;
  ASSERT_EQ(train(o, log), 0) << log;
  ASSERT_EQ(states.size(), 5u);
  EXPECT_TRUE(states[1] == states[0]) << "step 2 was skipped, yet the weights, statistics or optimiser state changed";
  EXPECT_TRUE(states[2] == states[0]) << "step 3 was skipped, yet the weights, statistics or optimiser state changed";
  EXPECT_FALSE(states[3] == states[2]) << "step 4 should have trained";
  expect_contains(log, "step 2 (epoch 1, batch 2) skipped (--on-nonfinite skip; 1 in a row");
  expect_contains(log, "op 'conv2d' produced non-finite values in the forward pass");
  expect_contains(log, "step 3 (epoch 1, batch 3) skipped (--on-nonfinite skip; 2 in a row");
  expect_contains(log, "the backward of op 'mul'");
  nlohmann::json results = nlohmann::json::parse(tp::read_text(dir.sub("run/results.json")));
  EXPECT_EQ(results["training"]["skipped_steps"], 2);
  EXPECT_EQ(results["training"]["steps"], 4);
  nlohmann::json record = nlohmann::json::parse(tp::read_text(dir.sub("run/metrics.jsonl")));
  EXPECT_EQ(record["skipped_steps"], 2);
}

TEST(NonFinite, SkipStopsAfterTooManyInARow) {
  tp::ScratchDir dir("faults_skip_many");
  models::TrainOptions o = tiny(dir.sub("run"));
  o.epochs = 2;  // 8 steps: step 1 trains, steps 2 to 6 fail
  o.checkpoint_every = 0;  // at the end of epoch 1 only
  o.on_nonfinite = "skip";
  o.hooks.before_backward = [](int64_t step, const Tensor& loss) { return step >= 2 ? overflow_in_backward(loss) : loss; };
  std::string log;
  ASSERT_EQ(train(o, log), 3) << log;
  expect_contains(log, "error: 5 steps in a row had non-finite values; the last, step 6 (epoch 2, batch 2)");
  expect_contains(log, "4 in a row, the run stops at 5");
  expect_contains(log, "(step 4)");
  EXPECT_EQ(checkpoint_step(dir.sub("run/checkpoint.safetensors")), 4);
}

TEST(NonFinite, TrainerWithAHugeLearningRateStopsOrSkipsAsAsked) {
  tp::ScratchDir dir("faults_cli");
  const std::vector<std::string> common = {"--optimizer", "sgd", "--lr", "1e30", "--epochs", "2", "--batch-size", "4",
                                           "--image-size", "32", "--synthetic-size", "32",
                                           "--mc-samples", "2", "--threads", "1", "--workers", "1"};
  auto args = [&](const std::string& out, std::vector<std::string> more) {
    std::vector<std::string> a = common;
    a.insert(a.end(), {"--out", dir.sub(out)});
    a.insert(a.end(), more.begin(), more.end());
    return a;
  };
  tp::Options opts;
  opts.log = dir.sub("stop.log");
  tp::Outcome outcome = tp::run(args("stop", {"--checkpoint-every", "1", "--synthetic-images", "16"}), opts);
  std::string log = tp::read_text(opts.log);
  EXPECT_EQ(outcome.code, 3) << log;  // step 1 sends the weights to ~1e30; step 2 overflows
  expect_contains(log, "non-finite values at step 2 (epoch 1, batch 2): op 'conv2d' produced non-finite values in the "
                       "forward pass");
  expect_contains(log, "Stopping (--on-nonfinite stop); the last good checkpoint is kept");
  EXPECT_EQ(checkpoint_step(dir.sub("stop/checkpoint.safetensors")), 1);

  opts.log = dir.sub("skip.log");  // 32 images: 8 steps in the first epoch, 5 of them skipped
  outcome = tp::run(args("skip", {"--on-nonfinite", "skip", "--synthetic-images", "32"}), opts);
  log = tp::read_text(opts.log);
  EXPECT_EQ(outcome.code, 3) << log;
  expect_contains(log, "step 2 (epoch 1, batch 2) skipped");
  expect_contains(log, "5 steps in a row had non-finite values; the last, step 6");

  // 4 steps an epoch, 3 skipped: the epoch's evaluation meets the diverged weights of step 1
  opts.log = dir.sub("skip_eval.log");
  outcome = tp::run(args("skip_eval", {"--on-nonfinite", "skip", "--synthetic-images", "16"}), opts);
  log = tp::read_text(opts.log);
  EXPECT_EQ(outcome.code, 3) << log;
  expect_contains(log, "is not finite");
  expect_contains(log, "its weights have probably diverged (after epoch 1, step 4)");
  EXPECT_FALSE(fs::exists(dir.sub("skip_eval/results.json")));

  opts.log = dir.sub("bad.log");
  outcome = tp::run(args("bad", {"--on-nonfinite", "ignore", "--synthetic-images", "16"}), opts);
  EXPECT_EQ(outcome.code, 1);
  expect_contains(tp::read_text(opts.log), "--on-nonfinite must be stop or skip, got 'ignore'");
}

// ---- the disk ----

namespace {

// A run folder holding the checkpoint of step 1; returns its hash.
size_t first_checkpoint(const std::string& out) {
  models::TrainOptions o = tiny(out);
  o.max_steps = 1;
  std::string log;
  EXPECT_EQ(train(o, log), 0) << log;
  return tp::file_hash(out + "/checkpoint.safetensors");
}

std::vector<std::string> resume_args(const std::string& out) {
  return {"--optimizer", "sgd", "--epochs", "1", "--batch-size", "4", "--image-size", "32", "--synthetic-size", "32",
          "--synthetic-images", "16", "--mc-samples", "2", "--threads", "1", "--workers", "1",
          "--checkpoint-every", "1", "--out", out, "--resume"};
}

void expect_checkpoint_intact(const std::string& out, size_t hash) {
  const std::string checkpoint = out + "/checkpoint.safetensors";
  EXPECT_EQ(tp::file_hash(checkpoint), hash) << "the previous checkpoint changed";
  EXPECT_TRUE(tp::temporaries(out).empty()) << "left behind: " << tp::temporaries(out)[0];
  auto model = models::make_detector("resnet50");
  engine::SgdOptions s;
  s.momentum = 0.9;
  engine::SGD sgd(model->named_parameters(), s);
  EXPECT_EQ(models::load_checkpoint(checkpoint, *model, sgd).step, 1);
}

}  // namespace

TEST(DiskFaults, FullDiskNamesTheFileAndTheCauseAndKeepsThePreviousCheckpoint) {
  tp::ScratchDir dir("faults_full_disk");
  const std::string out = dir.sub("run");
  const size_t hash = first_checkpoint(out);
  ASSERT_NE(hash, 0u);
  // Files may not grow past 64 MiB (the checkpoint is ~190 MB): write() fails with EFBIG, as
  // it fails with ENOSPC on a full disk.
  tp::Options opts;
  opts.log = dir.sub("full.log");
  opts.max_file_bytes = 64 << 20;
  tp::Outcome outcome = tp::run(resume_args(out), opts);
  const std::string log = tp::read_text(opts.log);
  EXPECT_EQ(outcome.code, 1) << log;
  expect_contains(log, "error: the checkpoint of step 2 could not be written: " + out + "/checkpoint.safetensors: writing '" +
                           out + "/checkpoint.safetensors.tmp-");
  expect_contains(log, "failed: File too large");
  expect_contains(log, "the previous one (step 1) is intact");
  expect_checkpoint_intact(out, hash);
}

TEST(DiskFaults, ReadOnlyRunFolderIsRefusedAndItsCheckpointKept) {
  tp::ScratchDir dir("faults_read_only");
  const std::string out = dir.sub("run");
  const size_t hash = first_checkpoint(out);
  ASSERT_NE(hash, 0u);
  // Read-only for the trainer: mode 0555, and since root ignores modes, the trainer runs as
  // the unprivileged user 65534 when we are root.
  fs::permissions(out, fs::perms::owner_read | fs::perms::owner_exec | fs::perms::group_read | fs::perms::group_exec |
                           fs::perms::others_read | fs::perms::others_exec);
  tp::Options opts;
  opts.log = dir.sub("read_only.log");
  opts.as_nobody = ::geteuid() == 0;
  tp::Outcome outcome = tp::run(resume_args(out), opts);
  const std::string log = tp::read_text(opts.log);
  if (outcome.code == 126 && opts.as_nobody) GTEST_SKIP() << "cannot switch to user 65534 here (no CAP_SETUID)";
  EXPECT_EQ(outcome.code, 1) << log;
  expect_contains(log, "error: --out " + out + ": cannot write in the run folder (Permission denied); its checkpoint is "
                       "untouched");
  fs::permissions(out, fs::perms::owner_all, fs::perm_options::add);
  expect_checkpoint_intact(out, hash);
}

// A checkpoint that does not fit changes neither the model nor the optimiser: a bad optimiser
// part leaves the weights alone, bad weights leave the optimiser's state alone.
TEST(CheckpointFaults, ARefusedCheckpointChangesNeitherModelNorOptimiser) {
  tp::ScratchDir dir("faults_partial_checkpoint");
  const std::string good = dir.sub("good.safetensors");
  engine::SgdOptions s;
  s.momentum = 0.9;
  {
    models::DetectorOptions o;
    o.seed = 1;
    auto source = models::make_detector("resnet50", o);
    engine::SGD sgd(source->named_parameters(), s);
    models::save_checkpoint(good, *source, sgd, models::TrainingProgress{});
  }
  auto reader = engine::SafeTensorsReader::open(good);
  auto rewrite = [&](const std::string& path, const std::string& drop, const std::string& extra) {
    std::vector<std::pair<std::string, engine::Tensor>> tensors;
    for (const std::string& key : reader.keys())
      if (key != drop) tensors.emplace_back(key, reader.read(key));
    if (!extra.empty()) tensors.emplace_back(extra, engine::Tensor::zeros({2}));
    engine::write_safetensors(path, tensors, reader.metadata());
  };
  const std::string bad_optimizer = dir.sub("bad_optimizer.safetensors"), bad_weights = dir.sub("bad_weights.safetensors");
  rewrite(bad_optimizer, "", "optimizer.no_such_parameter.momentum_buffer");
  rewrite(bad_weights, "fc.bias", "");

  models::DetectorOptions o;
  o.seed = 2;
  auto model = models::make_detector("resnet50", o);
  engine::SGD sgd(model->named_parameters(), s);
  {  // one step, so that the optimiser holds momentum buffers
    engine::Tensor images = engine::Tensor::randn({2, 32, 32, 3}, 3);
    engine::cross_entropy(model->head_mean(model->features(images)), {0, 1}).backward();
    sgd.step();
  }
  const std::vector<double> weight_before = model->fc->weight().to_vector();
  const engine::OptimizerState state_before = sgd.state();
  ASSERT_FALSE(state_before.tensors.empty());

  EXPECT_THROW(models::load_checkpoint(bad_optimizer, *model, sgd), engine::Error);
  EXPECT_EQ(model->fc->weight().to_vector(), weight_before) << "the weights changed";
  EXPECT_THROW(models::load_checkpoint(bad_weights, *model, sgd), engine::Error);
  EXPECT_EQ(model->fc->weight().to_vector(), weight_before) << "the weights changed";
  const engine::OptimizerState state_after = sgd.state();
  EXPECT_EQ(state_after.scalars, state_before.scalars);
  ASSERT_EQ(state_after.tensors.keys(), state_before.tensors.keys());
  for (const auto& [key, t] : state_before.tensors)
    EXPECT_EQ(state_after.tensors.at(key).to_vector(), t.to_vector()) << key << " changed";
  // and the good one loads
  EXPECT_EQ(models::load_checkpoint(good, *model, sgd).step, 0);
}
