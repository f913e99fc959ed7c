// Image transforms, torchvision-compatible, writing one normalised NHWC float32 image.
//
// Resize reproduces PIL's Image.resize(size, BILINEAR), which is what torchvision's Resize
// does to PIL images (the reference's pipeline):
//   - separable: a horizontal pass, then a vertical pass (a pass is skipped when that side
//     keeps its size), each rounded to 8 bits as PIL does;
//   - output pixel i samples around centre (i + 0.5) * scale, scale = in / out, with the
//     triangle filter stretched by max(scale, 1): when downscaling every input pixel under
//     the stretched filter contributes (antialiasing), when upscaling it is plain bilinear;
//   - taps are normalised to sum 1, clipped at the image border, and applied in PIL's fixed
//     point (22 fractional bits, round half up).
//   On PNG/BMP inputs the result is bit-identical to PIL 9.4; JPEG decoders differ by a few
//   levels (stb_image vs libjpeg), so JPEG inputs match PIL only approximately.
// Normalisation then computes (v / 255 - mean) / std in float32, as ToTensor + Normalize.
#pragma once
#include <array>
#include <cstdint>

#include "data/image.h"
#include "data/random.h"

namespace data {

// A read-only rectangle of an RGB image: a crop is a view, not a copy.
struct ImageView {
  const uint8_t* data = nullptr;  // pixel (0, 0) of the rectangle
  int width = 0, height = 0;
  int64_t row_stride = 0;  // bytes between rows

  static ImageView of(const Image& image) {
    return {image.pixels.data(), image.width, image.height, int64_t{image.width} * 3};
  }
  const uint8_t* pixel(int x, int y) const { return data + y * row_stride + int64_t{x} * 3; }
};

// A crop rectangle in pixels (torchvision's (i, j, h, w) is (top, left, height, width)).
struct CropBox {
  int left = 0, top = 0, width = 0, height = 0;
};
ImageView crop(const ImageView& image, const CropBox& box);

// PIL-exact bilinear resize (see the header comment).
Image resize_bilinear(const ImageView& image, int width, int height);

// torchvision CenterCrop's box (offsets rounded half to even, as Python's round).
CropBox center_crop_box(int width, int height, int crop_width, int crop_height);

struct RandomResizedCropParams {
  double scale_min = 0.08, scale_max = 1.0;             // fraction of the image area
  double ratio_min = 3.0 / 4.0, ratio_max = 4.0 / 3.0;  // width / height
};
// torchvision RandomResizedCrop.get_params: up to 10 tries of (area, log-uniform aspect), then
// the central crop clamped to the ratio range. Four draws per try.
CropBox random_resized_crop_box(int width, int height, const RandomResizedCropParams& params,
                                DrawStream& draws);

enum class Geometry {
  Resize,                   // resize to (height, width), aspect not kept (the reference)
  ResizeShorterCenterCrop,  // shorter side to resize_shorter, then centre crop (ImageNet eval)
  RandomResizedCrop,        // training only
};

struct TransformConfig {
  int height = 224, width = 224;  // output size
  Geometry geometry = Geometry::Resize;
  int resize_shorter = 256;  // for ResizeShorterCenterCrop
  RandomResizedCropParams crop;
  bool random_flip = false;  // horizontal, probability 1/2
  std::array<float, 3> mean{0.485f, 0.456f, 0.406f};
  std::array<float, 3> std{0.229f, 0.224f, 0.225f};

  bool is_random() const { return random_flip || geometry == Geometry::RandomResizedCrop; }
  // Throws engine::Error on an inconsistent configuration.
  void validate() const;
};

// The reference's training recipe: resize to size x size, random horizontal flip.
TransformConfig reference_train_transform(int size = 224);
// Evaluation: resize to size x size, nothing random.
TransformConfig eval_transform(int size = 224);

// Transforms `image` and writes [height, width, 3] normalised floats to `out`. Random
// choices come from the Philox stream (augment_key, sample_index): the same key and index
// give the same crop and flip on any thread. augment_key is derive_key(seed, Augment, epoch).
void transform_image(const Image& image, const TransformConfig& config, uint64_t augment_key,
                     uint64_t sample_index, float* out);

}  // namespace data
