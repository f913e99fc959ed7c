// The threaded loader. One EpochRun per started epoch: the permutation, the worker threads,
// and a ring of per-sample results between them and the consumer.
#include "data/loader.h"

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <iostream>
#include <mutex>
#include <numeric>
#include <set>
#include <thread>

#include "data/random.h"

namespace data {

namespace {

// One sample, decoded and transformed (ok), or the reason it could not be read.
struct SampleResult {
  bool ok = false;
  std::vector<float> pixels;  // [H, W, 3]
  std::string error;          // empty for a sample already known to be bad
};

}  // namespace

// Workers claim the next position of the epoch's order, no further than `window` positions
// ahead of the consumer, and store each result in ring slot position % window. The consumer takes
// positions strictly in order; since no worker runs more than `window` ahead, a slot is never
// claimed twice at once. Everything shared is guarded by `mutex_`; the order, the dataset and the
// known-bad set are read-only here.
class EpochRun {
 public:
  EpochRun(const Dataset& dataset, const LoaderConfig& config, std::vector<size_t> order,
           size_t start_cursor, uint64_t augment_key, std::set<size_t> known_bad)
      : dataset_(dataset),
        config_(config),
        order_(std::move(order)),
        augment_key_(augment_key),
        known_bad_(std::move(known_bad)),
        window_(static_cast<size_t>(std::max(1, config.prefetch_batches * config.batch_size))),
        ring_(config.workers > 0 ? window_ : 0),
        ready_(ring_.size(), false),
        next_claim_(start_cursor),
        consumed_(start_cursor) {
    try {
      for (int i = 0; i < config.workers; ++i) workers_.emplace_back([this] { work(); });
    } catch (...) {
      stop();
      throw;
    }
  }

  ~EpochRun() { stop(); }

  size_t size() const { return order_.size(); }
  size_t index_at(size_t position) const { return order_[position]; }

  // The result for `position`, which must be the next one not yet taken.
  SampleResult take(size_t position) {
    if (workers_.empty()) return process(position);
    std::unique_lock<std::mutex> lock(mutex_);
    const size_t slot = position % window_;
    result_ready_.wait(lock, [&] { return ready_[slot] || failure_; });
    if (!ready_[slot]) std::rethrow_exception(failure_);
    SampleResult result = std::move(ring_[slot]);
    ready_[slot] = false;
    consumed_ = position + 1;
    lock.unlock();
    work_available_.notify_all();
    return result;
  }

 private:
  void stop() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    work_available_.notify_all();
    for (std::thread& t : workers_) t.join();
    workers_.clear();
  }

  void work() {
    for (;;) {
      size_t position;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        work_available_.wait(lock, [&] {
          return stopping_ || next_claim_ >= order_.size() || next_claim_ < consumed_ + window_;
        });
        if (stopping_ || next_claim_ >= order_.size()) return;
        position = next_claim_++;
      }
      try {
        SampleResult result = process(position);
        std::lock_guard<std::mutex> lock(mutex_);
        ring_[position % window_] = std::move(result);
        ready_[position % window_] = true;
      } catch (...) {  // not a bad file: a program or resource error, for the consumer
        std::lock_guard<std::mutex> lock(mutex_);
        if (!failure_) failure_ = std::current_exception();
        stopping_ = true;
      }
      // Only the consumer waits for results.
      result_ready_.notify_one();
    }
  }

  SampleResult process(size_t position) const {
    const size_t index = order_[position];
    SampleResult result;
    if (known_bad_.count(index)) return result;  // reported in an earlier epoch
    try {
      const Image image = dataset_.load(index);
      const TransformConfig& t = config_.transform;
      result.pixels.resize(static_cast<size_t>(t.height) * t.width * 3);
      transform_image(image, t, augment_key_, index, result.pixels.data());
      result.ok = true;
    } catch (const DecodeError& e) {
      result.error = e.what();
    }
    return result;
  }

  const Dataset& dataset_;
  const LoaderConfig& config_;
  const std::vector<size_t> order_;
  const uint64_t augment_key_;
  const std::set<size_t> known_bad_;
  const size_t window_;

  std::mutex mutex_;
  std::condition_variable work_available_, result_ready_;
  std::vector<SampleResult> ring_;
  std::vector<bool> ready_;
  size_t next_claim_;
  size_t consumed_;
  bool stopping_ = false;
  std::exception_ptr failure_;
  std::vector<std::thread> workers_;  // last: started after everything they read exists
};

Loader::Loader(std::shared_ptr<const Dataset> dataset, LoaderConfig config)
    : dataset_(std::move(dataset)), config_(std::move(config)) {
  ENGINE_CHECK(dataset_ != nullptr, "Loader: no dataset");
  ENGINE_CHECK(dataset_->size() > 0, "Loader: the dataset is empty");
  ENGINE_CHECK(config_.batch_size > 0, "Loader: batch_size ", config_.batch_size,
               " must be positive");
  ENGINE_CHECK(config_.workers >= 0 && config_.prefetch_batches >= 1, "Loader: workers (",
               config_.workers, ") must be >= 0 and prefetch_batches (", config_.prefetch_batches,
               ") >= 1");
  config_.transform.validate();
  if (!config_.warn) {
    config_.warn = [](const std::string& message) { std::cerr << "warning: " << message << "\n"; };
  }
}

Loader::~Loader() = default;

std::vector<size_t> Loader::epoch_order(int64_t epoch) const {
  std::vector<size_t> order(dataset_->size());
  std::iota(order.begin(), order.end(), size_t{0});
  if (!config_.shuffle) return order;
  // Fisher-Yates: position i swaps with a uniform position in [0, i], from the top down.
  DrawStream draws(derive_key(config_.seed, RandomPurpose::Shuffle, static_cast<uint64_t>(epoch)),
                   0);
  for (size_t i = order.size() - 1; i > 0; --i) std::swap(order[i], order[draws.below(i + 1)]);
  return order;
}

int64_t Loader::batches_per_epoch() const {
  const auto n = static_cast<int64_t>(dataset_->size());
  return config_.drop_last ? n / config_.batch_size
                           : (n + config_.batch_size - 1) / config_.batch_size;
}

std::vector<std::string> Loader::bad_files() const {
  std::vector<std::string> reports;
  for (const auto& [index, report] : bad_samples_) reports.push_back(report);
  return reports;
}

void Loader::start(const LoaderPosition& position) {
  ENGINE_CHECK(position.epoch >= 0 && position.batch >= 0 && position.cursor >= 0 &&
                   static_cast<size_t>(position.cursor) <= dataset_->size(),
               "Loader::start: position (epoch ", position.epoch, ", batch ", position.batch,
               ", cursor ", position.cursor, ") outside a dataset of ", dataset_->size(),
               " samples");
  run_.reset();  // joins the previous epoch's workers first
  std::set<size_t> known_bad;
  for (const auto& entry : bad_samples_) known_bad.insert(entry.first);
  run_ = std::make_unique<EpochRun>(
      *dataset_, config_, epoch_order(position.epoch), static_cast<size_t>(position.cursor),
      derive_key(config_.seed, RandomPurpose::Augment, static_cast<uint64_t>(position.epoch)),
      std::move(known_bad));
  position_ = position;
}

std::optional<Batch> Loader::next() {
  ENGINE_CHECK(run_ != nullptr, "Loader::next: call start() or start_epoch() first");
  const TransformConfig& t = config_.transform;
  const size_t batch_size = static_cast<size_t>(config_.batch_size);
  const LoaderPosition begin = position_;
  size_t cursor = static_cast<size_t>(position_.cursor);

  std::vector<SampleResult> good;
  std::vector<size_t> indices;
  while (good.size() < batch_size && cursor < run_->size()) {
    SampleResult result = run_->take(cursor);
    const size_t index = run_->index_at(cursor);
    ++cursor;
    if (!result.ok) {
      if (config_.strict) {  // (in strict mode no sample is ever known bad in advance)
        run_.reset();
        engine::detail::fail("loader (strict mode): ", result.error);
      }
      ++skipped_;
      if (!result.error.empty() && bad_samples_.emplace(index, result.error).second) {
        config_.warn("skipping unreadable image (" + std::to_string(skipped_) +
                     " skipped so far): " + result.error);
      }
      continue;
    }
    good.push_back(std::move(result));
    indices.push_back(index);
  }
  position_.cursor = static_cast<int64_t>(cursor);
  if (good.empty() || (config_.drop_last && good.size() < batch_size)) return std::nullopt;

  Batch batch;
  const int64_t n = static_cast<int64_t>(good.size());
  batch.images = engine::Tensor::empty({n, t.height, t.width, 3});
  float* images = batch.images.data<float>();
  const size_t per_image = static_cast<size_t>(t.height) * t.width * 3;
  for (size_t i = 0; i < good.size(); ++i) {
    std::memcpy(images + i * per_image, good[i].pixels.data(), per_image * sizeof(float));
    const Sample& s = dataset_->sample(indices[i]);
    batch.labels.push_back(s.label);
    batch.subsets.push_back(s.subset);
    batch.paths.push_back(s.path);
  }
  batch.indices = std::move(indices);
  batch.position = begin;
  ++position_.batch;
  batch.next = position_;
  return batch;
}

}  // namespace data
