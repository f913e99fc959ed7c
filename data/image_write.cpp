// Writing PNG, BMP and JPEG with stb_image_write, for tests and tools (the only translation
// unit that instantiates it).
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "data/image.h"

// stb_image_write's JPEG bit writer left-shifts negative ints (`bitBuf <<= 8`): defined in
// C++20, undefined before; CMakeLists.txt compiles this file with -fno-sanitize=shift-base.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STBI_WRITE_NO_STDIO  // files are written here, so errors can name the path and errno
#include <stb_image_write.h>
#pragma GCC diagnostic pop

namespace data {

void write_image(const std::string& path, int width, int height, int channels,
                 const uint8_t* pixels, int jpeg_quality) {
  ENGINE_CHECK(width > 0 && height > 0 && channels >= 1 && channels <= 4, "write_image '", path,
               "': bad image ", width, "x", height, "x", channels);
  std::string extension = path.substr(
      path.find_last_of('.') == std::string::npos ? path.size() : path.find_last_of('.'));
  for (char& c : extension) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));

  std::vector<uint8_t> encoded;
  auto append = [](void* context, void* data, int size) {
    auto* out = static_cast<std::vector<uint8_t>*>(context);
    out->insert(out->end(), static_cast<uint8_t*>(data), static_cast<uint8_t*>(data) + size);
  };
  int ok = 0;
  if (extension == ".png") {
    ok =
        stbi_write_png_to_func(append, &encoded, width, height, channels, pixels, width * channels);
  } else if (extension == ".bmp") {
    ok = stbi_write_bmp_to_func(append, &encoded, width, height, channels, pixels);
  } else if (extension == ".jpg" || extension == ".jpeg") {
    ok = stbi_write_jpg_to_func(append, &encoded, width, height, channels, pixels, jpeg_quality);
  } else {
    engine::detail::fail("write_image '", path, "': unknown extension (use .png, .bmp, .jpg)");
  }
  ENGINE_CHECK(ok, "write_image '", path, "': encoding failed");

  std::unique_ptr<FILE, int (*)(FILE*)> file(std::fopen(path.c_str(), "wb"), &std::fclose);
  ENGINE_CHECK(file, "write_image '", path, "': cannot create: ", std::strerror(errno));
  ENGINE_CHECK(std::fwrite(encoded.data(), 1, encoded.size(), file.get()) == encoded.size(),
               "write_image '", path, "': write failed: ", std::strerror(errno));
  ENGINE_CHECK(std::fclose(file.release()) == 0, "write_image '", path,
               "': write failed: ", std::strerror(errno));
}

}  // namespace data
