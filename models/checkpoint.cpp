#include "models/checkpoint.h"

#include <nlohmann/json.hpp>

#include "engine/safetensors.h"
#include "models/weights.h"

namespace models {

namespace {
constexpr const char* kFormat = "aidetect-checkpoint-1";
constexpr const char* kOptimizerPrefix = kCheckpointOptimizerPrefix;
}  // namespace

void save_checkpoint(const std::string& path, const Detector& model, const engine::Optimizer& optimizer,
                     const TrainingProgress& progress) {
  engine::OptimizerState state = optimizer.state();
  std::vector<std::pair<std::string, engine::Tensor>> extra;
  for (const auto& [name, tensor] : state.tensors) extra.emplace_back(kOptimizerPrefix + name, tensor);
  nlohmann::json scalars(state.scalars);
  std::map<std::string, std::string> metadata = {
      {"format", kFormat},
      {"model", variant_name(model.variant())},
      {"epoch", std::to_string(progress.epoch)},
      {"step", std::to_string(progress.step)},
      {"skipped_steps", std::to_string(progress.skipped_steps)},
      {"loader_epoch", std::to_string(progress.position.epoch)},
      {"loader_batch", std::to_string(progress.position.batch)},
      {"loader_cursor", std::to_string(progress.position.cursor)},
      {"optimizer_scalars", scalars.dump()},
      {"config", progress.config},
  };
  save_weights(model, path, metadata, extra);
}

nlohmann::json parse_metadata_json(const std::string& text, const std::string& where) {
  constexpr int kMaxNesting = 16;
  // The parser reports each object and array as it opens, at its depth, before building it.
  auto limit_nesting = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json&) {
    const bool opens = event == nlohmann::json::parse_event_t::object_start ||
                       event == nlohmann::json::parse_event_t::array_start;
    ENGINE_CHECK(!opens || depth < kMaxNesting, where, " nests deeper than ", kMaxNesting, " levels");
    return true;
  };
  return nlohmann::json::parse(text, limit_nesting);
}

CheckpointMetadata parse_checkpoint_metadata(const std::map<std::string, std::string>& meta,
                                             const std::string& path) {
  auto field = [&](const char* key) -> const std::string& {
    auto it = meta.find(key);
    ENGINE_CHECK(it != meta.end(), path, ": not a training checkpoint (metadata has no '", key, "')");
    return it->second;
  };
  ENGINE_CHECK(field("format") == kFormat, path, ": unknown checkpoint format '", field("format"), "'");
  auto integer = [&](const char* key) -> int64_t {
    try {
      size_t used = 0;
      int64_t v = std::stoll(field(key), &used);
      if (used == field(key).size() && v >= 0) return v;
    } catch (const std::exception&) {
    }
    engine::detail::fail(path, ": checkpoint metadata '", key, "' is not a non-negative integer: '", field(key), "'");
  };
  CheckpointMetadata out;
  out.model = field("model");
  out.progress.epoch = integer("epoch");
  out.progress.step = integer("step");
  if (meta.count("skipped_steps")) out.progress.skipped_steps = integer("skipped_steps");  // older checkpoints lack it
  out.progress.position = {integer("loader_epoch"), integer("loader_batch"), integer("loader_cursor")};
  out.progress.config = field("config");
  try {
    nlohmann::json scalars =
        parse_metadata_json(field("optimizer_scalars"), path + ": checkpoint metadata 'optimizer_scalars'");
    for (const auto& [key, value] : scalars.items()) out.optimizer_scalars[key] = value.get<double>();
  } catch (const nlohmann::json::exception& e) {
    engine::detail::fail(path, ": checkpoint metadata 'optimizer_scalars' is damaged: ", e.what());
  }
  return out;
}

TrainingProgress load_checkpoint(const std::string& path, Detector& model, engine::Optimizer& optimizer) {
  auto reader = engine::SafeTensorsReader::open(path);
  CheckpointMetadata meta = parse_checkpoint_metadata(reader.metadata(), path);
  ENGINE_CHECK(meta.model == variant_name(model.variant()), path, ": checkpoint of model '", meta.model,
               "', but this run builds '", variant_name(model.variant()), "'");
  TrainingProgress progress = meta.progress;
  engine::OptimizerState state;
  state.scalars = meta.optimizer_scalars;
  // Optimiser buffers have their parameter's shape; 4-D ones are stored OIHW like the weights.
  for (const std::string& key : reader.keys()) {
    if (key.rfind(kOptimizerPrefix, 0) != 0) continue;
    engine::Tensor t = reader.read(key);
    state.tensors.set(key.substr(std::string(kOptimizerPrefix).size()), t.ndim() == 4 ? oihw_to_krsc(t) : t);
  }
  // All or nothing: load_state and load_weights each check everything before they change
  // anything; the optimiser's previous state is put back if the weights then do not fit.
  engine::OptimizerState previous = optimizer.state();
  optimizer.load_state(state);
  try {
    load_weights(model, path, WeightsScope::All, {kOptimizerPrefix});
  } catch (...) {
    optimizer.load_state(previous);
    throw;
  }
  return progress;
}

}  // namespace models
