#include "models/summary.h"

#include <cstdio>
#include <sstream>

namespace models {

namespace {

struct Walker {
  ModelSummary summary;
  int64_t h, w, c;

  int64_t params_of(const engine::Module& m) const { return m.num_parameters(); }

  void conv(const std::string& name, const engine::nn::Conv2d& layer) {
    const engine::Shape& ws = layer.weight().shape();  // [K, R, S, C]
    int64_t k = ws[0], r = ws[1], s = ws[2];
    h = (h + 2 * layer.padding() - r) / layer.stride() + 1;
    w = (w + 2 * layer.padding() - s) / layer.stride() + 1;
    char kind[32];
    std::snprintf(kind, sizeof kind, "conv %lldx%lld/%d", static_cast<long long>(r),
                  static_cast<long long>(s), layer.stride());
    summary.layers.push_back({name, kind, {h, w, k}, params_of(layer), h * w * k * r * s * ws[3]});
    c = k;
  }
  void norm(const std::string& name, const engine::nn::BatchNorm2d& layer) {
    summary.layers.push_back({name, "batch_norm", {h, w, c}, params_of(layer), 0});
  }
};

}  // namespace

ModelSummary summarize(const Detector& model, int64_t height, int64_t width) {
  ENGINE_CHECK(height >= 32 && width >= 32, "summary: input must be at least 32x32, got ", height, "x", width);
  Walker walk{{}, height, width, 3};
  walk.conv("conv1", *model.conv1);
  walk.norm("bn1", *model.bn1);
  walk.h = (walk.h + 2 - 3) / 2 + 1;
  walk.w = (walk.w + 2 - 3) / 2 + 1;
  walk.summary.layers.push_back({"maxpool", "max_pool 3x3/2", {walk.h, walk.w, walk.c}, 0, 0});
  for (size_t l = 0; l < model.layers.size(); ++l) {
    const auto& blocks = model.layers[l]->named_children();
    for (const auto& [index, module] : blocks) {
      const auto& block = dynamic_cast<const Bottleneck&>(*module);
      std::string prefix = "layer" + std::to_string(l + 1) + "." + index + ".";
      int64_t in_h = walk.h, in_w = walk.w, in_c = walk.c;
      walk.conv(prefix + "conv1", *block.conv1);
      walk.norm(prefix + "bn1", *block.bn1);
      walk.conv(prefix + "conv2", *block.conv2);
      walk.norm(prefix + "bn2", *block.bn2);
      walk.conv(prefix + "conv3", *block.conv3);
      walk.norm(prefix + "bn3", *block.bn3);
      if (block.downsample) {
        int64_t out_h = walk.h, out_w = walk.w, out_c = walk.c;
        walk.h = in_h, walk.w = in_w, walk.c = in_c;
        walk.conv(prefix + "downsample.0", dynamic_cast<const engine::nn::Conv2d&>((*block.downsample)[0]));
        walk.norm(prefix + "downsample.1", dynamic_cast<const engine::nn::BatchNorm2d&>((*block.downsample)[1]));
        walk.h = out_h, walk.w = out_w, walk.c = out_c;
      }
    }
  }
  if (model.attention) {
    int64_t h = walk.h, w = walk.w, c = walk.c;
    walk.summary.layers.push_back({"attention.pool", "channel mean+max", {h, w, 2}, 0, 0});
    walk.c = 2;
    walk.conv("attention.conv", *model.attention->conv);
    walk.summary.layers.push_back({"attention.gate", "sigmoid gate", {h, w, c}, 0, 0});
    walk.c = c;
  }
  walk.summary.layers.push_back({"avgpool", "global_avg_pool", {walk.c}, 0, 0});
  const int64_t classes = model.options().num_classes;
  if (model.fc)
    walk.summary.layers.push_back({"fc", "linear", {classes}, model.fc->num_parameters(), walk.c * classes});
  else
    walk.summary.layers.push_back(
        {"fc", "bayes_linear", {classes}, model.bayes_fc->num_parameters(), walk.c * classes});
  ModelSummary out = std::move(walk.summary);
  out.parameters = model.num_parameters();
  for (const auto& layer : out.layers) out.macs += layer.macs;
  return out;
}

std::string ModelSummary::to_string() const {
  std::ostringstream os;
  char line[160];
  std::snprintf(line, sizeof line, "%-24s %-18s %-16s %12s %14s\n", "layer", "kind", "output", "params", "MACs");
  os << line;
  for (const auto& l : layers) {
    std::snprintf(line, sizeof line, "%-24s %-18s %-16s %12lld %14lld\n", l.name.c_str(), l.kind.c_str(),
                  engine::shape_str(l.output).c_str(), static_cast<long long>(l.parameters),
                  static_cast<long long>(l.macs));
    os << line;
  }
  std::snprintf(line, sizeof line, "total: %lld parameters, %.3f GMACs (%.3f GFLOPs) per image\n",
                static_cast<long long>(parameters), macs / 1e9, 2 * macs / 1e9);
  os << line;
  return os.str();
}

}  // namespace models
