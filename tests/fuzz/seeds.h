// Seed inputs for the fuzz targets of tests/fuzz/targets.h, made here (no downloaded files):
// the project's own writers (write_safetensors, write_image) where they exist, and small
// hand-built files for what they never write (every safetensors dtype, PNG bit depths, colour
// types, palettes and interlacing, BMP header versions and bit depths, progressive JPEGs and
// restart markers). tests/fuzz/make_corpus.cpp writes them as the starting corpora;
// tests/test_fuzz_regressions.cpp replays them in CI.
#pragma once
#include <unistd.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "data/image.h"
#include "engine/safetensors.h"
#include "engine/tensor.h"

namespace fuzz {

struct Seed {
  std::string name;
  std::string bytes;
  bool valid;  // the parser accepts it (checked by the regression test)
};

namespace seed_detail {

using Bytes = std::string;

inline void put_le(Bytes& out, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out += static_cast<char>((value >> (8 * i)) & 0xff);
}
inline void put_be(Bytes& out, uint64_t value, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) out += static_cast<char>((value >> (8 * i)) & 0xff);
}
inline Bytes from_list(std::initializer_list<int> values) {
  Bytes out;
  for (int v : values) out += static_cast<char>(v);
  return out;
}

// Deterministic bytes with structure (not noise), so decoders take varied paths.
inline Bytes pattern_bytes(size_t count, unsigned salt) {
  Bytes out(count, '\0');
  for (size_t i = 0; i < count; ++i) out[i] = static_cast<char>((i * 37 + (i / 7) * 11 + salt * 71) % 251);
  return out;
}

// A file written by one of the project's writers, read back. `write` receives the path.
template <typename Write>
Bytes via_file(const std::string& extension, Write write) {
  namespace fs = std::filesystem;
  static int counter = 0;
  const fs::path path = fs::temp_directory_path() / ("aidetect-seed-" + std::to_string(::getpid()) + "-" +
                                                     std::to_string(counter++) + extension);
  write(path.string());
  std::ifstream in(path, std::ios::binary);
  Bytes bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  in.close();
  fs::remove(path);
  return bytes;
}

// ---- safetensors ----

// [u64 header length][header JSON, padded with spaces to 8 bytes when asked][data]
inline Bytes safetensors_file(const nlohmann::ordered_json& header, const Bytes& data, bool pad = true) {
  std::string text = header.dump();
  if (pad) text.append((8 - text.size() % 8) % 8, ' ');
  Bytes out;
  put_le(out, text.size(), 8);
  return out + text + data;
}

// Builds a header and its data section tensor by tensor, offsets in order.
struct SafetensorsBuilder {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  Bytes data;

  void metadata(const std::map<std::string, std::string>& values) { header["__metadata__"] = values; }
  void add(const std::string& name, const std::string& dtype, const std::vector<int64_t>& shape,
           const Bytes& bytes) {
    header[name] = {{"dtype", dtype}, {"shape", shape}, {"data_offsets", {data.size(), data.size() + bytes.size()}}};
    data += bytes;
  }
  void add_f32(const std::string& name, const std::vector<int64_t>& shape, unsigned salt = 0) {
    int64_t count = 1;
    for (int64_t d : shape) count *= d;
    Bytes bytes;
    for (int64_t i = 0; i < count; ++i) {
      float v = 0.25f * static_cast<float>((i * 7 + salt) % 17) - 2.0f;
      bytes.append(reinterpret_cast<const char*>(&v), sizeof v);
    }
    add(name, "F32", shape, bytes);
  }
  Bytes file(bool pad = true) const { return safetensors_file(header, data, pad); }
};

// ---- PNG (stored zlib blocks: stb does not check CRCs but the chunks carry real ones) ----

inline uint32_t crc32(const Bytes& bytes) {
  uint32_t crc = 0xffffffffu;
  for (unsigned char c : bytes) {
    crc ^= c;
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1)));
  }
  return crc ^ 0xffffffffu;
}

inline Bytes png_chunk(const std::string& type, const Bytes& body) {
  Bytes out;
  put_be(out, body.size(), 4);
  const Bytes typed = type + body;
  out += typed;
  put_be(out, crc32(typed), 4);
  return out;
}

inline Bytes zlib_stored(const Bytes& raw) {
  Bytes out = from_list({0x78, 0x01});
  size_t at = 0;
  do {
    const size_t n = std::min<size_t>(raw.size() - at, 65535);
    out += static_cast<char>(at + n == raw.size() ? 1 : 0);
    put_le(out, n, 2);
    put_le(out, n ^ 0xffff, 2);
    out += raw.substr(at, n);
    at += n;
  } while (at < raw.size());
  uint32_t a = 1, b = 0;
  for (unsigned char c : raw) {
    a = (a + c) % 65521;
    b = (b + a) % 65521;
  }
  put_be(out, (b << 16) | a, 4);
  return out;
}

// colour type: 0 gray, 2 RGB, 3 palette, 4 gray+alpha, 6 RGBA. Rows cycle through the five
// filter types; the pixel bytes are a pattern.
inline Bytes png(int width, int height, int colour_type, int depth, bool interlaced, bool transparency = false) {
  const int channels = colour_type == 2 ? 3 : colour_type == 4 ? 2 : colour_type == 6 ? 4 : 1;
  Bytes raw;
  auto add_rows = [&](int w, int h) {
    if (w == 0 || h == 0) return;
    const size_t row_bytes = (static_cast<size_t>(w) * channels * depth + 7) / 8;
    for (int y = 0; y < h; ++y) {
      raw += static_cast<char>(y % 5);
      Bytes row = pattern_bytes(row_bytes, static_cast<unsigned>(y + raw.size()));
      if (colour_type == 3)  // palette indices within the palette
        for (char& c : row) c = static_cast<char>(static_cast<unsigned char>(c) & ((1 << depth) - 1) & 0x0f);
      raw += row;
    }
  };
  if (!interlaced) {
    add_rows(width, height);
  } else {  // Adam7: (x0, y0, dx, dy) per pass
    const int passes[7][4] = {{0, 0, 8, 8}, {4, 0, 8, 8}, {0, 4, 4, 8}, {2, 0, 4, 4},
                              {0, 2, 2, 4}, {1, 0, 2, 2}, {0, 1, 1, 2}};
    for (const auto& p : passes)
      add_rows((width - p[0] + p[2] - 1) / p[2], (height - p[1] + p[3] - 1) / p[3]);
  }
  Bytes ihdr;
  put_be(ihdr, width, 4);
  put_be(ihdr, height, 4);
  ihdr += from_list({depth, colour_type, 0, 0, interlaced ? 1 : 0});
  Bytes out = from_list({0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'}) + png_chunk("IHDR", ihdr);
  out += png_chunk("tEXt", Bytes("Comment") + '\0' + "fuzz seed");
  if (colour_type == 3) {
    const int entries = std::min(1 << depth, 16);
    out += png_chunk("PLTE", pattern_bytes(3 * entries, 5));
    if (transparency) out += png_chunk("tRNS", pattern_bytes(entries / 2 + 1, 9));
  } else if (transparency && (colour_type == 0 || colour_type == 2)) {
    Bytes key;
    for (int c = 0; c < (colour_type == 0 ? 1 : 3); ++c) put_be(key, 1, 2);
    out += png_chunk("tRNS", key);
  }
  const Bytes compressed = zlib_stored(raw);
  const size_t half = compressed.size() / 2;  // two IDAT chunks: stb joins them
  out += png_chunk("IDAT", compressed.substr(0, half)) + png_chunk("IDAT", compressed.substr(half));
  return out + png_chunk("IEND", "");
}

// ---- BMP ----

// header_size: 12 (OS/2), 40, 56, 108 (V4) or 124 (V5). bitfields: compression 3 with
// explicit masks (16 and 32 bits).
inline Bytes bmp(int width, int height, int bpp, int header_size, bool top_down, bool bitfields = false) {
  const bool os2 = header_size == 12;
  const int palette_entries = bpp <= 8 ? 1 << bpp : 0;
  const int palette_bytes = palette_entries * (os2 ? 3 : 4);
  const int mask_bytes = bitfields && header_size == 40 ? 12 : 0;
  const size_t row_bytes = (static_cast<size_t>(bpp) * width + 31) / 32 * 4;
  const uint32_t pixel_offset = 14 + header_size + mask_bytes + palette_bytes;
  Bytes pixels;
  for (int y = 0; y < height; ++y) pixels += pattern_bytes(row_bytes, static_cast<unsigned>(y));
  Bytes out = "BM";
  put_le(out, pixel_offset + pixels.size(), 4);
  put_le(out, 0, 4);
  put_le(out, pixel_offset, 4);
  put_le(out, header_size, 4);
  uint32_t masks[4] = {0, 0, 0, 0};
  if (bpp == 16) masks[0] = 0x7c00, masks[1] = 0x03e0, masks[2] = 0x001f;
  if (bpp == 32) masks[0] = 0x00ff0000, masks[1] = 0x0000ff00, masks[2] = 0x000000ff, masks[3] = 0xff000000;
  if (os2) {
    put_le(out, width, 2);
    put_le(out, height, 2);
    put_le(out, 1, 2);
    put_le(out, bpp, 2);
  } else {
    put_le(out, static_cast<uint32_t>(width), 4);
    put_le(out, static_cast<uint32_t>(top_down ? -height : height), 4);
    put_le(out, 1, 2);
    put_le(out, bpp, 2);
    put_le(out, bitfields ? 3 : 0, 4);
    put_le(out, pixels.size(), 4);
    put_le(out, 2835, 4);
    put_le(out, 2835, 4);
    put_le(out, palette_entries, 4);
    put_le(out, 0, 4);
    if (header_size >= 56 || mask_bytes) {
      for (int i = 0; i < (header_size >= 56 ? 4 : 3); ++i) put_le(out, masks[i], 4);
    }
    if (header_size >= 108) {
      put_le(out, 0x73524742, 4);  // "sRGB"
      out += Bytes(36 + 12, '\0');  // endpoints, gamma
    }
    if (header_size >= 124) out += Bytes(16, '\0');  // intent, profile offset and size, reserved
  }
  for (int i = 0; i < palette_entries; ++i) out += pattern_bytes(os2 ? 3 : 4, static_cast<unsigned>(i));
  return out + pixels;
}

// ---- JPEG (hand-made: the writer only makes baseline files without restart markers) ----

inline Bytes jpeg_segment(int marker, const Bytes& body) {
  Bytes out = from_list({0xff, marker});
  put_be(out, body.size() + 2, 2);
  return out + body;
}
// One Huffman table with a single 1-bit code for `symbol`.
inline Bytes one_code_table(int table_class, int id, int symbol) {
  Bytes body = from_list({table_class << 4 | id, 1});
  return body + Bytes(15, '\0') + static_cast<char>(symbol);
}
inline Bytes jpeg_frame(int marker, int width, int height, const std::vector<std::array<int, 2>>& components) {
  Bytes body = from_list({8});
  put_be(body, height, 2);
  put_be(body, width, 2);
  body += static_cast<char>(components.size());
  for (size_t c = 0; c < components.size(); ++c)
    body += from_list({static_cast<int>(c + 1), components[c][0] << 4 | components[c][1], 0});
  return jpeg_segment(marker, body);
}
inline Bytes jpeg_scan(const std::vector<int>& component_ids, int ss, int se, int ah_al, const Bytes& data) {
  Bytes body = from_list({static_cast<int>(component_ids.size())});
  for (int id : component_ids) body += from_list({id, 0x00});
  body += from_list({ss, se, ah_al});
  return jpeg_segment(0xda, body) + data;
}
inline Bytes jpeg_start() {
  return from_list({0xff, 0xd8}) + jpeg_segment(0xdb, Bytes(1, '\0') + Bytes(64, '\x02')) +
         jpeg_segment(0xc4, one_code_table(0, 0, 0x00) + one_code_table(1, 0, 0x00));
}
// Every DC difference and every AC band is coded by one 1-bit code ('0', symbol 0: zero
// difference, end of band), so n blocks take n bits (padded with 1s).
inline Bytes zero_bits(size_t bits) {
  Bytes out((bits + 7) / 8, '\0');
  if (bits % 8) out.back() = static_cast<char>(0xff >> (bits % 8));
  return out;
}

// Progressive 16x16: gray (4 blocks) or YCbCr 4:2:0 (one MCU: 4 + 1 + 1 blocks). DC first
// scan at Al=1, AC band scans, DC refinement.
inline Bytes progressive_jpeg(bool colour) {
  Bytes out = jpeg_start();
  if (!colour) {
    out += jpeg_frame(0xc2, 16, 16, {{1, 1}});
    out += jpeg_scan({1}, 0, 0, 0x01, zero_bits(4));
    out += jpeg_scan({1}, 1, 63, 0x00, zero_bits(4));
    out += jpeg_scan({1}, 0, 0, 0x10, zero_bits(4));  // refinement: one raw bit per block
  } else {
    out += jpeg_frame(0xc2, 16, 16, {{2, 2}, {1, 1}, {1, 1}});
    out += jpeg_scan({1, 2, 3}, 0, 0, 0x01, zero_bits(6));
    out += jpeg_scan({1}, 1, 5, 0x00, zero_bits(4));
    out += jpeg_scan({1}, 6, 63, 0x00, zero_bits(4));
    out += jpeg_scan({2}, 1, 63, 0x00, zero_bits(1));
    out += jpeg_scan({3}, 1, 63, 0x00, zero_bits(1));
    out += jpeg_scan({1, 2, 3}, 0, 0, 0x10, zero_bits(6));
  }
  return out + from_list({0xff, 0xd9});
}

// Baseline 32x16 gray with a restart interval of one MCU: 8 blocks of '00' between RSTn.
inline Bytes restart_jpeg() {
  Bytes out = jpeg_start() + jpeg_frame(0xc0, 32, 16, {{1, 1}});
  out += jpeg_segment(0xdd, from_list({0, 1}));
  Bytes data;
  for (int mcu = 0; mcu < 8; ++mcu) {
    if (mcu > 0) data += from_list({0xff, 0xd0 + (mcu - 1) % 8});
    data += zero_bits(2);
  }
  return out + jpeg_scan({1}, 0, 63, 0x00, data) + from_list({0xff, 0xd9});
}

inline std::vector<uint8_t> rgb_pattern(int width, int height, int channels) {
  std::vector<uint8_t> p(static_cast<size_t>(width) * height * channels);
  for (size_t i = 0; i < p.size(); ++i) p[i] = static_cast<uint8_t>(60 + (i * 3) % 97 + (i / 41) % 50);
  return p;
}

inline Bytes written_image(const std::string& extension, int width, int height, int channels, int quality = 95) {
  return via_file(extension, [&](const std::string& path) {
    data::write_image(path, width, height, channels, rgb_pattern(width, height, channels).data(), quality);
  });
}

// The metadata save_checkpoint writes (models/checkpoint.cpp), for a given model name.
inline std::map<std::string, std::string> checkpoint_metadata(const std::string& model) {
  return {{"format", "aidetect-checkpoint-1"},
          {"model", model},
          {"epoch", "2"},
          {"step", "40"},
          {"loader_epoch", "2"},
          {"loader_batch", "0"},
          {"loader_cursor", "0"},
          {"optimizer_scalars", R"({"conv1.weight.step":40.0,"fc.bias.step":40.0,"lr":0.001})"},
          {"config", R"({"batch_size":32,"epochs":5,"image_size":64,"lr":0.001,"model":")" + model + R"("})"},
          {"layout", "torchvision"}};
}

}  // namespace seed_detail

inline std::vector<Seed> safetensors_seeds() {
  using namespace seed_detail;
  std::vector<Seed> seeds;
  seeds.push_back({"empty", safetensors_file(nlohmann::ordered_json::object(), ""), true});
  {
    SafetensorsBuilder b;
    b.metadata({{"format", "pt"}, {"note", "]]{{\"[["}});
    seeds.push_back({"metadata_only", b.file(), true});
  }
  {  // one tensor of every dtype the format knows, [2, 2] each, with varied bit patterns
    SafetensorsBuilder b;
    const std::pair<const char*, int> dtypes[] = {
        {"BOOL", 1}, {"U8", 1},  {"I8", 1},   {"F8_E5M2", 1}, {"F8_E4M3", 1}, {"F8_E8M0", 1},
        {"I16", 2},  {"U16", 2}, {"F16", 2},  {"BF16", 2},    {"I32", 4},     {"U32", 4},
        {"F32", 4},  {"F64", 8}, {"I64", 8},  {"U64", 8},     {"C64", 8}};
    unsigned salt = 0;
    for (const auto& [dtype, size] : dtypes) b.add(dtype, dtype, {2, 2}, pattern_bytes(4 * size, ++salt));
    b.add("f16_specials", "F16", {4}, from_list({0x00, 0x7c, 0x00, 0xfc, 0x01, 0x7e, 0x01, 0x00}));
    seeds.push_back({"every_dtype", b.file(), true});
  }
  {
    SafetensorsBuilder b;
    b.add("scalar", "F32", {}, pattern_bytes(4, 1));
    b.add("empty", "F32", {0, 3}, "");
    b.add("empty_big_dim", "I64", {1000000, 0}, "");
    b.add("conv", "F32", {2, 3, 1, 1}, pattern_bytes(24, 2));
    seeds.push_back({"scalar_empty_4d", b.file(/*pad=*/false), true});
  }
  {
    SafetensorsBuilder b;
    b.add("w\xc3\xa9ight", "F32", {1}, pattern_bytes(4, 3));
    b.add("quote\"and\\slash", "F32", {1}, pattern_bytes(4, 4));
    b.add("[[{{", "U8", {3}, "abc");
    seeds.push_back({"odd_names", b.file(), true});
  }
  seeds.push_back({"written_by_engine", via_file(".safetensors", [](const std::string& path) {
                     engine::write_safetensors(path,
                                               {{"a", engine::Tensor::randn({2, 3}, 1)},
                                                {"b", engine::Tensor::randn({4}, 2, 0, engine::DType::F64)}},
                                               {{"epoch", "3"}});
                   }),
                   true});
  return seeds;
}

inline std::vector<Seed> checkpoint_seeds() {
  using namespace seed_detail;
  // A few of a ResNet50's tensors under their real names and shapes, optimiser buffers (one
  // 4-D, stored OIHW) and the metadata of a real checkpoint. load_checkpoint refuses them
  // (the other weights are missing): the whole model is ~100 MB, too large to fuzz.
  auto partial = [](const std::string& model) {
    SafetensorsBuilder b;
    b.metadata(checkpoint_metadata(model));
    b.add_f32("fc.bias", {2});
    b.add_f32("bn1.running_mean", {64}, 1);
    b.add("bn1.num_batches_tracked", "I64", {}, pattern_bytes(8, 2));
    b.add_f32("optimizer.fc.bias.momentum_buffer", {2}, 3);
    b.add("optimizer.layer1.0.conv1.weight.momentum_buffer", "BF16", {64, 64, 1, 1}, pattern_bytes(8192, 4));
    b.add_f32("optimizer.conv1.weight.momentum_buffer", {2, 3, 1, 1}, 5);
    return b.file();
  };
  std::vector<Seed> seeds;
  seeds.push_back({"partial_resnet50", partial("resnet50"), false});
  seeds.push_back({"partial_resnet50_bnn", partial("resnet50_bnn"), false});
  {
    SafetensorsBuilder b;
    b.add_f32("fc.weight", {2, 8});
    seeds.push_back({"plain_weights", b.file(), false});
  }
  return seeds;
}

inline std::vector<Seed> image_seeds() {
  using namespace seed_detail;
  std::vector<Seed> seeds;
  // The project's writer: stb_image_write (compressed PNG, 24-bit BMP, baseline JPEG with and
  // without 4:2:0 subsampling).
  for (int channels : {1, 2, 3, 4})
    seeds.push_back({"written_" + std::to_string(channels) + "ch.png", written_image(".png", 13, 7, channels), true});
  seeds.push_back({"written_1x1.png", written_image(".png", 1, 1, 3), true});
  seeds.push_back({"written.bmp", written_image(".bmp", 9, 5, 3), true});
  seeds.push_back({"written_gray.jpg", written_image(".jpg", 19, 11, 1), true});
  seeds.push_back({"written_q95.jpg", written_image(".jpg", 19, 11, 3, 95), true});
  seeds.push_back({"written_q50.jpg", written_image(".jpg", 19, 11, 3, 50), true});
  // Hand-made PNGs: every colour type and bit depth, interlaced and not, with tRNS.
  const std::pair<int, std::vector<int>> png_depths[] = {
      {0, {1, 2, 4, 8, 16}}, {2, {8, 16}}, {3, {1, 2, 4, 8}}, {4, {8, 16}}, {6, {8, 16}}};
  for (const auto& [type, depths] : png_depths)
    for (int depth : depths)
      for (bool interlaced : {false, true}) {
        const std::string name = "type" + std::to_string(type) + "_" + std::to_string(depth) + "bit" +
                                 (interlaced ? "_adam7" : "") + ".png";
        seeds.push_back({name, png(interlaced ? 11 : 5, interlaced ? 9 : 3, type, depth, interlaced,
                                   /*transparency=*/depth == 8 || depth == 2),
                         true});
      }
  // Hand-made BMPs: header versions, bit depths, bottom-up and top-down, bit fields.
  seeds.push_back({"os2_24bit.bmp", bmp(5, 3, 24, 12, false), true});
  seeds.push_back({"os2_8bit.bmp", bmp(5, 3, 8, 12, false), true});
  for (int bpp : {1, 4, 8, 16, 24, 32})
    seeds.push_back({"v3_" + std::to_string(bpp) + "bit.bmp", bmp(7, 3, bpp, 40, bpp == 8), true});
  seeds.push_back({"v3_16bit_bitfields.bmp", bmp(7, 3, 16, 40, false, true), true});
  seeds.push_back({"v3_32bit_bitfields.bmp", bmp(7, 3, 32, 40, true, true), true});
  seeds.push_back({"v4_32bit.bmp", bmp(6, 4, 32, 108, false, true), true});
  seeds.push_back({"v5_24bit.bmp", bmp(6, 4, 24, 124, true), true});
  // Hand-made JPEGs: progressive (gray; 4:2:0 colour with spectral selection and successive
  // approximation) and baseline with restart markers.
  seeds.push_back({"progressive_gray.jpg", progressive_jpeg(false), true});
  seeds.push_back({"progressive_420.jpg", progressive_jpeg(true), true});
  seeds.push_back({"restart_markers.jpg", restart_jpeg(), true});
  return seeds;
}

inline std::vector<Seed> metadata_json_seeds() {
  std::vector<Seed> seeds;
  auto add = [&](const std::string& name, const std::string& text) { seeds.push_back({name, text, true}); };
  // Valid as optimizer_scalars of the target's Linear(3, 2) + SGD ("weight", "bias"):
  add("scalars", R"({"bias.step":5.0,"lr":0.001,"weight.step":5.0})");
  add("scalars_lr_only", R"({"lr":0.1})");
  // Valid as config (trained_image_size):
  add("config", R"({"batch_size":32,"epochs":5,"image_size":64,"lr":0.001,"model":"resnet50_bnn","seed":7})");
  add("config_without_size", R"({"model":"resnet50"})");
  add("both", R"({"image_size":224,"lr":0.5})");
  add("not_an_object", R"([1,2.5,-3e-7,{"a":[true,false,null]},"\u00e9\ud83d\ude00"])");
  return seeds;
}

inline const std::vector<std::string>& harness_names() {
  static const std::vector<std::string> names = {"safetensors", "checkpoint", "image", "metadata_json"};
  return names;
}

inline std::vector<Seed> seeds_for(const std::string& harness) {
  if (harness == "safetensors") return safetensors_seeds();
  if (harness == "checkpoint") return checkpoint_seeds();
  if (harness == "image") return image_seeds();
  if (harness == "metadata_json") return metadata_json_seeds();
  engine::detail::fail("fuzz: no harness '", harness, "' (safetensors, checkpoint, image, metadata_json)");
}

}  // namespace fuzz
