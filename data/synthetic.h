// A built-in synthetic dataset of "real" and "generated" images, for demonstrations and tests
// when no image folder is given (see data/README.md). Nothing is stored: image i is rendered
// on demand from (seed, split, i), so any number of images costs no memory and every thread
// renders the same pixels.
//
// "Real" (label 0): a scene rendered at full resolution: a colour gradient, a few
// anti-aliased shapes (discs, rotated rectangles, straight edges) and multi-octave colour
// noise with amplitude ~ 1/f (power ~ 1/f^2, as in natural images).
// "Generated" (label 1): the same kind of scene rendered at half resolution, then upsampled
// 2x by a fixed transposed convolution (stride 2, padding 1, 4x4 kernel), like a
// generator's last layer. Its kernel's two phases have unequal gains, which leaves the
// periodic (checkerboard) artefacts and the missing top octave that detectors learn.
#pragma once
#include <cstdint>
#include <string>

#include "data/dataset.h"

namespace data {

struct SyntheticConfig {
  uint64_t seed = 0;
  size_t count = 2000;  // images; even indices are real, odd ones generated
  int size = 64;        // side in pixels; even
};

class SyntheticDataset : public Dataset {
 public:
  // `split` ("train", "val", ...) selects an independent set of images for the same seed.
  SyntheticDataset(const SyntheticConfig& config, const std::string& split);

  size_t size() const override { return samples_.size(); }
  const Sample& sample(size_t index) const override { return samples_.at(index); }
  Image load(size_t index) const override;
  std::vector<std::string> subsets() const override { return {"synthetic"}; }

 private:
  SyntheticConfig config_;
  uint64_t key_;
  std::vector<Sample> samples_;
};

// The pieces, exposed for tests and tools.
// A natural-looking scene of size x size pixels, scene `index` of the stream `key`.
Image render_scene(uint64_t key, uint64_t index, int size);
// Doubles width and height with the fixed stride-2 transposed convolution (edges replicated).
Image upsample_transposed_conv2x(const Image& image);

}  // namespace data
