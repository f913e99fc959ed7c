// labels: cpu
// The threaded loader: batch contents independent of the worker count, per-epoch shuffles,
// drop_last, resuming, bad files skipped and counted (or fatal in strict mode), worker
// exceptions reaching the consumer, clean shutdown mid-epoch.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <stdexcept>

#include "data/loader.h"
#include "data/synthetic.h"

using namespace data;
namespace fs = std::filesystem;

namespace {

class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    path_ = fs::temp_directory_path() /
            ("test_loader_" + std::to_string(getpid()) + "_" + std::to_string(counter++));
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

std::shared_ptr<const Dataset> synthetic(size_t count, int size = 16) {
  return std::make_shared<SyntheticDataset>(SyntheticConfig{5, count, size}, "train");
}

LoaderConfig small_config(int workers, int batch_size = 8) {
  LoaderConfig config;
  config.batch_size = batch_size;
  config.workers = workers;
  config.seed = 11;
  config.transform = reference_train_transform(12);  // random flips: augmentation is covered
  return config;
}

std::vector<Batch> run_epoch(Loader& loader, int64_t epoch) {
  loader.start_epoch(epoch);
  std::vector<Batch> batches;
  while (auto batch = loader.next()) batches.push_back(std::move(*batch));
  return batches;
}

bool same_position(const LoaderPosition& a, const LoaderPosition& b) {
  return a.epoch == b.epoch && a.batch == b.batch && a.cursor == b.cursor;
}

void expect_same_batches(const std::vector<Batch>& a, const std::vector<Batch>& b,
                         const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a[i].indices, b[i].indices) << what << ", batch " << i;
    ASSERT_EQ(a[i].labels, b[i].labels) << what << ", batch " << i;
    ASSERT_EQ(a[i].paths, b[i].paths) << what << ", batch " << i;
    ASSERT_EQ(a[i].images.shape(), b[i].images.shape()) << what << ", batch " << i;
    ASSERT_EQ(std::memcmp(a[i].images.raw_data(), b[i].images.raw_data(), a[i].images.nbytes()), 0)
        << what << ", batch " << i;
    ASSERT_TRUE(same_position(a[i].position, b[i].position)) << what << ", batch " << i;
    ASSERT_TRUE(same_position(a[i].next, b[i].next)) << what << ", batch " << i;
  }
}

}  // namespace

TEST(Loader, SameBatchesForAnyWorkerCount) {
  const auto dataset = synthetic(37);
  Loader reference(dataset, small_config(0));
  const std::vector<Batch> expected = run_epoch(reference, 3);
  for (int workers : {1, 3}) {
    for (int prefetch : {1, 3}) {
      LoaderConfig config = small_config(workers);
      config.prefetch_batches = prefetch;
      Loader loader(dataset, config);
      expect_same_batches(
          run_epoch(loader, 3), expected,
          std::to_string(workers) + " workers, prefetch " + std::to_string(prefetch));
    }
  }
}

TEST(Loader, BatchesHoldTheTransformedSamples) {
  const auto dataset = synthetic(10);
  const LoaderConfig config = small_config(2, 4);
  Loader loader(dataset, config);
  const std::vector<Batch> batches = run_epoch(loader, 1);
  const uint64_t augment_key = derive_key(config.seed, RandomPurpose::Augment, 1);
  std::vector<float> expected(12 * 12 * 3);
  for (const Batch& batch : batches) {
    ASSERT_EQ(batch.images.shape(), (engine::Shape{static_cast<int64_t>(batch.size()), 12, 12, 3}));
    for (size_t i = 0; i < batch.size(); ++i) {
      const size_t index = batch.indices[i];
      EXPECT_EQ(batch.labels[i], dataset->sample(index).label);
      EXPECT_EQ(batch.paths[i], dataset->sample(index).path);
      EXPECT_EQ(batch.subsets[i], "synthetic");
      transform_image(dataset->load(index), config.transform, augment_key, index, expected.data());
      EXPECT_EQ(std::memcmp(batch.images.data<float>() + i * expected.size(), expected.data(),
                            expected.size() * sizeof(float)),
                0);
    }
  }
}

TEST(Loader, ShuffleDiffersPerEpochAndVisitsEverySampleOnce) {
  const auto dataset = synthetic(37);
  Loader loader(dataset, small_config(2));
  const std::vector<size_t> first = loader.epoch_order(0), second = loader.epoch_order(1);
  EXPECT_NE(first, second);
  EXPECT_EQ(first, loader.epoch_order(0));
  for (int64_t epoch : {0, 1}) {
    std::vector<size_t> seen;
    for (const Batch& batch : run_epoch(loader, epoch)) {
      seen.insert(seen.end(), batch.indices.begin(), batch.indices.end());
    }
    EXPECT_EQ(seen, epoch == 0 ? first : second);
    std::sort(seen.begin(), seen.end());
    std::vector<size_t> all(37);
    std::iota(all.begin(), all.end(), size_t{0});
    EXPECT_EQ(seen, all);
  }
  LoaderConfig in_order = small_config(2);
  in_order.shuffle = false;
  Loader unshuffled(dataset, in_order);
  std::vector<size_t> identity(37);
  std::iota(identity.begin(), identity.end(), size_t{0});
  EXPECT_EQ(unshuffled.epoch_order(4), identity);
}

TEST(Loader, DropLastAndThePartialBatch) {
  const auto dataset = synthetic(37);
  Loader keep(dataset, small_config(2));
  const std::vector<Batch> kept = run_epoch(keep, 0);
  ASSERT_EQ(kept.size(), 5u);
  EXPECT_EQ(keep.batches_per_epoch(), 5);
  EXPECT_EQ(kept.back().size(), 5u);
  EXPECT_EQ(kept.back().images.dim(0), 5);

  LoaderConfig config = small_config(2);
  config.drop_last = true;
  Loader drop(dataset, config);
  const std::vector<Batch> dropped = run_epoch(drop, 0);
  ASSERT_EQ(dropped.size(), 4u);
  EXPECT_EQ(drop.batches_per_epoch(), 4);
  for (const Batch& b : dropped) EXPECT_EQ(b.size(), 8u);
  EXPECT_FALSE(drop.next().has_value());  // stays over until the next start
}

TEST(Loader, ResumeSeesExactlyTheRemainingBatches) {
  const auto dataset = synthetic(37);
  Loader loader(dataset, small_config(2));
  const std::vector<Batch> full = run_epoch(loader, 2);
  for (size_t k : {size_t{0}, size_t{2}, size_t{4}}) {
    Loader resumed(dataset, small_config(3));  // a new process, another worker count
    resumed.start(full[k].next);
    std::vector<Batch> rest;
    while (auto batch = resumed.next()) rest.push_back(std::move(*batch));
    expect_same_batches(rest, std::vector<Batch>(full.begin() + k + 1, full.end()),
                        "resumed after batch " + std::to_string(k));
  }
  // Restarting mid-epoch in the same loader works too.
  loader.start_epoch(2);
  ASSERT_TRUE(loader.next().has_value());
  loader.start(full[0].next);
  auto second = loader.next();
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->indices, full[1].indices);
  EXPECT_THROW(loader.start({0, 0, 38}), engine::Error);
}

namespace {

// 10 real and 10 generated 9x7 PNGs, plus three bad files among them.
struct FolderWithBadFiles {
  TempDir dir;
  std::vector<std::string> bad;
  FolderWithBadFiles() {
    for (const char* cls : {"nature", "ai"}) {
      fs::create_directories(dir.path() / "train" / cls);
      for (int i = 0; i < 10; ++i) {
        std::vector<uint8_t> rgb(9 * 7 * 3, static_cast<uint8_t>(20 * i + (cls[0] == 'a' ? 5 : 0)));
        write_image((dir.path() / "train" / cls / ("img" + std::to_string(i) + ".png")).string(), 9,
                    7, 3, rgb.data());
      }
    }
    const fs::path noise = dir.path() / "train/nature/img3_noise.png";
    std::ofstream(noise, std::ios::binary) << "this is not an image at all";
    const fs::path empty = dir.path() / "train/ai/img5_empty.bmp";
    std::ofstream{empty};
    const fs::path cut = dir.path() / "train/ai/img7_cut.png";
    fs::copy_file(dir.path() / "train/ai/img7.png", cut);
    fs::resize_file(cut, fs::file_size(cut) / 2);
    bad = {noise.string(), empty.string(), cut.string()};
  }
};

}  // namespace

TEST(Loader, BadFilesAreSkippedCountedAndReportedOnce) {
  FolderWithBadFiles folder;
  const auto dataset = std::make_shared<FolderDataset>(folder.dir.path().string(), "train");
  ASSERT_EQ(dataset->size(), 23u);
  std::vector<std::string> warnings;
  std::vector<std::vector<Batch>> per_worker_count;
  for (int workers : {0, 3}) {
    LoaderConfig config = small_config(workers, 4);
    config.warn = [&](const std::string& message) { warnings.push_back(message); };
    Loader loader(dataset, config);
    warnings.clear();
    const std::vector<Batch> epoch0 = run_epoch(loader, 0);
    size_t delivered = 0;
    for (const Batch& b : epoch0) {
      delivered += b.size();
      for (const std::string& path : b.paths) {
        EXPECT_EQ(std::find(folder.bad.begin(), folder.bad.end(), path), folder.bad.end());
      }
    }
    EXPECT_EQ(delivered, 20u);
    ASSERT_EQ(epoch0.size(), 5u);  // 20 good samples in full batches of 4
    for (const Batch& b : epoch0) EXPECT_EQ(b.size(), 4u);
    EXPECT_EQ(loader.skipped(), 3u);
    ASSERT_EQ(warnings.size(), 3u);
    ASSERT_EQ(loader.bad_files().size(), 3u);
    for (const std::string& path : folder.bad) {
      EXPECT_EQ(
          std::count_if(warnings.begin(), warnings.end(),
                        [&](const std::string& w) { return w.find(path) != std::string::npos; }),
          1)
          << path;
    }
    run_epoch(loader, 1);  // met again: counted, not reported again
    EXPECT_EQ(loader.skipped(), 6u);
    EXPECT_EQ(warnings.size(), 3u);
    per_worker_count.push_back(epoch0);
  }
  expect_same_batches(per_worker_count[0], per_worker_count[1], "with bad files");

  // Resuming past a skipped file continues where the original run did.
  const std::vector<Batch>& epoch0 = per_worker_count[0];
  Loader resumed(dataset, small_config(2, 4));
  resumed.start(epoch0[1].next);
  std::vector<Batch> rest;
  while (auto batch = resumed.next()) rest.push_back(std::move(*batch));
  expect_same_batches(rest, std::vector<Batch>(epoch0.begin() + 2, epoch0.end()), "resumed");
}

TEST(Loader, StrictModeStopsNamingTheFile) {
  FolderWithBadFiles folder;
  const auto dataset = std::make_shared<FolderDataset>(folder.dir.path().string(), "train");
  for (int workers : {0, 2}) {
    LoaderConfig config = small_config(workers, 4);
    config.strict = true;
    config.shuffle = false;  // file order: ai/ (img5_empty at 6) before nature/
    Loader loader(dataset, config);
    loader.start_epoch(0);
    ASSERT_TRUE(loader.next().has_value());  // samples 0-3 are good
    try {
      loader.next();
      FAIL() << "expected an error in strict mode";
    } catch (const engine::Error& e) {
      EXPECT_NE(std::string(e.what()).find(folder.bad[1]), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("empty file"), std::string::npos) << e.what();
    }
  }
}

namespace {
// A dataset whose sample `failing` throws a non-decoding error (a bug, not a bad file).
class FailingDataset : public Dataset {
 public:
  explicit FailingDataset(size_t failing) : inner_(synthetic(24)), failing_(failing) {}
  size_t size() const override { return inner_->size(); }
  const Sample& sample(size_t i) const override { return inner_->sample(i); }
  Image load(size_t i) const override {
    if (i == failing_) throw std::runtime_error("boom at sample " + std::to_string(i));
    return inner_->load(i);
  }
  std::vector<std::string> subsets() const override { return inner_->subsets(); }

 private:
  std::shared_ptr<const Dataset> inner_;
  size_t failing_;
};
}  // namespace

TEST(Loader, WorkerExceptionsReachTheConsumer) {
  const auto dataset = std::make_shared<FailingDataset>(13);
  for (int workers : {0, 1, 3}) {
    Loader loader(dataset, small_config(workers, 4));
    loader.start_epoch(0);
    try {
      while (loader.next()) {
      }
      FAIL() << "expected the worker's exception";
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find("boom at sample 13"), std::string::npos) << e.what();
    }
  }
}

TEST(Loader, StopsCleanlyMidEpoch) {
  const auto dataset = synthetic(200);
  for (int round = 0; round < 3; ++round) {
    LoaderConfig config = small_config(3, 4);
    config.prefetch_batches = 1 + round;
    Loader loader(dataset, config);
    loader.start_epoch(0);
    ASSERT_TRUE(loader.next().has_value());
    loader.start_epoch(1);  // abandons epoch 0 with workers blocked on a full window
    ASSERT_TRUE(loader.next().has_value());
  }  // destroyed with work outstanding
  Loader never_started(dataset, small_config(2));
  EXPECT_THROW(never_started.next(), engine::Error);
}

TEST(Loader, RejectsBadConfigurations) {
  const auto dataset = synthetic(8);
  LoaderConfig config = small_config(2);
  config.batch_size = 0;
  EXPECT_THROW(Loader(dataset, config), engine::Error);
  config = small_config(-1);
  EXPECT_THROW(Loader(dataset, config), engine::Error);
  config = small_config(2);
  config.transform.std[1] = 0;
  EXPECT_THROW(Loader(dataset, config), engine::Error);
  EXPECT_THROW(Loader(nullptr, small_config(2)), engine::Error);
}
