// Decoding images with stb_image (instantiated in data/stb_image_impl.cpp): the checks that
// run before stb sees a file, then the decode.
#include "data/image.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>

#define STBI_NO_STDIO  // as in data/stb_image_impl.cpp
#include <stb_image.h>

namespace data {

namespace {

[[noreturn]] void fail_decode(const std::string& name, const std::string& reason) {
  throw DecodeError("image '" + name + "': " + reason);
}

enum class Format { Jpeg, Png, Bmp, Unknown };

Format sniff_format(const uint8_t* bytes, size_t size) {
  static const uint8_t kPng[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (size >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF) return Format::Jpeg;
  if (size >= 8 && std::memcmp(bytes, kPng, 8) == 0) return Format::Png;
  if (size >= 2 && bytes[0] == 'B' && bytes[1] == 'M') return Format::Bmp;
  return Format::Unknown;
}

const char* format_name(Format format) {
  switch (format) {
    case Format::Jpeg: return "JPEG";
    case Format::Png: return "PNG";
    case Format::Bmp: return "BMP";
    case Format::Unknown: break;
  }
  return "unknown";
}

// stb's reason for the last failure, as " (reason)", or "" when it has none for this format:
// stb probes for PNG before decoding any other format, so a JPEG or BMP decoder that fails
// without a reason of its own leaves the PNG probe's "bad png sig" behind.
std::string stb_reason(Format format) {
  const char* reason = stbi_failure_reason();
  if (!reason || !*reason) return "";
  if (format != Format::Png && std::strcmp(reason, "bad png sig") == 0) return "";
  return std::string(" (") + reason + ")";
}

uint32_t read_le32(const uint8_t* p) {
  return p[0] | (p[1] << 8) | (p[2] << 16) | (static_cast<uint32_t>(p[3]) << 24);
}
uint16_t read_le16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t read_be32(const uint8_t* p) {
  return (static_cast<uint32_t>(p[0]) << 24) | (p[1] << 16) | (p[2] << 8) | p[3];
}
uint16_t read_be16(const uint8_t* p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }

// The size a header claims, read here rather than by stb so that the limits are checked
// first and with a clear message (stb refuses some large sizes itself, but then reports
// only "unknown image type"). False when the header is cut short or malformed.
bool read_header_size(Format format, const uint8_t* bytes, size_t size, int64_t* width,
                      int64_t* height) {
  switch (format) {
    case Format::Png:  // signature, then the IHDR chunk: length, "IHDR", width, height
      if (size < 24 || std::memcmp(bytes + 12, "IHDR", 4) != 0) return false;
      *width = read_be32(bytes + 16);
      *height = read_be32(bytes + 20);
      return true;
    case Format::Bmp:  // file header (14 bytes), then the info header: its size says which
      if (size < 26) return false;
      if (read_le32(bytes + 14) == 12) {  // OS/2 BITMAPCOREHEADER: 16-bit sides
        *width = read_le16(bytes + 18);
        *height = read_le16(bytes + 20);
      } else {  // BITMAPINFOHEADER and later: signed 32-bit, height < 0 means top-down
        *width = static_cast<int32_t>(read_le32(bytes + 18));
        *height = std::abs(int64_t{static_cast<int32_t>(read_le32(bytes + 22))});
      }
      return true;
    case Format::Jpeg:  // walk the marker segments from SOI to the first start-of-frame
      for (size_t at = 2; at + 4 <= size;) {
        if (bytes[at] != 0xFF) return false;
        const uint8_t marker = bytes[at + 1];
        if (marker == 0xFF) {  // fill byte
          ++at;
          continue;
        }
        const size_t length = read_be16(bytes + at + 2);
        const bool start_of_frame =
            marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
        if (start_of_frame) {
          if (at + 9 > size) return false;
          *height = read_be16(bytes + at + 5);
          *width = read_be16(bytes + at + 7);
          return true;
        }
        if (marker == 0xDA || marker == 0xD9 || length < 2) return false;  // scan before frame
        at += 2 + length;
      }
      return false;
    case Format::Unknown: break;
  }
  return false;
}

bool is_restart_marker(uint8_t marker) { return marker >= 0xD0 && marker <= 0xD7; }

// The end of a scan's entropy-coded data, read as stb's bit reader does: 0xFF followed (after
// any 0xFF fill bytes) by 0x00 is a stuffed data byte, by a restart marker is data too, by
// anything else is the next marker.
size_t skip_entropy_coded_data(const uint8_t* bytes, size_t size, size_t at) {
  while (at < size) {
    if (bytes[at] != 0xFF) {
      ++at;
      continue;
    }
    size_t next = at + 1;
    while (next < size && bytes[next] == 0xFF) ++next;
    if (next >= size) return size;
    if (bytes[next] != 0x00 && !is_restart_marker(bytes[next])) return at;
    at = next + 1;
  }
  return size;
}

// stb_image 2.27 (Debian's libstb) trusts JPEG Huffman tables in two ways that corrupt
// files turn into out-of-bounds memory accesses: code counts summing past 256 overflow its
// tables, and a scan may use a table the file never defined (stb then reads uninitialised
// memory). Both are checked here, over every segment stb could act on: like stb, the walk
// skips junk and 0xFF fill bytes before a marker and reads bytes past the end as zeros, and
// it carries on past the places where stb would give up.
void check_jpeg_huffman_tables(const uint8_t* bytes, size_t size, const std::string& name) {
  auto byte_at = [&](size_t i) -> size_t { return i < size ? bytes[i] : 0; };
  bool defined[2][4] = {};  // [DC 0 / AC 1][table id]
  bool progressive = false;
  size_t at = 2;  // after SOI
  while (at < size) {
    if (bytes[at] != 0xFF) {
      ++at;
      continue;
    }
    size_t marker_at = at + 1;
    while (marker_at < size && bytes[marker_at] == 0xFF) ++marker_at;
    if (marker_at >= size) return;
    const uint8_t marker = bytes[marker_at];
    at = marker_at + 1;
    if (marker == 0xD9) return;                                                   // EOI
    if (marker == 0x00 || marker == 0x01 || is_restart_marker(marker)) continue;  // no length
    const size_t length = byte_at(at) << 8 | byte_at(at + 1);
    if (marker == 0xC0 || marker == 0xC1 || marker == 0xC2) progressive = marker == 0xC2;
    if (marker == 0xC4) {  // DHT: tables of (class << 4 | id, 16 code counts, symbols)
      size_t table = at + 2;
      for (int64_t left = static_cast<int64_t>(length) - 2; left > 0;) {
        size_t symbols = 0;
        for (size_t i = 1; i <= 16; ++i) symbols += byte_at(table + i);
        if (symbols > 256) {
          fail_decode(name, "corrupt JPEG (Huffman table of " + std::to_string(symbols) +
                                " codes, at most 256)");
        }
        const size_t table_class = byte_at(table) >> 4, id = byte_at(table) & 15;
        if (table_class <= 1 && id <= 3) defined[table_class][id] = true;
        table += 17 + symbols;
        left -= static_cast<int64_t>(17 + symbols);
      }
    }
    if (marker == 0xDA) {  // SOS: components (id, DC table << 4 | AC table), Ss, Se, Ah << 4 | Al
      const size_t components = byte_at(at + 2);
      const size_t spectral_start = byte_at(at + 3 + 2 * components);
      const size_t successive_high = byte_at(at + 5 + 2 * components) >> 4;
      // Which tables stb's decoder reads: baseline both; progressive DC-first scans the DC
      // table, DC refinements none, AC scans the AC table.
      const bool uses_dc = !progressive || (spectral_start == 0 && successive_high == 0);
      const bool uses_ac = !progressive || spectral_start > 0;
      for (size_t c = 0; c < components; ++c) {
        const size_t tables = byte_at(at + 4 + 2 * c), dc = tables >> 4, ac = tables & 15;
        if ((uses_dc && (dc > 3 || !defined[0][dc])) || (uses_ac && (ac > 3 || !defined[1][ac]))) {
          fail_decode(name, "corrupt JPEG (a scan uses a Huffman table the file does not define)");
        }
      }
    }
    if (length < 2) return;  // stb stops at a malformed length
    at += length;
    if (marker == 0xDA) at = skip_entropy_coded_data(bytes, size, at);
  }
}

// stb decodes a truncated BMP without complaint (missing pixels read as 0), so the size its
// header implies is checked here: pixel data offset + rows of ceil(bits * width / 32) words.
void check_bmp_complete(const uint8_t* bytes, size_t size, const std::string& name, int width,
                        int height) {
  if (size < 30) fail_decode(name, "truncated BMP header");
  const uint32_t pixel_offset = read_le32(bytes + 10);
  const uint32_t header_size = read_le32(bytes + 14);
  const int bits_per_pixel = header_size == 12 ? read_le16(bytes + 24) : read_le16(bytes + 28);
  const uint32_t compression = header_size >= 40 && size >= 34 ? read_le32(bytes + 30) : 0;
  const bool run_length = compression == 1 || compression == 2;  // stb refuses these anyway
  if (run_length) return;
  const int64_t row_bytes = (int64_t{bits_per_pixel} * width + 31) / 32 * 4;
  const int64_t needed = int64_t{pixel_offset} + row_bytes * height;
  if (static_cast<int64_t>(size) < needed) {
    fail_decode(name, "truncated BMP: " + std::to_string(size) + " bytes, its header needs " +
                          std::to_string(needed));
  }
}

// A header's size must be one the file could encode: a few bytes of deflate or Huffman data
// cannot hold a 16384x16384 image, and stb reserves memory for the claimed size (and for
// each PNG chunk's claimed length) before it reads the data. Deflate expands at most 1032:1
// (a 258-byte match in 2 bits). A JPEG codes at least one bit per 8x8 block of its
// full-resolution component in every scan that holds its DC coefficients, so it has at most
// 512 pixels per byte. Valid files stay far inside both bounds.
constexpr int64_t kDeflateMaxExpansion = 1032;
constexpr int64_t kJpegMaxPixelsPerByte = 512;

std::string chunk_name(const uint8_t* type) {
  for (int i = 0; i < 4; ++i)
    if (!((type[i] >= 'A' && type[i] <= 'Z') || (type[i] >= 'a' && type[i] <= 'z'))) return "a chunk";
  return "chunk '" + std::string(reinterpret_cast<const char*>(type), 4) + "'";
}

// Walks the PNG chunks up to IEND, refusing one whose claimed length runs past the end of the
// file, and refuses a header whose image data (filter bytes included) exceeds what the IDAT
// chunks can inflate to.
void check_png_data_size(const uint8_t* bytes, size_t size, const std::string& name, int64_t width,
                         int64_t height) {
  int64_t compressed = 0;
  for (size_t at = 8; at + 8 <= size;) {
    const uint64_t length = read_be32(bytes + at);
    if (length > size - at - 8) {
      fail_decode(name, "truncated PNG (" + chunk_name(bytes + at + 4) + " at byte " + std::to_string(at) +
                            " claims " + std::to_string(length) + " bytes, the file has " +
                            std::to_string(size - at - 8) + " after it)");
    }
    if (std::memcmp(bytes + at + 4, "IDAT", 4) == 0) {
      // stb copies an empty first IDAT into its not yet allocated buffer: memcpy(NULL, p, 0).
      if (length == 0 && compressed == 0)
        fail_decode(name, "PNG with an empty IDAT chunk before its image data (at byte " + std::to_string(at) + ")");
      compressed += static_cast<int64_t>(length);
    }
    if (std::memcmp(bytes + at + 4, "IEND", 4) == 0) break;
    at += 12 + length;  // length, type, data, CRC
  }
  static const int kChannels[7] = {1, 0, 3, 1, 2, 0, 4};  // by colour type; 0: invalid, stb refuses
  const int colour_type = size > 25 ? bytes[25] : 0;
  const int channels = colour_type < 7 && kChannels[colour_type] ? kChannels[colour_type] : 1;
  const int depth = std::max<int>(size > 24 ? bytes[24] : 1, 1);
  const int64_t raw = ((width * channels * depth + 7) / 8 + 1) * height;
  if (raw > kDeflateMaxExpansion * (compressed + 1)) {
    fail_decode(name, "PNG header claims " + std::to_string(width) + "x" + std::to_string(height) + " pixels (" +
                          std::to_string(raw) + " bytes of image data), more than its " +
                          std::to_string(compressed) + " bytes of compressed data can hold: truncated or corrupt");
  }
}

void check_jpeg_data_size(size_t size, const std::string& name, int64_t width, int64_t height) {
  if (width * height > kJpegMaxPixelsPerByte * static_cast<int64_t>(size)) {
    fail_decode(name, "JPEG header claims " + std::to_string(width) + "x" + std::to_string(height) +
                          " pixels, more than a file of " + std::to_string(size) +
                          " bytes can encode: truncated or corrupt");
  }
}

// Reads a whole regular file. fopen/fread rather than iostreams: errno says why a read failed.
std::vector<uint8_t> read_file(const std::string& path) {
  std::unique_ptr<FILE, int (*)(FILE*)> file(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!file) fail_decode(path, std::string("cannot open: ") + std::strerror(errno));
  struct stat info;
  if (fstat(fileno(file.get()), &info) != 0) {
    fail_decode(path, std::string("cannot stat: ") + std::strerror(errno));
  }
  if (!S_ISREG(info.st_mode)) fail_decode(path, "not a regular file");
  // stb takes an int length; checked here, before reading, so a huge file is not loaded.
  if (info.st_size > INT_MAX) fail_decode(path, "file over 2 GiB");
  std::vector<uint8_t> bytes(static_cast<size_t>(info.st_size));
  if (std::fread(bytes.data(), 1, bytes.size(), file.get()) != bytes.size()) {
    fail_decode(path,
                std::string("read error: ") +
                    (std::ferror(file.get()) ? std::strerror(errno) : "file shrank while reading"));
  }
  return bytes;
}

}  // namespace

Image decode_image_memory(const uint8_t* bytes, size_t size, const std::string& name,
                          const DecodeLimits& limits) {
  if (size == 0) fail_decode(name, "empty file");
  if (size > static_cast<size_t>(INT_MAX)) fail_decode(name, "file over 2 GiB");
  const int length = static_cast<int>(size);

  const Format format = sniff_format(bytes, size);
  if (format == Format::Unknown) fail_decode(name, "not a JPEG, PNG or BMP image");

  // Header first: the claimed size is checked before stb allocates anything for pixels.
  int64_t claimed_width = 0, claimed_height = 0;
  if (!read_header_size(format, bytes, size, &claimed_width, &claimed_height)) {
    fail_decode(name, std::string("corrupt or truncated ") + format_name(format) + " header");
  }
  if (claimed_width <= 0 || claimed_height <= 0) {
    fail_decode(name, "zero size (" + std::to_string(claimed_width) + "x" +
                          std::to_string(claimed_height) + ")");
  }
  if (claimed_width > limits.max_side || claimed_height > limits.max_side ||
      claimed_width * claimed_height > limits.max_pixels) {
    fail_decode(name, "header claims " + std::to_string(claimed_width) + "x" +
                          std::to_string(claimed_height) + " pixels, over the limit (side " +
                          std::to_string(limits.max_side) + ", " +
                          std::to_string(limits.max_pixels) + " pixels)");
  }
  const int width = static_cast<int>(claimed_width), height = static_cast<int>(claimed_height);
  if (format == Format::Bmp) check_bmp_complete(bytes, size, name, width, height);
  if (format == Format::Png) check_png_data_size(bytes, size, name, width, height);
  if (format == Format::Jpeg) check_jpeg_data_size(size, name, width, height);
  if (format == Format::Jpeg) check_jpeg_huffman_tables(bytes, size, name);

  int decoded_width = 0, decoded_height = 0, channels_in_file = 0;
  std::unique_ptr<stbi_uc, void (*)(void*)> decoded(
      stbi_load_from_memory(bytes, length, &decoded_width, &decoded_height, &channels_in_file, 3),
      &stbi_image_free);
  if (!decoded) {
    fail_decode(name,
                std::string("corrupt or truncated ") + format_name(format) + stb_reason(format));
  }
  if (decoded_width != width || decoded_height != height) {  // a header stb reads otherwise
    fail_decode(name, "header says " + std::to_string(width) + "x" + std::to_string(height) +
                          " but the image decodes to " + std::to_string(decoded_width) + "x" +
                          std::to_string(decoded_height));
  }

  Image image(width, height);
  std::memcpy(image.pixels.data(), decoded.get(), image.pixels.size());
  return image;
}

Image decode_image_file(const std::string& path, const DecodeLimits& limits) {
  std::vector<uint8_t> bytes = read_file(path);
  return decode_image_memory(bytes.data(), bytes.size(), path, limits);
}

}  // namespace data
