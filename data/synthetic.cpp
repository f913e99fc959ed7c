// Synthetic real-vs-generated images: scene rendering and the fixed transposed-convolution
// upsampler (see synthetic.h for what the two classes are).
#include "data/synthetic.h"

#include <algorithm>
#include <array>
#include <cmath>

#include "data/random.h"

namespace data {

namespace {

constexpr float kPi = 3.14159265358979f;
// Amplitude (in 8-bit levels) of the coarsest noise octave; octave o has kNoiseLevels / 2^o.
constexpr float kNoiseLevels = 28.0f;

// The transposed convolution's 4x4 kernel is outer(kRowTaps, kColumnTaps). With stride 2 and
// padding 1, even outputs take taps 1 and 3, odd outputs taps 0 and 2: the rows' phases
// gain 1.1 and 0.9 and the columns' 1.1 and 0.9, a +-20% checkerboard at the Nyquist
// frequency, as the uneven overlap of a learned deconvolution leaves.
constexpr std::array<float, 4> kRowTaps{0.2f, 0.8f, 0.7f, 0.3f};
constexpr std::array<float, 4> kColumnTaps{0.15f, 0.9f, 0.75f, 0.2f};

struct Colour {
  float c[3];
};

Colour random_colour(DrawStream& draws, float lo, float hi) {
  Colour colour;
  for (float& v : colour.c) v = static_cast<float>(draws.uniform(lo, hi));
  return colour;
}

// The fraction of a pixel covered by a shape, from its signed distance in pixels (negative
// inside): a one-pixel linear ramp, i.e. anti-aliased edges at any resolution.
float coverage(float signed_distance_pixels) {
  return std::clamp(0.5f - signed_distance_pixels, 0.0f, 1.0f);
}

void fill_gradient(std::vector<float>& canvas, int size, DrawStream& draws) {
  const Colour from = random_colour(draws, 30, 225), to = random_colour(draws, 30, 225);
  const float angle = static_cast<float>(draws.uniform(0, 2 * kPi));
  const float dx = std::cos(angle), dy = std::sin(angle);
  for (int y = 0; y < size; ++y) {
    for (int x = 0; x < size; ++x) {
      const float u = (x + 0.5f) / size - 0.5f, v = (y + 0.5f) / size - 0.5f;
      const float t = std::clamp(0.5f + (u * dx + v * dy), 0.0f, 1.0f);
      float* p = &canvas[(static_cast<size_t>(y) * size + x) * 3];
      for (int c = 0; c < 3; ++c) p[c] = from.c[c] + t * (to.c[c] - from.c[c]);
    }
  }
}

// Discs, rotated rectangles and straight edges (half planes), in coordinates relative to the
// image side so that a scene looks the same at any resolution.
void draw_shapes(std::vector<float>& canvas, int size, DrawStream& draws) {
  const int shapes = 2 + static_cast<int>(draws.below(5));
  for (int s = 0; s < shapes; ++s) {
    const int kind = static_cast<int>(draws.below(3));
    const Colour colour = random_colour(draws, 0, 255);
    const float opacity = static_cast<float>(draws.uniform(0.6, 1.0));
    const float cx = static_cast<float>(draws.uniform(0.1, 0.9));
    const float cy = static_cast<float>(draws.uniform(0.1, 0.9));
    const float half_w = static_cast<float>(draws.uniform(0.05, 0.3));
    const float half_h = static_cast<float>(draws.uniform(0.05, 0.3));
    const float angle = static_cast<float>(draws.uniform(0, kPi));
    const float ca = std::cos(angle), sa = std::sin(angle);
    for (int y = 0; y < size; ++y) {
      for (int x = 0; x < size; ++x) {
        const float u = (x + 0.5f) / size - cx, v = (y + 0.5f) / size - cy;
        float distance;  // signed, in units of the image side
        if (kind == 0) {
          distance = std::sqrt(u * u + v * v) - half_w;
        } else if (kind == 1) {
          const float along = std::fabs(u * ca + v * sa) - half_w;
          const float across = std::fabs(-u * sa + v * ca) - half_h;
          const float outside = std::hypot(std::max(along, 0.0f), std::max(across, 0.0f));
          distance = outside + std::min(std::max(along, across), 0.0f);
        } else {
          distance = u * ca + v * sa;
        }
        const float alpha = opacity * coverage(distance * size);
        if (alpha <= 0) continue;
        float* p = &canvas[(static_cast<size_t>(y) * size + x) * 3];
        for (int c = 0; c < 3; ++c) p[c] += alpha * (colour.c[c] - p[c]);
      }
    }
  }
}

// Value noise in octaves of 2, 4, 8, ... cells across the image, down to one cell per pixel,
// each octave half the amplitude of the previous: amplitude ~ 1/f. Channels share most of
// the noise (luminance) with a smaller independent part (chroma), as natural images do.
void add_noise(std::vector<float>& canvas, int size, DrawStream& draws) {
  float amplitude = kNoiseLevels;
  for (int cells = 2; cells <= size; cells *= 2, amplitude *= 0.5f) {
    const int points = cells + 1;
    std::vector<float> lattice(static_cast<size_t>(points) * points * 3);
    for (size_t i = 0; i < lattice.size(); i += 3) {
      const float luminance = static_cast<float>(draws.uniform(-1, 1));
      for (int c = 0; c < 3; ++c) {
        lattice[i + c] = amplitude * (luminance + 0.35f * static_cast<float>(draws.uniform(-1, 1)));
      }
    }
    for (int y = 0; y < size; ++y) {
      const float gy = (y + 0.5f) * cells / size;
      const int y0 = std::min(static_cast<int>(gy), cells - 1);
      const float fy = gy - y0;
      for (int x = 0; x < size; ++x) {
        const float gx = (x + 0.5f) * cells / size;
        const int x0 = std::min(static_cast<int>(gx), cells - 1);
        const float fx = gx - x0;
        const float* l00 = &lattice[(static_cast<size_t>(y0) * points + x0) * 3];
        const float* l01 = l00 + 3;
        const float* l10 = l00 + static_cast<size_t>(points) * 3;
        const float* l11 = l10 + 3;
        float* p = &canvas[(static_cast<size_t>(y) * size + x) * 3];
        for (int c = 0; c < 3; ++c) {
          p[c] +=
              (1 - fy) * ((1 - fx) * l00[c] + fx * l01[c]) + fy * ((1 - fx) * l10[c] + fx * l11[c]);
        }
      }
    }
  }
}

uint8_t to_u8(float v) { return static_cast<uint8_t>(std::lround(std::clamp(v, 0.0f, 255.0f))); }

uint64_t split_stream(const std::string& split) {
  uint64_t hash = 0xcbf29ce484222325ull;  // FNV-1a
  for (unsigned char c : split) hash = (hash ^ c) * 0x100000001b3ull;
  return hash;
}

}  // namespace

Image render_scene(uint64_t key, uint64_t index, int size) {
  ENGINE_CHECK(size >= 2, "render_scene: size ", size, " must be at least 2");
  DrawStream draws(key, index);
  std::vector<float> canvas(static_cast<size_t>(size) * size * 3);
  fill_gradient(canvas, size, draws);
  draw_shapes(canvas, size, draws);
  add_noise(canvas, size, draws);
  Image image(size, size);
  std::transform(canvas.begin(), canvas.end(), image.pixels.begin(), to_u8);
  return image;
}

Image upsample_transposed_conv2x(const Image& image) {
  Image out(image.width * 2, image.height * 2);
  for (int oy = 0; oy < out.height; ++oy) {
    for (int ox = 0; ox < out.width; ++ox) {
      float sum[3] = {0, 0, 0};
      // out[oy] gathers in[iy] * k[ky] for every oy = 2 * iy - 1 + ky (stride 2, padding 1).
      for (int ky = (oy + 1) & 1; ky < 4; ky += 2) {
        const int iy = std::clamp((oy + 1 - ky) / 2, 0, image.height - 1);
        for (int kx = (ox + 1) & 1; kx < 4; kx += 2) {
          const int ix = std::clamp((ox + 1 - kx) / 2, 0, image.width - 1);
          const float weight = kRowTaps[ky] * kColumnTaps[kx];
          const uint8_t* p = image.pixel(ix, iy);
          for (int c = 0; c < 3; ++c) sum[c] += weight * p[c];
        }
      }
      uint8_t* q = out.pixel(ox, oy);
      for (int c = 0; c < 3; ++c) q[c] = to_u8(sum[c]);
    }
  }
  return out;
}

SyntheticDataset::SyntheticDataset(const SyntheticConfig& config, const std::string& split)
    : config_(config),
      key_(derive_key(config.seed, RandomPurpose::Synthetic, split_stream(split))) {
  ENGINE_CHECK(config.size >= 8 && config.size % 2 == 0, "synthetic dataset: image size ",
               config.size, " must be even and at least 8");
  ENGINE_CHECK(config.count >= 2,
               "synthetic dataset: needs at least 2 images (one per class), got ", config.count);
  samples_.reserve(config.count);
  for (size_t i = 0; i < config.count; ++i) {
    const int64_t label = i % 2 == 0 ? kLabelReal : kLabelGenerated;
    samples_.push_back({"synthetic/" + split + "/" + label_name(label) + "/" + std::to_string(i),
                        label, "synthetic"});
  }
}

Image SyntheticDataset::load(size_t index) const {
  const Sample& s = samples_.at(index);
  if (s.label == kLabelReal) return render_scene(key_, index, config_.size);
  return upsample_transposed_conv2x(render_scene(key_, index, config_.size / 2));
}

}  // namespace data
