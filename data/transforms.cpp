// Transforms: PIL-exact bilinear resampling, torchvision's crop geometry, normalisation.
#include "data/transforms.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace data {

namespace {

// PIL's fixed point for 8-bit images: 32 bits minus 8 for the pixel, minus 2 for headroom.
constexpr int kPrecisionBits = 32 - 8 - 2;

// The taps of one resampling pass: output i reads `count[i]` inputs from `first[i]` on, with
// weights weights[i * max_taps + k].
struct Taps {
  int max_taps = 0;
  std::vector<int> first, count;
  std::vector<int32_t> weights;
};

// PIL's precompute_coeffs + normalize_coeffs_8bpc for the bilinear (triangle) filter, over
// the whole input [0, in_size).
Taps bilinear_taps(int in_size, int out_size) {
  const double scale = static_cast<double>(in_size) / out_size;
  const double filter_scale = std::max(scale, 1.0);
  const double inverse_filter_scale = 1.0 / filter_scale;  // PIL multiplies by the inverse
  const double support = 1.0 * filter_scale;               // the triangle's support is 1
  Taps taps;
  taps.max_taps = static_cast<int>(std::ceil(support)) * 2 + 1;
  taps.first.resize(out_size);
  taps.count.resize(out_size);
  taps.weights.assign(static_cast<size_t>(out_size) * taps.max_taps, 0);
  std::vector<double> w(taps.max_taps);
  for (int i = 0; i < out_size; ++i) {
    const double center = (i + 0.5) * scale;
    // (int) truncation as in PIL: rounds half up for the positive values that matter here.
    const int lo = std::max(static_cast<int>(center - support + 0.5), 0);
    const int hi = std::min(static_cast<int>(center + support + 0.5), in_size);
    double total = 0.0;
    for (int x = lo; x < hi; ++x) {
      const double distance = std::fabs((x - center + 0.5) * inverse_filter_scale);
      w[x - lo] = distance < 1.0 ? 1.0 - distance : 0.0;
      total += w[x - lo];
    }
    taps.first[i] = lo;
    taps.count[i] = hi - lo;
    for (int k = 0; k < hi - lo; ++k) {
      const double normalised = total != 0.0 ? w[k] / total : w[k];
      const double fixed = normalised * (1 << kPrecisionBits);
      taps.weights[static_cast<size_t>(i) * taps.max_taps + k] =
          static_cast<int32_t>(fixed < 0 ? fixed - 0.5 : fixed + 0.5);
    }
  }
  return taps;
}

inline uint8_t clip_fixed_to_u8(int32_t sum) {
  return static_cast<uint8_t>(std::clamp(sum >> kPrecisionBits, 0, 255));
}

constexpr int32_t kRoundingBias = 1 << (kPrecisionBits - 1);

// Horizontal pass: every row of `in` to out_width columns.
Image resample_horizontal(const ImageView& in, int out_width) {
  const Taps taps = bilinear_taps(in.width, out_width);
  Image out(out_width, in.height);
  for (int y = 0; y < in.height; ++y) {
    const uint8_t* row = in.pixel(0, y);
    uint8_t* dst = out.pixel(0, y);
    for (int x = 0; x < out_width; ++x) {
      const int32_t* w = &taps.weights[static_cast<size_t>(x) * taps.max_taps];
      const uint8_t* src = row + static_cast<size_t>(taps.first[x]) * 3;
      int32_t r = kRoundingBias, g = kRoundingBias, b = kRoundingBias;
      for (int k = 0; k < taps.count[x]; ++k) {
        r += src[3 * k + 0] * w[k];
        g += src[3 * k + 1] * w[k];
        b += src[3 * k + 2] * w[k];
      }
      dst[3 * x + 0] = clip_fixed_to_u8(r);
      dst[3 * x + 1] = clip_fixed_to_u8(g);
      dst[3 * x + 2] = clip_fixed_to_u8(b);
    }
  }
  return out;
}

// Vertical pass: `in` to out_height rows; whole rows are accumulated at once (vectorises).
Image resample_vertical(const ImageView& in, int out_height) {
  const Taps taps = bilinear_taps(in.height, out_height);
  Image out(in.width, out_height);
  const int row_values = in.width * 3;
  std::vector<int32_t> sum(row_values);
  for (int y = 0; y < out_height; ++y) {
    std::fill(sum.begin(), sum.end(), kRoundingBias);
    const int32_t* w = &taps.weights[static_cast<size_t>(y) * taps.max_taps];
    for (int k = 0; k < taps.count[y]; ++k) {
      const uint8_t* src = in.pixel(0, taps.first[y] + k);
      const int32_t weight = w[k];
      for (int i = 0; i < row_values; ++i) sum[i] += src[i] * weight;
    }
    uint8_t* dst = out.pixel(0, y);
    for (int i = 0; i < row_values; ++i) dst[i] = clip_fixed_to_u8(sum[i]);
  }
  return out;
}

Image copy_view(const ImageView& in) {
  Image out(in.width, in.height);
  for (int y = 0; y < in.height; ++y) {
    std::copy_n(in.pixel(0, y), static_cast<size_t>(in.width) * 3, out.pixel(0, y));
  }
  return out;
}

// Python's round(): half to even (std::nearbyint in the default rounding mode).
int round_half_even(double v) { return static_cast<int>(std::nearbyint(v)); }

// Writes `image` (already of the output size), mirrored if asked, as normalised floats.
void write_normalised(const ImageView& image, bool mirror, const TransformConfig& config,
                      float* out) {
  // (v / 255 - mean) / std in float32, exactly as ToTensor + Normalize, once per value.
  float table[3][256];
  for (int c = 0; c < 3; ++c) {
    for (int v = 0; v < 256; ++v) {
      table[c][v] = (static_cast<float>(v) / 255.0f - config.mean[c]) / config.std[c];
    }
  }
  for (int y = 0; y < image.height; ++y) {
    float* dst = out + static_cast<size_t>(y) * image.width * 3;
    for (int x = 0; x < image.width; ++x) {
      const uint8_t* src = image.pixel(mirror ? image.width - 1 - x : x, y);
      dst[3 * x + 0] = table[0][src[0]];
      dst[3 * x + 1] = table[1][src[1]];
      dst[3 * x + 2] = table[2][src[2]];
    }
  }
}

}  // namespace

ImageView crop(const ImageView& image, const CropBox& box) {
  ENGINE_CHECK(box.left >= 0 && box.top >= 0 && box.width > 0 && box.height > 0 &&
                   box.left + box.width <= image.width && box.top + box.height <= image.height,
               "crop: box (left ", box.left, ", top ", box.top, ", ", box.width, "x", box.height,
               ") outside the ", image.width, "x", image.height, " image");
  return {image.pixel(box.left, box.top), box.width, box.height, image.row_stride};
}

Image resize_bilinear(const ImageView& image, int width, int height) {
  ENGINE_CHECK(width > 0 && height > 0 && image.width > 0 && image.height > 0,
               "resize_bilinear: cannot resize ", image.width, "x", image.height, " to ", width,
               "x", height);
  const bool horizontal = width != image.width, vertical = height != image.height;
  if (!horizontal && !vertical) return copy_view(image);
  if (!vertical) return resample_horizontal(image, width);
  if (!horizontal) return resample_vertical(image, height);
  const Image rows_done = resample_horizontal(image, width);  // PIL's order: rows first
  return resample_vertical(ImageView::of(rows_done), height);
}

CropBox center_crop_box(int width, int height, int crop_width, int crop_height) {
  ENGINE_CHECK(crop_width > 0 && crop_height > 0 && crop_width <= width && crop_height <= height,
               "center crop ", crop_width, "x", crop_height, " does not fit a ", width, "x", height,
               " image");
  return {round_half_even((width - crop_width) / 2.0),
          round_half_even((height - crop_height) / 2.0), crop_width, crop_height};
}

CropBox random_resized_crop_box(int width, int height, const RandomResizedCropParams& params,
                                DrawStream& draws) {
  const double area = static_cast<double>(width) * height;
  const double log_ratio_min = std::log(params.ratio_min),
               log_ratio_max = std::log(params.ratio_max);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target_area = area * draws.uniform(params.scale_min, params.scale_max);
    const double aspect = std::exp(draws.uniform(log_ratio_min, log_ratio_max));
    const int w = round_half_even(std::sqrt(target_area * aspect));
    const int h = round_half_even(std::sqrt(target_area / aspect));
    // Both offsets are drawn on every try so that each try uses exactly four draws.
    const uint64_t top_draw = draws.next_u32(), left_draw = draws.next_u32();
    if (w > 0 && w <= width && h > 0 && h <= height) {
      const int top = static_cast<int>((top_draw * static_cast<uint64_t>(height - h + 1)) >> 32);
      const int left = static_cast<int>((left_draw * static_cast<uint64_t>(width - w + 1)) >> 32);
      return {left, top, w, h};
    }
  }
  // Fallback: the central crop, clamped to the ratio range.
  const double in_ratio = static_cast<double>(width) / height;
  int w = width, h = height;
  if (in_ratio < params.ratio_min) {
    h = round_half_even(w / params.ratio_min);
  } else if (in_ratio > params.ratio_max) {
    w = round_half_even(h * params.ratio_max);
  }
  return {(width - w) / 2, (height - h) / 2, w, h};
}

void TransformConfig::validate() const {
  ENGINE_CHECK(height > 0 && width > 0, "transform: output size ", width, "x", height,
               " must be positive");
  ENGINE_CHECK(
      geometry != Geometry::ResizeShorterCenterCrop || resize_shorter >= std::max(height, width),
      "transform: resize_shorter (", resize_shorter, ") must be at least the crop size ", width,
      "x", height);
  ENGINE_CHECK(crop.scale_min > 0 && crop.scale_min <= crop.scale_max && crop.scale_max <= 1 &&
                   crop.ratio_min > 0 && crop.ratio_min <= crop.ratio_max,
               "transform: random-resized-crop scale [", crop.scale_min, ", ", crop.scale_max,
               "] must lie in (0, 1] and ratio [", crop.ratio_min, ", ", crop.ratio_max,
               "] be positive and ordered");
  for (int c = 0; c < 3; ++c) {
    ENGINE_CHECK(std[c] > 0, "transform: normalisation std[", c, "] = ", std[c],
                 " must be positive");
  }
}

TransformConfig reference_train_transform(int size) {
  TransformConfig config;
  config.height = config.width = size;
  config.random_flip = true;
  return config;
}

TransformConfig eval_transform(int size) {
  TransformConfig config;
  config.height = config.width = size;
  return config;
}

void transform_image(const Image& image, const TransformConfig& config, uint64_t augment_key,
                     uint64_t sample_index, float* out) {
  DrawStream draws(augment_key, sample_index);
  // Draw 0 is the flip (torch: rand() < p), the crop's draws follow.
  const bool mirror = config.random_flip && 1.0 - draws.uniform() < 0.5;
  const ImageView source = ImageView::of(image);

  Image resized;
  ImageView result;
  switch (config.geometry) {
    case Geometry::Resize:
      resized = resize_bilinear(source, config.width, config.height);
      result = ImageView::of(resized);
      break;
    case Geometry::ResizeShorterCenterCrop: {
      // torchvision Resize(int): shorter side to resize_shorter, longer side truncated.
      const bool wide = image.width > image.height;
      const int shorter = wide ? image.height : image.width,
                longer = wide ? image.width : image.height;
      const int new_longer =
          static_cast<int>(static_cast<int64_t>(config.resize_shorter) * longer / shorter);
      const int new_width = wide ? new_longer : config.resize_shorter;
      const int new_height = wide ? config.resize_shorter : new_longer;
      resized = resize_bilinear(source, new_width, new_height);
      result = crop(ImageView::of(resized),
                    center_crop_box(new_width, new_height, config.width, config.height));
      break;
    }
    case Geometry::RandomResizedCrop: {
      const CropBox box = random_resized_crop_box(image.width, image.height, config.crop, draws);
      resized = resize_bilinear(crop(source, box), config.width, config.height);
      result = ImageView::of(resized);
      break;
    }
  }
  write_normalised(result, mirror, config, out);
}

}  // namespace data
