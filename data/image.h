// 8-bit RGB images: decoding JPEG, PNG and BMP (stb_image), and writing PNG, BMP and JPEG for
// tests and tools (stb_image_write).
//
// Decoding converts every input to 3-channel RGB the way PIL's Image.convert("RGB") does:
// grayscale is replicated, alpha is dropped (not composited), palettes are expanded. 16-bit
// PNGs keep their top 8 bits (PIL clips them at 255 instead: a PIL quirk not copied).
// The header is read first and an image whose header claims more pixels than DecodeLimits
// allows is refused before any pixel memory is allocated, so a forged or corrupt header
// cannot drive a huge allocation. Truncated files are refused, as PIL refuses them.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/error.h"

namespace data {

// A failure to read or decode one image file (unreadable, not an image, truncated, too
// large). The loader skips samples that throw this (or stops, in strict mode); any other
// exception is a program error and propagates.
class DecodeError : public engine::Error {
 public:
  using engine::Error::Error;
};

// Interleaved RGB, row-major, no padding: pixel (x, y) channel c at pixels[(y*width + x)*3 + c].
struct Image {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> pixels;

  Image() = default;
  Image(int w, int h) : width(w), height(h), pixels(static_cast<size_t>(w) * h * 3) {}
  uint8_t* pixel(int x, int y) { return pixels.data() + (static_cast<size_t>(y) * width + x) * 3; }
  const uint8_t* pixel(int x, int y) const {
    return pixels.data() + (static_cast<size_t>(y) * width + x) * 3;
  }
};

struct DecodeLimits {
  int64_t max_pixels = int64_t{1} << 28;
  int max_side = 32768;
};

// Decodes a JPEG, PNG or BMP file. Throws DecodeError naming `path` and the reason.
Image decode_image_file(const std::string& path, const DecodeLimits& limits = {});
// Decodes an encoded image held in memory; `name` is used in error messages.
Image decode_image_memory(const uint8_t* bytes, size_t size, const std::string& name,
                          const DecodeLimits& limits = {});

// Writes `channels` (1 gray, 2 gray+alpha, 3 RGB, 4 RGBA) interleaved 8-bit pixels; the
// format follows the extension: .png, .bmp, .jpg/.jpeg (at `jpeg_quality`, 1-100).
// Throws engine::Error naming the path on failure.
void write_image(const std::string& path, int width, int height, int channels,
                 const uint8_t* pixels, int jpeg_quality = 95);
inline void write_image(const std::string& path, const Image& image, int jpeg_quality = 95) {
  write_image(path, image.width, image.height, 3, image.pixels.data(), jpeg_quality);
}

}  // namespace data
