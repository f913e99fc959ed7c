// Data-layer throughput: JPEG decoding, decode + transform to 224x224, and the threaded loader
// end to end (images per second), on 256x256-ish JPEGs made here from synthetic scenes (so
// the benchmark needs no dataset). Run:
//   build/bench/bench_kernels --benchmark_filter=Data
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "data/loader.h"
#include "data/synthetic.h"

namespace {

namespace fs = std::filesystem;

// 64 JPEGs (quality 90) of 256x256 to 320x288 pixels in ROOT/train/{nature,ai}, written once
// and removed at exit: synthetic scenes with fine texture added, so that they compress like
// photographs (about 25 KB at 256x256; decoding time follows the compressed size).
struct JpegFolder {
  fs::path root;
  std::vector<std::string> files;
  JpegFolder() {
    root = fs::temp_directory_path() / ("bench_data_" + std::to_string(getpid()));
    for (int i = 0; i < 64; ++i) {
      const int width = 256 + 64 * (i % 2), height = 256 + 32 * (i / 2 % 2);
      const data::Image scene = data::render_scene(0x5eed, static_cast<uint64_t>(i), 320);
      data::Image image(width, height);
      for (int y = 0; y < height; ++y) {
        for (int x = 0; x < width; ++x) {
          const uint64_t texture = data::mix64((uint64_t(i) << 40) ^ (uint64_t(y) << 20) ^ x) % 25;
          for (int c = 0; c < 3; ++c) {
            const int v = scene.pixel(x, y)[c] + static_cast<int>(texture) - 12;
            image.pixel(x, y)[c] = static_cast<uint8_t>(std::clamp(v, 0, 255));
          }
        }
      }
      const fs::path dir = root / "train" / (i % 2 ? "ai" : "nature");
      fs::create_directories(dir);
      files.push_back((dir / ("img" + std::to_string(i) + ".jpg")).string());
      data::write_image(files.back(), image, 90);
    }
  }
  ~JpegFolder() { fs::remove_all(root); }
};

const JpegFolder& jpeg_folder() {
  static const JpegFolder folder;
  return folder;
}

std::vector<std::vector<uint8_t>> encoded_jpegs() {
  std::vector<std::vector<uint8_t>> all;
  for (const std::string& path : jpeg_folder().files) {
    std::ifstream f(path, std::ios::binary);
    all.emplace_back(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  }
  return all;
}

void BM_DataDecodeJpeg(benchmark::State& state) {
  const auto jpegs = encoded_jpegs();
  double total_bytes = 0;
  for (const auto& jpeg : jpegs) total_bytes += static_cast<double>(jpeg.size());
  state.counters["kB/image"] = total_bytes / jpegs.size() / 1000;
  size_t i = 0;
  for (auto _ : state) {
    const auto& bytes = jpegs[i++ % jpegs.size()];
    benchmark::DoNotOptimize(data::decode_image_memory(bytes.data(), bytes.size(), "bench"));
  }
  state.counters["images/s"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_DataDecodeJpeg)->Unit(benchmark::kMillisecond)->UseRealTime();

// One thread: decode, resize to 224x224 (PIL-exact bilinear), flip, normalise.
void BM_DataDecodeTransform224(benchmark::State& state) {
  const auto jpegs = encoded_jpegs();
  const data::TransformConfig config = data::reference_train_transform(224);
  std::vector<float> out(224 * 224 * 3);
  size_t i = 0;
  for (auto _ : state) {
    const auto& bytes = jpegs[i % jpegs.size()];
    const data::Image image = data::decode_image_memory(bytes.data(), bytes.size(), "bench");
    data::transform_image(image, config, 1, i++, out.data());
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["images/s"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_DataDecodeTransform224)->Unit(benchmark::kMillisecond)->UseRealTime();

// The loader end to end, files read from disk (page cache), batches of 32 at 224x224, with
// state.range(0) workers; one epoch of 64 images per iteration.
void BM_DataLoader224(benchmark::State& state) {
  auto dataset = std::make_shared<data::FolderDataset>(jpeg_folder().root.string(), "train");
  data::LoaderConfig config;
  config.batch_size = 32;
  config.workers = static_cast<int>(state.range(0));
  config.transform = data::reference_train_transform(224);
  data::Loader loader(dataset, config);
  int64_t epoch = 0, images = 0;
  for (auto _ : state) {
    loader.start_epoch(epoch++);
    while (auto batch = loader.next()) images += static_cast<int64_t>(batch->size());
  }
  state.counters["images/s"] =
      benchmark::Counter(static_cast<double>(images), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_DataLoader224)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
