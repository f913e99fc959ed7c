#include "models/weights.h"

#include <cstring>
#include <sstream>
#include <unordered_set>

#include "engine/error.h"
#include "engine/safetensors.h"

namespace models {

using engine::Shape;
using engine::Tensor;

namespace {

// out[k][i1][i2][i3] = in[k][...] with in's dims 1..3 permuted: out dim d takes in dim perm[d].
Tensor permute_last3(const Tensor& w, const int perm[3]) {
  Tensor host = w.to(engine::Device::CPU);
  const Shape& s = host.shape();
  Shape out_shape = {s[0], s[perm[0]], s[perm[1]], s[perm[2]]};
  Tensor out = Tensor::empty(out_shape, host.dtype());
  int64_t in_stride[4] = {s[1] * s[2] * s[3], s[2] * s[3], s[3], 1};
  const int64_t elem = static_cast<int64_t>(engine::dtype_size(host.dtype()));
  const char* src = static_cast<const char*>(host.raw_data());
  char* dst = static_cast<char*>(out.raw_data());
  int64_t i = 0;
  for (int64_t k = 0; k < out_shape[0]; ++k)
    for (int64_t a = 0; a < out_shape[1]; ++a)
      for (int64_t b = 0; b < out_shape[2]; ++b)
        for (int64_t c = 0; c < out_shape[3]; ++c, ++i) {
          int64_t offset = k * in_stride[0] + a * in_stride[perm[0]] + b * in_stride[perm[1]] +
                           c * in_stride[perm[2]];
          std::memcpy(dst + i * elem, src + offset * elem, elem);
        }
  return out.to(w.device());
}

// How a model tensor is stored on disk.
Shape disk_shape(const Tensor& t) {
  const Shape& s = t.shape();
  return s.size() == 4 ? Shape{s[0], s[3], s[1], s[2]} : s;
}

// Scalars: PyTorch stores num_batches_tracked with shape [], the engine with [1].
bool shapes_match(const Shape& file, const Shape& expected) {
  return file == expected || (engine::shape_numel(file) == 1 && engine::shape_numel(expected) == 1 &&
                              file.size() <= 1 && expected.size() <= 1);
}

std::string list_some(const std::vector<std::string>& keys, size_t limit = 8) {
  std::ostringstream os;
  for (size_t i = 0; i < keys.size() && i < limit; ++i) os << (i ? ", " : "") << keys[i];
  if (keys.size() > limit) os << ", ... (" << keys.size() - limit << " more)";
  return os.str();
}

}  // namespace

Tensor oihw_to_krsc(const Tensor& w) {
  ENGINE_CHECK(w.ndim() == 4, "oihw_to_krsc: expected a 4-D weight, got ", w.desc());
  static const int perm[3] = {2, 3, 1};  // out [K, R, S, C] from in [K, C, R, S]
  return permute_last3(w, perm);
}

Tensor krsc_to_oihw(const Tensor& w) {
  ENGINE_CHECK(w.ndim() == 4, "krsc_to_oihw: expected a 4-D weight, got ", w.desc());
  static const int perm[3] = {3, 1, 2};  // out [K, C, R, S] from in [K, R, S, C]
  return permute_last3(w, perm);
}

bool is_head_key(const std::string& name) {
  return name.rfind("fc.", 0) == 0 || name.rfind("attention.", 0) == 0;
}

WeightsReport load_weights(engine::Module& model, const std::string& path, WeightsScope scope,
                           const std::vector<std::string>& ignore_prefixes) {
  auto reader = engine::SafeTensorsReader::open(path);
  engine::StateDict target = model.state_dict();
  WeightsReport report;
  std::vector<std::string> missing, mismatched, unexpected;
  engine::StateDict values;
  for (const auto& [name, tensor] : target) {
    if (scope == WeightsScope::Backbone && is_head_key(name)) {
      report.skipped.push_back(name);
      continue;
    }
    if (!reader.has(name)) {
      missing.push_back(name);
      continue;
    }
    const Shape& file_shape = reader.info(name).shape;
    Shape expected = disk_shape(tensor);
    if (!shapes_match(file_shape, expected)) {
      mismatched.push_back(name + " (file " + engine::shape_str(file_shape) + ", model expects " +
                           engine::shape_str(expected) + ")");
      continue;
    }
    Tensor value = reader.read(name, tensor.dtype());
    if (tensor.ndim() == 4) value = oihw_to_krsc(value);
    else value.impl().shape = tensor.shape();  // a fresh tensor: [] and [1] scalars agree
    values.set(name, value);
  }
  std::unordered_set<std::string> known;
  for (const auto& entry : target) known.insert(entry.first);
  auto ignored_prefix = [&](const std::string& key) {
    for (const auto& prefix : ignore_prefixes)
      if (key.rfind(prefix, 0) == 0) return true;
    return false;
  };
  for (const std::string& key : reader.keys()) {
    if (ignored_prefix(key)) continue;
    if (known.count(key) && !(scope == WeightsScope::Backbone && is_head_key(key))) continue;
    if (scope == WeightsScope::Backbone && is_head_key(key)) report.ignored.push_back(key);
    else if (!known.count(key)) unexpected.push_back(key);
  }
  if (!missing.empty() || !mismatched.empty() || !unexpected.empty()) {
    std::ostringstream os;
    os << path << ": cannot load these weights into the model";
    size_t expected_keys = target.size() - report.skipped.size();
    if (missing.size() * 2 > expected_keys)
      os << " (" << missing.size() << " of the " << expected_keys
         << " tensors the model needs are absent: is this a checkpoint of this architecture?)";
    if (!missing.empty()) os << "\n  missing from the file: " << list_some(missing);
    if (!mismatched.empty()) os << "\n  shape mismatches: " << list_some(mismatched, 4);
    if (!unexpected.empty()) os << "\n  in the file but not in the model: " << list_some(unexpected);
    bool only_head = true;
    for (const auto* keys : {&missing, &mismatched, &unexpected})
      for (const auto& k : *keys) only_head &= is_head_key(k);
    if (only_head && scope == WeightsScope::All)
      os << "\n  (the classifier head differs: to start from ImageNet weights, load the backbone only)";
    throw engine::Error(os.str());
  }
  model.load_state_dict(values, /*strict=*/false);
  report.loaded = values.size();
  return report;
}

void save_weights(const engine::Module& model, const std::string& path,
                  const std::map<std::string, std::string>& metadata,
                  const std::vector<std::pair<std::string, Tensor>>& extra) {
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const auto& [name, tensor] : model.state_dict())
    tensors.emplace_back(name, tensor.ndim() == 4 ? krsc_to_oihw(tensor) : tensor);
  for (const auto& [name, tensor] : extra)
    tensors.emplace_back(name, tensor.ndim() == 4 ? krsc_to_oihw(tensor) : tensor);
  std::map<std::string, std::string> meta = metadata;
  meta.emplace("layout", "torchvision");
  engine::write_safetensors(path, tensors, meta);
}

}  // namespace models
