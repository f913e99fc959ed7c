// Fuzz targets: one function per parser of outside data, taking the raw bytes of one input.
// The libFuzzer harnesses (tests/fuzz/fuzz_*.cpp) and the CI regression test
// (tests/test_fuzz_regressions.cpp) both call these, so a reproducer replays through exactly
// the code that found it.
//
// Contract: a parser must either accept the input or refuse it with an engine::Error
// (data::DecodeError included) naming the problem. Any other exception, a crash, a sanitizer
// report, a hang or a large allocation is a finding: the targets catch engine::Error only.
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "data/image.h"
#include "engine/error.h"
#include "engine/nn.h"
#include "engine/optim.h"
#include "engine/safetensors.h"
#include "models/checkpoint.h"
#include "models/predict.h"
#include "models/resnet.h"

namespace fuzz {

enum class Outcome { Accepted, Refused };

// When set, every refusal's message is appended here (the regression test checks them).
inline std::vector<std::string>*& error_log() {
  static std::vector<std::string>* log = nullptr;
  return log;
}

template <typename Fn>
Outcome guarded(Fn&& fn) {
  try {
    fn();
    return Outcome::Accepted;
  } catch (const engine::Error& e) {
    if (error_log()) error_log()->push_back(e.what());
    return Outcome::Refused;
  }
}

// The readers that take a path (safetensors, checkpoints: mmap) read the input from this
// file: one per process, on tmpfs when there is one, removed at exit.
class ScratchFile {
 public:
  ScratchFile() {
    namespace fs = std::filesystem;
    fs::path folder = fs::is_directory("/dev/shm") ? fs::path("/dev/shm") : fs::temp_directory_path();
    path_ = (folder / ("aidetect-fuzz-" + std::to_string(::getpid()) + ".safetensors")).string();
  }
  ~ScratchFile() { std::remove(path_.c_str()); }
  ScratchFile(const ScratchFile&) = delete;
  ScratchFile& operator=(const ScratchFile&) = delete;

  const std::string& write(const uint8_t* data, size_t size) {
    std::unique_ptr<FILE, int (*)(FILE*)> file(std::fopen(path_.c_str(), "wb"), &std::fclose);
    ENGINE_CHECK(file && std::fwrite(data, 1, size, file.get()) == size, "fuzz: cannot write ", path_);
    return path_;
  }

 private:
  std::string path_;
};

inline const std::string& scratch_path(const uint8_t* data, size_t size) {
  static ScratchFile file;
  return file.write(data, size);
}

// engine::SafeTensorsReader: open (length field, header JSON, dtypes, shapes, offsets), then
// read every tensor as f32 and f64 (a dtype it cannot convert is refused per tensor).
inline Outcome safetensors(const uint8_t* data, size_t size) {
  const std::string& path = scratch_path(data, size);
  return guarded([&] {
    auto reader = engine::SafeTensorsReader::open(path);
    for (const std::string& key : reader.keys()) {
      guarded([&] { reader.read(key, engine::DType::F32); });
      guarded([&] { reader.read(key, engine::DType::F64); });
    }
  });
}

// models::load_checkpoint into a ResNet50 and its SGD optimiser (built once per process):
// metadata fields, optimiser tensors (4-D ones converted from OIHW), then the weights
// (models::load_weights: names, shapes, conversion). A fuzzer cannot write the whole 25M
// parameters the weights step needs before the optimiser state is loaded, so the scalars
// that parse_checkpoint_metadata accepted are also given to Optimizer::load_state directly,
// as load_checkpoint does after the weights.
struct CheckpointTarget {
  std::shared_ptr<models::Detector> model = models::make_detector("resnet50");
  engine::SGD optimizer{model->named_parameters(), engine::SgdOptions{0.1, 0.9}};
};
// Built once per process (seconds under the sanitizers: the harness builds it before the
// first input, outside libFuzzer's per-input timeout).
inline CheckpointTarget& checkpoint_target() {
  static CheckpointTarget target;
  return target;
}

inline Outcome checkpoint(const uint8_t* data, size_t size) {
  models::Detector* model = checkpoint_target().model.get();
  engine::SGD& optimizer = checkpoint_target().optimizer;
  const std::string& path = scratch_path(data, size);
  guarded([&] {
    auto reader = engine::SafeTensorsReader::open(path);
    engine::OptimizerState state;
    state.scalars = models::parse_checkpoint_metadata(reader.metadata(), path).optimizer_scalars;
    optimizer.load_state(state);
  });
  return guarded([&] { models::load_checkpoint(path, *model, optimizer); });
}

// data::decode_image_memory with the default limits: format sniffing, the header size
// check, the JPEG pre-check and the truncated-BMP check, then stb_image.
inline Outcome image(const uint8_t* data, size_t size) {
  return guarded([&] { data::decode_image_memory(data, size, "fuzz-input"); });
}

// The JSON strings inside checkpoint metadata, the input being the string itself:
// "optimizer_scalars" (models::parse_checkpoint_metadata, then Optimizer::load_state of a
// small SGD, as load_checkpoint does) and "config" (models::trained_image_size, as predict
// reads it).
inline Outcome metadata_json(const uint8_t* data, size_t size) {
  static engine::nn::Linear layer(3, 2);
  static engine::SGD optimizer(layer.named_parameters(), engine::SgdOptions{0.1, 0.9});
  const std::string text(reinterpret_cast<const char*>(data), size);
  const std::map<std::string, std::string> metadata = {
      {"format", "aidetect-checkpoint-1"}, {"model", "resnet50"},  {"epoch", "1"},
      {"step", "10"},                      {"loader_epoch", "1"},  {"loader_batch", "2"},
      {"loader_cursor", "3"},              {"optimizer_scalars", text}, {"config", text}};
  const Outcome scalars = guarded([&] {
    engine::OptimizerState state;
    state.scalars = models::parse_checkpoint_metadata(metadata, "fuzz-input").optimizer_scalars;
    optimizer.load_state(state);
  });
  const Outcome config = guarded([&] { models::trained_image_size(metadata, "fuzz-input"); });
  return scalars == Outcome::Accepted || config == Outcome::Accepted ? Outcome::Accepted : Outcome::Refused;
}

// The target of a harness by its name (the suffix of fuzz_<name>.cpp).
inline Outcome run(const std::string& harness, const uint8_t* data, size_t size) {
  if (harness == "safetensors") return safetensors(data, size);
  if (harness == "checkpoint") return checkpoint(data, size);
  if (harness == "image") return image(data, size);
  if (harness == "metadata_json") return metadata_json(data, size);
  engine::detail::fail("fuzz: no harness '", harness, "' (safetensors, checkpoint, image, metadata_json)");
}

}  // namespace fuzz
