// The threaded loader: worker threads decode and transform samples ahead of the consumer,
// which receives them as batches of normalised NHWC float32 images.
//
// Determinism: an epoch visits the samples in a Fisher-Yates permutation drawn from
// (seed, epoch) with Philox; sample i's augmentation draws from (seed, epoch, i). A batch is
// the next batch_size readable samples in that order. Workers may finish in any order, but
// the consumer takes their results in permutation order, so batch contents are the same for
// any number of workers (0 included: decoding on the consumer's thread).
//
// Bad files: a sample whose file fails to decode (DecodeError) is reported once per loader
// (path and reason, through LoaderConfig::warn), counted, and skipped: the batch is filled
// from the following samples. In strict mode the loader instead throws an engine::Error
// naming the file. Any other exception in a worker is rethrown to the consumer by next().
//
// Resuming: every batch carries the position just after it (epoch, batches delivered, and
// samples consumed, skipped ones included); start(position) continues with exactly the
// batches that would have followed.
//
// Threads: a Loader is used from one thread (the consumer); the workers only read the
// dataset (Dataset::load is thread-safe) and hand results back under one mutex.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "data/transforms.h"
#include "engine/tensor.h"

namespace data {

struct LoaderConfig {
  int batch_size = 32;
  int workers = 2;           // decoding threads; 0 decodes on the consumer's thread
  int prefetch_batches = 2;  // how far ahead of the consumer the workers may decode
  bool shuffle = true;
  bool drop_last = false;  // drop the epoch's last, smaller batch
  bool strict = false;     // a bad file stops the loader instead of being skipped
  uint64_t seed = 0;
  TransformConfig transform;
  // Receives each bad file's report once, on the consumer's thread; null prints to stderr.
  std::function<void(const std::string&)> warn;
};

struct LoaderPosition {
  int64_t epoch = 0;
  int64_t batch = 0;   // batches already delivered in this epoch
  int64_t cursor = 0;  // samples of the epoch's order already consumed, skipped ones included
};

struct Batch {
  engine::Tensor images;  // [N, H, W, 3] f32, normalised
  std::vector<int64_t> labels;
  std::vector<std::string> subsets;
  std::vector<std::string> paths;
  std::vector<size_t> indices;  // dataset indices
  LoaderPosition position;      // where this batch began
  LoaderPosition next;          // where the following batch begins: save this to resume
  size_t size() const { return labels.size(); }
};

class EpochRun;

class Loader {
 public:
  Loader(std::shared_ptr<const Dataset> dataset, LoaderConfig config);
  ~Loader();  // stops and joins the workers
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  // Begins (or restarts) iteration at `position`; the workers start decoding at once.
  void start(const LoaderPosition& position);
  void start_epoch(int64_t epoch) { start({epoch, 0, 0}); }
  // The next batch of the current epoch, or nothing when the epoch is over.
  std::optional<Batch> next();

  // The order in which an epoch visits the dataset's indices.
  std::vector<size_t> epoch_order(int64_t epoch) const;
  // Batches in an epoch with no bad files.
  int64_t batches_per_epoch() const;
  // Samples skipped so far (a bad file counts once per epoch it is met in).
  size_t skipped() const { return skipped_; }
  // Each bad file met so far, with the reason: "path: reason" (DecodeError's message).
  std::vector<std::string> bad_files() const;
  const Dataset& dataset() const { return *dataset_; }
  const LoaderConfig& config() const { return config_; }

 private:
  std::shared_ptr<const Dataset> dataset_;
  LoaderConfig config_;
  std::unique_ptr<EpochRun> run_;
  LoaderPosition position_;
  std::map<size_t, std::string> bad_samples_;  // dataset index -> report, for every epoch
  size_t skipped_ = 0;
};

}  // namespace data
